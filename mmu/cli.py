"""The `mmu` command line. Each subcommand imports its heavy dependencies lazily."""
from __future__ import annotations

import argparse
import json
import re
import sys
import textwrap

DESCRIPTION = """\
mmu: a Multimodal Universe style dataset hub, contrastive pretraining suite and benchmark.

  mmu demo --out demo --size tiny        the whole chain on a mock universe (start here)
  mmu catalog list                       the datasets the hub knows, with licenses
  mmu sim --out RAW --galaxies 1000      write a mock universe in real survey formats
  mmu fetch NAME --raw RAW --limit 10    download real survey files from the archive
  mmu build NAME --raw RAW --hub HUB     standardize raw survey files into a HATS dataset
  mmu crossmatch A B --hub HUB --name N  match datasets by sky position into a paired catalog
  mmu export-wds N --hub HUB --out DIR   write shuffled WebDataset shards for training
  mmu pretrain --config CONFIG.yaml      train a CLIP-style model on the shards (torchrun for many GPUs)
  mmu catalog cite NAME ...              BibTeX, acknowledgements and license warnings
  mmu push NAME --hub HUB --repo ORG/N   upload a built dataset to the Hugging Face Hub

Run `mmu COMMAND --help` for the details of one command."""


def _catalog_list(args) -> int:
    from mmu.catalog import load_catalog

    cat = load_catalog()
    if args.json:
        print(json.dumps([d.model_dump() for d in cat.datasets], indent=2))
        return 0
    rows = [("name", "survey", "release", "modalities", "license", "builder")]
    for d in cat.datasets:
        lic = d.license.id + (" (NON-COMMERCIAL)" if d.license.non_commercial else "") + \
            (" (mock only)" if d.mock_only else "")
        rows.append((d.name, d.survey, d.release, ",".join(d.modalities), lic, d.builder))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for k, r in enumerate(rows):
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        if k == 0:
            print("  ".join("-" * w for w in widths))
    if cat.tasks:
        print(f"\n{len(cat.tasks)} benchmark task(s): {', '.join(t.name for t in cat.tasks)}")
    return 0


