"""Stage 2 alone (standardized files -> HATS catalog + margin cache): the one-pass writer against
hats-import on the same standardized files, interleaved, in one process (a threaded Dask cluster).

The first run builds the dataset once and keeps its standardized files (WORK/keep); later runs
reuse them. Each round runs `mmu.engine.partition.partition` with every writer and reports the CPU
seconds of the process (all threads) and the wall time.

    python benchmarks/stage2_writers.py RAW WORK --dataset desi_dr1 --rounds 3 [--set margin_threshold_arcsec=32]
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("raw")
    p.add_argument("work")
    p.add_argument("--dataset", default="desi_dr1")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--writers", default="mmu,hats-import")
    p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", dest="settings",
                   help="PartitionSettings overrides (default: PartitionSettings' defaults, not the catalog entry's)")
    args = p.parse_args()

    import pyarrow.parquet as pq
    from dask.distributed import Client, LocalCluster

    import mmu.engine.build as engine
    from mmu.engine.build import PartitionSettings, build
    from mmu.engine.partition import partition
    from mmu.logs import disable_progress_bars
    from mmu.registry.catalog import load_catalog

    disable_progress_bars()
    work = Path(args.work)
    overrides = {k: json.loads(v) if v[:1].isdigit() else v for k, v in (s.split("=", 1) for s in args.settings)}
    with LocalCluster(n_workers=1, threads_per_worker=args.threads, processes=False, dashboard_address=None,
                      silence_logs=40) as cluster, Client(cluster) as client:
        def standardized():
            return sorted(f for f in glob.glob(str(work / "keep" / "*" / "standardized" / "*.parquet"))
                          if not f.endswith(".digests.parquet"))
        if not standardized():
            keep = engine._remove_leftovers
            engine._remove_leftovers = lambda hub, name: None
            try:
                shutil.rmtree(work / "hub", ignore_errors=True)
                build(args.dataset, args.raw, work / "hub", client=client)
            finally:
                engine._remove_leftovers = keep
            shutil.copytree(work / "hub" / ".mmu-staging", work / "keep")
        files = standardized()
        rows = sum(pq.read_metadata(f).num_rows for f in files)
        split = load_catalog().split_definition
        print(json.dumps({"dataset": args.dataset, "files": len(files), "rows": rows, "settings": overrides}))
        for r in range(args.rounds):
            for writer in args.writers.split(","):
                out = work / f"out-{writer}"
                shutil.rmtree(out, ignore_errors=True)
                load0 = os.getloadavg()[0]
                c0, t0 = time.process_time(), time.perf_counter()
                got = partition(args.dataset, files, out, client, split,
                                PartitionSettings(writer=writer, **overrides), rows)
                print(json.dumps({"round": r, "writer": writer, "cpu_s": round(time.process_time() - c0, 2),
                                  "wall_s": round(time.perf_counter() - t0, 2), "load": [load0, os.getloadavg()[0]],
                                  "deepest_order": got["deepest_order"],
                                  "bytes": sum(f.stat().st_size for f in out.rglob("*.parquet"))}), flush=True)


if __name__ == "__main__":
    main()
