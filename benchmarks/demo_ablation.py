"""What moves the demo's headline number? Pretrain the demo config with overrides on a finished
`mmu demo` folder (its shards, hub and task overlay) and probe redshift from images and from
spectra (linear.v1, test split), against the same encoders at random weights.

    mmu demo --size small --out demo-small                     # once (about 12 minutes)
    python benchmarks/demo_ablation.py demo-small base         # the demo config as shipped
    python benchmarks/demo_ablation.py demo-small b64 data.batch_size=64
    python benchmarks/demo_ablation.py demo-small seed1 seed=1 --random

Each run trains into OUT/ablation/TAG (refusing an existing one) and prints one JSON line:
the overrides, training seconds, the final validation loss and the R² of each probe, on the
projection and on the backbone features, and with --random the random-weight encoder's.
Set OMP_NUM_THREADS=1 to run two at once on a 2-core machine.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

TASKS = ["DemoRedshiftImage.v1", "DemoRedshiftSpectrum.v1"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("demo", type=Path, help="a finished `mmu demo` output folder")
    p.add_argument("tag", help="a name for this variant (its run folder)")
    p.add_argument("overrides", nargs="*", help="config overrides, KEY=VALUE (as `mmu pretrain`)")
    p.add_argument("--random", action="store_true", help="also probe the random-weight encoder")
    args = p.parse_args(argv)
    out = args.demo.resolve()
    overlay = out / "demo-tasks.yaml"
    if not overlay.exists():
        sys.exit(f"{overlay}: not found; run `mmu demo --out {args.demo}` to the end first")
    os.environ["MMU_CATALOG"] = str(overlay)

    from mmu.eval.baselines import run_baselines
    from mmu.eval.embed import CheckpointEmbedder
    from mmu.eval.run import model_block, run_tasks
    from mmu.pretrain import config as config_module
    from mmu.pretrain.config import load_config
    from mmu.pretrain.train import run_training

    run = out / "ablation" / args.tag
    if run.exists():
        sys.exit(f"{run}: this tag has run already; pick another tag (or delete the folder)")
    base = Path(config_module.__file__).parent / "configs" / "demo.yaml"
    cfg = load_config(str(base), [f"data.train=[{out / 'shards' / 'train'}]", f"data.val=[{out / 'shards' / 'val'}]",
                                  f"run.dir={run}", "train.progress=false", *args.overrides])
    t0 = time.perf_counter()
    summary = run_training(cfg)
    seconds = time.perf_counter() - t0

    def scores(results):
        return {r["task"]["name"]: round(r["main_score"]["value"], 4) for r in results
                if r["protocol"]["name"] == "linear.v1"}

    emb = CheckpointEmbedder(summary["checkpoint"])
    row = {"tag": args.tag, "overrides": args.overrides, "train_s": round(seconds, 1),
           "val_loss": summary.get("val", {}).get("val_loss")}
    for which in ("projection", "backbone"):
        row[which] = scores(run_tasks(emb, out / "hub", run / f"results-{which}", model=model_block(emb, name=args.tag),
                                      task_names=TASKS, protocol_names=["linear.v1"], which=which))
    if args.random:
        done = run_baselines(cfg, out / "hub", run / "results-random", kinds=("random-weights",), task_names=TASKS,
                             protocol_names=["linear.v1"])
        row["random_weights"] = scores(done["random-weights"])
    print(json.dumps(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
