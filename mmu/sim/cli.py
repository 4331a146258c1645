"""`mmu sim`: write a mock universe in the real survey file formats (the embedded default data).

`mmu.cli` calls `register`; `python -m mmu.sim` (`main`) works on its own with the same options.
"""
from __future__ import annotations

import argparse

HELP = """\
Draw a mock universe (galaxies, stars, quasars, transients) and observe it with mock versions of
the Legacy Survey (DR10 coadd bricks + tractor catalogs), DESI (DR1 healpix coadd + redrock
files), SDSS (DR17 spec-PLATE-MJD-FIBER files), PLAsTiCC (light-curve + metadata CSV), Gaia DR3
(XpContinuousMeanSpectrum, GaiaSource and AstrophysicalParameters ECSV .csv.gz files: every
star, XP spectra to G < 17.65), TESS SPOC (a 2-minute light-curve FITS file per star and sector
for the stars with r < tess_r_limit, with their variability: RR Lyrae, eclipsing binaries,
rotators) and HSC PDR3 Wide (grizy calexp coadd patches of a fraction hsc_field_fraction of the
fields, and a catalogue query), writing the same raw file formats and paths as the real
archives, plus a truth catalog (RAW/sim_truth/) and a manifest (RAW/mmu-sim.json) that marks the
data as mock. The same seed gives the same bytes.

examples:
  mmu sim --out raw --galaxies 1000 --transients 100 --seed 0
  mmu sim --out raw --galaxies 200 --transients 20 --seed 1 --footprint fields:6 --workers 1
  mmu sim --out raw --galaxies 5000 --transients 0 --seed 2 --footprint uniform:150,152,0,2
  mmu sim --out raw --galaxies 200 --set zeropoint_rms_mag=0.05 "psf_fwhm_arcsec=[1.4,1.3,1.2,1.1]"
  mmu sim --out raw --galaxies 200 --transients 0 --seed 3 --set stars_per_deg2=60000 \\
      "star_r_range=[12.0,17.5]" tess_r_limit=16.5 hsc_field_fraction=0.0     # star-rich: Gaia x TESS
then build the hub from it, e.g.:  mmu build legacysurvey_dr10_south --raw raw --hub hub
(the datasets: legacysurvey_dr10_south, desi_dr1, sdss_dr17, plasticc_2018, gaia_dr3, tess_spoc,
hsc_pdr3_wide, and the truth sim_truth_v1, sim_truth_stars_v1, sim_truth_qsos_v1)
"""


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = HELP
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--out", required=True, metavar="RAW", help="output folder for the raw survey files")
    parser.add_argument("--galaxies", type=int, default=1000, metavar="N", help="number of galaxies (default 1000)")
    parser.add_argument("--transients", type=int, default=100, metavar="M",
                        help="number of transients and variables (default 100)")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default 0)")
    parser.add_argument("--footprint", default="fields:auto",
                        help="'fields:N' = N small fields > 5 deg apart (each in its own HEALPix order-4 cell, "
                             "so train/val/test splits all get data), 'fields:auto' (default: N from the "
                             "number of galaxies), or 'uniform:RA0,RA1,DEC0,DEC1' (a box, degrees)")
    parser.add_argument("--workers", type=int, default=None, metavar="K",
                        help="Dask worker processes (default: 1 below 2000 galaxies, else up to 4); "
                             "the output does not depend on K")
    parser.add_argument("--set", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                        help="override simulation parameters (SimConfig fields, see docs/sim.md); each "
                             "value is read as YAML, e.g. --set zeropoint_rms_mag=0.05 z_max=1.2")


def register(sub) -> None:
    p = sub.add_parser("sim", help="write a mock universe in real survey file formats")
    configure_parser(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import os

    from mmu.cli.common import UsageError, require_extra

    require_extra("sim", "mmu sim")
    from mmu.logs import progress_bars_enabled
    from mmu.overrides import OverrideError, parse_overrides
    from mmu.sim import simulate
    from mmu.sim.config import SimConfig

    try:
        config = parse_overrides(args.set)
    except OverrideError as e:
        raise UsageError(f"--set: {e}") from None
    try:
        SimConfig.from_overrides(config)  # an unknown parameter fails here, before RAW is made
    except (ValueError, TypeError) as e:
        raise UsageError(f"--set: {e}") from None
    workers = args.workers
    if workers is None:
        workers = 1 if args.galaxies < 2000 else max(1, min(4, os.cpu_count() or 1))
    try:
        manifest = simulate(args.out, galaxies=args.galaxies, transients=args.transients, seed=args.seed,
                            footprint=args.footprint, workers=workers, progress=progress_bars_enabled(),
                            config=config)
    except ValueError as err:  # an unknown parameter, a bad footprint: the command line's fault
        raise UsageError(str(err)) from None
    c, f = manifest["counts"], manifest["files"]
    print(f"mmu sim: wrote {manifest['files']['total_files']} files ({manifest['files']['total_bytes'] / 1e6:.1f} MB) "
          f"to {args.out}: {c['galaxies']} galaxies in {c['fields_or_cells']} fields, {c['stars']} stars, "
          f"{c['qsos']} quasars, "
          f"{manifest['files']['legacysurvey_bricks']} Legacy Survey bricks, {c['desi_spectra']} DESI spectra "
          f"({c['desi_targets']} targets), {c['sdss_spectra']} SDSS spectra, {c['transients']} light curves, "
          f"{f.get('gaia_files', 0)} Gaia files, {f.get('tess_files', 0)} TESS light curves "
          f"({c.get('tess_stars', 0)} stars), {f.get('hsc_patch_files', 0)} HSC patch files; "
          f"mock seed {manifest['seed']}")
    return 0


def main(argv=None) -> int:
    """`python -m mmu.sim ...`: the same options and exit codes as `mmu sim`."""
    from mmu.cli.common import add_global_options, run_main

    parser = argparse.ArgumentParser(prog="mmu sim")
    configure_parser(parser)
    add_global_options(parser)
    parser.set_defaults(func=run)
    return run_main(parser, argv)
