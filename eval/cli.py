"""`mmu eval embed|run|submit|leaderboard|baselines|lock|add-lock`. `register` imports nothing heavy; each
command imports torch / scikit-learn only when it runs."""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import textwrap
from pathlib import Path

from mmu.cli.common import UsageError, mark_group, require_extra

log = logging.getLogger(__name__)

CHECKPOINT_HELP = ("a checkpoint written by `mmu pretrain`: a run folder (run.dir; its newest intact "
                   "checkpoint is used) or one file, RUN/checkpoints/stepNNNNNNNN-<sha256 prefix>.pt; "
                   "it carries the resolved config and the model's modality columns")
WHICH_HELP = ("which embedding: 'projection' (default), the shared contrastive space every modality "
              "is projected to, or 'backbone', each encoder's output before its projection head")
TRUST_HELP = ("build encoders that the checkpoint's config names as `module:name` (this imports that "
              "module, running its code); without it only built-in encoders load. Use only for "
              "checkpoints whose source you trust")
DEVICE_HELP = "torch device to embed on: cpu, cuda, cuda:1, mps (default: cuda when present, else cpu)"
TASKS_HELP = ("task names (default: every current task), and/or task files: a YAML overlay of the catalog "
              "(e.g. a demo's OUT/demo-tasks.yaml) whose tasks are added and, without names, are the "
              "ones run")
CACHE_HELP = ("embedding cache root: embeddings go to CACHE/embeddings (default $MMU_CACHE/embeddings, "
              "else ~/.cache/mmu/embeddings); 'none' disables the cache")
TASK_FILES_HELP = ("task files: YAML overlays of the catalog defining the tasks of these results, "
                   "e.g. a demo's OUT/demo-tasks.yaml (the same as MMU_CATALOG=FILE)")


def _colmap(items) -> dict:
    out = {}
    for item in items or []:
        k, sep, v = item.partition("=")
        if not sep or not k or not v:
            raise UsageError(f"--column-map {item!r}: expected DATASET_COLUMN=MODEL_COLUMN")
        out[k] = v
    return out


def _is_task_file(item: str) -> bool:
    return Path(item).suffix in (".yaml", ".yml") or Path(item).is_file()


def _split_tasks(items: list[str] | None, names_allowed: bool = True) -> tuple[list[Path], list[str]]:
    """--tasks -> (task files, task names). A name ending in .yaml/.yml, or an existing file, is a file."""
    files, names = [], []
    for item in items or []:
        if _is_task_file(item):
            if not Path(item).is_file():
                raise UsageError(f"--tasks {item}: no such task file")
            files.append(Path(item))
        elif names_allowed:
            names.append(item)
        else:
            raise UsageError(f"--tasks {item}: not a task file (a YAML overlay of the catalog, e.g. "
                             "demo/demo-tasks.yaml); this command takes no task names")
    return files, names


def _file_task_names(path: Path) -> list[str]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise UsageError(f"--tasks {path}: not valid YAML: {e}") from None
    names = [t.get("name") for t in (data or {}).get("tasks") or [] if isinstance(t, dict)] \
        if isinstance(data, dict) else []
    if not names:
        raise UsageError(f"--tasks {path}: the file defines no tasks (expected a `tasks:` list, as in a "
                         "demo's demo-tasks.yaml)")
    return names


@contextlib.contextmanager
def task_overlays(items: list[str] | None, names_allowed: bool = True):
    """Within the block the catalog also holds the tasks of the files of --tasks; yields the task
    names to run: those named, else those the files define, else None (every current task)."""
    from mmu.registry.catalog import CatalogError, active_overlays, load_catalog

    files, names = _split_tasks(items, names_allowed)
    env = {Path(p).resolve() for p in os.environ.get("MMU_CATALOG", "").split(os.pathsep) if p}
    new = [f for f in files if f.resolve() not in env]  # already an overlay through MMU_CATALOG
    with active_overlays(*new):
        try:
            load_catalog()
        except CatalogError as e:
            raise UsageError(f"--tasks: {e}") from None
        if files and not names:
            names = [n for f in files for n in _file_task_names(f)]
            log.info("tasks of %s: %s", ", ".join(map(str, files)), ", ".join(names))
        yield names or None


