"""DESI reader CPU per spectrum: the `desi` builder's read path vs the Multimodal Universe v1
anchor's (../shared/anchors/mmu_v1_desi.py) on the same coadd files, in one run (issue 15).

    python benchmarks/desi_reader_profile.py RAW [--repeat 3] [--profile 25] [--anchor-script PATH]
        [--build]

RAW holds DESI healpix coadd + redrock files, e.g. from
`mmu sim --galaxies 8000 --transients 0 --seed 3 --footprint uniform:150.27,150.67,0.4,0.8 --out RAW
--set pixscale_arcsec=1.0 crop_pad_pix=8 hsc_field_fraction=0 sdss_field_fraction=0 boss_field_fraction=0`
(one HEALPix pixel, 4 coadds of 601-923 spectra: survey density; the overrides only shrink files
the DESI build does not read). The whole command against the anchor, with `/usr/bin/time`'s
accounting, is benchmarks/desi_vs_anchor.py.

It measures CPU seconds (`time.process_time`, all threads of this process), the best of
`--repeat` runs, per spectrum:
  * `builder read`: `Desi.list_inputs` + `Desi.read` of every input, every Arrow chunk built
    (rows only; what the engine's standardize step calls, outside Dask);
  * `engine standardize`: `mmu.engine.build.standardize_input` on every input in this process
    (the read plus the engine's conform, validation, digests and Parquet write; no Dask);
  * `anchor read path`: the anchor's per-file loop in this process (desispec.io.read_spectra,
    coaddition.coadd_cameras, the Gaussian LSF fit, the HEALPix grouping), without its HDF5
    write and read-back;
  * `anchor script`: the anchor script itself, run once as a subprocess (CPU of the child:
    the whole MMU v1 path, HDF5 write and the generator read included);
  * with `--build`: `mmu build desi_dr1 --workers 1` as a subprocess (CPU of it and its
    Dask worker processes), the whole build.
Ratios are builder / anchor. `--profile N` prints cProfile's top N functions (by own time) of
one builder read. Not a test: the numbers depend on the machine and its load (printed).
"""
from __future__ import annotations

import argparse
import cProfile
import glob
import os
import pstats
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ANCHOR = REPO.parent / "shared" / "anchors" / "mmu_v1_desi.py"


def builder_read(raw: Path) -> int:
    from mmu.engine.builder import Rejection, get_builder

    b = get_builder("desi")()
    n = 0
    for item in b.list_inputs(raw):
        for part in b.read(item):
            if not isinstance(part, Rejection):
                n += part.num_rows
    return n


def standardize(raw: Path) -> int:
    """The engine's per-input step (`mmu.engine.build.standardize_input`: read, conform, validate,
    digests, Parquet write) on every input, in this process, into a fresh folder."""
    from mmu.engine.build import standardize_input
    from mmu.engine.builder import get_builder
    from mmu.model.splits import SplitDefinition

    b = get_builder("desi")()
    split = SplitDefinition().as_dict()
    n = 0
    with tempfile.TemporaryDirectory() as out:
        for item in b.list_inputs(raw):
            n += standardize_input("desi", b.options(), item, out, split)["rows"]
    return n


