"""`mmu fetch`: download real archive files with the dataset's builder (Builder.fetch)."""
from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path

from mmu.cli.common import require_extra

#: per builder: what `--limit N` takes, and roughly how big a download is (printed at the start)
FETCH_NOTES = {
    "legacysurvey": ("the first N of --bricks", "roughly 0.1-0.2 GB per brick"),
    "desi": ("N HEALPix pixels", "about 0.5 MB per target spectrum, tens of MB to ~1 GB per pixel"),
    "sdss": ("N spectra", "about 0.2 MB per spec-lite file"),
    "plasticc": ("the training set only", "training set: tens of MB; everything: about 20 GB of CSV"),
    "tess": ("N stars (TIC ids, in the first sector's script order) with their files in every configured sector",
             "about 2 MB per star and sector; ~40 GB per sector"),
    "hsc": ("the first N of --patches", "about 1 GB per patch (5 bands x ~200 MB)"),
    "gaia": ("N HEALPix-range XP files (with their GaiaSource and AstrophysicalParameters files)",
             "roughly 1-2 GB per range (XP ~1 GB, gaia_source ~0.2 GB, astrophysical_parameters ~0.1 GB)"),
}

FETCH_HELP = """\
Download real survey files from the public archive into RAW, in the directory layout the
dataset's builder reads, so that the next step is

    mmu build NAME --raw RAW --hub HUB

Downloads resume: finished files are skipped, and a file cut off mid-way (NAME.part) continues
from where it stopped with an HTTP Range request. Rerun the same command after an interruption.
The archives hold tens to hundreds of TB: start with --limit.

what each dataset downloads (RAW layout; what one --limit unit is; size):
  legacysurvey_dr10_south  portal.nersc.gov/cfs/cosmo/data/legacysurvey/dr10/south/
      -> RAW/legacysurvey/dr10/south/{tractor,coadd}/...; --limit N = the first N of --bricks
      per 0.25 x 0.25 deg brick: tractor catalogue, maskbits, image + invvar in g,r,i,z
      (roughly 0.1-0.2 GB). Brick names (e.g. 0001m002) come from the DR10 survey-bricks
      table or the viewer (legacysurvey.org/viewer); a brick missing from the archive is
      skipped with a note.
  desi_dr1                 data.desi.lbl.gov/public/dr1/spectro/redux/iron/healpix/
      -> RAW/desi/dr1/spectro/redux/iron/healpix/SURVEY/PROGRAM/GROUP/PIX/{coadd,redrock}-*.fits;
      --limit N = N HEALPix pixels (coadd + redrock each); about 0.5 MB per target spectrum,
      tens of MB to ~1 GB per pixel
  sdss_dr17                data.sdss.org/sas/dr17/sdss/spectro/redux/26/spectra/lite/
      -> RAW/sdss/dr17/spectra/PLATE/spec-PLATE-MJD-FIBER.fits; --limit N = N spectra
      (about 0.2 MB each). --run2d picks the reduction: 26 (default), 103, 104 are the
      SDSS-I/II spectra (HDU SPECOBJ); v5_13_2 the BOSS/eBOSS spectra (HDU SPALL), from
      .../sas/dr17/eboss/... into RAW/sdss/dr17/eboss/spectro/redux/v5_13_2/spectra/lite/PLATE/
  plasticc_2018            zenodo.org/records/2539456
      -> RAW/plasticc/plasticc_{train,test}_*.csv.gz; with --limit (any N) the training set
      only (tens of MB); without, also the 11 test light-curve files (about 20 GB of CSV)
  gaia_dr3                 cdn.gea.esa.int/Gaia/gdr3/
      -> RAW/gaia/gdr3/Spectroscopy/xp_continuous_mean_spectrum/XpContinuousMeanSpectrum_LO-HI.csv.gz,
      RAW/gaia/gdr3/gaia_source/GaiaSource_LO-HI.csv.gz and RAW/gaia/gdr3/Astrophysical_parameters/
      astrophysical_parameters/AstrophysicalParameters_LO-HI.csv.gz (LO-HI: a HEALPix level-8
      pixel range); --limit N = the first N XP files, each with the gaia_source and
      astrophysical_parameters files of its range (roughly 1-2 GB per range; 3386 ranges)
  tess_spoc                archive.stsci.edu/missions/tess/
      -> RAW/tess/download_scripts/sector/tesscurl_sector_N_lc.sh and
      RAW/tess/tid/sSSSS/TTTT/TTTT/TTTT/TTTT/tess*-sSSSS-TIC16-*-s_lc.fits for the sectors in
      builder_config.sectors (default 1-3); --limit N = N stars with all their sectors
      (about 2 MB per star and sector)
  hsc_pdr3_wide            hsc-release.mtk.nao.ac.jp/archive/filetree/pdr3_wide/  (needs a PDR3 account)
      -> RAW/hsc/pdr3_wide/deepCoadd-results/FILTER/TRACT/X,Y/calexp-FILTER-TRACT-X,Y.fits;
      --limit N = the first N of --patches (TRACT/X,Y, e.g. 9813/4,4); per patch the calexp
      coadd in g, r (HSC-R2, else HSC-R), i (HSC-I2, else HSC-I), z, y: about 1 GB. The account
      (free, hsc-release.mtk.nao.ac.jp/datasearch/new_user) comes from HSC_SSP_CAS_USER and
      HSC_SSP_CAS_PASSWORD, or ~/.netrc: `machine hsc-release.mtk.nao.ac.jp login USER password
      PASS`. The object catalogue is a CAS SQL query saved as FITS in RAW/hsc/pdr3_wide/catalog/
      (the query: docs/hsc.md).
  sim_truth_*              mock only: nothing to download (`mmu sim --out RAW` writes them)

examples:
  mmu fetch desi_dr1 --raw raw --limit 2
  mmu fetch legacysurvey_dr10_south --raw raw --bricks 0001m002 0003m002
  mmu fetch sdss_dr17 --raw raw --limit 100
  mmu fetch plasticc_2018 --raw raw --limit 1
  mmu fetch gaia_dr3 --raw raw --limit 1
  mmu fetch tess_spoc --raw raw --limit 10
  HSC_SSP_CAS_USER=me HSC_SSP_CAS_PASSWORD=... mmu fetch hsc_pdr3_wide --raw raw --patches 9813/4,4
  mmu build desi_dr1 --raw raw --hub hub

exit status: 0 done; 1 a download failed (the message names the URL; rerun to resume);
2 a usage problem (unknown dataset, a dataset with nothing to download, a missing option)."""

