"""Packaging: `mmu.builders`, `mmu.pretrain`, `mmu.eval` import in all three install situations
and the wheel carries the catalog; the dependency extras declare exactly what each folder
imports and agree with `mmu.extras.EXTRAS`; a base install (every module of a non-base
distribution hidden) opens a hub with `datasets` and `lsdb`, and the heavy commands exit 1
naming the extra to install."""
from __future__ import annotations

import ast
import functools
import json
import os
import shutil
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

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
    templates = {f"mmu/{t.relative_to(REPO).as_posix().removeprefix('mmu/')}"
                 for folder in ("eval/templates", "mmu/demo/templates") for t in (REPO / folder).glob("*")
                 if t.is_file()}
    assert templates and not templates - set(names), f"the wheel lacks templates {templates - set(names)}"
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


# --- dependency extras: pyproject.toml, mmu.extras.EXTRAS and the imports agree ------------------

PYPROJECT = __import__("tomllib").loads((REPO / "pyproject.toml").read_text())
SELF = canonicalize_name(PYPROJECT["project"]["name"])
GROUPS = PYPROJECT["project"]["optional-dependencies"]
# the folder whose third-party imports each group must declare; the rest of mmu/ is the base
FOLDER_GROUP = {"mmu/engine": "build", "mmu/pairing": "build", "mmu/shards": "build", "builders": "build",
                "mmu/sim": "sim", "pretrain": "train", "eval": "eval", "mmu/demo": "demo"}
# declared without being imported by the code of their group, on purpose
NOT_IMPORTED = {
    "": {"lsdb"},  # the base install's promise to users: lsdb.open_catalog(HUB/NAME)
    "test": {"pytest-timeout", "ruff"},  # a pytest plugin; the linter .ci/run calls
}
VENV_SEED = {"pip", "setuptools", "wheel"}  # what `python -m venv` installs before mmu-hub


def _direct(group: str) -> list[Requirement]:
    """The requirements a group lists ("" = the base dependencies), without its self-references."""
    reqs = [Requirement(r) for r in (GROUPS[group] if group else PYPROJECT["project"]["dependencies"])]
    return [r for r in reqs if canonicalize_name(r.name) != SELF]


def _expanded(group: str) -> list[Requirement]:
    """A group's requirements with its self-references (`mmu-hub[build,sim]`) expanded."""
    out = []
    for r in (Requirement(r) for r in GROUPS[group]):
        if canonicalize_name(r.name) == SELF:
            for g in sorted(r.extras):
                out += _expanded(g)
        else:
            out.append(r)
    return out


def _requires(dist: str, extras: set[str]) -> list[Requirement]:
    """The installed distribution's requirements that apply with `extras` requested."""
    out = []
    for line in metadata.requires(dist) or []:
        r = Requirement(line)
        if r.marker is None or any(r.marker.evaluate({"extra": e}) for e in extras | {""}):
            out.append(r)
    return out


def _dists(reqs: list[Requirement]) -> set[str]:
    """Distribution names of `reqs`, with what an extra of a requirement pulls in one level down
    (`dask[distributed]` gives dask and distributed)."""
    names = set()
    for r in reqs:
        names.add(canonicalize_name(r.name))
        if r.extras:
            without = {canonicalize_name(x.name) for x in _requires(r.name, set())}
            names |= {canonicalize_name(x.name) for x in _requires(r.name, set(r.extras))} - without
    return names


def _closure(reqs: list[Requirement]) -> set[str]:
    """Every distribution that installing `reqs` brings, from the installed metadata."""
    seen, todo = set(), [(canonicalize_name(r.name), frozenset(r.extras)) for r in reqs]
    while todo:
        name, extras = todo.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        try:
            todo += [(canonicalize_name(r.name), frozenset(r.extras)) for r in _requires(name, set(extras))]
        except metadata.PackageNotFoundError:
            pytest.fail(f"{name} (required by the base install) is not installed here")
    return {name for name, _ in seen}


@functools.cache
def _packages_distributions() -> dict[str, list[str]]:
    return metadata.packages_distributions()  # scans every installed distribution: slow


