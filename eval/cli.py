"""`mmu eval embed|run|submit|leaderboard|baselines`. `configure_parser` imports nothing heavy; each
command imports torch / scikit-learn only when it runs."""
from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path


def _colmap(items) -> dict:
    out = {}
    for item in items or []:
        k, sep, v = item.partition("=")
        if not sep:
            raise SystemExit(f"--column-map {item!r}: expected DATASET_COLUMN=MODEL_COLUMN")
        out[k] = v
    return out


def _common(p, hub=True):
    if hub:
        p.add_argument("--hub", required=True, help="the hub directory holding the task datasets")
    p.add_argument("--tasks", nargs="+", default=None, metavar="TASK", help="task names (default: all current)")
    p.add_argument("--cache", default=None, help="embedding cache folder (default $MMU_CACHE or "
                   "~/.cache/mmu, /embeddings); 'none' disables it")
    p.add_argument("--column-map", nargs="+", default=None, metavar="DATASET_COL=MODEL_COL",
                   help="which model column reads which dataset column (default: same name, else the "
                        "model's only column of that kind)")


def _cache(args):
    from mmu.eval.embed import default_cache_dir

    if args.cache == "none":
        return None
    return Path(args.cache) / "embeddings" if args.cache else default_cache_dir()


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.description = textwrap.dedent("""\
        The benchmark: embed held-out objects with a frozen checkpoint, run the named protocols
        on the catalog's tasks, write results with provenance, submit them to a leaderboard.

          mmu eval run --checkpoint CKPT --hub HUB --out RESULTS
          mmu eval baselines --config pretrain/configs/X.yaml --hub HUB --out RESULTS
          mmu eval submit RESULTS/MODEL --leaderboard REPO
          mmu eval leaderboard --leaderboard REPO --out SITE""")
    sub = p.add_subparsers(dest="eval_command", metavar="COMMAND")

    e = sub.add_parser("embed", help="embeddings of a dataset's rows to Parquet (float32, cached)")
    e.add_argument("--checkpoint", required=True, help="a `mmu pretrain` checkpoint (.pt)")
    e.add_argument("--dataset", required=True, help="a hub dataset (or paired catalog)")
    e.add_argument("--hub", required=True)
    e.add_argument("--out", required=True, help="output Parquet file")
    e.add_argument("--column", required=True, help="the dataset's modality column to embed")
    e.add_argument("--model-column", default=None, help="the model's column reading it (default: same "
                   "name, else the model's only column of that kind)")
    e.add_argument("--split", nargs="+", default=["train", "val", "test"], choices=["train", "val", "test"])
    e.add_argument("--which", default="projection", choices=["projection", "backbone"])
    e.add_argument("--cache", default=None)
    e.add_argument("--device", default=None, help="cpu / cuda (default: cuda when present)")
    e.set_defaults(func=run_embed)

    r = sub.add_parser("run", help="evaluate a checkpoint on the tasks; one results JSON per task x protocol")
    r.add_argument("--checkpoint", required=True)
    r.add_argument("--out", required=True, help="results folder (RESULTS/<task>__<protocol>.json)")
    r.add_argument("--protocols", nargs="+", default=None, help="subset of each task's protocols")
    r.add_argument("--which", default="projection", choices=["projection", "backbone"])
    r.add_argument("--name", default=None, help="model name (default: the checkpoint's run name)")
    r.add_argument("--device", default=None)
    _common(r)
    r.set_defaults(func=run_run)

    s = sub.add_parser("submit", help="validate results (recomputing every metric) and add them to a leaderboard")
    s.add_argument("results", help="a results folder (one model) or file")
    s.add_argument("--leaderboard", required=True, help="a git repository path, or hf://datasets/OWNER/NAME")
    s.add_argument("--model", default=None, help="entry name (default: the results' model name)")
    s.add_argument("--replace", action="store_true", help="overwrite existing entries of this model")
    s.add_argument("--branch", default=None, help="git branch to commit to (default submit/<model>)")
    s.add_argument("--verified-by", default=None, metavar="RERUN",
                   help="maintainers: results of your own re-run; marks the entry verified")
    s.set_defaults(func=run_submit)

    lb = sub.add_parser("leaderboard", help="render the leaderboard as Markdown + a static HTML page")
    lb.add_argument("--leaderboard", required=True, help="a git repository, a folder, or hf://datasets/OWNER/NAME")
    lb.add_argument("--out", required=True, help="site folder (index.html, leaderboard.md, model-cards/)")
    lb.add_argument("--ref", default="HEAD", help="git ref to render (default HEAD)")
    lb.set_defaults(func=run_leaderboard)

    b = sub.add_parser("baselines", help="random-weight, raw-feature PCA and supervised baselines")
    b.add_argument("--config", required=True, help="pretraining config whose encoders the baselines use")
    b.add_argument("--out", required=True, help="results root (OUT/baseline-<kind>/)")
    b.add_argument("--kinds", nargs="+", default=["random-weights", "raw-pca", "supervised"],
                   choices=["random-weights", "raw-pca", "supervised"])
    b.add_argument("--epochs", type=int, default=5, help="supervised training epochs (default 5)")
    b.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    _common(b)
    b.set_defaults(func=run_baselines)
    p.set_defaults(func=lambda a: (p.print_help(), 0)[1])


