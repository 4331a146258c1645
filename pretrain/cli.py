"""`mmu pretrain --config FILE [--set key=value ...] [--resume]` (also `python -m mmu.pretrain`, which
is what `torchrun --nproc_per_node N -m mmu.pretrain --config FILE` runs on every rank)."""
from __future__ import annotations

import argparse
import json
import textwrap

HELP = textwrap.dedent("""\
    Contrastive (CLIP-style) pretraining of one encoder per modality on WebDataset shards written
    by `mmu export-wds`. The config is YAML (see pretrain/configs/); overrides are KEY=VALUE with a
    dotted key, the value read as YAML, after --set (or, as before, without it). The resolved config,
    checkpoints and metrics go to run.dir.

    exit status: 0 trained; 1 training failed; 2 a usage error (no such config, an invalid config
    or override).

    examples:
      mmu pretrain --config pretrain/configs/tiny_cpu.yaml --set train.steps=100 "data.train=[shards/train]"
      torchrun --nproc_per_node 4 -m mmu.pretrain --config pretrain/configs/astroclip.yaml""")


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.description = HELP
    p.add_argument("--config", required=True, help="a YAML config, e.g. pretrain/configs/tiny_cpu.yaml")
    p.add_argument("--set", action="extend", nargs="+", default=[], metavar="KEY=VALUE", dest="set",
                   help="dotted overrides read as YAML, e.g. --set train.steps=200 data.batch_size=64")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=argparse.SUPPRESS)  # the old spelling
    p.add_argument("--resume", action="store_true",
                   help="continue the run in run.dir from its last checkpoint, exactly")


def register(sub) -> None:
    p = sub.add_parser("pretrain", help="contrastive pretraining of one encoder per modality (CPU, GPU, torchrun)")
    configure_parser(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from mmu.cli.common import CommandFailed, UsageError, require_extra

    require_extra("train", "mmu pretrain")
    from mmu.pretrain.checkpoint import CheckpointError
    from mmu.pretrain.config import ConfigError, load_config
    from mmu.pretrain.train import TrainingError, run_training

    try:
        cfg = load_config(args.config, [*args.overrides, *args.set])
    except ConfigError as e:
        raise UsageError(str(e)) from None
    try:
        summary = run_training(cfg, resume=args.resume)
    except (CheckpointError, TrainingError) as e:
        raise CommandFailed(str(e)) from None
    if summary.get("checkpoint"):
        print(json.dumps({"checkpoint": summary["checkpoint"], "step": summary["step"],
                          "loss": summary["last"].get("loss"), "val": summary.get("val")}))
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m mmu.pretrain ...`: the same options and exit codes as `mmu pretrain`."""
    from mmu.cli.common import add_global_options, run_main

    p = argparse.ArgumentParser(prog="python -m mmu.pretrain")
    configure_parser(p)
    add_global_options(p)
    p.set_defaults(func=run)
    return run_main(p, argv)