BRICK_RE = re.compile(r"^[0-9]{4}[pm][0-9]{3}$")


def _size(n: float) -> str:
    """Bytes as text in dask's units (`dask.utils.format_bytes`: 1.21 kiB, 11.77 MiB)."""
    from dask.utils import format_bytes

    return format_bytes(int(n))


class _FetchProgress(logging.Handler):
    """What one fetch did, for the closing line: the files the builder's `fetch` returned, compared
    with what was under RAW before (already here, or new and how many bytes came), and the inputs
    skipped (counted from the builders' ``skipped ...`` warnings while attached). The per-file
    lines and byte bars come from `mmu.builders._common.download` through logging."""

    def __init__(self, raw):
        super().__init__(logging.WARNING)
        self.raw = raw
        self.before = {p: p.stat().st_size for p in raw.rglob("*") if p.is_file()}
        self.files = self.new = self.present = 0
        self.bytes = 0
        self.skipped: list[str] = []
        self._logger = logging.getLogger("mmu.builders")
        self._logger.addHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("skipped "):
            self.skipped.append(record.getMessage())

    def count(self, got) -> None:
        """Tally the paths `fetch` returned."""
        for p in dict.fromkeys(Path(p) for p in got):
            self.files += 1
            if p in self.before:
                self.present += 1
            else:
                self.new += 1
                self.bytes += p.stat().st_size - self.before.get(p.with_name(p.name + ".part"), 0)

    def kept(self, builder) -> int:
        """Files the builder reads that are under RAW now (after a failure or an interruption)."""
        try:
            return sum(Path(p).is_file() for i in builder.list_inputs(self.raw) for p in i.paths)
        except Exception:  # noqa: BLE001 - a half-fetched layout: count the complete new files
            return sum(1 for p in self.raw.rglob("*") if p.is_file() and p not in self.before
                       and not p.name.endswith(".part"))

    def close(self) -> None:
        self._logger.removeHandler(self)
        super().close()


def _fetch_options(args, name: str, builder) -> dict:
    """The survey-specific keyword arguments of `builder.fetch`, or ValueError for the user."""
    import inspect
    from pathlib import Path

    accepted = set(inspect.signature(builder.fetch).parameters)
    given = {"bricks": args.bricks, "run2d": args.run2d, "patches": args.patches}
    opts = {}
    for key, value in given.items():
        if value is None:
            continue
        if key not in accepted:
            raise ValueError(f"--{key} does not apply to {name} (its builder {builder.name!r} takes "
                             f"{', '.join('--' + k for k in sorted(accepted - {'raw', 'limit'})) or 'no options'})")
        opts[key] = value
    if "bricks" in accepted and not opts.get("bricks"):
        raise ValueError(f"{name} downloads whole bricks by name: pass --bricks, e.g.\n"
                         f"  mmu fetch {name} --raw RAW --bricks 0001m002 0003m002\n"
                         "  (brick names: the DR10 survey-bricks table, "
                         "https://www.legacysurvey.org/dr10/files/, or legacysurvey.org/viewer)")
    if "bricks" in opts:
        bricks = []
        for b in opts["bricks"]:
            if b.startswith("@"):  # @FILE: names separated by spaces, commas or new lines
                bricks += Path(b[1:]).read_text().replace(",", " ").split()
            else:
                bricks += b.replace(",", " ").split()
        bad = [b for b in bricks if not BRICK_RE.match(b)]
        if bad:
            raise ValueError(f"--bricks: {bad[:5]} are not brick names like 0001m002 "
                             "(RRRR p|m DDD: RA x 10, sign and |Dec| x 10)")
        opts["bricks"] = list(dict.fromkeys(bricks))
    return opts


