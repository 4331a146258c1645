"""`mmu eval run`: every (task, protocol) of the catalog for one model -> one results JSON each.

Embeddings are computed once per (dataset, split, column) and shared by the tasks reading that
column; a model (or baseline) that must be fitted first (PCA, supervised encoders) gets, per model
column, the task data of every task it serves (`prepare(group, model_column)`, group = [(task
data, dataset column)], possibly from several datasets) before anything is embedded.
"""
from __future__ import annotations

import logging
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from mmu.eval.embed import Embedder, embed_split, map_columns
from mmu.eval.protocols import ProtocolError, Split, get_protocol
from mmu.eval.results import make_result, near_pretraining, write_result
from mmu.eval.tasks import TaskData, TaskError, open_task
from mmu.eval.tasks import tasks as catalog_tasks
from mmu.hub.layout import NotBuilt

log = logging.getLogger(__name__)


def _align(want_ids: np.ndarray, ids: np.ndarray, emb: np.ndarray, what: str) -> np.ndarray:
    pos = {o: i for i, o in enumerate(ids)}
    try:
        rows = np.fromiter((pos[o] for o in want_ids), np.int64, len(want_ids))
    except KeyError as e:
        raise RuntimeError(f"{what}: no embedding for object {e.args[0]!r}") from None
    return emb[rows]


