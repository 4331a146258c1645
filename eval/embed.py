"""Embedding hub rows with a frozen model, cached on disk under a key of everything that
determines the numbers: model sha256, dataset + content revision, split, column, the
preprocessing (source hash + input shapes) and which embedding (backbone or projection).

The model-specific part sits behind `Embedder` (three attributes, one method): the trainer's
checkpoints (`CheckpointEmbedder`, through `mmu.pretrain.api`), the random-weight and supervised
baselines, and the raw-feature PCA baseline all implement it.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterable, Protocol, runtime_checkable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

WHICH = ("projection", "backbone")
CACHE_FORMAT = "mmu-eval-embeddings/1"


@runtime_checkable
class Embedder(Protocol):
    sha256: str  # of the model file (or of the baseline's definition)
    kind: str  # "checkpoint" | "baseline"

    def describe(self) -> dict:
        """Model metadata for results: name, config, step, training manifest (or None)."""

    def preprocessing_id(self, column: str) -> str:
        """A hash of everything between the stored arrays and the network input for `column`."""

    def embed(self, samples: list[dict], column: str, which: str) -> np.ndarray:
        """float32 [len(samples), D] embeddings of the samples' `column`."""


def default_cache_dir() -> Path:
    return Path(os.environ.get("MMU_CACHE") or Path.home() / ".cache" / "mmu") / "embeddings"


def cache_key(model_sha256: str, dataset: str, dataset_revision: str, split: str, column: str,
              preprocessing: str, which: str) -> str:
    if which not in WHICH:
        raise ValueError(f"which embedding: {which!r} is not one of {WHICH}")
    parts = {"format": CACHE_FORMAT, "model_sha256": model_sha256, "dataset": dataset,
             "dataset_revision": dataset_revision, "split": split, "column": column,
             "preprocessing": preprocessing, "which": which}
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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    d = emb.shape[1] if emb.ndim == 2 else 0
    table = pa.table({"object_id": pa.array(list(ids), pa.string()),
                      **{k: pa.array(v) for k, v in (extra or {}).items()},
                      "embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1), pa.float32()), d)})
    table = table.replace_schema_metadata({"mmu_eval": json.dumps(meta, sort_keys=True)})
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def read_embeddings(path: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    t = pq.read_table(path)
    meta = json.loads((t.schema.metadata or {}).get(b"mmu_eval", b"{}"))
    col = t.column("embedding").combine_chunks()
    d = col.type.list_size
    emb = np.asarray(col.flatten().to_numpy(zero_copy_only=False), np.float32).reshape(-1, d)
    return np.asarray(t.column("object_id").to_pylist(), dtype=object).astype(str), emb, meta


def embed_split(embedder: Embedder, files: list[Path], dataset: str, dataset_revision: str, split: str,
                column: str, which: str, cache_dir: Path | None = None, batch_rows: int = 256,
                model_column: str | None = None, log=None) -> tuple[np.ndarray, np.ndarray, dict]:
    """Embeddings of every row of `split` having `column`, from the cache when its key matches.
    Returns (ids, embeddings, {"key", "cached", "path", ...key parts})."""
    from mmu.eval.tasks import iter_samples

    mcol = model_column or column
    prep = embedder.preprocessing_id(mcol)
    key = cache_key(embedder.sha256, dataset, dataset_revision, split, column, prep, which)
    info = {"key": key, "model_sha256": embedder.sha256, "dataset": dataset,
            "dataset_revision": dataset_revision, "split": split, "column": column, "model_column": mcol,
            "preprocessing": prep, "which": which, "dtype": "float32"}
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / key[:2] / f"{key}.parquet"
        if path.exists():
            ids, emb, _ = read_embeddings(path)
            return ids, emb, {**info, "cached": True, "path": str(path)}
    batches = ((oids, [_rename(s, column, mcol) for s in samples])
               for oids, samples in iter_samples(files, split, column, batch_rows))
    ids, emb = embed_dataset(embedder, batches, mcol, which)
    if log:
        log(f"embedded {len(ids)} {split} rows of {dataset}:{column} ({which})")
    if path is not None:
        write_embeddings(path, ids, emb, info)
    return ids, emb, {**info, "cached": False, "path": str(path) if path else None}


def _rename(sample: dict, column: str, model_column: str) -> dict:
    if column == model_column:
        return sample
    return {"object_id": sample["object_id"], model_column: sample[column]}


# ------------------------------------------------------------------------- trainer checkpoints


def _source_sha256(*modules) -> str:
    h = hashlib.sha256()
    for m in modules:
        h.update(Path(m.__file__).read_bytes())
    return h.hexdigest()


class CheckpointEmbedder:
    """A `mmu pretrain` checkpoint through `mmu.pretrain.api` (collate + preprocess + encode,
    exactly as in training)."""

    kind = "checkpoint"

    def __init__(self, path: str | Path, device: str | None = None, pretrained=None):
        import torch

        from mmu.pretrain.api import load_pretrained

        dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.p = pretrained or load_pretrained(path, device=dev)
        self.path = Path(path) if path else None
        self.sha256 = self.p.sha256

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
        batch = self.p.collate(samples)
        out = self.p.embed(batch, project=(which == "projection"), columns=[column])[column]
        return out[:len(samples)].cpu().numpy().astype(np.float32)


def map_columns(model_columns: dict[str, str], task_columns: list[str], task_modality: str,
                explicit: dict[str, str] | None = None) -> dict[str, str]:
    """Dataset column -> model column: `explicit` first, then the same name, then the model's only
    column of the same kind (a tiny_cpu model's `image` reads a task's `legacysurvey_image`)."""
    out = {}
    for col in task_columns:
        if explicit and col in explicit:
            out[col] = explicit[col]
            continue
        if col in model_columns:
            out[col] = col
            continue
        kind = next((k for k in ("image", "spectrum", "lightcurve") if col == k or col.endswith("_" + k)), None)
        same = [c for c, k in model_columns.items() if k == kind]
        if len(same) != 1:
            raise KeyError(f"the model has no column for {col!r} (its columns: {model_columns}); "
                           f"pass --column-map {col}=MODEL_COLUMN")
        out[col] = same[0]
    return out
