"""`mmu pretrain --config FILE [key=value ...] [--resume]` (also `python -m mmu.pretrain`, which is
what `torchrun --nproc_per_node N -m mmu.pretrain --config FILE` runs on every rank)."""
from __future__ import annotations

import json
import sys


def configure_parser(p) -> None:
    p.add_argument("--config", required=True, help="a YAML config, e.g. pretrain/configs/tiny_cpu.yaml")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="dotted overrides parsed as YAML, e.g. train.steps=200 data.batch_size=64")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in run.dir from its last checkpoint, exactly")


def run(args) -> int:
    from mmu.pretrain.checkpoint import CheckpointError
    from mmu.pretrain.config import ConfigError, load_config
    from mmu.pretrain.train import TrainingError, run_training

    try:
        cfg = load_config(args.config, args.overrides)
        summary = run_training(cfg, resume=args.resume)
    except (ConfigError, CheckpointError, TrainingError, FileNotFoundError, ValueError, KeyError) as e:
        print(f"error: {e.args[0] if isinstance(e, KeyError) and e.args else e}", file=sys.stderr)
        return 2
    if summary.get("checkpoint"):
        print(json.dumps({"checkpoint": summary["checkpoint"], "step": summary["step"],
                          "loss": summary["last"].get("loss"), "val": summary.get("val")}))
    return 0


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m mmu.pretrain", description=__doc__)
    configure_parser(p)
    return run(p.parse_args(argv))
