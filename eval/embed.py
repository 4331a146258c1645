"""Embedding hub rows with a frozen model, cached on disk under a key of everything that
determines the numbers: model sha256, dataset + content revision, split, column, the
preprocessing (source hash + input shapes) and which embedding (backbone or projection).

The model-specific part sits behind `Embedder` (three attributes, one method): the trainer's
checkpoints (`CheckpointEmbedder`, through `mmu.pretrain.api`), the random-weight and supervised
baselines, and the raw-feature PCA baseline all implement it.
"""
from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mmu.hub.layout import atomic_path

log = logging.getLogger(__name__)

WHICH = ("projection", "backbone")
CACHE_FORMAT = "mmu-eval-embeddings/1"


@runtime_checkable
class Embedder(Protocol):
    """The interface a model must implement to be evaluated (a structural, runtime-checkable Protocol).

    Attributes:
        sha256: Hash of the model file (or of the baseline's definition); part of the cache key.
        kind: "checkpoint" or "baseline".
    """
    sha256: str  # of the model file (or of the baseline's definition)
    kind: str  # "checkpoint" | "baseline"

    def describe(self) -> dict:
        """Model metadata for results: name, config, step, training manifest (or None)."""

    def preprocessing_id(self, column: str) -> str:
        """A hash of everything between the stored arrays and the network input for `column`."""

    def embed(self, samples: list[dict], column: str, which: str) -> np.ndarray:
        """float32 [len(samples), D] embeddings of the samples' `column`."""


def default_cache_dir() -> Path:
    """The default embedding cache folder.

    Returns:
        `$MMU_CACHE/embeddings` when `MMU_CACHE` is set, else `~/.cache/mmu/embeddings`.
    """
    return Path(os.environ.get("MMU_CACHE") or Path.home() / ".cache" / "mmu") / "embeddings"


class EmbedError(RuntimeError):
    """Embedding failed for a reason the user can act on (e.g. out of GPU memory)."""


def cache_key(model_sha256: str, dataset: str, dataset_revision: str, split: str, column: str,
              preprocessing: str, which: str, precision: str = "fp32") -> str:
    """The embedding cache's key: a hash of everything that determines the numbers. fp32 keys are
    the same as before precision was a setting, so existing caches stay valid."""
    if which not in WHICH:
        raise ValueError(f"which embedding: {which!r} is not one of {WHICH}")
    parts = {"format": CACHE_FORMAT, "model_sha256": model_sha256, "dataset": dataset,
             "dataset_revision": dataset_revision, "split": split, "column": column,
             "preprocessing": preprocessing, "which": which}
    if precision != "fp32":
        parts["precision"] = precision
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def embed_dataset(embedder: Embedder, batches: Iterable[tuple[list[str], list[dict]]], column: str,
                  which: str) -> tuple[np.ndarray, np.ndarray]:
    """(object ids, float32 embeddings) of every sample in `batches` ((ids, samples) pairs, as
    `mmu.eval.tasks.iter_samples` yields them)."""
    ids, chunks = [], []
    for oids, samples in batches:
        emb = np.asarray(embedder.embed(samples, column, which), np.float32)
        if emb.ndim != 2 or len(emb) != len(samples):
            raise ValueError(f"embedder returned shape {emb.shape} for {len(samples)} samples")
        ids += list(oids)
        chunks.append(emb)
    if not chunks:
        return np.array([], object), np.zeros((0, 0), np.float32)
    return np.asarray(ids, dtype=object).astype(str), np.concatenate(chunks)


