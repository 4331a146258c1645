"""The `mmu` command line: the top-level parser. Each command lives in its own module of
mmu/cli/ (or, for sim, pretrain and eval, in that package's cli module) and imports its heavy
dependencies only when it runs."""
from __future__ import annotations

import argparse
import sys

from mmu.cli import build, catalog, demo, fetch, pairing

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


def _sim(args) -> int:
    from mmu.sim.cli import run

    return run(args)


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mmu", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    catalog.register(sub)
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
    fetch.register(sub)
    build.register(sub)
    pairing.register(sub)
    demo.register(sub)
    from mmu.pretrain import cli as pretrain_cli  # light: no torch until the command runs
    pt = sub.add_parser("pretrain", help="contrastive pretraining of one encoder per modality (CPU, GPU, torchrun)",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    pretrain_cli.configure_parser(pt)
    pt.set_defaults(func=pretrain_cli.run)

    from mmu.hub import publish, schemadoc
    push = sub.add_parser("push", help="upload a built dataset to a Hugging Face Hub dataset repository")
    publish.configure_push_parser(push)
    push.set_defaults(func=publish.run_push)
    docs = sub.add_parser("docs", help="generated documentation (the hub format specification)")
    dsub = docs.add_subparsers(dest="docs_command", metavar="DOC")
    schema_doc = dsub.add_parser("schema", help="write docs/schema.md from the schema code")
    schemadoc.configure_docs_parser(schema_doc)
    schema_doc.set_defaults(func=schemadoc.run_docs_schema)
    docs.set_defaults(func=lambda a: (docs.print_help(), 0)[1])
    # no torch or scikit-learn until an eval command runs
    from mmu.eval import cli as eval_cli
    ev = sub.add_parser("eval", help="the benchmark: embed, run tasks, submit, leaderboard, baselines")
    eval_cli.configure_parser(ev)
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
