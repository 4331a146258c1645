"""Scale benchmark (issue 15): the chain at survey density on a Dask cluster started as a real one.

For each size: `mmu sim` writes a dense box (`uniform:` footprint), then `mmu build` for
legacysurvey_dr10_south, desi_dr1 and sim_truth_v1, and gaia_dr3 from a star-rich sim of the same
box (Gaia XP spectra sampled with GaiaXPy's bases), `mmu crossmatch` Legacy Survey x DESI and
`mmu export-wds`, each a separate driver process given `--scheduler` of a cluster made of one
`dask scheduler` process and N `dask worker` processes (no nanny, one thread each, so one PID is
one worker). A size given as `catalog:ROWS` skips the pixels: two catalog-only HATS catalogs of
ROWS objects each are matched (the stage whose driver used to hold every row).

Per stage it records: wall time, CPU seconds (driver + workers) per object, raw MB read per
second per worker (builds), peak RSS of the driver and of each worker (psutil, sampled every
0.1 s), and the 1-minute load average before and after. Results go to OUT/scale.json.

    python benchmarks/scale.py --sizes 200,2000,catalog:100000,catalog:1000000 --workers 2

`--speedup GALAXIES` measures one build (`--dataset`, default legacysurvey_dr10_south) on clusters
of 1 and 2 workers, back to back, in the order 1, 2, 2, 1 (`--repeat` runs of each), so that a
drift in the machine's load touches both counts alike. Each run gets a fresh cluster whose workers
have already imported the stack (a real cluster is long-lived: its start-up and imports are not
per-object costs) and a fresh hub. It reports each run's wall time, CPU seconds (driver + workers),
raw MB per CPU second, raw MB/s per worker and the load, and the speed-up (mean 1-worker wall /
mean 2-worker wall, and the ratio of each back-to-back pair) with the load next to it (before, after,
and its mean over the run). On a loaded machine wall times say little, so it also gives an estimate
from CPU seconds: driver CPU + the busiest worker's CPU, 1 worker vs 2 (what idle cores would give).
Results go to OUT/speedup.json.

    python benchmarks/scale.py --speedup 1000 --work /tmp/mmu-speedup [--set margin_threshold_arcsec=16]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

BOX = "uniform:150,{ra1},0,{dec1}"  # a square box; its side grows with the galaxy count
DENSITY_PER_DEG2 = 16000  # galaxies per square degree (dense: ~1 spectrum per coadd pixel row)
BUILDS = {"legacysurvey_dr10_south": "legacysurvey", "desi_dr1": "desi", "sim_truth_v1": "sim_truth"}
#: the Gaia build reads its own sim of the same box, star-rich to the XP limit (G < 17.65): about
#: 100,000 stars per deg² with 12 < r < 17.5 (Gaia DR3 averages ~5,000 XP spectra per deg², ten times
#: more in the plane), no TESS or HSC files
STAR_SIM = ["--set", "stars_per_deg2=100000", "star_r_range=[12.0, 17.5]", "tess_r_limit=0", "hsc_field_fraction=0",
            "qso_per_deg2=0"]


class Cluster:
    """`dask scheduler` + N `dask worker` processes, as on a real cluster."""

    def __init__(self, workers: int, work: Path, memory_limit: str):
        work.mkdir(parents=True, exist_ok=True)
        self.file = work / "scheduler.json"
        self.file.unlink(missing_ok=True)
        log = open(work / "cluster.log", "w")
        self.scheduler = subprocess.Popen(["dask", "scheduler", "--scheduler-file", str(self.file),
                                           "--port", "0", "--no-dashboard"], stdout=log, stderr=log)
        for _ in range(600):
            try:
                self.address = json.loads(self.file.read_text())["address"]
                break
            except (OSError, ValueError, KeyError):
                time.sleep(0.1)
        else:
            raise RuntimeError(f"dask scheduler did not start; see {work / 'cluster.log'}")
        self.workers = [subprocess.Popen(["dask", "worker", self.address, "--nthreads", "1", "--no-nanny",
                                          "--memory-limit", memory_limit, "--no-dashboard",
                                          "--local-directory", str(work / f"worker-{i}")],
                                         stdout=log, stderr=log) for i in range(workers)]
        from dask.distributed import Client
        with Client(self.address) as c:
            c.wait_for_workers(workers, timeout=120)

    def close(self):
        for p in self.workers + [self.scheduler]:
            p.terminate()
        for p in self.workers + [self.scheduler]:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()


class Sampler(threading.Thread):
    """Peak RSS of the driver (with its children) and of each worker, every 0.1 s; the 1-minute
    load average, every second (its mean over the stage is recorded next to the figures)."""

    def __init__(self, driver: psutil.Process, workers: list[psutil.Process]):
        super().__init__(daemon=True)
        self.driver, self.workers = driver, workers
        self.peak_driver = 0
        self.peak_workers = [0] * len(workers)
        self.loads: list[float] = []
        self.done = threading.Event()

    @staticmethod
    def _rss(p: psutil.Process, children: bool = False) -> int:
        try:
            procs = [p] + (p.children(recursive=True) if children else [])
            return sum(q.memory_info().rss for q in procs)
        except psutil.Error:
            return 0

    def run(self):
        tick = 0
        while not self.done.is_set():
            if tick % 10 == 0:
                self.loads.append(os.getloadavg()[0])
            tick += 1
            self.peak_driver = max(self.peak_driver, self._rss(self.driver, children=True))
            for i, w in enumerate(self.workers):
                self.peak_workers[i] = max(self.peak_workers[i], self._rss(w))
            time.sleep(0.1)


def _cpu(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def _warm_worker() -> None:
    """Import what a build task imports (run on every worker before a timed stage)."""
    import astropy.io.fits  # noqa: F401
    import astropy.wcs  # noqa: F401
    import hats_import.pipeline  # noqa: F401

    import mmu.builders  # noqa: F401
    import mmu.engine.build  # noqa: F401


def stage(name: str, cmd: list[str], cluster: Cluster, objects, raw_bytes: int = 0) -> dict:
    """Run one CLI driver; `objects` is a count or a function giving it once the stage is done."""
    workers = [psutil.Process(p.pid) for p in cluster.workers]
    load0 = os.getloadavg()[0]
    cpu0 = [_cpu([w]) for w in workers]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    driver = psutil.Process(proc.pid)
    sampler = Sampler(driver, workers)
    sampler.start()
    driver_cpu = 0.0
    while proc.poll() is None:  # the driver's own CPU, read while it is alive
        try:
            t = driver.cpu_times()
            driver_cpu = t.user + t.system + t.children_user + t.children_system
        except psutil.Error:
            pass
        time.sleep(0.1)
    out = proc.stdout.read()
    wall = time.perf_counter() - t0
    sampler.done.set()
    sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{name}: {' '.join(cmd)} failed:\n{out[-3000:]}")
    worker_cpu = [_cpu([w]) - c for w, c in zip(workers, cpu0)]
    cpu = driver_cpu + sum(worker_cpu)
    objects = objects() if callable(objects) else objects
    rec = {"stage": name, "command": " ".join(cmd), "wall_s": round(wall, 2), "objects": objects,
           "cpu_s": round(cpu, 2), "cpu_s_per_object": round(cpu / max(1, objects), 5),
           "cpu_s_driver": round(driver_cpu, 2), "cpu_s_workers": [round(c, 2) for c in worker_cpu],
           "peak_rss_driver_mb": round(sampler.peak_driver / 2**20, 1),
           "peak_rss_workers_mb": [round(x / 2**20, 1) for x in sampler.peak_workers],
           "load_before": round(load0, 2), "load_after": round(os.getloadavg()[0], 2),
           "load_mean": round(sum(sampler.loads) / max(1, len(sampler.loads)), 2)}
    if raw_bytes:
        rec["raw_mb"] = round(raw_bytes / 1e6, 2)
        rec["raw_mb_s_per_worker"] = round(raw_bytes / 1e6 / wall / len(workers), 3)
        rec["raw_mb_per_cpu_s"] = round(raw_bytes / 1e6 / max(cpu, 1e-9), 3)
    print(json.dumps(rec), flush=True)
    return rec


def _bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _rows(hub: Path, name: str) -> int:
    return json.loads((hub / name / "build.json").read_text())["rows"]["total"]


def run_pixels(galaxies: int, cluster: Cluster, work: Path) -> list[dict]:
    side = (galaxies / DENSITY_PER_DEG2) ** 0.5
    raw, hub, shards = work / "raw", work / "hub", work / "shards"
    for p in (hub, shards):
        shutil.rmtree(p, ignore_errors=True)
    sched = ["--scheduler", cluster.address, "--no-progress", "-q"]
    footprint = BOX.format(ra1=round(150 + side, 4), dec1=round(side, 4))
    recs = []
    if not (raw / "mmu-sim.json").exists():
        recs.append(stage("sim", ["mmu", "sim", "--galaxies", str(galaxies), "--transients", "0", "--seed", "3",
                                  "--footprint", footprint, "--out", str(raw)], cluster, galaxies))
    for name, sub in BUILDS.items():
        recs.append(stage(f"build {name}", ["mmu", "build", name, "--raw", str(raw), "--hub", str(hub), *sched],
                          cluster, lambda name=name: _rows(hub, name), _bytes(raw / sub)))
    stars = work / "raw-stars"
    if not (stars / "mmu-sim.json").exists():
        recs.append(stage("sim (stars)", ["mmu", "sim", "--galaxies", str(galaxies), "--transients", "0", "--seed",
                                          "3", "--footprint", footprint, "--out", str(stars), *STAR_SIM],
                          cluster, galaxies))
    recs.append(stage("build gaia_dr3", ["mmu", "build", "gaia_dr3", "--raw", str(stars), "--hub", str(hub), *sched],
                      cluster, lambda: _rows(hub, "gaia_dr3"), _bytes(stars / "gaia")))
    r = stage("crossmatch ls x desi", ["mmu", "crossmatch", "legacysurvey_dr10_south", "desi_dr1", "--hub",
                                       str(hub), "--name", "scale_ls_desi", *sched],
              cluster, _rows(hub, "legacysurvey_dr10_south"))
    recs.append(r)
    pairs = _rows(hub, "scale_ls_desi")
    recs.append(stage("export-wds", ["mmu", "export-wds", "scale_ls_desi", "--hub", str(hub), "--out", str(shards),
                                     "--split", "train", "--overwrite", *sched], cluster, pairs))
    for r in recs:
        r["size"] = f"{galaxies} galaxies"
        r["footprint"] = footprint
    return recs


CATALOG_DRIVER = """
import sys, dask
from pathlib import Path
sys.path.insert(0, {tests!r})
from dask.distributed import Client
from mmu.pairing.crossmatch import _Input, match_pairs
hub = Path({hub!r})
with Client({address!r}) as client, dask.config.set(scheduler=client):
    stats, _ = match_pairs(hub, [_Input("left", "l", None), _Input("right", "r", None)], 1.0, "nearest", 4.0,
                           (), False, hub / "pairs")
