"""Make `mmu.builders`, `mmu.pretrain` and `mmu.eval` importable from a source checkout.

The repository keeps these packages at its root (`builders/`, `pretrain/`, `eval/`) and
setuptools maps them into `mmu` at install time. When Python runs from the repository root after
a regular (non-editable) install, the checkout's `mmu/` shadows the installed one and has no
`builders/` inside, so the mapping is lost. This finder restores it, for exactly those three
names, and only when the sibling folders sit next to the `mmu/` being imported (a checkout);
in an installed wheel the subpackages live inside `mmu/` and the finder stays out of the way.
"""
from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from pathlib import Path

SIBLING_PACKAGES = ("builders", "pretrain", "eval")


class _SiblingPackageFinder(importlib.abc.MetaPathFinder):
    def __init__(self, parent: str, root: Path):
        self.parent = parent
        self.root = root

    def find_spec(self, fullname, path=None, target=None):
        prefix, _, name = fullname.partition(".")
        if prefix != self.parent or name not in SIBLING_PACKAGES:
            return None
        folder = self.root / name
        init = folder / "__init__.py"
        if not init.is_file():
            return None
        return importlib.util.spec_from_file_location(
            fullname, init, submodule_search_locations=[str(folder)]
        )


def install_sibling_finder(parent: str, package_dir: str) -> None:
    """Map `parent.builders`, `parent.pretrain` and `parent.eval` to the sibling folders, if
    `package_dir` is a checkout's `mmu/`; otherwise do nothing. Installing it twice is a no-op.

    Args:
        parent: the package's name, ``"mmu"`` (its ``__name__``).
        package_dir: the folder of that package (its ``__path__[0]``).

    Example:
        >>> install_sibling_finder(__name__, __path__[0])   # in mmu/__init__.py  # doctest: +SKIP
    """
    pkg = Path(package_dir).resolve()
    root = pkg.parent
    # a checkout: the sibling folders exist beside mmu/ and are not inside it
    is_checkout = (root / "pyproject.toml").is_file() and any(
        (root / name / "__init__.py").is_file() and not (pkg / name).exists()
        for name in SIBLING_PACKAGES
    )
    if not is_checkout:
        return
    if any(isinstance(f, _SiblingPackageFinder) and f.root == root for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _SiblingPackageFinder(parent, root))