def _common(p, hub=True):
    if hub:
        p.add_argument("--hub", required=True, help="the hub directory holding the task datasets")
    p.add_argument("--tasks", nargs="+", default=None, metavar="TASK|FILE", help=TASKS_HELP)
    p.add_argument("--cache", default=None, help=CACHE_HELP)
    p.add_argument("--column-map", nargs="+", default=None, metavar="DATASET_COL=MODEL_COL",
                   help="which model column reads which dataset column (default: same name, else the "
                        "model's only column of that kind)")


def _cache(args):
    from mmu.eval.embed import default_cache_dir

    if args.cache == "none":
        return None
    return Path(args.cache) / "embeddings" if args.cache else default_cache_dir()


def _parser(sub, name: str, help: str, example: str, description: str | None = None):
    return sub.add_parser(name, help=help, description=description or help[0].upper() + help[1:] + ".",
                          epilog=f"example:  {example}", formatter_class=argparse.RawDescriptionHelpFormatter)


def register(sub) -> None:
    """Add the `eval` command and its subcommands to the top-level `mmu` subparsers.

    Args:
        sub: The subparsers object of the `mmu` parser (from `add_subparsers`).
    """
    p = sub.add_parser("eval", help="the benchmark: embed, run tasks, submit, leaderboard, baselines")
    configure_parser(p)


