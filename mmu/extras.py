"""Optional dependency groups ("extras") and the message a user gets when one is missing.

The base install (``pip install mmu-hub``) reads and loads hubs. Each heavier capability is an
extra, declared in pyproject.toml with the same names:

    build   raw survey files -> hub datasets, cross-match, export (hats-import, Dask, astropy,
            webdataset)
    sim     the mock observatory (galsim, skypy, speclite, fitsio, scipy)
    train   pretraining (torch, timm, webdataset)
    eval    the benchmark and its pages (torch, scikit-learn, scipy, jinja2)
    demo    the whole chain (every extra above, plus matplotlib for the report)
    all     everything

A command that needs an extra calls `require_extra` first, so that a missing package is one
clear line naming the extra to install, not an ImportError deep in a traceback.
"""
from __future__ import annotations

import importlib.util

#: extra -> the top-level modules of the distributions pyproject.toml lists for it, one module per
#: distribution (dask[distributed] gives two); tests/test_packaging.py checks that they agree
EXTRAS: dict[str, tuple[str, ...]] = {
    "build": ("hats_import", "cdshealpix", "dask", "distributed", "astropy", "pandas", "webdataset", "gaiaxpy"),
    "sim": ("galsim", "skypy", "speclite", "fitsio", "astropy", "scipy", "sklearn", "pandas", "dask",
            "distributed", "gaiaxpy"),
    "train": ("torch", "timm", "webdataset"),
    "eval": ("torch", "sklearn", "scipy", "jinja2"),
}
# demo = build + sim + train + eval + the report's figures; all = every extra
EXTRAS["demo"] = tuple(dict.fromkeys(
    [m for e in ("build", "sim", "train", "eval") for m in EXTRAS[e]] + ["matplotlib", "astropy", "sklearn"]))
EXTRAS["all"] = tuple(dict.fromkeys(m for e in ("build", "sim", "train", "eval", "demo") for m in EXTRAS[e]))


class MissingExtra(ImportError):
    """A command needs an extra that is not installed."""


def missing_modules(extra: str) -> list[str]:
    """The modules of `extra` that cannot be imported here."""
    if extra not in EXTRAS:
        raise ValueError(f"unknown extra {extra!r}; the extras are {sorted(EXTRAS)}")
    return [m for m in EXTRAS[extra] if not _importable(m)]


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a broken install, or a module set to None in sys.modules
        return False


def require_extra(extra: str, command: str) -> None:
    """Raise `MissingExtra` naming the extra and the pip command, if any of its modules is missing.

    Args:
        extra: a key of `EXTRAS`, e.g. "build".
        command: what the user ran, for the message, e.g. "mmu build".

    Raises:
        MissingExtra: with a message such as ``mmu build needs the [build] extra (missing:
            hats_import): pip install 'mmu-hub[build]'``.
    """
    missing = missing_modules(extra)
    if missing:
        raise MissingExtra(f"{command} needs the [{extra}] extra (missing: {', '.join(missing)}): "
                           f"pip install 'mmu-hub[{extra}]'")


def import_keeping_matplotlib_rc(module: str):
    """`importlib.import_module(module)`, with matplotlib's rcParams restored afterwards.

    Some packages change matplotlib's global settings when imported (GaiaXPy's plotter sets
    ``text.usetex = True``, which breaks every later figure on a machine without LaTeX); mmu's
    figures must not depend on which survey code ran first in the process.
    """
    try:
        import matplotlib
    except ImportError:
        return importlib.import_module(module)
    with matplotlib.rc_context():
        return importlib.import_module(module)
