"""Reading hub rows for embedding in parallel: DataLoader workers read Parquet row groups, turn
rows into samples and collate them into the encoder's input tensors, while the main process only
moves finished batches to the device and runs the encoder.

The unit of work is a run of consecutive row groups of one file holding at least `batch_rows`
rows (planned from the Parquet footers, without reading data). Each worker takes every
`num_workers`-th unit; the main process puts the batches back in (unit, offset) order, so the
result's row order is the files' order, exactly as the single-process path reads them.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from mmu.model.schema import SPLIT_COLUMN


def plan_units(files: list[Path], batch_rows: int) -> list[tuple[str, list[int]]]:
    """(file, row-group indices) runs of at least `batch_rows` rows (the last of a file may be
    shorter), in file order; read from the Parquet footers only."""
    units = []
    for path in files:
        md = pq.ParquetFile(path).metadata
        run, rows = [], 0
        for rg in range(md.num_row_groups):
            run.append(rg)
            rows += md.row_group(rg).num_rows
            if rows >= batch_rows:
                units.append((str(path), run))
                run, rows = [], 0
        if run:
            units.append((str(path), run))
    return units


class HubRows(IterableDataset):
    """Collated batches `(unit, offset, object_ids, inputs)` of the rows of `split` having
    `column`, `batch_rows` at a time, from the units this worker owns.

    Args:
        units: from `plan_units`.
        split, column: which rows and which modality column to read.
        model_column: the model's name for that column (samples are renamed to it).
        batch_rows: rows per batch.
        collate: `(samples, model_column) -> inputs`, run in the worker.
    """

    def __init__(self, units, split: str, column: str, model_column: str, batch_rows: int,
                 collate: Callable):
        self.units, self.split, self.column = units, split, column
        self.model_column, self.batch_rows, self.collate = model_column, batch_rows, collate

    def __iter__(self) -> Iterator:
        from mmu.eval.tasks import table_samples

        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        # in a worker, one thread: the parallelism is the workers (16 workers x 16 Arrow threads
        # on 16 cores only thrash)
        threads = info is None
        for u, (path, groups) in enumerate(self.units):
            if u % nw != wid:
                continue
            t = pq.ParquetFile(path).read_row_groups(groups, columns=["object_id", SPLIT_COLUMN, self.column],
                                                     use_threads=threads)
            for s in range(0, t.num_rows, self.batch_rows):
                oids, samples = table_samples(t.slice(s, self.batch_rows), self.split, self.column, path)
                if not oids:
                    continue
                if self.model_column != self.column:
                    samples = [{"object_id": x["object_id"], self.model_column: x[self.column]} for x in samples]
                yield u, s, oids, self.collate(samples, self.model_column)


def default_workers(device: str) -> int:
    """Loader workers: up to 8 (one core left for the main process) when embedding on a GPU; none
    on a CPU, where the encoder itself needs the cores. `MMU_EMBED_WORKERS` overrides."""
    env = os.environ.get("MMU_EMBED_WORKERS")
    if env is not None:
        return max(0, int(env))
    if not str(device).startswith("cuda"):
        return 0
    return max(1, min(8, (os.cpu_count() or 2) - 1))


def embed_rows(embedder, files: list[Path], split: str, column: str, model_column: str, which: str,
               batch_rows: int, num_workers: int) -> tuple[np.ndarray, np.ndarray]:
    """(object ids, float32 embeddings) of every row of `split` having `column`, in file order,
    read and collated by `num_workers` DataLoader workers (0: in this process).

    `embedder` provides `collate(samples, column)` (runs in the workers) and `embed_batch(inputs,
    column, which)` (runs here, on its device)."""
    units = plan_units(files, batch_rows)
    ds = HubRows(units, split, column, model_column, batch_rows, embedder.collate)
    pin = str(getattr(embedder, "device", "cpu")).startswith("cuda")
    loader = DataLoader(ds, batch_size=None, num_workers=num_workers, pin_memory=pin,
                        prefetch_factor=4 if num_workers else None)
    parts = []
    for u, s, oids, inputs in loader:
        emb = np.asarray(embedder.embed_batch(inputs, model_column, which), np.float32)
        if emb.ndim != 2 or len(emb) < len(oids):
            raise ValueError(f"embedder returned shape {emb.shape} for {len(oids)} samples")
        parts.append(((u, s), oids, emb[:len(oids)]))
    parts.sort(key=lambda p: p[0])
    if not parts:
        return np.array([], object), np.zeros((0, 0), np.float32)
    ids = np.asarray([o for _, oids, _ in parts for o in oids], dtype=object).astype(str)
    return ids, np.concatenate([e for _, _, e in parts])