def configure_parser(p: argparse.ArgumentParser) -> None:
    """Configure a parser as `mmu eval`, with its description and subcommands.

    Adds the embed, run, submit, leaderboard and baselines subcommands, each with `func` set to
    its handler (`run_embed`, `run_run`, ...).

    Args:
        p: The parser to configure, modified in place.
    """
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.description = textwrap.dedent("""\
        The benchmark: embed held-out objects with a frozen checkpoint, run the named protocols
        on the catalog's tasks, write results with provenance, submit them to a leaderboard.

          mmu eval run --checkpoint CKPT --hub HUB --out RESULTS
          mmu eval baselines --config pretrain/configs/X.yaml --hub HUB --out RESULTS
          mmu eval submit RESULTS/MODEL --leaderboard REPO [--hub HUB]
          mmu eval leaderboard --leaderboard REPO --out SITE
          mmu eval lock --hub HUB -o LOCK          (a build's publisher: pin its rows and labels)
          mmu eval add-lock LOCK --leaderboard REPO --added-by NAME   (a maintainer trusts it)

        On a demo's outputs add its task file, e.g. --tasks demo/demo-tasks.yaml.
        exit status: 0 ok; 1 failed; 2 a usage error or refused input (unknown task, too few
        rows, results that do not validate).""")
    p.epilog = ("example:  mmu eval run --checkpoint demo/runs/demo --hub demo/hub --out demo/my-results "
                "--tasks demo/demo-tasks.yaml")
    mark_group(p)
    sub = p.add_subparsers(dest="eval_command", metavar="COMMAND")

    e = _parser(sub, "embed", "embeddings of a dataset's rows to Parquet (float32, cached)",
                "mmu eval embed --checkpoint CKPT --dataset ls_desi --hub hub --column desi_spectrum "
                "--out emb.parquet")
    e.add_argument("--checkpoint", required=True, help=CHECKPOINT_HELP)
    e.add_argument("--dataset", required=True, help="a hub dataset (or paired catalog)")
    e.add_argument("--hub", required=True, help="the hub directory holding the dataset")
    e.add_argument("--out", required=True, help="output Parquet file")
    e.add_argument("--column", required=True, help="the dataset's modality column to embed")
    e.add_argument("--model-column", default=None, help="the model's column reading it (default: same "
                   "name, else the model's only column of that kind)")
    e.add_argument("--split", nargs="+", default=["train", "val", "test"], choices=["train", "val", "test"],
                   help="splits to embed (default all three)")
    e.add_argument("--which", default="projection", choices=["projection", "backbone"], help=WHICH_HELP)
    e.add_argument("--cache", default=None, help=CACHE_HELP)
    e.add_argument("--device", default=None, help=DEVICE_HELP)
    e.add_argument("--batch-rows", type=int, default=None, metavar="N", help=BATCH_ROWS_HELP)
    e.add_argument("--trust-code", action="store_true", help=TRUST_HELP)
    e.set_defaults(func=run_embed)

    r = _parser(sub, "run", "evaluate a checkpoint on the tasks; one results JSON per task x protocol",
                "mmu eval run --checkpoint demo/runs/demo --hub demo/hub --out demo/my-results "
                "--tasks demo/demo-tasks.yaml",
                description=textwrap.dedent("""\
                    Evaluate a frozen checkpoint: embed each task's train/val/test objects (cached by
                    checkpoint, dataset revision, split and preprocessing), run each task's protocols
                    (linear and kNN probes, retrieval) and write RESULTS/<task>__<protocol>.json with
                    the metrics, predictions and provenance, ready for `mmu eval submit`."""))
    r.add_argument("--checkpoint", required=True, help=CHECKPOINT_HELP)
    r.add_argument("--out", required=True, help="results folder (RESULTS/<task>__<protocol>.json)")
    r.add_argument("--protocols", nargs="+", default=None, help="subset of each task's protocols")
    r.add_argument("--which", default="projection", choices=["projection", "backbone"], help=WHICH_HELP)
    r.add_argument("--name", default=None, help="model name (default: the checkpoint's run name)")
    r.add_argument("--device", default=None, help=DEVICE_HELP)
    r.add_argument("--batch-rows", type=int, default=None, metavar="N", help=BATCH_ROWS_HELP)
    r.add_argument("--trust-code", action="store_true", help=TRUST_HELP)
    _common(r)
    r.set_defaults(func=run_run)

    s = _parser(sub, "submit", "validate results (recomputing every metric) and add them to a leaderboard",
                "mmu eval submit demo/my-results --leaderboard demo/leaderboard --tasks demo/demo-tasks.yaml")
    s.add_argument("results", help="a results folder (one model) or file")
    s.add_argument("--leaderboard", required=True, help="a git repository path, or hf://datasets/OWNER/NAME")
    s.add_argument("--model", default=None, help="entry name (default: the results' model name)")
    s.add_argument("--replace", action="store_true", help="overwrite existing entries of this model")
    s.add_argument("--branch", default=None, help="git branch to commit to (default submit/<model>)")
    s.add_argument("--verified-by", default=None, metavar="RERUN",
                   help="maintainers: results of your own re-run; marks the entry verified")
    s.add_argument("--hub", default=None, help="a hub holding the results' builds: for a task whose test labels no "
                   "lock pins (its catalog lock or one the board trusts), read them and the id sets from it")
    s.add_argument("--tasks", nargs="+", default=None, metavar="FILE", help=TASK_FILES_HELP)
    s.set_defaults(func=run_submit)

    lk = _parser(sub, "lock", "pin a built hub's task rows and test labels in a lock file, for others to "
                 "evaluate against exactly those rows",
                 "mmu eval lock --hub hub -o desi_dr1.lock --tasks DESISpectype.v1",
                 description=textwrap.dedent("""\
                    Write the lock of a build: per dataset its content revision, rows, inputs'
                    revisions and whether it is a mock build; per task the id sets of train, val and
                    test and the hash of the test labels. Whoever publishes a build of the archive
                    data publishes its lock; a leaderboard's maintainer adds it with `mmu eval
                    add-lock`, and the board then scores results on that build against it."""))
    lk.add_argument("--hub", required=True, help="the hub holding the built datasets")
    lk.add_argument("-o", "--out", required=True, help="the lock file to write (JSON)")
    lk.add_argument("--tasks", nargs="+", default=None, metavar="TASK|FILE",
                    help="task names and/or task files (default: every current task that is not a mock task "
                         "and whose dataset is built in the hub)")
    lk.set_defaults(func=run_lock)

    al = _parser(sub, "add-lock", "maintainers: trust a build's published lock on a leaderboard",
                 "mmu eval add-lock desi_dr1.lock --leaderboard board --added-by 'A. Maintainer'")
    al.add_argument("lock", help="the lock file (`mmu eval lock`)")
    al.add_argument("--leaderboard", required=True, help="a git repository path, or hf://datasets/OWNER/NAME")
    al.add_argument("--added-by", required=True, metavar="NAME", help="who trusts the lock (recorded on the board)")
    al.add_argument("--hub", default=None, help="check the lock against this hub's builds first (recommended)")
    al.add_argument("--branch", default=None, help="git branch to commit to (default lock/<revision>)")
    al.add_argument("--tasks", nargs="+", default=None, metavar="FILE",
                    help="task files: YAML overlays of the catalog defining the lock's tasks (as MMU_CATALOG=FILE)")
    al.set_defaults(func=run_add_lock)

    lb = _parser(sub, "leaderboard", "render the leaderboard as Markdown + a static HTML page",
                 "mmu eval leaderboard --leaderboard demo/leaderboard --out demo/my-site --tasks demo/demo-tasks.yaml")
    lb.add_argument("--leaderboard", required=True, help="a git repository, a folder, or hf://datasets/OWNER/NAME")
    lb.add_argument("--out", required=True, help="site folder (index.html, leaderboard.md, model-cards/)")
    lb.add_argument("--ref", default="HEAD", help="git ref to render (default HEAD)")
    lb.add_argument("--tasks", nargs="+", default=None, metavar="FILE",
                    help=TASK_FILES_HELP + "; the board's columns are the catalog's tasks")
    lb.set_defaults(func=run_leaderboard)

    b = _parser(sub, "baselines", "random-weight, raw-feature PCA and supervised baselines",
                "mmu eval baselines --config pretrain/configs/tiny_cpu.yaml --hub hub --out results "
                "--set data.batch_size=16")
    b.add_argument("--config", required=True, help="pretraining config whose encoders the baselines use")
    b.add_argument("--out", required=True, help="results root (OUT/baseline-<kind>/)")
    b.add_argument("--kinds", nargs="+", default=["random-weights", "raw-pca", "supervised"],
                   choices=["random-weights", "raw-pca", "supervised"])
    b.add_argument("--epochs", type=int, default=5, help="supervised training epochs (default 5)")
    b.add_argument("--device", default=None, help=DEVICE_HELP.replace("embed on", "train and embed on"))
    b.add_argument("--batch-size", type=int, default=64,
                   help="supervised: the rows of a file read per training step (default 64)")
    b.add_argument("--set", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                   help="overrides of the config, dotted keys with YAML values (as `mmu pretrain --set`), "
                        "e.g. --set data.batch_size=16")
    _common(b)
    b.set_defaults(func=run_baselines)