def write_embeddings(path: Path, ids, emb: np.ndarray, meta: dict, extra: dict | None = None) -> None:
    """Write object ids and embeddings to a Parquet file, atomically.

    The table has a string `object_id` column, one column per `extra` entry, and a fixed-size
    float32 list column `embedding`; `meta` is stored as JSON in the schema metadata key `mmu_eval`.
    Parent folders are created.

    Args:
        path: Output Parquet file.
        ids: Object ids, one per row of `emb`.
        emb: Embeddings [n, D] (stored as float32; a non-2-d array gives width 0).
        meta: JSON-serialisable provenance (model hash, dataset, revision, ...).
        extra: Optional additional columns, name -> values of length n.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    d = emb.shape[1] if emb.ndim == 2 else 0
    table = pa.table({"object_id": pa.array(list(ids), pa.string()),
                      **{k: pa.array(v) for k, v in (extra or {}).items()},
                      "embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1), pa.float32()), d)})
    table = table.replace_schema_metadata({"mmu_eval": json.dumps(meta, sort_keys=True)})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_embeddings(path: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    """Read a Parquet file written by `write_embeddings`.

    Args:
        path: The Parquet file.

    Returns:
        (ids, embeddings, meta): string ids [n], float32 embeddings [n, D], and the `mmu_eval`
        metadata dict ({} when absent).
    """
    t = pq.read_table(path)
    meta = json.loads((t.schema.metadata or {}).get(b"mmu_eval", b"{}"))
    col = t.column("embedding").combine_chunks()
    d = col.type.list_size
    emb = np.asarray(col.flatten().to_numpy(zero_copy_only=False), np.float32).reshape(-1, d)
    return np.asarray(t.column("object_id").to_pylist(), dtype=object).astype(str), emb, meta


def embed_split(embedder: Embedder, files: list[Path], dataset: str, dataset_revision: str, split: str,
                column: str, which: str, cache_dir: Path | None = None, batch_rows: int | None = None,
                model_column: str | None = None,
                num_workers: int | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """Embeddings of every row of `split` having `column`, from the cache when its key matches.

    An embedder with `collate` and `embed_batch` (trainer checkpoints and the baselines built on
    them) is fed by DataLoader workers that read Parquet row groups and collate in parallel
    (`mmu.eval.loader`); others get batches from this process.

    Args:
        batch_rows: rows per encoder batch (default: 1024 on a GPU, 256 otherwise).
        num_workers: loader workers (default `mmu.eval.loader.default_workers`: up to 8 with a GPU,
            0 on a CPU).

    Returns:
        (ids, float32 embeddings [n, D], {"key", "cached", "path", ...the key's parts}).

    Raises:
        EmbedError: out of GPU memory (the message names the batch size and a smaller one).
    """
    from mmu.eval.tasks import iter_samples

    mcol = model_column or column
    prep = embedder.preprocessing_id(mcol)
    precision = getattr(embedder, "precision", "fp32")
    key = cache_key(embedder.sha256, dataset, dataset_revision, split, column, prep, which, precision)
    info = {"key": key, "model_sha256": embedder.sha256, "dataset": dataset,
            "dataset_revision": dataset_revision, "split": split, "column": column, "model_column": mcol,
            "preprocessing": prep, "which": which, "dtype": "float32"}
    if precision != "fp32":
        info["precision"] = precision
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / key[:2] / f"{key}.parquet"
        if path.exists():
            ids, emb, _ = read_embeddings(path)
            return ids, emb, {**info, "cached": True, "path": str(path)}
    if files:
        check_inputs(embedder, files[0], column, mcol)
    device = str(getattr(embedder, "device", "cpu"))
    batch_rows = batch_rows or (1024 if device.startswith("cuda") else 256)
    try:
        if hasattr(embedder, "collate") and hasattr(embedder, "embed_batch"):
            from mmu.eval.loader import default_workers, embed_rows

            workers = default_workers(device) if num_workers is None else num_workers
            ids, emb = embed_rows(embedder, files, split, column, mcol, which, batch_rows, workers)
        else:
            batches = ((oids, [_rename(s, column, mcol) for s in samples])
                       for oids, samples in iter_samples(files, split, column, batch_rows))
            ids, emb = embed_dataset(embedder, batches, mcol, which)
    except Exception as e:  # torch's OutOfMemoryError without importing torch here
        if type(e).__name__ == "OutOfMemoryError":
            raise EmbedError(f"out of GPU memory embedding {dataset}:{column} at a batch size of "
                             f"{batch_rows} rows; try a smaller one, e.g. --batch-rows "
                             f"{max(1, batch_rows // 4)}") from None
        raise
    log.info("embedded %d %s rows of %s:%s (%s)", len(ids), split, dataset, column, which)
    if path is not None and len(ids):  # nothing to cache for a split without rows
        try:
            write_embeddings(path, ids, emb, info)
        except OSError as e:  # a read-only or full cache costs a recomputation later, never this result
            if e.errno not in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT):
                raise
            log.warning("the embedding cache %s cannot be written (%s): %s:%s %s is not cached; pass --cache "
                        "DIR (a writable folder) or --cache none", cache_dir, e.strerror, dataset, column, split)
            path = None
    return ids, emb, {**info, "cached": False, "path": str(path) if path else None}


def check_inputs(embedder: Embedder, path: Path, column: str, model_column: str) -> None:
    """Refuse, before any row is read, a model whose input for `model_column` cannot take the
    dataset's `column`: another modality kind, or images with another number of bands.

    Raises:
        EmbedError: naming the model's column and setting and the dataset's column and file.
    """
    from mmu.model.schema import modalities_of

    cfg = getattr(getattr(embedder, "p", None), "config", None) or getattr(embedder, "cfg", None)
    if cfg is None or model_column not in cfg.model.modalities:
        return
    want = cfg.model.modalities[model_column]
    have = modalities_of(pq.read_schema(path)).get(column)
    if have is None:
        raise EmbedError(f"{path}: {column!r} is not a modality column of this dataset")
    if have.kind != want.kind:
        raise EmbedError(f"the model's column {model_column!r} takes a {want.kind}, but the dataset's "
                         f"{column!r} is a {have.kind} ({path}); map another column with --column-map")
    if want.kind == "image" and len(have.bands) != want.channels:
        raise EmbedError(f"the model's column {model_column!r} takes {want.channels}-band images "
                         f"(model.modalities.{model_column}.channels), but the dataset's {column!r} has "
                         f"{len(have.bands)} bands {list(have.bands)} ({path})")


def _rename(sample: dict, column: str, model_column: str) -> dict:
    if column == model_column:
        return sample
    return {"object_id": sample["object_id"], model_column: sample[column]}


# ------------------------------------------------------------------------- trainer checkpoints


def resolve_precision(precision: str, device: str) -> str:
    """"fp32" or "bf16" of a precision setting: "auto" is bf16 on a GPU, fp32 elsewhere.

    Raises:
        ValueError: an unknown precision.

    Example:
        >>> resolve_precision("auto", "cuda:0"), resolve_precision("auto", "cpu")
        ('bf16', 'fp32')
    """
    if precision == "auto":
        precision = "bf16" if str(device).startswith("cuda") else "fp32"
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be fp32, bf16 or auto, got {precision!r}")
    return precision


def autocast(device: str, precision: str):
    """bf16 autocast on `device` when `precision` is "bf16", else a no-op context."""
    import contextlib

    import torch

    if precision != "bf16":
        return contextlib.nullcontext()
    return torch.autocast(device_type=str(device).split(":")[0], dtype=torch.bfloat16)


def _source_sha256(*modules) -> str:
    h = hashlib.sha256()
    for m in modules:
        h.update(Path(m.__file__).read_bytes())
    return h.hexdigest()


class CheckpointEmbedder:
    """A `mmu pretrain` checkpoint through `mmu.pretrain.api` (collate + preprocess + encode,
    exactly as in training)."""

    kind = "checkpoint"

    def __init__(self, path: str | Path, device: str | None = None, pretrained=None,
                 precision: str = "auto", compile: bool = False, trust_code: bool = False):
        """Args:
            path: the checkpoint file.
            device: "cuda", "cpu", ... (default: a GPU when there is one).
            pretrained: an already loaded `mmu.pretrain.api.Pretrained` (then `path` is a label).
            precision: "fp32", "bf16" (autocast) or "auto" (bf16 on a GPU, fp32 on a CPU).
            compile: `torch.compile` the encoders (worth it for long runs on a GPU).
            trust_code: build encoders the checkpoint names as `module:name` (imports that
                module, i.e. runs its code); by default only built-in encoders load.

        Raises:
            ValueError: an unknown precision.
        """
        import torch

        from mmu.pretrain.api import load_pretrained

        dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.p = pretrained or load_pretrained(path, device=dev, trust_code=trust_code)
        self.path = Path(self.p.path) if path else None  # a run folder resolves to its checkpoint file
        self.sha256 = self.p.sha256
        self.device = str(self.p.device)
        self.precision = resolve_precision(precision, self.device)
        self._compiled: dict = {} if compile else None

    @property
    def columns(self) -> dict[str, str]:
        return dict(self.p.model.kinds)

    def describe(self) -> dict:
        cfg = self.p.config
        return {"name": cfg.name, "path": str(self.path) if self.path else None, "step": self.p.step,
                "config": cfg.to_dict(), "signature_sha256": cfg.signature_hash(),
                "training_manifest": self.p.manifest or None}

    def preprocessing_id(self, column: str) -> str:
        from mmu.pretrain import data, preprocess

        spec = self.p.config.model.modalities[column].model_dump()
        spec.pop("encoder", None)
        spec.pop("options", None)
        return hashlib.sha256(json.dumps({"source": _source_sha256(preprocess, data), "input": spec},
                                         sort_keys=True, default=str).encode()).hexdigest()

    def embed(self, samples: list[dict], column: str, which: str) -> np.ndarray:
        return self.embed_batch(self.collate(samples, column), column, which)[:len(samples)]

    def collate(self, samples: list[dict], column: str) -> dict:
        """The encoder inputs of `column` for `samples` (CPU tensors; runs in loader workers)."""
        from mmu.pretrain.data import Collator

        return Collator({column: self.p.config.model.modalities[column]}, max(1, len(samples)))(samples)[column]

    def embed_batch(self, inputs: dict, column: str, which: str) -> np.ndarray:
        """float32 [rows, D] embeddings of collated `inputs`, on the model's device, in inference
        mode, under bf16 autocast when `precision` is bf16."""
        import torch

        model = self.p.model
        model.eval()
        x = {k: v.to(self.device, non_blocking=True) for k, v in inputs.items() if isinstance(v, torch.Tensor)}
        encode = model.encode
        if self._compiled is not None:
            encode = self._compiled.setdefault(column, torch.compile(model.encode))
        with torch.inference_mode(), autocast(self.device, self.precision):
            out = encode(column, x, project=(which == "projection"))
        return out.float().cpu().numpy()


def map_columns(model_columns: dict[str, str], task_columns: list[str], task_modality: str,
                explicit: dict[str, str] | None = None, task_name: str | None = None) -> dict[str, str]:
    """Dataset column -> model column: `explicit` first, then the same name, then the model's only
    column of the same kind (a tiny_cpu model's `image` reads a task's `legacysurvey_image`).

    A task reading two columns of one kind (`image+image`: two surveys' images) needs a model
    column for each: two task columns are never sent, by that last rule, to one model column.

    Args:
        model_columns: the model's columns -> modality kind.
        task_columns: the dataset columns the task reads.
        task_modality: the task's modality (e.g. "image+image"; "" when unknown).
        explicit: `--column-map` entries, dataset column -> model column.
        task_name: named in the errors.

    Raises:
        KeyError: a column has no model column, or two of the task's columns would fall back to
            the model's one column of their kind (the message names the task and what to pass).
    """
    out, by_kind = {}, set()
    for col in task_columns:
        if explicit and col in explicit:
            out[col] = explicit[col]
            continue
        if col in model_columns:
            out[col] = col
            continue
        kind = _kind_of(col)
        same = [c for c, k in model_columns.items() if k == kind]
        if len(same) != 1:
            raise KeyError(f"the model has no column for {col!r} (its columns: {model_columns}); "
                           f"pass --column-map {col}=MODEL_COLUMN")
        out[col] = same[0]
        by_kind.add(col)
    for col in by_kind:
        both = [c for c in task_columns if out[c] == out[col]]
        if len(both) > 1:
            kind = _kind_of(col)
            n = sum(k == kind for k in model_columns.values())
            raise KeyError(
                f"{task_name or 'the task'} ({task_modality or 'two columns'}) reads {both[0]!r} and {both[1]!r}, "
                f"but the model maps both to its {kind} column {out[col]!r} ({n} {kind} column{'s' * (n != 1)} in "
                f"all) and cannot embed both with one encoder; pass a checkpoint with one {kind} encoder per column "
                f"(model columns named "
                f"{' and '.join(both)}, or --column-map {both[0]}=MODEL_COLUMN {both[1]}=OTHER_MODEL_COLUMN)")
    return out


def _kind_of(column: str) -> str | None:
    """The modality kind a dataset column's name says (`legacysurvey_image` -> image), or None."""
    return next((k for k in ("image", "spectrum", "lightcurve") if column == k or column.endswith("_" + k)), None)
