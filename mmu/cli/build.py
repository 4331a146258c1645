"""`mmu build`: raw survey files -> a HATS dataset in the hub."""
from __future__ import annotations

import argparse
import textwrap

from mmu.cli.common import CommandFailed, UsageError, dask_arguments, require_extra


def _build(args) -> int:
    require_extra("build", "mmu build")
    from mmu.engine.build import BuildError, PartitionSettings, build
    from mmu.overrides import OverrideError, parse_overrides
    from mmu.registry.catalog import load_catalog

    try:
        entry = load_catalog().dataset(args.name)
    except KeyError as e:
        raise UsageError(e.args[0]) from None
    try:  # --set goes over the catalog entry's own settings (e.g. an image survey's margin)
        settings = (PartitionSettings.from_overrides({**entry.partition, **parse_overrides(args.set)})
                    if args.set else None)
    except (OverrideError, BuildError) as e:
        raise UsageError(f"--set: {e}") from None
    try:
        result = build(args.name, args.raw, args.hub, workers=args.workers, scheduler=args.scheduler,
                       strict=args.strict, rehash=args.rehash, settings=settings)
    except BuildError as e:
        raise CommandFailed(e.args[0] if e.args else str(e)) from None
    return 0 if result else 1


def register(sub) -> None:
    b = sub.add_parser(
        "build", help="standardize a survey's raw files into a HATS dataset in the hub",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.dedent("""\
            Build one dataset of the catalog: read every raw input with the survey's builder
            (one Dask task per input), validate and standardize the rows, partition them into
            HUB/NAME (HATS catalog + margin cache + dataset card + build.json), each row read and
            written once by mmu's HATS writer (the same catalog hats-import writes).

            Bad inputs never abort the build: each is rejected with its reason, listed at the
            end and recorded in build.json (--strict makes any rejection an error). A killed
            build rerun with the same arguments resumes; a finished one is a no-op.

            Only inputs can be bad: a fault of the machine (full disk, permission denied, I/O
            error, out of memory, a killed worker or lost Dask connection) fails the build and
            records nothing, so the rerun redoes that input. One build per dataset and hub runs
            at a time (a lock in HUB/.mmu-staging); a second fails at once naming the holder.
            Raw files are re-hashed only when their size or mtime changed; --rehash re-hashes
            them all (files rewritten in place with a restored mtime, e.g. `rsync -t`).

            exit status: 0 built (or already built); 1 the build failed or, with --strict,
            rejected something; 2 a usage error (an unknown dataset, a --hub that is a file).

            Partitioning settings (docs/hub.md) change with --set: partition_bytes (default
            268435456), row_group_bytes, compression_level (zstd, 3), highest_order (10) and
            margin_threshold_arcsec (128; the catalog entries of the image surveys and DESI set
            32, which holds a host association of up to 16 arcsec: their margin caches are 4x
            smaller) and writer (mmu; hats-import runs hats-import's pipelines instead). A
            catalog entry's `partition:` settings are its defaults; --set goes over them.

            example:  mmu build desi_dr1 --raw ./raw --hub ./hub --workers 2
                      mmu build legacysurvey_dr10_south --raw raw --hub hub --set margin_threshold_arcsec=16"""))
    b.add_argument("name", help="dataset name from `mmu catalog list`")
    b.add_argument("--raw", required=True, help="directory holding the survey's raw files")
    b.add_argument("--hub", required=True, help="hub directory; the dataset goes to HUB/NAME")
    dask_arguments(b)
    b.add_argument("--strict", action="store_true", help="fail if any input or row is rejected")
    b.add_argument("--rehash", action="store_true",
                   help="re-hash every raw file instead of trusting the (path, size, mtime) cache")
    b.add_argument("--set", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                   help="partitioning settings, e.g. --set margin_threshold_arcsec=16 compression_level=5")
    b.set_defaults(func=_build)