def run(args) -> int:
    """Run the handler of the parsed `mmu eval` subcommand.

    Args:
        args: The parsed arguments; `args.func` is the subcommand's handler.

    Returns:
        The handler's exit status (0 when it returns None).
    """
    return int(args.func(args) or 0)


BATCH_ROWS_HELP = "rows per encoder batch (default: 1024 on a GPU, 256 on a CPU); smaller if the GPU runs out of memory"


def _fail(e) -> int:
    """Refused input (a task, protocol, checkpoint or result the command cannot use): exit 2."""
    raise UsageError(e.args[0] if isinstance(e, KeyError) and e.args else str(e))


def run_embed(args) -> int:
    """`mmu eval embed`: embed one column of a hub dataset with a checkpoint and write Parquet.

    Embeds each requested split (using the embedding cache), then writes all rows to `args.out`
    with a `split` column and the provenance in the file metadata.

    Args:
        args: The parsed arguments of `mmu eval embed`.

    Returns:
        0 on success.

    Raises:
        UsageError: The checkpoint, dataset or column cannot be used (exit status 2).
        MissingExtra: The `eval` extra is not installed.
    """
    require_extra("eval", "mmu eval embed")
    from mmu.eval.embed import CheckpointEmbedder, EmbedError, embed_split, map_columns, write_embeddings
    from mmu.hub.layout import dataset_dir, read_manifest

    try:
        emb = CheckpointEmbedder(args.checkpoint, device=args.device, trust_code=args.trust_code)
        manifest = read_manifest(args.hub, args.dataset)
        mcol = args.model_column or map_columns(emb.columns, [args.column], "",
                                                None)[args.column]
    except (FileNotFoundError, KeyError, ValueError) as e:
        return _fail(e)
    import numpy as np

    all_ids, all_emb, splits, keys = [], [], [], {}
    for split in args.split:
        files = [dataset_dir(args.hub, args.dataset) / f for f in manifest.data_files.get(split, [])]
        try:
            ids, x, info = embed_split(emb, files, args.dataset, manifest.content_revision, split, args.column,
                                       args.which, _cache(args), model_column=mcol, batch_rows=args.batch_rows)
        except EmbedError as e:
            return _fail(e)
        keys[split] = info["key"]
        all_ids += list(ids)
        all_emb.append(x)
        splits += [split] * len(ids)
    if not all_ids:
        raise UsageError(f"{args.dataset} has no rows with {args.column!r} in split(s) {', '.join(args.split)}: "
                         "nothing to embed")
    x = np.concatenate([a for a in all_emb if a.size])
    write_embeddings(Path(args.out), all_ids, x, {"model_sha256": emb.sha256, "dataset": args.dataset,
                                                  "dataset_revision": manifest.content_revision,
                                                  "column": args.column, "model_column": mcol, "which": args.which,
                                                  "dtype": "float32", "cache_keys": keys},
                     extra={"split": splits})
    print(f"wrote {len(all_ids)} {args.which} embeddings ({x.shape[1] if x.ndim == 2 else 0}-d float32) to {args.out}")
    return 0


