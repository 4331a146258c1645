"""Benchmark: crossmatch throughput (pairs/s), WebDataset export throughput (MB/s) and peak
memory (RSS of this process and its Dask workers), on `mmu sim` output.

    python benchmarks/crossmatch_export.py --galaxies 1000 --seed 1 --work /tmp/mmu-bench-xm

Builds legacysurvey_dr10_south and desi_dr1 from a mock universe (reused if present), then times
`crossmatch` and `export_wds` with a fresh local Dask cluster each, `--repeats` times, and prints
medians. Memory is sampled every 50 ms over the whole process tree.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import threading
import time
from pathlib import Path

import psutil


class PeakRSS:
    """Peak resident memory of this process plus all its children, sampled in a thread."""

    def __init__(self, interval=0.05):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()

    def _run(self):
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for p in [me, *me.children(recursive=True)]:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            time.sleep(self.interval)

    def __enter__(self):
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self.thread.join()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--galaxies", type=int, default=1000)
    p.add_argument("--transients", type=int, default=50)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--work", default="/tmp/mmu-bench-xm")
    args = p.parse_args()

    from mmu.engine.build import build
    from mmu.pairing.crossmatch import crossmatch
    from mmu.shards.export import export_wds
    from mmu.sim import simulate

    work = Path(args.work)
    raw, hub = work / f"raw-{args.galaxies}-{args.seed}", work / "hub"
    if not (raw / "mmu-sim.json").exists():
        simulate(raw, galaxies=args.galaxies, transients=args.transients, seed=args.seed, progress=False)
    for name in ("legacysurvey_dr10_south", "desi_dr1"):
        build(name, raw, hub, workers=args.workers)
    quiet: dict = {}  # log lines and bars: mmu.logs (set_verbosity / disable_progress_bars)
    xm_times, xm_peaks, ex_times, ex_peaks, pairs, nbytes = [], [], [], [], 0, 0
    for _ in range(args.repeats):
        shutil.rmtree(hub / "bench_pairs", ignore_errors=True)
        with PeakRSS() as mem:
            t0 = time.perf_counter()
            r = crossmatch(["legacysurvey_dr10_south", "desi_dr1"], hub, "bench_pairs", workers=args.workers, **quiet)
            xm_times.append(time.perf_counter() - t0)
        xm_peaks.append(mem.peak)
        pairs = r.manifest.rows.total
        out = work / "shards"
        shutil.rmtree(out, ignore_errors=True)
        with PeakRSS() as mem:
            t0 = time.perf_counter()
            idx = export_wds("bench_pairs", hub, out, split="train", shard_size="64MiB", workers=args.workers, **quiet)
            ex_times.append(time.perf_counter() - t0)
        ex_peaks.append(mem.peak)
        nbytes = sum(s.bytes for s in idx.shards)
    report = {
        "galaxies": args.galaxies, "workers": args.workers, "repeats": args.repeats,
        "pairs": pairs, "crossmatch_s_median": round(statistics.median(xm_times), 2),
        "pairs_per_s": round(pairs / statistics.median(xm_times), 1),
        "crossmatch_peak_rss_mib": round(max(xm_peaks) / 2**20),
        "export_samples": idx.samples, "export_mib": round(nbytes / 2**20, 1),
        "export_s_median": round(statistics.median(ex_times), 2),
        "export_mib_per_s": round(nbytes / 2**20 / statistics.median(ex_times), 2),
        "export_peak_rss_mib": round(max(ex_peaks) / 2**20),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