def _fetch(args) -> int:
    require_extra("build", "mmu fetch")
    from pathlib import Path

    from mmu.engine.builder import Builder, get_builder
    from mmu.registry.catalog import load_catalog

    def fail(msg: str, code: int) -> int:
        print(f"error: {msg}", file=sys.stderr)
        return code

    try:
        entry = load_catalog().dataset(args.name)
        builder = get_builder(entry.builder).from_options(entry.builder_config)
    except (KeyError, ValueError) as e:
        return fail(e.args[0] if e.args else str(e), 2)
    if type(builder).fetch is Builder.fetch:
        if entry.mock_only:
            return fail(f"{entry.name} is mock only: there is no archive to download. Its raw files are "
                        f"written by the mock observatory:\n  mmu sim --out RAW\n  mmu build {entry.name} "
                        "--raw RAW --hub HUB", 2)
        return fail(f"{entry.name}: its builder {entry.builder!r} has no archive download. Put the raw "
                    f"files under RAW yourself ({entry.raw.archive}, layout {entry.raw.pattern}), then "
                    f"run `mmu build {entry.name} --raw RAW --hub HUB`", 2)
    if args.limit is not None and args.limit < 1:
        return fail("--limit must be at least 1", 2)
    try:
        opts = _fetch_options(args, entry.name, builder)
    except (ValueError, OSError) as e:
        return fail(str(e), 2)

    from mmu.builders._common import FetchError

    raw = Path(args.raw).resolve()
    raw.mkdir(parents=True, exist_ok=True)
    unit, size = FETCH_NOTES.get(builder.name, ("N raw inputs", entry.raw.size or "size unknown"))
    limit = f"--limit {args.limit}: {unit.replace('N', str(args.limit))}" if args.limit else \
        "no --limit: everything"
    print(f"fetch {entry.name} from {entry.raw.archive}\n  into {raw}\n  {limit}; {size}", flush=True)
    progress = _FetchProgress(raw)
    try:
        progress.count(builder.fetch(raw, limit=args.limit, **opts) or [])
    except FetchError as e:
        progress.close()
        what = ("the archive answered HTTP 404: the file or directory is not there (check the "
                "dataset's options, e.g. --run2d or the brick names)" if e.status == 404 else
                f"the archive answered HTTP {e.status}" if e.status else
                "the archive is unreachable from this machine: check the network (behind a proxy, "
                "set HTTPS_PROXY); on a cluster whose compute nodes are offline, fetch on a login "
                "or data-transfer node")
        return fail(f"cannot download {entry.name}: {e}\n  {what}.\n  {progress.kept(builder)} file(s) done "
                    f"so far are kept in {raw}; rerun the same command to resume.", 1)
    except ValueError as e:  # a survey option the archive does not have (e.g. --run2d v9)
        progress.close()
        return fail(str(e), 2)
    except KeyboardInterrupt:
        progress.close()
        print(f"\ninterrupted: {progress.kept(builder)} file(s) done are kept in {raw}; rerun the same command "
              "to resume (a partial file continues from its .part)", file=sys.stderr)
        return 130
    progress.close()
    inputs = builder.list_inputs(raw)
    print(f"done: {progress.files} file(s) ({progress.new} downloaded, {_size(progress.bytes)}; "
          f"{progress.present} already here)"
          + (f"; {len(progress.skipped)} skipped" if progress.skipped else "")
          + f"\n{len(inputs)} raw input(s) for {entry.name} under {raw}\n"
          f"next: mmu build {entry.name} --raw {args.raw} --hub HUB")
    return 0


def register(sub) -> None:
    f = sub.add_parser(
        "fetch", help="download real survey files from the archive into RAW (for `mmu build`)",
        formatter_class=argparse.RawDescriptionHelpFormatter, description=FETCH_HELP)
    f.add_argument("name", help="dataset name from `mmu catalog list`, e.g. desi_dr1")
    f.add_argument("--raw", required=True, help="directory to download into (created if missing); "
                   "pass the same to `mmu build --raw`")
    f.add_argument("--limit", type=int, default=None, metavar="N",
                   help="download only the first N units (bricks, HEALPix pixels, spectra; PLAsTiCC: "
                        "the training set); default: everything")
    f.add_argument("--bricks", nargs="+", default=None, metavar="BRICK",
                   help="legacysurvey: brick names, e.g. 0001m002 0003m002 (commas also work; "
                        "@FILE reads names from a file)")
    f.add_argument("--run2d", default=None,
                   help="sdss: the spectroscopic reduction (default 26, SDSS-I/II; also 103, 104; "
                        "v5_13_2 for BOSS/eBOSS)")
    f.add_argument("--patches", nargs="+", default=None, metavar="TRACT/X,Y",
                   help="hsc: coadd patches as TRACT/X,Y, e.g. 9813/4,4 9813/4,5 (needs a PDR3 account: "
                        "HSC_SSP_CAS_USER / HSC_SSP_CAS_PASSWORD or ~/.netrc)")
    f.set_defaults(func=_fetch)