def run_run(args) -> int:
    """`mmu eval run`: evaluate a checkpoint on the tasks and write one results JSON per task x protocol.

    Args:
        args: The parsed arguments of `mmu eval run`.

    Returns:
        0 on success.

    Raises:
        UsageError: A task, protocol, checkpoint, file or column map is refused (exit status 2).
        MissingExtra: The `eval` extra is not installed.
    """
    require_extra("eval", "mmu eval run")
    from mmu.eval.embed import CheckpointEmbedder, EmbedError
    from mmu.eval.protocols import ProtocolError
    from mmu.eval.run import model_block, run_tasks
    from mmu.eval.tasks import TaskError
    from mmu.pretrain.checkpoint import CheckpointError

    column_map = _colmap(args.column_map)
    with task_overlays(args.tasks) as task_names:
        try:
            emb = CheckpointEmbedder(args.checkpoint, device=args.device, trust_code=args.trust_code)
            run_tasks(emb, args.hub, args.out, model=model_block(emb, args.name), task_names=task_names,
                      protocol_names=args.protocols, which=args.which, cache_dir=_cache(args),
                      column_map=column_map, batch_rows=args.batch_rows)
        except (TaskError, ProtocolError, CheckpointError, EmbedError, FileNotFoundError, KeyError) as e:
            return _fail(e)
    return 0


def run_submit(args) -> int:
    """`mmu eval submit`: validate results and add them to a leaderboard.

    Args:
        args: The parsed arguments of `mmu eval submit`.

    Returns:
        0 on success.

    Raises:
        UsageError: The submission is refused (a `SubmitError`; exit status 2), or a task file is
            invalid.
        MissingExtra: The `eval` extra is not installed.
    """
    require_extra("eval", "mmu eval submit")
    from mmu.eval.submit import SubmitError, submit

    with task_overlays(args.tasks, names_allowed=False):
        try:
            submit(Path(args.results), args.leaderboard, model=args.model, replace=args.replace,
                   branch=args.branch, verified_by=Path(args.verified_by) if args.verified_by else None,
                   hub=Path(args.hub) if args.hub else None)
        except SubmitError as e:
            return _fail(e)
    return 0