print(stats["rows"])
"""


def run_catalog(rows: int, cluster: Cluster, work: Path) -> list[dict]:
    """Two catalog-only HATS catalogs of `rows` objects, then the crossmatch driver alone."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from test_scale_driver import make_pair

    hub = work / "hub"
    if not (hub / "right" / "hats.properties").exists() and not (hub / "right").exists():
        t0 = time.perf_counter()
        make_pair(hub, rows)
        print(json.dumps({"catalogs_written_s": round(time.perf_counter() - t0, 1), "rows": rows}), flush=True)
    shutil.rmtree(hub / "pairs", ignore_errors=True)
    code = CATALOG_DRIVER.format(tests=str(Path(__file__).resolve().parents[1] / "tests"), hub=str(hub),
                                 address=cluster.address)
    r = stage("crossmatch catalog-only", [sys.executable, "-c", code], cluster, rows)
    r["command"] = "python -c CATALOG_DRIVER (benchmarks/scale.py: match_pairs on the cluster)"
    r["size"] = f"catalog-only {rows} x {rows}"
    return [r]


def run_speedup(galaxies: int, dataset: str, repeat: int, work: Path, memory_limit: str,
                settings: list[str] | None = None) -> dict:
    """One dataset's build on 1 and 2 workers, back to back (1, 2, 2, 1 per pair of repeats)."""
    from dask.distributed import Client

    side = (galaxies / DENSITY_PER_DEG2) ** 0.5
    footprint = BOX.format(ra1=round(150 + side, 4), dec1=round(side, 4))
    raw, hub = work / "raw", work / "hub"
    sub = BUILDS[dataset]
    runs = []
    if not (raw / "mmu-sim.json").exists():
        t0 = time.perf_counter()
        subprocess.run(["mmu", "sim", "--galaxies", str(galaxies), "--transients", "0", "--seed", "3",
                        "--footprint", footprint, "--out", str(raw), "--no-progress", "-q"], check=True)
        print(json.dumps({"sim_s": round(time.perf_counter() - t0, 1), "footprint": footprint}), flush=True)
    order = [1, 2, 2, 1] * (repeat // 2) + [1, 2] * (repeat % 2)
    for n in order:
        cluster = Cluster(n, work / f"cluster-{n}", memory_limit)
        try:
            with Client(cluster.address) as c:
                c.run(_warm_worker)
            shutil.rmtree(hub, ignore_errors=True)
            r = stage(f"build {dataset}", ["mmu", "build", dataset, "--raw", str(raw), "--hub", str(hub),
                                           "--scheduler", cluster.address, "--no-progress", "-q",
                                           *(["--set", *settings] if settings else [])],
                      cluster, lambda: _rows(hub, dataset), _bytes(raw / sub))
            manifest = json.loads((hub / dataset / "build.json").read_text())
            r.update(workers=n, size=f"{galaxies} galaxies", footprint=footprint,
                     timings_s=manifest.get("timings_s"), content_revision=manifest.get("content_revision"))
            runs.append(r)
        finally:
            cluster.close()
    walls = {n: [r["wall_s"] for r in runs if r["workers"] == n] for n in (1, 2)}
    mean = {n: sum(v) / len(v) for n, v in walls.items()}
    # what idle cores would give: the driver's CPU (imports and hats-import's planning run between the
    # workers' stages) plus the busiest worker's CPU. Stalls while a stage waits for its last task are
    # not counted (they lower the speed-up); driver CPU that overlaps the workers (its event loop) is
    # counted as serial (it raises it). Unlike the wall times it hardly depends on the machine's load.
    busy = {n: [r["cpu_s_driver"] + max(r["cpu_s_workers"]) for r in runs if r["workers"] == n] for n in (1, 2)}
    busy_mean = {n: sum(v) / len(v) for n, v in busy.items()}
    summary = {"dataset": dataset, "size": f"{galaxies} galaxies", "footprint": footprint, "order": order,
               "settings": settings or [],
               "wall_s": walls, "speedup_1_to_2": round(mean[1] / mean[2], 3),
               "pairs": [round(a / b, 3) for a, b in zip(walls[1], walls[2])],
               "driver_plus_busiest_worker_cpu_s": busy,
               "speedup_estimate_idle_cores": round(busy_mean[1] / busy_mean[2], 3),
               "cpu_s": {n: [r["cpu_s"] for r in runs if r["workers"] == n] for n in (1, 2)},
               "raw_mb_per_cpu_s": {n: [r["raw_mb_per_cpu_s"] for r in runs if r["workers"] == n] for n in (1, 2)},
               "load_mean": {n: [r["load_mean"] for r in runs if r["workers"] == n] for n in (1, 2)},
               "load": [[r["load_before"], r["load_after"]] for r in runs],
               "same_content": len({r["content_revision"] for r in runs}) == 1}
    print(json.dumps(summary), flush=True)
    return {"runs": runs, "summary": summary}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="200,2000,catalog:100000,catalog:1000000",
                   help="galaxy counts, or catalog:ROWS for a catalog-only crossmatch")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--memory-limit", default="4GiB", help="per dask worker")
    p.add_argument("--work", default="/tmp/mmu-scale")
    p.add_argument("--speedup", type=int, metavar="GALAXIES",
                   help="instead of --sizes: one build at this size on 1 and 2 workers, back to back")
    p.add_argument("--dataset", default="legacysurvey_dr10_south", choices=sorted(BUILDS),
                   help="the build --speedup measures")
    p.add_argument("--repeat", type=int, default=2, help="--speedup runs per worker count (order 1,2,2,1)")
    p.add_argument("--set", nargs="+", metavar="KEY=VALUE", dest="settings",
                   help="--speedup: partitioning settings passed to the build, e.g. margin_threshold_arcsec=16")
    args = p.parse_args()
    work = Path(args.work)
    machine = {"cpus": os.cpu_count(), "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
               "python": sys.version.split()[0], "workers": args.workers}
    if args.speedup:
        if args.repeat < 1:
            p.error(f"--repeat must be at least 1, not {args.repeat}")
        result = run_speedup(args.speedup, args.dataset, args.repeat, work, args.memory_limit, args.settings)
        (work / "speedup.json").write_text(json.dumps({"machine": machine, **result}, indent=1))
        print(f"wrote {work / 'speedup.json'}")
        return
    cluster = Cluster(args.workers, work / "cluster", args.memory_limit)
    results = []
    try:
        for size in args.sizes.split(","):
            try:  # a size that fails is a result too: what fails first, and where
                if size.startswith("catalog:"):
                    n = int(size.split(":")[1])
                    results += run_catalog(n, cluster, work / f"catalog-{n}")
                else:
                    results += run_pixels(int(size), cluster, work / f"pixels-{size}")
            except RuntimeError as e:
                results.append({"size": size, "error": str(e)[-1500:]})
                print(json.dumps(results[-1]), flush=True)
            (work / "scale.json").write_text(json.dumps({"machine": machine, "stages": results}, indent=1))
    finally:
        cluster.close()
    print(f"wrote {work / 'scale.json'}")


if __name__ == "__main__":
    main()
