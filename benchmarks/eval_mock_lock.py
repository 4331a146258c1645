"""Make a mock benchmark's lock: `benchmarks/mock-v1.lock` (the galaxy and transient tasks of
benchmark v1), `benchmarks/mock-stars-v1.lock` (`TESSVarClass.v1`, mmu-sim 1.2) or
`benchmarks/mock-stars-v2.lock` (`TESSVarClass.v2`, mmu-sim 1.3, with RR Lyrae), the canonical
revisions of its tasks.

Floating-point simulation output is not portable across machines and library builds, so a mock
task pins its simulation parameters *and* the content revision written here, once, by this one
command (docs/benchmark.md, "The mock benchmark"):

    python benchmarks/eval_mock_lock.py --work WORK [--workers K]                  # mock-v1.lock
    python benchmarks/eval_mock_lock.py --lock mock-stars-v1 --work WORK           # mock-stars-v1.lock
    python benchmarks/eval_mock_lock.py --lock mock-stars-v2 --work WORK           # mock-stars-v2.lock

A lock covers the catalog's mock tasks whose `lock:` names it, and they share one simulation:
`sim` holds `mmu sim`'s seed, galaxies, transients and footprint, and optionally `config`, the
simulation parameters it sets (`mmu sim --set KEY=VALUE`; the star simulation's density, magnitude
range and TESS limit). It runs `mmu sim` with those parameters (unless WORK/raw holds a
simulation already, which must have been made with them), builds every dataset they
read, makes their paired catalogs with `mmu crossmatch`, and writes, per task, the dataset's
content revision, each split's object count and id-set hash, and the test labels' hash (what
`mmu eval submit` checks). `--hub HUB` skips the simulation and builds and reads an existing
hub. Then copy the printed revisions into the tasks' `dataset_revision` in catalog.yaml (before
a task is released; a released task is never edited). The canonical hub itself is meant to be
published (`mmu push --allow-mock`) and downloaded, not regenerated.

This is the lock of the mock benchmark, named by its tasks' catalog entries (`lock:`). A build of
the archive data is pinned the same way by its publisher, with `mmu eval lock --hub HUB -o LOCK`,
and trusted on a board by a maintainer (`mmu eval add-lock`); docs/reliability.md, "The board".
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
LOCK = HERE / "mock-v1.lock"


def mock_tasks(lock_name: str):
    from mmu.registry.catalog import load_catalog

    return [t for t in load_catalog().tasks if t.mock and Path(t.lock).name == lock_name]


def sh(*args):
    print("$", " ".join(map(str, args)), flush=True)
    subprocess.run([sys.executable, "-m", "mmu", *map(str, args)], check=True)


def make_hub(work: Path, tasks, workers: int | None) -> Path:
    sims = {json.dumps(t.sim, sort_keys=True) for t in tasks}
    if len(sims) != 1:
        raise SystemExit(f"the mock tasks pin {len(sims)} different simulations; one lock covers one")
    sim = tasks[0].sim
    raw, hub = work / "raw", work / "hub"
    w = ["--workers", str(workers)] if workers else []
    sets = [f"{k}={json.dumps(v)}" for k, v in sorted((sim.get("config") or {}).items())]  # JSON is YAML
    if not (raw / "mmu-sim.json").exists():
        sh("sim", "--out", raw, "--galaxies", sim["galaxies"], "--transients", sim["transients"], "--seed",
           sim["seed"], "--footprint", sim["footprint"], *w, "--quiet", *(["--set", *sets] if sets else []))
    made = json.loads((raw / "mmu-sim.json").read_text())
    if made.get("simulator_version") != sim["simulator_version"]:
        raise SystemExit(f"{raw} was simulated by {made.get('simulator_version')}; the tasks pin "
                         f"{sim['simulator_version']} (update `sim` in catalog.yaml for a new task version)")
    params = made.get("parameters") or {}
    got = {"seed": made.get("seed"), **{k: params.get(k) for k in ("galaxies", "transients", "footprint")},
           **{k: (params.get("config") or {}).get(k) for k in sim.get("config") or {}}}
    want = {k: sim[k] for k in ("seed", "galaxies", "transients", "footprint")} | dict(sim.get("config") or {})
    differ = {k: (got[k], v) for k, v in want.items() if got[k] != v}
    if differ:
        raise SystemExit(f"{raw} holds another simulation than the tasks pin (parameter: (simulated, pinned)): "
                         f"{differ}; use an empty --work folder")
    needed = {n for t in tasks for n in (t.paired.inputs if t.paired else [t.dataset])}
    for name in sorted(needed):
        if not (hub / name / "build.json").exists():
            sh("build", name, "--raw", raw, "--hub", hub, *w, "--no-progress")
    for paired in {t.paired.model_dump_json(): t.paired for t in tasks if t.paired}.values():
        if not (hub / paired.name / "build.json").exists():
            sh("crossmatch", *paired.inputs, "--hub", hub, "--name", paired.name, "--radius-arcsec",
               paired.radius_arcsec, "--method", paired.method, *w, "--no-progress")
    return hub


def _lock_entries(hub: Path, tasks) -> dict:
    from mmu.eval.submit import lock_entries

    try:
        return lock_entries(hub, tasks)
    except ValueError as e:
        raise SystemExit(str(e)) from None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lock", default=None, metavar="NAME",
                   help="the lock to make, benchmarks/NAME.lock (mock-v1, mock-stars-v1, mock-stars-v2); "
                        "default mock-v1")
    p.add_argument("--work", default=None, help="folder for the raw files and the hub (default NAME-work)")
    p.add_argument("--hub", default=None, help="use this built hub instead of simulating and building")
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--out", default=None, help="write the lock here (default benchmarks/NAME.lock)")
    a = p.parse_args(argv)
    if a.out is None:
        a.out = str(HERE / f"{a.lock}.lock") if a.lock else str(LOCK)
    stem = Path(a.out).stem
    a.work = a.work or f"{stem}-work"
    tasks = mock_tasks(Path(a.out).name)
    if not tasks:
        raise SystemExit(f"no catalog task names the lock {Path(a.out).name}")
    t0 = time.time()
    hub = Path(a.hub) if a.hub else make_hub(Path(a.work), tasks, a.workers)
    lock = {"format": "mmu-mock-lock/1", "benchmark": Path(a.out).stem,
            "command": "python benchmarks/eval_mock_lock.py "
                       + ("" if Path(a.out).name == LOCK.name else f"--lock {stem} ") + "--work WORK",
            "sim": tasks[0].sim, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": {"system": platform.system(), "machine": platform.machine(),
                        "python": platform.python_version()},
            **_lock_entries(hub, tasks), "seconds": round(time.time() - t0, 1)}
    Path(a.out).write_text(json.dumps(lock, indent=1, sort_keys=True) + "\n")
    print(f"wrote {a.out}")
    for name, d in lock["datasets"].items():
        print(f"  {name}: dataset_revision: {d['content_revision']}")
    stale = [t.name for t in tasks if t.dataset_revision != lock["datasets"][t.hub_name]["content_revision"]]
    if stale:
        print(f"update dataset_revision in catalog.yaml for: {', '.join(stale)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
