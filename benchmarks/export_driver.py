"""Benchmark: the driver's peak Python allocation (tracemalloc) and wall time of `mmu export-wds`
at growing row counts, with the Dask worker in a separate process (issue 15: nothing on the
driver grows with the data).

    python benchmarks/export_driver.py --sizes 10000,100000,300000
    python benchmarks/export_driver.py --sizes 10000,100000 --rows-per-bucket 16384

The hub datasets are catalog-only (8 Parquet partitions, a `mag` scalar exported with
`--scalars phot=mag`, each row's split drawn at random), written by the same helper as
tests/test_export_driver.py. `--rows-per-bucket` overrides the ranking bucket size
(mmu.shards.export.ROWS_PER_BUCKET) to exercise several buckets at small sizes. (The export
before issue 15 collected every object id into the driver: 106.5 MiB at 10k rows, 865 MiB at
100k; docs/scale.md.)
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


def _run(mod, hub: Path, out: Path, client) -> tuple[float, int, float, float]:
    tracemalloc.start()
    tracemalloc.reset_peak()
    t, c = time.perf_counter(), time.process_time()
    index = mod.export_wds("cat_v1", hub, out, split="train", seed=0, client=client, scalars={"phot": ["mag"]})
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 2**20, index.samples, time.perf_counter() - t, time.process_time() - c


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10000,100000", help="comma-separated row counts")
    ap.add_argument("--rows-per-bucket", type=int, help="override ROWS_PER_BUCKET")
    args = ap.parse_args(argv)
    from dask.distributed import Client, LocalCluster

    from mmu.shards import export as current
    from test_export_driver import write_hub

    if args.rows_per_bucket:
        current.ROWS_PER_BUCKET = args.rows_per_bucket
    tmp = Path(tempfile.mkdtemp(prefix="mmu-export-driver-"))
    mods = [("this tree", current)]
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    print("| export | rows | train samples | driver peak MiB | wall s | driver CPU s |")
    print("|---|---:|---:|---:|---:|---:|")
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        write_hub(tmp / "warm", "cat_v1", 1000, seed=3)
        for _, mod in mods:  # imports and first-use costs out of the measurement
            _run(mod, tmp / "warm", tmp / f"warm-{mod.__name__}", client)
        for n in [int(s) for s in args.sizes.split(",")]:
            write_hub(tmp / str(n), "cat_v1", n, seed=3)
            for label, mod in mods:
                peak, samples, wall, cpu = _run(mod, tmp / str(n), tmp / f"out-{mod.__name__}-{n}", client)
                print(f"| {label} | {n:,} | {samples:,} | {peak:.2f} | {wall:.1f} | {cpu:.1f} |", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
