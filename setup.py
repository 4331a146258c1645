"""Packaging hook: ship the repository-root catalog.yaml inside the `mmu` package of a wheel.

The registry lives at the repository root (see docs/architecture.md); a wheel installed elsewhere
has no root, so the build copies the file to `mmu/catalog.yaml`. Everything else is in
pyproject.toml.
"""
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildPyWithCatalog(build_py):
    def run(self):
        super().run()
        if not self.editable_mode:
            target = Path(self.build_lib) / "mmu" / "catalog.yaml"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(Path(__file__).parent / "catalog.yaml", target)


setup(cmdclass={"build_py": BuildPyWithCatalog})