def _catalog_show(args) -> int:
    from mmu.catalog import load_catalog

    cat = load_catalog()
    try:
        d = cat.dataset(args.name)
    except KeyError as e:
        print(f"error: {e.args[0]}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(d.model_dump(), indent=2))
        return 0
    print(f"{d.name}  ({d.survey} {d.release})")
    print(textwrap.fill(d.description, 96, initial_indent="  ", subsequent_indent="  "))
    print(f"\n  modalities   {', '.join(d.modalities)}")
    print(f"  builder      {d.builder}  {json.dumps(d.builder_config) if d.builder_config else ''}")
    print(f"  raw data     {d.raw.archive}")
    print(f"               {d.raw.pattern}")
    print(f"  data model   {d.raw.docs}")
    if d.raw.size:
        print(f"  size         {d.raw.size}")
    print(f"  homepage     {d.homepage}")
    print(f"  license      {d.license.id}  {d.license.url}"
          + ("  ** NON-COMMERCIAL **" if d.license.non_commercial else "")
          + ("  ** NO DERIVATIVES **" if d.license.no_derivatives else ""))
    if d.expected_rows:
        print(f"  rows         {d.expected_rows} (full archive build)")
    if d.mock_only:
        print("  mock only    built from `mmu sim` output")
    if d.acknowledgement:
        print("\n  acknowledgement:")
        print(textwrap.fill(d.acknowledgement, 96, initial_indent="    ", subsequent_indent="    "))
    print("\n  citation:")
    for c in d.citation:
        print(textwrap.indent(c.strip(), "    "))
    return 0


def _build(args) -> int:
    from mmu.build import BuildError, build

    try:
        result = build(args.name, args.raw, args.hub, workers=args.workers, scheduler=args.scheduler,
                       strict=args.strict, progress=not args.no_progress)
    except (BuildError, KeyError) as e:
        print(f"error: {e.args[0] if e.args else e}", file=sys.stderr)
        return 1
    return 0 if result else 1


# --- `mmu fetch`: download real archive files with the dataset's builder (Builder.fetch) ---

#: per builder: what `--limit N` takes, and roughly how big a download is (printed at the start)
FETCH_NOTES = {
    "legacysurvey": ("the first N of --bricks", "roughly 0.1-0.2 GB per brick"),
    "desi": ("N HEALPix pixels", "about 0.5 MB per target spectrum, tens of MB to ~1 GB per pixel"),
    "sdss": ("N spectra", "about 0.2 MB per spec-lite file"),
    "plasticc": ("the training set only", "training set: tens of MB; everything: about 20 GB of CSV"),
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
      (about 0.2 MB each). --run2d picks the reduction (default 26: SDSS-I/II spectra,
      which the sdss builder reads; v5_13_2 BOSS/eBOSS files carry an SPALL HDU it rejects)
  plasticc_2018            zenodo.org/records/2539456
      -> RAW/plasticc/plasticc_{train,test}_*.csv.gz; with --limit (any N) the training set
      only (tens of MB); without, also the 11 test light-curve files (about 20 GB of CSV)
  sim_truth_*              mock only: nothing to download (`mmu sim --out RAW` writes them)

examples:
  mmu fetch desi_dr1 --raw raw --limit 2
  mmu fetch legacysurvey_dr10_south --raw raw --bricks 0001m002 0003m002
  mmu fetch sdss_dr17 --raw raw --limit 100
  mmu fetch plasticc_2018 --raw raw --limit 1
  mmu build desi_dr1 --raw raw --hub hub

exit status: 0 done; 1 a download failed (the message names the URL; rerun to resume);
2 a usage problem (unknown dataset, a dataset with nothing to download, a missing option)."""

BRICK_RE = re.compile(r"^[0-9]{4}[pm][0-9]{3}$")


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


class _FetchProgress:
    """Prints one line per file (and a byte bar on a terminal) from the download events."""

    def __init__(self, raw, bars: bool, out=None):
        self.raw, self.bars = raw, bars
        self.out = out or sys.stdout
        self.files = self.new = self.present = 0
        self.bytes = 0
        self.skipped: list[str] = []
        self._bar = None

    def _rel(self, dest) -> str:
        try:
            return str(dest.relative_to(self.raw))
        except ValueError:
            return str(dest)

    def __call__(self, event: str, **i) -> None:
        if event == "list":
            print(f"  listed {i['url']} ({i['count']} entries)", file=self.out, flush=True)
        elif event == "exists":
            self.files += 1
            self.present += 1
            print(f"  [{self.files}] {self._rel(i['dest'])}  already here ({_size(i['size'])})",
                  file=self.out, flush=True)
        elif event == "start":
            if self.bars:
                from tqdm.auto import tqdm

                self._bar = tqdm(total=i["total"], initial=i["offset"], unit="B", unit_scale=True,
                                 desc=i["dest"].name, leave=False, file=sys.stderr, disable=None)
        elif event == "bytes":
            self.bytes += i["n"]
            if self._bar is not None:
                self._bar.update(i["n"])
        elif event == "done":
            if self._bar is not None:
                self._bar.close()
                self._bar = None
            self.files += 1
            self.new += 1
            got = i["size"] - i["offset"]
            rate = got / max(i["seconds"], 1e-6)
            resumed = f", resumed at {_size(i['offset'])}" if i["offset"] else ""
            print(f"  [{self.files}] {self._rel(i['dest'])}  {_size(i['size'])}  "
                  f"({_size(rate)}/s{resumed})", file=self.out, flush=True)
        elif event == "note":
            print(f"note: {i['text']}", file=sys.stderr, flush=True)
        elif event == "skip":
            self.skipped.append(f"{i['what']}: {i['reason']}")
            print(f"  skipped {i['what']}: {i['reason']}", file=self.out, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _fetch_options(args, name: str, builder) -> dict:
    """The survey-specific keyword arguments of `builder.fetch`, or ValueError for the user."""
    import inspect
    from pathlib import Path

    accepted = set(inspect.signature(builder.fetch).parameters)
    given = {"bricks": args.bricks, "run2d": args.run2d}
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
    from pathlib import Path

    from mmu.builder import Builder, get_builder
    from mmu.catalog import load_catalog

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

    from mmu.builders._common import FetchError, fetch_reporter

    raw = Path(args.raw).resolve()
    raw.mkdir(parents=True, exist_ok=True)
    unit, size = FETCH_NOTES.get(builder.name, ("N raw inputs", entry.raw.size or "size unknown"))
    limit = f"--limit {args.limit}: {unit.replace('N', str(args.limit))}" if args.limit else \
        "no --limit: everything"
    print(f"fetch {entry.name} from {entry.raw.archive}\n  into {raw}\n  {limit}; {size}", flush=True)
    progress = _FetchProgress(raw, bars=not args.no_progress)
    try:
        with fetch_reporter(progress):
            builder.fetch(raw, limit=args.limit, **opts)
    except FetchError as e:
        progress.close()
        what = ("the archive answered HTTP 404: the file or directory is not there (check the "
                "dataset's options, e.g. --run2d or the brick names)" if e.status == 404 else
                f"the archive answered HTTP {e.status}" if e.status else
                "the archive is unreachable from this machine: check the network (behind a proxy, "
                "set HTTPS_PROXY); on a cluster whose compute nodes are offline, fetch on a login "
                "or data-transfer node")
        return fail(f"cannot download {entry.name}: {e}\n  {what}.\n  {progress.files} file(s) done "
                    f"so far are kept in {raw}; rerun the same command to resume.", 1)
    except KeyboardInterrupt:
        progress.close()
        print(f"\ninterrupted: {progress.files} file(s) done are kept in {raw}; rerun the same command "
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


def _crossmatch(args) -> int:
    from mmu.crossmatch import CrossmatchError, crossmatch

    try:
        crossmatch(args.datasets, args.hub, args.name, radius_arcsec=args.radius_arcsec,
                   method=args.method, keep_unmatched=args.keep_unmatched, overwrite=args.overwrite,
                   max_dlr=args.max_dlr, primary_only=not args.include_secondary, workers=args.workers, scheduler=args.scheduler,
                   progress=not args.no_progress)
    except CrossmatchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def _export(args) -> int:
    from mmu.export import ExportError, export_wds
    from mmu.hub import NotBuilt

    try:
        export_wds(args.name, args.hub, args.out, split=args.split, shard_size=args.shard_size,
                   seed=args.seed, shard_multiple=args.shard_multiple, overwrite=args.overwrite,
                   workers=args.workers, scheduler=args.scheduler, progress=not args.no_progress)
    except (ExportError, NotBuilt) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def _demo(args) -> int:
    from mmu.demo import Demo

    Demo(args.out, args.size, workers=args.workers, seed=args.seed, progress=not args.no_progress).run()
    return 0


def _sim(args) -> int:
    from mmu.sim.cli import run

    return run(args)


def _dask_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=int, default=None, help="local Dask worker processes (default: up to 2)")
    p.add_argument("--scheduler", default=None,
                   help="address of an existing Dask scheduler, e.g. tcp://10.0.0.5:8786 "
                        "(a distributed or dask-jobqueue SLURM cluster)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mmu", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    cat = sub.add_parser("catalog", help="list and describe the datasets in the registry",
                         description="The registry (catalog.yaml): datasets and benchmark tasks.")
    csub = cat.add_subparsers(dest="catalog_command", metavar="ACTION")
    lst = csub.add_parser("list", help="a table of every dataset with its license")
    lst.add_argument("--json", action="store_true", help="print JSON instead of a table")
    lst.set_defaults(func=_catalog_list)
    show = csub.add_parser("show", help="everything about one dataset, including its citation")
    show.add_argument("name", help="dataset name, e.g. desi_dr1 (see `mmu catalog list`)")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(func=_catalog_show)
    cat.set_defaults(func=lambda a: (cat.print_help(), 0)[1])

    try:
        from mmu.sim import cli as sim_cli
    except ImportError:
        sim_cli = None
    if sim_cli is not None:
        sim = sub.add_parser("sim", help="write a mock universe in real survey file formats",
                             formatter_class=argparse.RawDescriptionHelpFormatter,
                             description="The mock observatory: draws galaxies and transients and "
                                         "writes the raw files of each survey in its archive format.")
        sim_cli.configure_parser(sim)
        sim.set_defaults(func=_sim)

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
                   help="sdss: the spectroscopic reduction (default 26, SDSS-I/II; also 103, 104)")
    f.add_argument("--no-progress", action="store_true", help="no byte-progress bars (file lines stay)")
    f.set_defaults(func=_fetch)

    b = sub.add_parser(
        "build", help="standardize a survey's raw files into a HATS dataset in the hub",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.dedent("""\
            Build one dataset of the catalog: read every raw input with the survey's builder
            (one Dask task per input), validate and standardize the rows, partition them with
            hats-import into HUB/NAME (HATS catalog + margin cache + dataset card + build.json).

            Bad inputs never abort the build: each is rejected with its reason, listed at the
            end and recorded in build.json (--strict makes any rejection an error). A killed
            build rerun with the same arguments resumes; a finished one is a no-op.

            example:  mmu build desi_dr1 --raw ./raw --hub ./hub --workers 2"""))
    b.add_argument("name", help="dataset name from `mmu catalog list`")
    b.add_argument("--raw", required=True, help="directory holding the survey's raw files")
    b.add_argument("--hub", required=True, help="hub directory; the dataset goes to HUB/NAME")
    _dask_arguments(b)
    b.add_argument("--strict", action="store_true", help="fail if any input or row is rejected")
    b.set_defaults(func=_build)

    x = sub.add_parser(
        "crossmatch", help="match hub datasets by sky position into a paired catalog",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.dedent("""\
            Match datasets A B [C ...] by sky position (LSDB, margin-correct across partition
            borders) and write the paired catalog HUB/NAME: the left object's object_id/ra/dec,
            each input's columns under its survey prefix (desi_spectrum, legacysurvey_image, ...),
            the match distance, and a split (the most restrictive of the members').

            Chaining: B is matched to A, C to B (to A where B is missing). Each right object is
            used once (the closest left object wins). Unmatched left objects are dropped unless
            --keep-unmatched (their missing modality is then null).
            --method host associates transients with the galaxy of smallest directional light
            radius distance (needs the galaxies' shape_r, shape_e1, shape_e2).

            example:  mmu crossmatch legacysurvey_dr10_south desi_dr1 --hub hub --name ls_desi"""))
    x.add_argument("datasets", nargs="+", help="two or more built datasets, left first")
    x.add_argument("--hub", required=True, help="the hub directory")
    x.add_argument("--name", required=True, help="name of the paired catalog to write")
    x.add_argument("--radius-arcsec", type=float, default=1.0,
                   help="match radius (default 1.0; for --method host, the search radius)")
    x.add_argument("--method", choices=["nearest", "host"], default="nearest",
                   help="nearest neighbour, or transient-host association by directional light radius")
    x.add_argument("--max-dlr", type=float, default=4.0,
                   help="host association cut-off in units of the directional light radius (default 4)")
    x.add_argument("--keep-unmatched", action="store_true", help="keep left objects without a match")
    x.add_argument("--include-secondary", action="store_true",
                   help="also match rows not flagged primary/brick_primary (legitimate repeats)")
    x.add_argument("--overwrite", action="store_true", help="replace an existing paired catalog")
    _dask_arguments(x)
    x.set_defaults(func=_crossmatch)

    e = sub.add_parser(
        "export-wds", help="write a dataset split to shuffled WebDataset shards for training",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.dedent("""\
            Write the rows of one split of a hub dataset (usually a paired catalog) to WebDataset
            tar shards: one .npy per array and a .json of metadata per sample, key = object id,
            shuffled globally (HATS order is spatial), with index.json (shards, sample counts,
            sha256, the dataset's content revision, constants such as a fixed wavelength grid)
            and index.parquet (every sample's object_id, ra, dec, shard, position).

            example:  mmu export-wds ls_desi --hub hub --out shards/train --split train"""))
    e.add_argument("name", help="a built dataset or paired catalog")
    e.add_argument("--hub", required=True, help="the hub directory")
    e.add_argument("--out", required=True, help="output directory for the shards")
    e.add_argument("--split", default="train", choices=["train", "val", "test"], help="which split (default train)")
    e.add_argument("--shard-size", default="256MB", help="target shard size (default 256MB)")
    e.add_argument("--shard-multiple", type=int, default=8,
                   help="round the shard count up to a multiple of this (ranks x loader workers; default 8)")
    e.add_argument("--seed", type=int, default=0, help="shuffle seed (default 0)")
    e.add_argument("--overwrite", action="store_true", help="replace a non-empty output directory")
    _dask_arguments(e)
    e.set_defaults(func=_export)

    dm = sub.add_parser(
        "demo", help="the whole chain on a mock universe: sim, build, crossmatch, export, pretrain, eval, board, report",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.dedent("""\
            Run the whole chain offline on the embedded default: a mock universe observed in the
            real survey formats (mmu sim), every dataset built into a hub, Legacy Survey x DESI
            x truth and PLAsTiCC x host-galaxy paired catalogs, WebDataset shards, a small
            CLIP-style model pretrained on them (on a GPU when there is one), evaluated on the
            demo's own tasks against three baselines (the same encoders at random weights, PCA
            of the raw inputs, a supervised encoder per modality), every model submitted to a
            local git leaderboard rendered in OUT/site (a demo board, not comparable with the
            public one), and OUT/report.html: a static page to open in a browser (figures also
            in OUT/figures/). Each finished stage leaves a marker in OUT/stages/: a rerun reuses
            finished stages and an interrupted demo resumes. Ends with a per-stage time table
            (also in OUT/demo.json).

            sizes (times on a 2-core CPU without a GPU):
              tiny    240 galaxies in 12 fields, ~2 min: a smoke test of the chain (what the tests run)
              small   2,000 galaxies in 120 fields, ~13 min: the pretrained image embedding must
                      beat random weights on redshift by R^2 >= 0.10 (paired bootstrap interval
                      above 0; stated in report.json and the report)
              medium  20,000 galaxies in 400 fields, the astroclip config: worth a GPU

            example:  mmu demo --out demo --size tiny"""))
    dm.add_argument("--out", default="demo", help="output folder (default ./demo)")
    dm.add_argument("--size", default="tiny", choices=["tiny", "small", "medium"], help="default tiny")
    dm.add_argument("--seed", type=int, default=1, help="simulation seed (default 1)")
    dm.add_argument("--workers", type=int, default=None, help="local Dask worker processes")
    dm.add_argument("--no-progress", action="store_true", help="no progress bars")
    dm.set_defaults(func=_demo)

    from mmu.pretrain import cli as pretrain_cli  # light: no torch until the command runs
    pt = sub.add_parser("pretrain", help="contrastive pretraining of one encoder per modality (CPU, GPU, torchrun)",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    pretrain_cli.configure_parser(pt)
    pt.set_defaults(func=pretrain_cli.run)

    # --- issue 10: `mmu catalog cite`, `mmu push`, `mmu docs schema` (mmu/cite.py, mmu/publish.py,
    # mmu/specdoc.py; their module imports are light, heavy ones happen inside the commands) ---
    from mmu import cite, publish, specdoc
    cite_p = csub.add_parser("cite", help="BibTeX, acknowledgements and license warnings for datasets")
    cite.configure_cite_parser(cite_p)
    cite_p.set_defaults(func=cite.run_cite)
    push = sub.add_parser("push", help="upload a built dataset to a Hugging Face Hub dataset repository")
    publish.configure_push_parser(push)
    push.set_defaults(func=publish.run_push)
    docs = sub.add_parser("docs", help="generated documentation (the hub format specification)")
    dsub = docs.add_subparsers(dest="docs_command", metavar="DOC")
    schema_doc = dsub.add_parser("schema", help="write docs/schema.md from the schema code")
    specdoc.configure_docs_parser(schema_doc)
    schema_doc.set_defaults(func=specdoc.run_docs_schema)
    docs.set_defaults(func=lambda a: (docs.print_help(), 0)[1])
    # --- end issue 10 ---
    # --- issue 8: `mmu eval embed|run|submit|leaderboard|baselines` (eval/cli.py; no torch or
    # scikit-learn until a command runs) ---
    from mmu.eval import cli as eval_cli
    ev = sub.add_parser("eval", help="the benchmark: embed, run tasks, submit, leaderboard, baselines")
    eval_cli.configure_parser(ev)
    # --- end issue 8 ---
    return p


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
