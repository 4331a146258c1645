"""Where a build's workers wait: the task stream of one `mmu build` on a cluster started as a real
one (one `dask scheduler`, N `dask worker --nthreads 1` processes with warm imports, as in
benchmarks/scale.py), with the driver in this process (issue 15).

    python benchmarks/stage_timeline.py RAW [--dataset legacysurvey_dr10_south] [--workers 2]
        [--work DIR]

Prints, per kind of task (standardize_input, pixel_weights, route, write_partition, ...), its
count, first start, last end and summed compute time; each worker's busy time; and every interval
in which no worker computes anything (the driver planning between stages, imports, the end of the
build). With N workers, wall time ~ the busiest worker's busy time + those gaps + the time a
stage's last task keeps one worker busy while the others wait (the gap between the end of each
worker's last task of a stage and the stage's end: "tail").
Not a test: times depend on the machine and its load (printed).
"""
from __future__ import annotations

import argparse
import collections
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale import Cluster  # noqa: E402


def _warm() -> None:
    """Import what build tasks import (a long-lived cluster has done so already)."""
    import astropy.io.fits  # noqa: F401
    import astropy.wcs  # noqa: F401

    import mmu.builders  # noqa: F401
    import mmu.engine.build  # noqa: F401
    import mmu.engine.hats_writer  # noqa: F401


def _kind(key) -> str:
    key = key if isinstance(key, str) else str(key[0] if isinstance(key, tuple) else key)
    return key.strip("('").split("-")[0]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("raw", type=Path)
    ap.add_argument("--dataset", default="legacysurvey_dr10_south")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--memory-limit", default="6GB")
    ap.add_argument("--work", type=Path, help="scratch folder (default: a temp dir)")
    args = ap.parse_args(argv)
    from dask.distributed import Client, get_task_stream

    import mmu.builders  # noqa: F401
    from mmu.engine.build import build

    work = Path(args.work or tempfile.mkdtemp(prefix="mmu-timeline-"))
    cluster = Cluster(args.workers, work / "cluster", args.memory_limit)
    load0 = os.getloadavg()[0]
    try:
        with Client(cluster.address) as client:
            client.run(_warm)
            hub = work / "hub"
            shutil.rmtree(hub, ignore_errors=True)
            t0 = time.time()
            with get_task_stream(client) as stream:
                build(args.dataset, args.raw, hub, client=client)
            wall = time.time() - t0
    finally:
        cluster.close()
    events = sorted((s["start"] - t0, s["stop"] - t0, r["worker"], _kind(r["key"]))
                    for r in stream.data for s in r["startstops"] if s["action"] == "compute")
    print(f"{args.dataset} from {args.raw}: {args.workers} workers, wall {wall:.2f} s, "
          f"load {load0:.2f} -> {os.getloadavg()[0]:.2f}")
    kinds: dict[str, list] = {}
    for a, b, w, k in events:
        x = kinds.setdefault(k, [a, b, 0.0, 0, collections.defaultdict(float)])
        x[0], x[1], x[2], x[3] = min(x[0], a), max(x[1], b), x[2] + b - a, x[3] + 1
        x[4][w] = max(x[4][w], b)  # each worker's last end in this kind
    print(f"{'task':<24} {'n':>5} {'start':>7} {'end':>7} {'busy s':>7} {'tail s':>7}")
    for k, (a, b, busy, n, last) in kinds.items():
        tail = b - min(last.values()) if len(last) == args.workers else b - a
        print(f"{k:<24} {n:>5} {a:>7.2f} {b:>7.2f} {busy:>7.2f} {tail:>7.2f}")
    busy = collections.defaultdict(float)
    for a, b, w, _ in events:
        busy[w] += b - a
    print("busy per worker:", ", ".join(f"{v:.2f} s" for v in busy.values()))
    gaps, t = [], 0.0
    for a, b, _, _ in events:
        if a > t + 0.05:
            gaps.append((t, a))
        t = max(t, b)
    gaps.append((t, wall))
    print(f"no worker computing: {sum(b - a for a, b in gaps):.2f} s in",
          ", ".join(f"{a:.2f}-{b:.2f}" for a, b in gaps))


if __name__ == "__main__":
    main()
