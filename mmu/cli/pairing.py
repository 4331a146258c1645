"""`mmu crossmatch` and `mmu export-wds`: paired catalogs and training shards."""
from __future__ import annotations

import argparse
import textwrap

from mmu.cli.common import CommandFailed, UsageError, check_writable, dask_arguments, require_extra


def _crossmatch(args) -> int:
    require_extra("build", "mmu crossmatch")
    from mmu.hub.layout import NotBuilt, UnsafePath, check_name, read_manifest
    from mmu.pairing.crossmatch import CrossmatchError, crossmatch
    from mmu.registry.catalog import NAME_RE

    # a name the hub does not hold, or a path given for a name (HUB/x, /data/hub/x), is a usage error
    for name in dict.fromkeys(args.datasets):
        try:
            read_manifest(args.hub, name)
        except (NotBuilt, UnsafePath) as e:
            raise UsageError(str(e)) from None
    try:
        check_name(args.name, "--name")
    except UnsafePath as e:
        raise UsageError(str(e)) from None
    if not NAME_RE.match(args.name):
        raise UsageError(f"--name {args.name!r}: a paired catalog's name is lower case letters, digits and '_', "
                         "starting with a letter (e.g. ls_desi)")
    check_writable(args.hub, "--hub")  # the paired catalog is written into the hub
    try:
        crossmatch(args.datasets, args.hub, args.name, radius_arcsec=args.radius_arcsec,
                   method=args.method, keep_unmatched=args.keep_unmatched, overwrite=args.overwrite,
                   max_dlr=args.max_dlr, primary_only=not args.include_secondary, workers=args.workers,
                   scheduler=args.scheduler)
    except CrossmatchError as e:
        raise CommandFailed(str(e)) from None
    return 0


def _export(args) -> int:
    require_extra("build", "mmu export-wds")
    from mmu.hub.layout import NotBuilt, UnsafePath
    from mmu.shards.export import ExportError, export_wds

    try:
        export_wds(args.name, args.hub, args.out, split=args.split, shard_size=args.shard_size,
                   seed=args.seed, shard_multiple=args.shard_multiple, overwrite=args.overwrite,
                   workers=args.workers, scheduler=args.scheduler, scalars=args.scalars)
    except (NotBuilt, UnsafePath) as e:  # not in the hub (the message lists what it holds), or a path
        raise UsageError(str(e)) from None
    except ExportError as e:
        raise CommandFailed(str(e)) from None
    return 0


def register(sub) -> None:
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
    x.add_argument("datasets", nargs="+", help="two or more datasets built in --hub, by name, left first")
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
    dask_arguments(x)
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
    e.add_argument("name", help="a dataset or paired catalog built in --hub, by name")
    e.add_argument("--hub", required=True, help="the hub directory")
    e.add_argument("--out", required=True, help="output directory for the shards")
    e.add_argument("--split", default="train", choices=["train", "val", "test"], help="which split (default train)")
    e.add_argument("--shard-size", default="256MiB",
                   help="target shard size (default 256MiB; MB = 10**6 bytes, MiB = 2**20)")
    e.add_argument("--shard-multiple", type=int, default=8,
                   help="round the shard count up to a multiple of this (ranks x loader workers; default 8)")
    e.add_argument("--seed", type=int, default=0, help="shuffle seed (default 0)")
    e.add_argument("--overwrite", action="store_true", help="replace a non-empty output directory")
    e.add_argument("--scalars", nargs="+", metavar="NAME=COL,COL", default=None,
                   help="also pack numeric catalog columns as a `scalars` modality NAME, e.g. "
                        "gaia_phot=gaia_phot_g_mean_mag,gaia_parallax (docs/stars.md)")
    dask_arguments(e)
    e.set_defaults(func=_export)
