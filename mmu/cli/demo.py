"""`mmu demo`: the whole chain on a mock universe."""
from __future__ import annotations

import argparse
import textwrap

from mmu.cli.common import require_extra


def _demo(args) -> int:
    require_extra("demo", "mmu demo")  # every stage's extra, plus the report's figures
    from mmu.demo.run import Demo, stage_table

    summary = Demo(args.out, args.size, workers=args.workers, seed=args.seed).run(until=args.until)
    print(stage_table(summary))  # the command's own output; stage progress goes to the log
    return 0


def register(sub) -> None:
    from mmu.demo.run import STAGES  # light: the stages' own imports happen when they run

    dm = sub.add_parser(
        "demo",
        help="the whole chain on a mock universe: sim, build, crossmatch, export, pretrain, eval, board, report",
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
              medium  20,000 galaxies in 300 fields, the astroclip config, 1,500 steps: for one
                      GPU machine (16 cores, one H100)

            example:  mmu demo --out demo --size tiny"""))
    dm.add_argument("--out", default="demo", help="output folder (default ./demo)")
    dm.add_argument("--size", default="tiny", choices=["tiny", "small", "medium"], help="default tiny")
    dm.add_argument("--seed", type=int, default=1, help="simulation seed (default 1)")
    dm.add_argument("--workers", type=int, default=None, help="local Dask worker processes")
    dm.add_argument("--until", default="eval", choices=list(STAGES),
                    help="the last stage to run (default eval: all, then the report); e.g. --until export makes "
                         "the data, and the same command without it goes on from there")
    dm.set_defaults(func=_demo)