def run_lock(args) -> int:
    """`mmu eval lock`: write the lock of a built hub's tasks (what a build's publisher publishes).

    Args:
        args: The parsed arguments of `mmu eval lock`.

    Returns:
        0 on success.

    Raises:
        UsageError: No task to lock, a task that cannot be opened on the hub, or an unknown task
            (exit status 2).
        MissingExtra: The `eval` extra is not installed.
    """
    require_extra("eval", "mmu eval lock")
    from mmu.eval.submit import make_lock
    from mmu.eval.tasks import TaskError, tasks
    from mmu.hub.layout import atomic_write_json

    hub = Path(args.hub)
    with task_overlays(args.tasks) as names:
        try:
            chosen = tasks(names)
        except TaskError as e:
            return _fail(e)
        if not names:
            chosen = [t for t in chosen if not t.mock and (hub / t.hub_name / "build.json").is_file()]
        if not chosen:
            raise UsageError(f"--hub {hub}: no built dataset of a current non-mock task; name the tasks (--tasks)")
        try:  # by default a task this hub cannot run is left out, with a warning naming why
            lock = make_lock(hub, chosen, skip_unrunnable=not names)
        except (TaskError, FileNotFoundError, ValueError) as e:
            return _fail(e)
        if not lock["tasks"]:
            raise UsageError(f"--hub {hub}: none of {', '.join(t.name for t in chosen)} can be opened there "
                             "(see the warnings above)")
    atomic_write_json(Path(args.out), lock)
    print(f"wrote {args.out}: {len(lock['tasks'])} task(s) on " + ", ".join(
        f"{d} @ {v['content_revision'][:12]}{' (mock)' if v['mock'] else ''}" for d, v in lock["datasets"].items()))
    return 0


def run_add_lock(args) -> int:
    """`mmu eval add-lock`: a maintainer trusts a published lock on a leaderboard.

    Args:
        args: The parsed arguments of `mmu eval add-lock`.

    Returns:
        0 on success.

    Raises:
        UsageError: The lock is refused (a `SubmitError`; exit status 2).
        MissingExtra: The `eval` extra is not installed.
    """
    require_extra("eval", "mmu eval add-lock")
    from mmu.eval.submit import SubmitError, add_lock

    with task_overlays(args.tasks, names_allowed=False):
        try:
            out = add_lock(Path(args.lock), args.leaderboard, added_by=args.added_by,
                           hub=Path(args.hub) if args.hub else None, branch=args.branch)
        except SubmitError as e:
            return _fail(e)
    where = out.get("pull_request") or f"branch {out['branch']} ({out['commit'][:12]}); merge it to trust the lock"
    print(f"added {', '.join(out['files'])}: {where}")
    return 0


def run_leaderboard(args) -> int:
    """`mmu eval leaderboard`: render the leaderboard as Markdown and a static HTML page.

    Args:
        args: The parsed arguments of `mmu eval leaderboard`.

    Returns:
        0 on success.

    Raises:
        UsageError: A task file is invalid (exit status 2).
        MissingExtra: The `eval` extra is not installed.
    """
    require_extra("eval", "mmu eval leaderboard")
    from mmu.eval.leaderboard import render

    with task_overlays(args.tasks, names_allowed=False):
        render(args.leaderboard, args.out, ref=args.ref)
    return 0


def run_baselines(args) -> int:
    """`mmu eval baselines`: evaluate the random-weight, raw-feature PCA and supervised baselines.

    Args:
        args: The parsed arguments of `mmu eval baselines`.

    Returns:
        0 on success.

    Raises:
        UsageError: The config, a task, a protocol, a file or the column map is refused (exit
            status 2).
        MissingExtra: The `eval` extra is not installed.
    """
    require_extra("eval", "mmu eval baselines")
    from mmu.eval.baselines import run_baselines as go
    from mmu.eval.protocols import ProtocolError
    from mmu.eval.tasks import TaskError
    from mmu.pretrain.config import ConfigError, load_config

    column_map = _colmap(args.column_map)
    try:
        cfg = load_config(args.config, args.set)
    except ConfigError as e:
        return _fail(e)
    with task_overlays(args.tasks) as task_names:
        try:
            go(cfg, args.hub, Path(args.out), kinds=tuple(args.kinds), task_names=task_names,
               cache_dir=_cache(args), column_map=column_map, supervised_epochs=args.epochs,
               device=args.device, supervised_batch_size=args.batch_size)
        except (TaskError, ProtocolError, FileNotFoundError, KeyError) as e:
            return _fail(e)
    return 0