def run_tasks(embedder: Embedder, hub: str | Path, out: str | Path | None, *, model,
              task_names: list[str] | None = None, protocol_names: list[str] | None = None,
              which: str = "projection", cache_dir: Path | None = None, column_map: dict | None = None,
              batch_rows: int | None = None) -> list[dict]:
    """Evaluate `embedder` on the catalog's tasks: one result per (task, protocol).

    Each (dataset, split, column) is embedded once and shared by the tasks reading it; an
    embedder with ``prepare`` (PCA, supervised baselines) is fitted first on the train rows of
    every task it serves. A task the model cannot run (retrieval without a shared embedding
    space, no column of the task's modality, data the hub lacks or that fails the task's checks:
    a dataset not built, a survey label missing, too few rows) is skipped with a warning naming
    the reason, unless named in `task_names`, where the error is raised.

    Args:
        embedder: the model (`mmu.eval.embed.CheckpointEmbedder` or a baseline).
        hub: the hub folder holding the tasks' datasets.
        out: folder for the results files (one JSON per task x protocol); None writes nothing.
        model: the results' model block (name, kind, baseline, sha256, ...), or a function
            making it (called after the embedder's ``prepare``).
        task_names: tasks to run (default: every current task of the catalog).
        protocol_names: protocols to run (default: each task's own).
        which: "projection" (the shared space) or "backbone" features.
        cache_dir: embedding cache folder (None: no cache).
        column_map: dataset column -> model column, where the names differ.
        batch_rows: rows per encoder batch (default: 1,024 on a GPU, 256 otherwise).

    Returns:
        The results (dicts in the `mmu.eval.results.Result` schema), in task order.

    Raises:
        ProtocolError: the catalog has no benchmark tasks, or none can run on `hub`.
        TaskError: a named task is unknown, or its data is missing or too small.
        NotBuilt: a named task's dataset is not built in `hub`.
        KeyError: a named task reads a column the model cannot map.

    Example:
        >>> emb = CheckpointEmbedder("runs/x/checkpoints/step-100.pt")  # doctest: +SKIP
        >>> run_tasks(emb, "hub", "results/x", model=model_block(emb))  # doctest: +SKIP
    """
    hub = Path(hub)
    selected = catalog_tasks(task_names)
    if not selected:
        raise ProtocolError("the catalog has no benchmark tasks (catalog.yaml `tasks:`)")
    model_columns = getattr(embedder, "columns", None)
    colmaps = {}
    for t in list(selected):
        if t.type == "retrieval" and not getattr(embedder, "aligned", True):
            log.info("skipping %s: this model's modality embeddings share no space (retrieval needs one)", t.name)
            selected.remove(t)
            continue
        try:
            colmaps[t.name] = (map_columns(model_columns, t.columns, t.modality, column_map, t.name)
                               if model_columns else {c: c for c in t.columns})
        except KeyError as e:
            if task_names:  # asked for by name: say why it cannot run
                raise
            log.info("skipping %s: %s", t.name, e.args[0])
            selected.remove(t)
    datas: dict[str, TaskData] = {}
    for t in list(selected):
        try:
            datas[t.name] = open_task(t, hub)
        except (TaskError, NotBuilt) as e:
            if task_names:  # asked for by name: say why it cannot run
                raise
            # every current task by default: one whose data this hub lacks (a survey-label task's
            # paired catalog not made, a mock without QSOs) is left out, each with its reason
            log.warning("skipping %s: %s", t.name, e)
            selected.remove(t)
    if not selected:
        raise ProtocolError(f"no task of the catalog can run on {hub} (see the warnings above)")
    for d in datas.values():
        if not d.comparable:
            log.warning("%s will not be comparable: %s", d.task.name, "; ".join(d.not_comparable))
        log.info("%s runs on the %s build %s of %s", d.task.name, d.build["kind"],
                 d.build["content_revision"][:12], d.task.hub_name)
    if hasattr(embedder, "prepare"):
        groups = defaultdict(list)  # model column -> [(task data, dataset column)], across datasets
        for t in selected:
            for c in t.columns:
                groups[colmaps[t.name][c]].append((datas[t.name], c))
        for model_column, group in groups.items():
            embedder.prepare(group, model_column)
    if callable(model):  # a baseline's model block exists only once it is fitted
        model = model()
    cache: dict = {}
    results = []
    for t in selected:
        data = datas[t.name]
        t0 = time.perf_counter()
        splits, keys = {}, {}
        for s in ("train", "val", "test"):
            if t.type == "retrieval" and s != "test":  # retrieval reads the test gallery only
                splits[s] = Split(data.ids[s], data.y[s], np.zeros((len(data.ids[s]), 0), np.float32))
                continue
            xs = []
            for c in t.columns:
                k = (t.hub_name, data.manifest.content_revision, s, c)
                if k not in cache:
                    cache[k] = embed_split(embedder, data.files[s], t.hub_name, str(k[1]), s, c, which,
                                           cache_dir, batch_rows, model_column=colmaps[t.name][c])
                ids, emb, info = cache[k]
                keys.setdefault(c, {})[s] = info["key"]
                xs.append(_align(data.ids[s], ids, emb, f"{t.name}/{s}/{c}"))
            splits[s] = Split(data.ids[s], data.y[s], xs[0], xs[1] if len(xs) > 1 else None)
        t_embed = time.perf_counter() - t0
        near = near_pretraining(model.get("training_manifest"), data.radec["test"])
        for pname in protocol_names or t.protocols:
            if pname not in t.protocols:
                log.info("skipping %s for %s: the task names only %s", pname, t.name, t.protocols)
                continue
            proto = get_protocol(pname)
            t1 = time.perf_counter()
            outcome = proto.run(t, splits, t.metric_names)
            dim = int(splits["test"].x.shape[1])
            emb_info = {"which": which, "dtype": "float32", "dim": dim, "columns": colmaps[t.name],
                        "cache_keys": keys, "preprocessing": {c: cache[(t.hub_name, data.manifest.content_revision,
                                                                         "test", c)][2]["preprocessing"]
                                                              for c in t.columns}}
            res = make_result(model=model, task=t, data=data, outcome=outcome, protocol=proto,
                              embedding=emb_info, near=near,
                              seconds={"embed": round(t_embed, 3), "probe": round(time.perf_counter() - t1, 3)})
            if out is not None:
                path = write_result(Path(out), res)
                log.info("%s %s: %s = %s  -> %s", t.name, pname, t.main_score,
                         _fmt(outcome.metrics.get(t.main_score)), path)
            results.append(res)
    return results


def _fmt(v):
    return "NaN" if v is None else f"{v:.4f}"


def model_block(embedder: Embedder, name: str | None = None, baseline: str | None = None) -> dict:
    """The results' ``model`` block of an embedder: its name, kind, baseline and sha256, plus what
    its ``describe()`` says (config, training manifest, fits).

    Args:
        embedder: the model.
        name: the entry name (default: the embedder's own, else the first 12 hex of its sha256).
        baseline: the baseline kind, for `mmu eval baselines` models.

    Returns:
        The block as a dict.
    """
    d = embedder.describe()
    return {"name": name or d.get("name") or embedder.sha256[:12], "kind": embedder.kind,
            "baseline": baseline, "sha256": embedder.sha256, **{k: v for k, v in d.items() if k != "name"}}
