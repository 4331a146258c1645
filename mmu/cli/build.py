"""`mmu build`: raw survey files -> a HATS dataset in the hub."""
from __future__ import annotations

import argparse
import sys
import textwrap

from mmu.cli.common import dask_arguments


def _build(args) -> int:
    from mmu.engine.build import BuildError, build

    try:
        result = build(args.name, args.raw, args.hub, workers=args.workers, scheduler=args.scheduler,
                       strict=args.strict, progress=not args.no_progress)
    except (BuildError, KeyError) as e:
        print(f"error: {e.args[0] if e.args else e}", file=sys.stderr)
        return 1
    return 0 if result else 1


def register(sub) -> None:
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
    dask_arguments(b)
    b.add_argument("--strict", action="store_true", help="fail if any input or row is rejected")
    b.set_defaults(func=_build)
