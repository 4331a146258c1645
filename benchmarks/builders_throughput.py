"""Survey builder throughput on `mmu sim` output: objects/s per worker, 1 -> 2 worker scaling, and
the engine's share of the build time.

    python benchmarks/builders_throughput.py --galaxies 1500 --transients 500 --fields 4 \
        [--raw DIR] [--datasets desi_dr1 ...] [--out results.json]

For each dataset it measures
  * `read`: the builder alone, in this process (list_inputs + read of every input, rows only), its
    wall and CPU seconds, and the raw input it read (MB, the inputs' files) per CPU second;
  * `build(1)`, `build(2)`: `mmu.engine.build.build` on a LocalCluster of 1 and 2 worker processes
    (one thread each), into a fresh hub each time; the manifest's standardize / partition times.
objects/s per worker = rows / read seconds; scaling = standardize(1) / standardize(2); engine
share = 1 - read / build(1) total. Worker imports are warmed up before timing. Not a test:
numbers depend on the machine and its load (recorded).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

DATASETS = ["legacysurvey_dr10_south", "desi_dr1", "sdss_dr17", "plasticc_2018", "sim_truth_v1"]


def read_only(name: str, raw: Path) -> tuple[int, float, float, float]:
    """(rows, wall s, CPU s of this process, raw MB of the inputs) of the builder alone."""
    from mmu.engine.builder import Rejection, get_builder
    from mmu.registry.catalog import load_catalog

    entry = load_catalog().dataset(name)
    builder = get_builder(entry.builder).from_options(entry.builder_config)
    t0, c0 = time.perf_counter(), time.process_time()
    rows = 0
    items = builder.list_inputs(raw)
    for item in items:
        for part in builder.read(item):
            if not isinstance(part, Rejection):
                rows += part.num_rows
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    raw_mb = sum(os.path.getsize(p) for p in {p for i in items for p in i.paths}) / 1e6
    return rows, wall, cpu, raw_mb


def _warm():
    import hats  # noqa: F401
    import hats_import.pipeline  # noqa: F401

    import mmu.builders  # noqa: F401
    import mmu.engine.build  # noqa: F401


def timed_build(name: str, raw: Path, workers: int) -> dict:
    from mmu.engine.build import build, make_client

    hub = Path(tempfile.mkdtemp(prefix=f"bench-hub-{workers}-"))
    client, cluster = make_client(workers)
    try:
        client.run(_warm)  # worker start-up imports (~2-9 s) are not per-object throughput
        t0 = time.perf_counter()
        res = build(name, raw, hub, client=client)
        total = time.perf_counter() - t0
    finally:
        client.close()
        cluster.close()
        shutil.rmtree(hub, ignore_errors=True)
    t = res.manifest.timings_s
    return {"rows": res.manifest.rows.total, "standardize_s": t["standardize"],
            "partition_s": t["partition"], "total_s": round(total, 2)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--raw", type=Path, help="existing `mmu sim` output (else simulated to a temp dir)")
    ap.add_argument("--galaxies", type=int, default=1500)
    ap.add_argument("--transients", type=int, default=500)
    ap.add_argument("--fields", type=int, default=4)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--datasets", nargs="*", default=DATASETS)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)

    raw = args.raw
    sim_s = None
    if raw is None:
        from mmu.sim import simulate

        raw = Path(tempfile.mkdtemp(prefix="bench-raw-"))
        t0 = time.perf_counter()
        simulate(raw, galaxies=args.galaxies, transients=args.transients, seed=args.seed,
                 footprint=f"fields:{args.fields}", progress=False)
        sim_s = round(time.perf_counter() - t0, 1)
    results = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                           "load_avg_1m": os.getloadavg()[0]},
               "sim": {"galaxies": args.galaxies, "transients": args.transients, "fields": args.fields,
                       "seed": args.seed, "seconds": sim_s, "raw": str(raw)},
               "datasets": {}}
    print(f"{'dataset':26s} {'rows':>6s} {'read/s':>8s} {'MB/cpu':>7s} {'std1 s':>7s} {'std2 s':>7s} {'scale':>6s} "
          f"{'part s':>7s} {'total1':>7s} {'engine':>7s}")
    for name in args.datasets:
        rows, read_s, read_cpu, raw_mb = read_only(name, raw)
        b1 = timed_build(name, raw, 1)
        b2 = timed_build(name, raw, 2)
        r = {"rows": rows, "read_s": round(read_s, 2), "read_cpu_s": round(read_cpu, 2), "raw_mb": round(raw_mb, 1),
             "read_raw_mb_per_cpu_s": round(raw_mb / max(read_cpu, 1e-9), 1),
             "objects_per_s_per_worker": round(rows / read_s, 1),
             "build_1_worker": b1, "build_2_workers": b2,
             "standardize_scaling_1_to_2": round(b1["standardize_s"] / max(b2["standardize_s"], 1e-9), 2),
             "total_scaling_1_to_2": round(b1["total_s"] / b2["total_s"], 2),
             "engine_share_of_build": round(1 - read_s / b1["total_s"], 2),
             "load_avg_1m_after": os.getloadavg()[0]}
        results["datasets"][name] = r
        print(f"{name:26s} {rows:6d} {r['objects_per_s_per_worker']:8.1f} {r['read_raw_mb_per_cpu_s']:7.1f} "
              f"{b1['standardize_s']:7.2f} "
              f"{b2['standardize_s']:7.2f} {r['standardize_scaling_1_to_2']:6.2f} {b1['partition_s']:7.2f} "
              f"{b1['total_s']:7.2f} {r['engine_share_of_build']:7.0%}")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
