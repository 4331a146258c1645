"""Whole-build CPU per DESI spectrum: `mmu build desi_dr1` vs the Multimodal Universe v1 path
(../shared/anchors/mmu_v1_desi.py) on the same raw files, back to back (issue 15).

    python benchmarks/desi_vs_anchor.py RAW [RAW2 ...] [--repeat 2] [--modes default,workers1]
        [--baseline-tree DIR] [--anchor-script PATH] [--work DIR]

RAW holds DESI healpix coadd + redrock files at survey density (>= 500 spectra per coadd), e.g.

    mmu sim --out RAW --galaxies 8000 --transients 0 --seed 3 \\
        --footprint uniform:150.27,150.67,0.4,0.8 --workers 1 \\
        --set pixscale_arcsec=1.0 crop_pad_pix=8 hsc_field_fraction=0 sdss_field_fraction=0 \\
              boss_field_fraction=0

(one HEALPix pixel, 4 coadds of 601-923 spectra, 3,004 in all; the overrides only shrink what the
DESI build does not read: coarser Legacy Survey pixels and no HSC or SDSS files).

Each run is a child process; its CPU is user + sys of the child and of every process it waited
for (`getrusage(RUSAGE_CHILDREN)`: what `/usr/bin/time` reports, Dask worker processes included),
with the wall time and the 1-minute load average before and after. Modes:
  * `anchor`   : `python mmu_v1_desi.py RAW OUT` (desispec read_spectra + coadd_cameras + LSF fit +
                 one HDF5 file per pixel + the generator read-back), always run;
  * `default`  : `mmu build desi_dr1 --raw RAW --hub HUB --no-progress` (below 2 GiB of raw files:
                 2 threads of the command's process);
  * `workers1` : the same with `--workers 1` (one Dask worker process);
  * `workers2` : the same with `--workers 2`.
Every build gets a fresh hub. With `--baseline-tree DIR` (a checkout or export of another version
of this repository) each `mmu` mode also runs from DIR (`PYTHONPATH=DIR`), in the same round, so
the two versions see the same load. Runs are interleaved over `--repeat` rounds; the table gives
the median per mode and the ratios to the anchor. Content revisions of the builds are printed: a
version that changes them changes the rows.

Several RAW folders (smallest first, e.g. a subset of one box's coadds and the whole box) also give
the **marginal** CPU per spectrum of each run between the first and the last: (CPU(last) -
CPU(first)) / (spectra(last) - spectra(first)), which leaves out what a build pays once whatever
its size (interpreter, imports, a Dask client, the manifest), i.e. the cost per spectrum of a
survey-sized build. A subset box: symlink some of the box's `healpix/<survey>/<program>` folders:

    python benchmarks/desi_vs_anchor.py RAW_HALF RAW --repeat 2 --modes default

Not a test: the numbers depend on the machine and its load (printed).
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ANCHOR = REPO.parent / "shared" / "anchors" / "mmu_v1_desi.py"
MODES = {"default": [], "workers1": ["--workers", "1"], "workers2": ["--workers", "2"]}


def spectra_per_coadd(raw: Path) -> dict[str, int]:
    from astropy.io import fits

    out = {}
    for f in sorted(glob.glob(str(raw / "**" / "coadd-*.fits"), recursive=True)):
        with fits.open(f) as h:
            out[Path(f).name] = int(h["FIBERMAP"].header["NAXIS2"])
    return out


def run_child(cmd: list[str], env: dict | None = None, cwd: Path | None = None) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode:
        raise SystemExit(f"failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr[-3000:]}")
    return {"user": after.ru_utime - before.ru_utime, "sys": after.ru_stime - before.ru_stime,
            "cpu": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
            "wall": wall, "load": (round(load0, 2), round(os.getloadavg()[0], 2)), "stdout": p.stdout}


def build_cmd(raw: Path, hub: Path, mode: str) -> list[str]:
    return [sys.executable, "-m", "mmu", "build", "desi_dr1", "--raw", str(raw), "--hub", str(hub),
            "--no-progress", *MODES[mode]]


def marginal(raws: list[Path], spectra: dict, coadds: dict, median: dict) -> None:
    """Print each run's CPU per spectrum beyond what it pays once, the slope between the first
    and the last folder: (CPU(last) - CPU(first)) / (spectra(last) - spectra(first)). It includes
    the added coadd files' own costs (opening them, their wavelength grids), at the folders' density."""
    lo, hi = raws[0], raws[-1]
    dn = spectra[hi] - spectra[lo]
    print(f"\nmarginal CPU per spectrum, {spectra[lo]} spectra in {coadds[lo]} coadds -> {spectra[hi]} in "
          f"{coadds[hi]} (medians)")
    print(f"{'run':<22} {'ms/spectrum':>12} {'/ anchor':>9} {'fixed CPU s':>12}")
    slope = {w: (median[hi, w] - median[lo, w]) / dn for (raw, w) in median if raw == lo and (hi, w) in median}
    for w, m in slope.items():
        print(f"{w:<22} {1e3 * m:>12.2f} {m / slope['anchor']:>9.3f} {median[lo, w] - m * spectra[lo]:>12.2f}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("raw", type=Path, nargs="+", help="raw folder(s); several: smallest first (marginal cost)")
    ap.add_argument("--repeat", type=int, default=2, help="rounds (each runs every mode once)")
    ap.add_argument("--modes", default="default,workers1", help="mmu build modes: default, workers1, workers2")
    ap.add_argument("--baseline-tree", type=Path, help="also run each mode from this tree (PYTHONPATH)")
    ap.add_argument("--anchor-script", type=Path, default=ANCHOR)
    ap.add_argument("--work", type=Path, help="scratch folder for hubs and the anchor's HDF5 (default: a temp dir)")
    ap.add_argument("--json", type=Path, help="also write the runs here")
    args = ap.parse_args(argv)
    raws = [r.resolve() for r in args.raw]
    modes = [m for m in args.modes.split(",") if m]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise SystemExit(f"--modes: unknown {', '.join(unknown)}; known: {', '.join(MODES)}")
    if not args.anchor_script.is_file():
        raise SystemExit(f"--anchor-script {args.anchor_script}: not a file")
    per_coadd = {raw: spectra_per_coadd(raw) for raw in raws}
    for raw, counts in per_coadd.items():
        if not counts:
            raise SystemExit(f"{raw}: no coadd-*.fits files")
    spectra = {raw: sum(c.values()) for raw, c in per_coadd.items()}
    if len(raws) > 1 and len(set(spectra.values())) < len(raws):
        raise SystemExit(f"the raw folders must hold different numbers of spectra (got {list(spectra.values())})")
    work = Path(args.work or tempfile.mkdtemp(prefix="desi-vs-anchor-"))
    work.mkdir(parents=True, exist_ok=True)
    # every child runs in `work`, so the tree on PYTHONPATH is the one imported (`python -m` puts the
    # working directory first on sys.path: run from a checkout, that checkout would win)
    trees = {"this": REPO}
    if args.baseline_tree:
        trees["baseline"] = args.baseline_tree.resolve()
    env_of = {name: {**os.environ, "PYTHONPATH": str(tree), "MMU_NO_PROGRESS": "1"} for name, tree in trees.items()}
    for name, env in env_of.items():  # which checkout each child imports
        where = subprocess.run([sys.executable, "-c", "import mmu; print(mmu.__file__)"], env=env, cwd=work,
                               capture_output=True, text=True, check=True).stdout.strip()
        print(f"{name}: {where}")
    runs: list[dict] = []
    for rnd in range(args.repeat):
        for raw in raws:
            tag = f" [{raw.name}]" if len(raws) > 1 else ""
            out = work / "anchor-out"
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
            r = run_child([sys.executable, str(args.anchor_script), str(raw), str(out)], cwd=work)
            runs.append({"round": rnd, "raw": str(raw), "what": "anchor", **r})
            print(f"round {rnd}{tag} anchor: {r['cpu']:.2f} CPU s, {r['wall']:.1f} s wall, load {r['load']}",
                  flush=True)
            for mode in modes:
                for tree, env in env_of.items():
                    hub = work / f"hub-{tree}-{mode}"
                    shutil.rmtree(hub, ignore_errors=True)
                    r = run_child(build_cmd(raw, hub, mode), env, cwd=work)
                    rev = json.loads((hub / "desi_dr1" / "build.json").read_text())
                    r["content_revision"] = rev.get("content_revision", "")[:16]
                    r["rows"] = rev.get("rows", {}).get("total")
                    runs.append({"round": rnd, "raw": str(raw), "what": f"{tree}:{mode}", **r})
                    print(f"round {rnd}{tag} {tree}:{mode}: {r['cpu']:.2f} CPU s ({r['user']:.2f} user + "
                          f"{r['sys']:.2f} sys), {r['wall']:.1f} s wall, load {r['load']}, rows {r['rows']}, "
                          f"content {r['content_revision']}", flush=True)
                    shutil.rmtree(hub, ignore_errors=True)
    shutil.rmtree(work / "anchor-out", ignore_errors=True)
    median = {}
    for raw in raws:
        n, counts = spectra[raw], per_coadd[raw]
        mine = [r for r in runs if r["raw"] == str(raw)]
        print(f"\n{raw}: {n} spectra in {len(counts)} coadds ({min(counts.values())}-{max(counts.values())} "
              f"per coadd); {args.repeat} round(s); {os.cpu_count()} CPUs; Python {sys.version.split()[0]}")
        anchor = statistics.median(r["cpu"] for r in mine if r["what"] == "anchor")
        print(f"{'run':<22} {'CPU s (median)':>14} {'wall s':>8} {'ms/spectrum':>12} {'/ anchor':>9}  load (1 min)")
        for what in dict.fromkeys(r["what"] for r in mine):
            rs = [r for r in mine if r["what"] == what]
            cpu = median[raw, what] = statistics.median(r["cpu"] for r in rs)
            wall = statistics.median(r["wall"] for r in rs)
            loads = [x for r in rs for x in r["load"]]
            print(f"{what:<22} {cpu:>14.2f} {wall:>8.1f} {1e3 * cpu / n:>12.2f} {cpu / anchor:>9.3f}  "
                  f"{min(loads):.1f}-{max(loads):.1f}")
    if len(raws) > 1:
        marginal(raws, spectra, {raw: len(c) for raw, c in per_coadd.items()}, median)
    if args.json:
        args.json.write_text(json.dumps([{k: v for k, v in r.items() if k != "stdout"} for r in runs], indent=1))


if __name__ == "__main__":
    main()
