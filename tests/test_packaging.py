"""`mmu.builders`, `mmu.pretrain`, `mmu.eval` import in all three install situations, the wheel
carries the catalog, and `import mmu` stays light (no torch)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PROBE = (
    "import json, sys, mmu, mmu.builders, mmu.pretrain, mmu.eval\n"
    "from mmu.registry.catalog import default_catalog_path, load_catalog\n"
    "print(json.dumps({'mmu': mmu.__file__, 'builders': mmu.builders.__file__,"
    " 'pretrain': mmu.pretrain.__file__, 'eval': mmu.eval.__file__,"
    " 'catalog': str(default_catalog_path()), 'datasets': len(load_catalog().datasets),"
    " 'torch': 'torch' in sys.modules}))\n"
)


def _probe(cwd: Path, pythonpath: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MMU_CATALOG")}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=cwd, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def wheel_install(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    # build from a copy: an in-tree build leaves mmu_hub.egg-info in the checkout
    src = tmp / "src"
    anywhere = shutil.ignore_patterns(".git", "__pycache__", "*.egg-info")
    at_root = {"build", "dist", ".whl", "hub", "raw", "out", ".venv", "work"}  # mmu/hub is a package

    def ignore(folder, names):
        return set(anywhere(folder, names)) | (at_root & set(names) if Path(folder) == REPO else set())

    shutil.copytree(REPO, src, ignore=ignore)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp / "dist"), str(src)], check=True, timeout=300,
                   capture_output=True)
    wheel = next((tmp / "dist").glob("mmu_hub-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "mmu/catalog.yaml" in names
    assert "mmu/builders/__init__.py" in names and "mmu/eval/__init__.py" in names
    assert not any(n.startswith(("builders/", "eval/", "pretrain/", "tests/")) for n in names), \
        "the wheel must not install top-level builders/eval/pretrain packages"
    target = tmp / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
                    str(wheel)], check=True, timeout=300, capture_output=True)
    return target


def test_wheel_installed_elsewhere(wheel_install, tmp_path):
    got = _probe(tmp_path, str(wheel_install))
    for key in ("mmu", "builders", "pretrain", "eval", "catalog"):
        assert got[key].startswith(str(wheel_install)), (key, got[key])
    assert got["datasets"] >= 5
    assert got["torch"] is False


def test_regular_install_run_from_repository_root(wheel_install):
    # Python puts the working directory first: the checkout's mmu/ shadows the installed one
    got = _probe(REPO, str(wheel_install))
    assert got["mmu"].startswith(str(REPO / "mmu"))
    assert got["builders"] == str(REPO / "builders" / "__init__.py")
    assert got["pretrain"] == str(REPO / "pretrain" / "__init__.py")
    assert got["eval"] == str(REPO / "eval" / "__init__.py")
    assert got["catalog"] == str(REPO / "catalog.yaml")
    assert got["torch"] is False


def test_editable_install(tmp_path):
    editable = [d for d in metadata.distributions(name="mmu-hub")
                if json.loads(d.read_text("direct_url.json") or "{}").get("dir_info", {}).get("editable")]
    if not editable:
        pytest.skip("mmu-hub is not installed in editable mode in this environment")
    got = _probe(tmp_path, None)
    assert got["builders"] == str(REPO / "builders" / "__init__.py")
    assert got["eval"] == str(REPO / "eval" / "__init__.py")
    assert got["torch"] is False


def test_finder_only_claims_its_three_names():
    import importlib.util

    import mmu

    assert importlib.util.find_spec("mmu.tests") is None
    assert importlib.util.find_spec("mmu.docs") is None
    assert mmu.__version__ == metadata.version("mmu-hub") if _installed() else True


def _installed() -> bool:
    try:
        metadata.distribution("mmu-hub")
        return True
    except metadata.PackageNotFoundError:
        return False


def test_every_package_folder_is_listed_in_pyproject():
    import tomllib

    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    mapping = {"mmu": "mmu", "builders": "mmu.builders", "pretrain": "mmu.pretrain", "eval": "mmu.eval"}
    found = set()
    for top, pkg in mapping.items():
        for init in (REPO / top).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / top).parts
            found.add(".".join((pkg, *rel)))
    assert found == listed, f"pyproject packages differ: missing {found - listed}, stale {listed - found}"