def _modules_by_dist() -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for module, dists in _packages_distributions().items():
        for d in dists:
            out.setdefault(canonicalize_name(d), set()).add(module)
    return out


def _dist_of(module: str) -> set[str]:
    return {canonicalize_name(d) for d in _packages_distributions().get(module, [])}


@functools.cache
def _third_party_imports(folders: tuple[str, ...], optional: bool = False) -> dict[str, set[str]]:
    """top-level module -> files importing it, over the .py files of `folders`; an import inside a
    `try` that catches ImportError is optional, left out unless `optional`."""
    local = {"mmu", "builders", "pretrain", "eval", "tests"} | {  # a test or benchmark imports its siblings
        p.stem for folder in ("tests", "benchmarks") for p in (REPO / folder).glob("*.py")}
    found: dict[str, set[str]] = {}
    for folder in folders:
        for path in sorted((REPO / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(), filename=str(path))
            guarded = set()
            for node in ast.walk(tree):
                if not optional and isinstance(node, ast.Try) and any(
                        h.type is None or "ImportError" in ast.unparse(h.type) for h in node.handlers):
                    guarded |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
            for node in ast.walk(tree):
                if id(node) in guarded:
                    continue
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.partition(".")[0]
                    if top not in sys.stdlib_module_names and top not in local and top != "__future__":
                        found.setdefault(top, set()).add(str(path.relative_to(REPO)))
    return found


def _group_of(folder: str) -> str:
    return next((g for f, g in FOLDER_GROUP.items() if folder == f or folder.startswith(f + "/")), "")


def _imports_by_group(optional: bool = False) -> dict[str, dict[str, set[str]]]:
    """group -> (module -> files) for the package code: mmu/, builders/, pretrain/, eval/."""
    out: dict[str, dict[str, set[str]]] = {}
    for module, files in _third_party_imports(("mmu", "builders", "pretrain", "eval"), optional).items():
        for f in files:
            out.setdefault(_group_of(str(Path(f).parent)), {}).setdefault(module, set()).add(f)
    return out


def test_extras_table_agrees_with_pyproject():
    from mmu.extras import EXTRAS

    assert set(EXTRAS) == set(GROUPS) - {"test"}, "mmu.extras.EXTRAS and pyproject's extras differ"
    for extra, modules in EXTRAS.items():
        dists = _dists(_expanded(extra))
        owners = {m: _dist_of(m) for m in modules}
        assert all(owners.values()), f"EXTRAS[{extra!r}]: not installed here: {[m for m, d in owners.items() if not d]}"
        stray = {m: d for m, d in owners.items() if not d & dists}
        assert not stray, f"EXTRAS[{extra!r}] lists modules of distributions the [{extra}] extra lacks: {stray}"
        by_dist = _modules_by_dist()
        unlisted = {d for d in dists if not by_dist.get(d, set()) & set(modules)}
        assert not unlisted, f"the [{extra}] extra installs {unlisted}, whose modules EXTRAS[{extra!r}] lacks"


def test_every_import_is_declared_for_its_folder():
    base = _dists(_direct(""))
    problems = []
    for group, modules in _imports_by_group().items():
        declared = base | (_dists(_expanded(group)) if group else set())
        for module, files in sorted(modules.items()):
            owners = _dist_of(module)
            if not owners & declared:
                problems.append(f"{module} ({owners or 'not installed'}) imported by {sorted(files)[:3]}: "
                                f"declare it in {'the base dependencies' if not group else f'[{group}]'}")
    assert not problems, "\n".join(problems)


def test_every_declared_dependency_is_imported():
    by_dist, used = _modules_by_dist(), _imports_by_group(optional=True)  # a guarded import is a use
    used["test"] = _third_party_imports(("tests", "benchmarks"), True)
    problems = []
    for group in ["", *GROUPS]:
        imported = set(used.get(group, {}))
        for r in _direct(group):
            name = canonicalize_name(r.name)
            if name not in NOT_IMPORTED.get(group, set()) and not by_dist.get(name, set()) & imported:
                problems.append(f"{r.name} is declared in {f'[{group}]' if group else 'the base'} but "
                                f"nothing there imports {sorted(by_dist.get(name, set())) or 'it'}")
    assert not problems, "\n".join(problems)


def test_tests_and_benchmarks_imports_are_in_the_test_extra():
    declared = _dists(_direct("")) | _dists(_expanded("test"))
    missing = {m: sorted(f)[:2] for m, f in _third_party_imports(("tests", "benchmarks")).items()
               if not _dist_of(m) & declared}
    assert not missing, f"imported by tests/benchmarks but not in [test]: {missing}"


# --- a base install, simulated: every module of a distribution the base does not bring is hidden -

LAUNCHER = """\
import importlib.abc, json, runpy, sys

HIDDEN = frozenset(json.loads(open(sys.argv[1]).read()))


class BaseOnly(importlib.abc.MetaPathFinder):
    # wraps each import finder: a hidden module is not found (`import` raises
    # ModuleNotFoundError, `importlib.util.find_spec` returns None, `name in sys.modules` stays
    # False), as in a venv without it; the rest (metadata lookups too) goes to the finder
    def __init__(self, inner):
        self.inner = inner

    def find_spec(self, fullname, path=None, target=None):
        if fullname.partition(".")[0] in HIDDEN:
            return None
        return self.inner.find_spec(fullname, path, target)

    def __getattr__(self, name):
        return getattr(self.inner, name)


sys.meta_path[:] = [BaseOnly(f) for f in sys.meta_path]
mode, target, rest = sys.argv[2], sys.argv[3], sys.argv[4:]
if mode == "-c":
    sys.argv = ["-c", *rest]
    exec(compile(target, "<string>", "exec"), {"__name__": "__main__"})
else:  # -m MODULE ARGS
    sys.argv = [target, *rest]
    runpy.run_module(target, run_name="__main__", alter_sys=True)
"""


@pytest.fixture(scope="module")
def base_only(tmp_path_factory) -> tuple[list[str], Path]:
    """(hidden top-level modules, launcher script): modules of installed distributions outside the
    base dependencies' closure (and what a fresh venv has) cannot be imported by the launcher."""
    keep = _closure(_direct("")) | VENV_SEED | {SELF}
    hidden = sorted(m for m, dists in _packages_distributions().items()
                    if not {canonicalize_name(d) for d in dists} & keep
                    and m not in sys.stdlib_module_names and m.isidentifier())
    tmp = tmp_path_factory.mktemp("base_only")
    (tmp / "hidden.json").write_text(json.dumps(hidden))
    launcher = tmp / "base_only.py"
    launcher.write_text(LAUNCHER)
    return hidden, launcher


def _run_base_only(base_only, tmp_path, *args: str) -> subprocess.CompletedProcess:
    hidden, launcher = base_only
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MMU_CATALOG")}
    env.update(PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               HF_DATASETS_CACHE=str(tmp_path / "hf-cache"), HF_HOME=str(tmp_path / "hf-home"))
    return subprocess.run([sys.executable, str(launcher), str(launcher.parent / "hidden.json"), *args],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def test_base_hides_the_heavy_modules(base_only):
    hidden, _ = base_only
    for module in ("torch", "timm", "hats_import", "galsim", "skypy", "speclite", "fitsio", "sklearn",
                   "webdataset", "matplotlib"):
        if _dist_of(module):  # installed here, so hiding it is what makes the check honest
            assert module in hidden, f"{module} is reachable from the base dependencies"
    assert "datasets" not in hidden and "lsdb" not in hidden and "mmu" not in hidden


@pytest.fixture(scope="module")
def small_hub(sim_raw, dask_client, tmp_path_factory) -> Path:
    """A hub with the mock truth catalog (sim_truth_v1) and DESI spectra (desi_dr1), built here."""
    from mmu.engine.build import build

    hub = tmp_path_factory.mktemp("base_hub") / "hub"
    for name in ("sim_truth_v1", "desi_dr1"):
        build(name, sim_raw, hub, client=dask_client)
    return hub


OPEN_HUB = """\
import importlib.util, json, sys
import datasets, lsdb
import mmu
from mmu.cli.main import make_parser

make_parser()  # every command registers without its extra
out = {"torch_spec": importlib.util.find_spec("torch") is not None}
try:
    import torch  # noqa: F401
    out["torch_import"] = True
except ModuleNotFoundError:
    out["torch_import"] = False
for path in sys.argv[1:]:
    ds = datasets.load_dataset(path)
    cat = lsdb.open_catalog(path, columns=["object_id", "ra", "dec"]).compute()
    first = next(iter(datasets.load_dataset(path, split="train", streaming=True)))
    out[path] = {"datasets": sorted(str(i) for split in ds.values() for i in split["object_id"]),
                 "lsdb": sorted(str(i) for i in cat["object_id"]),
                 "flux": len(first["spectrum"]["flux"]) if "spectrum" in first else None}
print(json.dumps(out))
"""


def test_base_install_opens_a_hub_with_datasets_and_lsdb(base_only, small_hub, tmp_path):
    import pyarrow.dataset as pads

    paths = [str(small_hub / name) for name in ("sim_truth_v1", "desi_dr1")]
    out = _run_base_only(base_only, tmp_path, "-c", OPEN_HUB, *paths)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got.pop("torch_spec") is False and got.pop("torch_import") is False, "torch is not hidden"
    for path in paths:
        name = Path(path).name
        table = pads.dataset(Path(path) / name / "dataset", format="parquet",
                             exclude_invalid_files=True).to_table(columns=["object_id"])
        expected = sorted(str(i) for i in table.column("object_id").to_pylist())
        assert expected, f"{name}: the test hub is empty"
        assert got[path]["datasets"] == expected, f"{name}: datasets.load_dataset rows differ"
        assert got[path]["lsdb"] == expected, f"{name}: lsdb.open_catalog rows differ"
    assert got[paths[1]]["flux"] and got[paths[1]]["flux"] > 1000  # a typed fixed-length spectrum


@pytest.mark.parametrize("argv, extra", [
    (["build", "sim_truth_v1", "--raw", "raw", "--hub", "hub"], "build"),
    (["crossmatch", "sim_truth_v1", "desi_dr1", "--hub", "hub", "--name", "pairs"], "build"),
    (["sim", "--out", "raw", "--galaxies", "10"], "sim"),
    (["pretrain", "--config", str(REPO / "pretrain" / "configs" / "astroclip.yaml")], "train"),
    (["eval", "run", "--checkpoint", "model.pt", "--hub", "hub", "--out", "results"], "eval"),
], ids=lambda v: v[0] if isinstance(v, list) else None)
def test_heavy_command_without_its_extra_names_it(base_only, tmp_path, argv, extra):
    out = _run_base_only(base_only, tmp_path, "-m", "mmu", *argv)
    assert out.returncode == 1, (out.returncode, out.stderr[-3000:])
    assert f"needs the [{extra}] extra" in out.stderr and f"pip install 'mmu-hub[{extra}]'" in out.stderr, \
        out.stderr[-3000:]
    assert "Traceback" not in out.stderr
    written = {p.name for p in tmp_path.iterdir()} & {"raw", "hub", "results"}
    assert not written, f"wrote {written} before checking its extra"


def test_import_mmu_and_its_cli_pull_in_no_extra():
    from mmu.extras import EXTRAS

    base = _closure(_direct(""))
    heavy = sorted(m for m in EXTRAS["all"] if not _dist_of(m) & base)
    code = ("import json, sys, mmu, mmu.extras, mmu.registry.catalog, mmu.hub.layout, mmu.model.schema\n"
            "from mmu.cli.main import make_parser\nmake_parser()\n"
            f"print(json.dumps(sorted(set(sys.modules) & set({heavy!r}))))")
    env = {k: v for k, v in os.environ.items() if k != "MMU_CATALOG"}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [], "import mmu loaded modules of an extra"


@pytest.mark.parametrize("argv, expect", [
    (["catalog", "list"], "desi_dr1"),
    (["catalog", "cite", "desi_dr1"], "@article{"),
], ids=["catalog-list", "catalog-cite"])
def test_light_commands_run_on_the_base(base_only, tmp_path, argv, expect):
    out = _run_base_only(base_only, tmp_path, "-m", "mmu", *argv)
    assert out.returncode == 0, out.stderr[-3000:]
    assert expect in out.stdout