def anchor_read_path(raw: Path) -> int:
    """The anchor's per-file loop (mmu_v1_desi.py, up to its HDF5 write), unchanged in substance."""
    import healpy
    import numpy as np
    from desispec import coaddition
    from desispec.io import read_spectra
    from scipy.optimize import curve_fit

    def gauss(x, a, x0, s):
        return a * np.exp(-(x - x0) ** 2 / (2 * s ** 2))

    files = sorted(glob.glob(os.path.join(raw, "**", "coadd-*.fits"), recursive=True))
    n, per_pix = 0, {}
    for f in files:
        sp = read_spectra(f)
        co = coaddition.coadd_cameras(sp)
        res = co.resolution_data["brz"].astype(np.float32)
        prof = res.mean(axis=-1).mean(axis=0)
        try:
            sigma = curve_fit(gauss, np.arange(prof.size), prof, p0=[1, prof.size // 2, 1])[0][2]
        except RuntimeError:
            sigma = np.nan
        fm = co.fibermap
        pix = healpy.ang2pix(16, np.asarray(fm["TARGET_RA"]), np.asarray(fm["TARGET_DEC"]), lonlat=True, nest=True)
        for p in np.unique(pix):
            sel = pix == p
            d = per_pix.setdefault(int(p), {k: [] for k in ("object_id", "ra", "dec", "flux", "ivar", "lsf")})
            d["object_id"].append(np.asarray(fm["TARGETID"])[sel])
            d["ra"].append(np.asarray(fm["TARGET_RA"])[sel])
            d["dec"].append(np.asarray(fm["TARGET_DEC"])[sel])
            d["flux"].append(co.flux["brz"][sel].astype(np.float32))
            d["ivar"].append(co.ivar["brz"][sel].astype(np.float32))
            d["lsf"].append(np.full(sel.sum(), sigma, np.float32))
        n += len(fm)
    return n


def cpu(fn, *args, repeat: int = 1) -> tuple[int, float]:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.process_time()
        n = fn(*args)
        best = min(best, time.process_time() - t0)
    return n, best


def child_cpu(cmd: list[str], env: dict | None = None) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("raw", type=Path)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--profile", type=int, default=0, help="print cProfile's top N of one builder read")
    ap.add_argument("--anchor-script", type=Path, default=ANCHOR)
    ap.add_argument("--build", action="store_true", help="also time `mmu build desi_dr1 --workers 1`")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    os.environ.setdefault("DESI_LOGLEVEL", "WARNING")
    import numpy as np  # noqa: F401  (imports before timing)

    import mmu.builders  # noqa: F401

    builder_read(args.raw)  # warm: imports, page cache
    anchor_read_path(args.raw)
    load0 = os.getloadavg()
    n_b, t_b = cpu(builder_read, args.raw, repeat=args.repeat)
    n_a, t_a = cpu(anchor_read_path, args.raw, repeat=args.repeat)
    n_s, t_s = cpu(standardize, args.raw, repeat=args.repeat)
    rows = [("builder read (Desi.read, every chunk)", n_b, t_b), ("engine standardize (no Dask)", n_s, t_s),
            ("anchor read path (in process)", n_a, t_a)]
    if args.anchor_script.exists():
        with tempfile.TemporaryDirectory() as out:
            t_anchor = child_cpu([sys.executable, str(args.anchor_script), str(args.raw), out])
        rows.append(("anchor script (whole MMU v1 path)", n_a, t_anchor))
    if args.build:
        with tempfile.TemporaryDirectory() as hub:
            env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
            t_build = child_cpu([sys.executable, "-m", "mmu", "-q", "build", "desi_dr1", "--raw", str(args.raw),
                                 "--hub", hub, "--workers", "1"], env)
        rows.append(("mmu build desi_dr1 --workers 1", n_b, t_build))
    load1 = os.getloadavg()
    print(f"DESI files under {args.raw}: {len(glob.glob(str(args.raw / '**/coadd-*.fits'), recursive=True))} "
          f"coadds; builder rows {n_b}, anchor spectra {n_a}; best of {args.repeat} (in-process rows)")
    print(f"{'path':<40} {'spectra':>8} {'CPU s':>8} {'ms/spectrum':>12}")
    for name, n, t in rows:
        print(f"{name:<40} {n:>8} {t:>8.2f} {1e3 * t / max(n, 1):>12.3f}")
    per = {name: t / max(n, 1) for name, n, t in rows}
    b = per["builder read (Desi.read, every chunk)"]
    print(f"ratio builder read / anchor read path: {b / per['anchor read path (in process)']:.3f}")
    if "anchor script (whole MMU v1 path)" in per:
        print(f"ratio builder read / anchor script:    {b / per['anchor script (whole MMU v1 path)']:.3f}")
        print(f"ratio standardize / anchor script:     "
              f"{per['engine standardize (no Dask)'] / per['anchor script (whole MMU v1 path)']:.3f}")
        if "mmu build desi_dr1 --workers 1" in per:
            print(f"ratio mmu build / anchor script:       "
                  f"{per['mmu build desi_dr1 --workers 1'] / per['anchor script (whole MMU v1 path)']:.3f}")
    print(f"load average before {load0[0]:.1f}, after {load1[0]:.1f}; {os.cpu_count()} CPUs; "
          f"Python {sys.version.split()[0]}")
    if args.profile:
        prof = cProfile.Profile()
        prof.runcall(builder_read, args.raw)
        pstats.Stats(prof).sort_stats("tottime").print_stats(args.profile)


if __name__ == "__main__":
    main()
