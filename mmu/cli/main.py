"""The `mmu` command line: the top-level parser. Each command registers its own parser from its
module of mmu/cli/ (or, for sim, pretrain and eval, that package's cli module) and imports its
heavy dependencies only when it runs; `mmu.cli.common` holds the options, exit codes and error
lines they share."""
from __future__ import annotations

import argparse
import sys

import mmu
from mmu.cli import build, catalog, common, demo, docs, fetch, pairing, push

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
  mmu eval run --checkpoint CKPT ...     the benchmark: evaluate, submit, render the leaderboard
  mmu catalog cite NAME ...              BibTeX, acknowledgements and license warnings
  mmu push NAME --hub HUB --repo ORG/N   upload a built dataset to the Hugging Face Hub

Run `mmu COMMAND --help` for the details of one command. Options such as -v/-q go before or
after the command. Overrides of a config are KEY=VALUE with a dotted key, the value read as YAML
(`mmu pretrain --config C.yaml --set train.steps=100 "data.train=[shards/train]"`).
Exit status: 0 ok, 1 the command failed, 2 a usage error (bad option, unknown name)."""


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mmu", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"mmu {mmu.__version__}")
    common.add_global_options(p)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    # light modules: each imports torch, Dask or galsim only when its command runs
    from mmu.eval import cli as eval_cli
    from mmu.pretrain import cli as pretrain_cli
    from mmu.sim import cli as sim_cli

    for module in (catalog, sim_cli, fetch, build, pairing, demo, pretrain_cli, push, docs, eval_cli):
        module.register(sub)
    common.propagate_global_options(p)
    return p


def main(argv: list[str] | None = None) -> int:
    """The `mmu` console script: returns the exit status (0 ok, 1 failed, 2 usage)."""
    return common.run_main(make_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
