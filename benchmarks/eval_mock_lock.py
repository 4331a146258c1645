"""Make `benchmarks/mock-v1.lock`: the canonical revisions of the mock benchmark v1.

Floating-point simulation output is not portable across machines and library builds, so a mock
task pins its simulation parameters *and* the content revision written here, once, by this one
command (docs/benchmark.md, "The mock benchmark"):

    python benchmarks/eval_mock_lock.py --work WORK [--workers K]

It runs `mmu sim` with the parameters of the catalog's mock tasks, builds every dataset they
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

LOCK = Path(__file__).resolve().parent / "mock-v1.lock"


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
    sh("sim", "--out", raw, "--galaxies", sim["galaxies"], "--transients", sim["transients"], "--seed", sim["seed"],
       "--footprint", sim["footprint"], *w, "--quiet")
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
    p.add_argument("--work", default="mock-v1-work", help="folder for the raw files and the hub")
    p.add_argument("--hub", default=None, help="use this built hub instead of simulating and building")
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--out", default=str(LOCK))
    a = p.parse_args(argv)
    tasks = mock_tasks(Path(a.out).name)
    if not tasks:
        raise SystemExit(f"no catalog task names the lock {Path(a.out).name}")
    t0 = time.time()
    hub = Path(a.hub) if a.hub else make_hub(Path(a.work), tasks, a.workers)
    lock = {"format": "mmu-mock-lock/1", "benchmark": Path(a.out).stem,
            "command": "python benchmarks/eval_mock_lock.py --work WORK",
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