def run(args) -> int:
    return int(args.func(args) or 0)


def _fail(e) -> int:
    print(f"error: {e}", file=sys.stderr)
    return 2


def run_embed(args) -> int:
    from mmu.eval.embed import CheckpointEmbedder, embed_split, map_columns, write_embeddings
    from mmu.hub.layout import dataset_dir, read_manifest

    try:
        emb = CheckpointEmbedder(args.checkpoint, device=args.device)
        manifest = read_manifest(args.hub, args.dataset)
        mcol = args.model_column or map_columns(emb.columns, [args.column], "",
                                                None)[args.column]
    except (FileNotFoundError, KeyError, ValueError) as e:
        return _fail(e)
    import numpy as np

    all_ids, all_emb, splits, keys = [], [], [], {}
    for split in args.split:
        files = [dataset_dir(args.hub, args.dataset) / f for f in manifest["data_files"].get(split, [])]
        ids, x, info = embed_split(emb, files, args.dataset, manifest["content_revision"], split, args.column,
                                   args.which, _cache(args), model_column=mcol)
        keys[split] = info["key"]
        all_ids += list(ids)
        all_emb.append(x)
        splits += [split] * len(ids)
    x = np.concatenate([a for a in all_emb if a.size]) if any(a.size for a in all_emb) else np.zeros((0, 0), np.float32)
    write_embeddings(Path(args.out), all_ids, x, {"model_sha256": emb.sha256, "dataset": args.dataset,
                                                  "dataset_revision": manifest["content_revision"],
                                                  "column": args.column, "model_column": mcol, "which": args.which,
                                                  "dtype": "float32", "cache_keys": keys},
                     extra={"split": splits})
    print(f"wrote {len(all_ids)} {args.which} embeddings ({x.shape[1] if x.ndim == 2 else 0}-d float32) to {args.out}")
    return 0


def run_run(args) -> int:
    from mmu.eval.embed import CheckpointEmbedder
    from mmu.eval.protocols import ProtocolError
    from mmu.eval.run import model_block, run_tasks
    from mmu.eval.tasks import TaskError

    try:
        emb = CheckpointEmbedder(args.checkpoint, device=args.device)
        run_tasks(emb, args.hub, args.out, model=model_block(emb, args.name), task_names=args.tasks,
                  protocol_names=args.protocols, which=args.which, cache_dir=_cache(args),
                  column_map=_colmap(args.column_map))
    except (TaskError, ProtocolError, FileNotFoundError, KeyError) as e:
        return _fail(e)
    return 0


def run_submit(args) -> int:
    from mmu.eval.submit import SubmitError, submit

    try:
        submit(Path(args.results), args.leaderboard, model=args.model, replace=args.replace,
               branch=args.branch, verified_by=Path(args.verified_by) if args.verified_by else None)
    except SubmitError as e:
        return _fail(e)
    return 0


def run_leaderboard(args) -> int:
    from mmu.eval.leaderboard import render

    render(args.leaderboard, args.out, ref=args.ref)
    return 0


def run_baselines(args) -> int:
    from mmu.eval.baselines import run_baselines as go
    from mmu.eval.protocols import ProtocolError
    from mmu.eval.tasks import TaskError
    from mmu.pretrain.config import ConfigError, load_config

    try:
        cfg = load_config(args.config, args.set)
        go(cfg, args.hub, Path(args.out), kinds=tuple(args.kinds), task_names=args.tasks,
           cache_dir=_cache(args), column_map=_colmap(args.column_map), supervised_epochs=args.epochs)
    except (ConfigError, TaskError, ProtocolError, FileNotFoundError, KeyError) as e:
        return _fail(e)
    return 0
