"""Reading hub rows for embedding in parallel: DataLoader workers read Parquet row groups, turn
rows into samples and collate them into the encoder's input tensors, while the main process only
moves finished batches to the device and runs the encoder.

The unit of work is a run of consecutive row groups of one file holding at least `batch_rows`
rows (planned from the Parquet footers, without reading data). Each worker takes every
`num_workers`-th unit; the main process puts the batches back in (unit, offset) order, so the
result's row order is the files' order, exactly as the single-process path reads them.

Images and fixed-length spectra are stored as nested Parquet lists of one shape per dataset (an
image field is a list of C lists of H lists of W values). For a trainer checkpoint's embedder
(`model_spec`), a batch reads only the fields the trainer's collator uses, turns each into one
[rows, *shape] array from the list levels' buffers (`fixed_shape_values`: no Python per row) and
collates those arrays whole (`collate_arrays`), bit for bit as `mmu.pretrain.data.Collator` does
row by row. Light curves (a length per row), variable-length spectra and other embedders take
the per-row path (`mmu.eval.tasks.table_samples` + the embedder's `collate`).
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from mmu.model.schema import SPLIT_COLUMN


class RaggedColumn(ValueError):
    """A nested list column whose rows do not all have one shape (`null`: or that holds a null)."""

    def __init__(self, message: str, null: bool = False):
        super().__init__(message)
        self.null = null


def _is_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


def _row(ids: list | None, i: int) -> str:
    return f"{ids[i]!r}" if ids is not None and i < len(ids) else f"#{i}"


def fixed_shape_values(arr: pa.Array | pa.ChunkedArray, column: str, shape: tuple[int, ...] | None = None,
                       ids: list | None = None) -> np.ndarray:
    """The values of a nested list column whose every row has one shape, as one [rows, *shape]
    numpy array, from the list levels' offsets and the leaf buffer (no Python per row; zero-copy
    for numbers without nulls, so the result may be read-only).

    Args:
        arr: list / large-list / fixed-size-list values, nested to any depth.
        column: the column's name, for the errors.
        shape: the shape every row must have (default: the first row's, which all must share).
        ids: the rows' object ids, for the errors (default: row numbers, #0 first).

    Returns:
        [len(arr), *shape] array; a null float leaf reads as NaN (as `flat_values` reads it).

    Raises:
        RaggedColumn: a row of another shape, or a null (a null row, a null list inside a row or
            a null non-float value); the message names the column and the row.

    Example:
        >>> fixed_shape_values(pa.array([[[1, 2]], [[3, 4]]]), "x").shape
        (2, 1, 2)
    """
    if isinstance(arr, pa.ChunkedArray):
        if arr.num_chunks != 1:
            parts, start = [], 0
            for c in arr.chunks or [pa.array([], arr.type)]:
                parts.append(fixed_shape_values(c, column, shape, ids[start:start + len(c)] if ids else None))
                shape, start = parts[0].shape[1:], start + len(c)
            return parts[0] if len(parts) == 1 else np.concatenate(parts)
        arr = arr.chunk(0)
    n = len(arr)
    dims: list[int] = []
    per_row = 1  # elements of the current list level per row
    cur = arr
    while _is_list(cur.type):
        axis = len(dims)
        if cur.null_count:
            i = int(np.flatnonzero(np.asarray(cur.is_null()))[0]) // per_row
            where = "is null" if axis == 0 else f"holds a null list on axis {axis - 1}"
            raise RaggedColumn(f"{column}: row {_row(ids, i)} {where}", null=True)
        want = shape[axis] if shape is not None and axis < len(shape) else None
        if pa.types.is_fixed_size_list(cur.type):
            k = cur.type.list_size
            bad = np.arange(min(n, 1)) if want is not None and k != want else []
            lengths = np.full(len(cur), k)
            values = cur.values.slice(cur.offset * k, len(cur) * k)
        else:
            off = np.asarray(cur.offsets, dtype=np.int64)
            lengths = np.diff(off)
            k = want if want is not None else (int(lengths[0]) if len(lengths) else 0)
            bad = np.flatnonzero(lengths != k)
            values = cur.values.slice(int(off[0]), int(off[-1] - off[0]))
        if len(bad):
            i = int(bad[0])
            want_text = f"rows of shape {tuple(shape)}" if shape is not None else f"as row {_row(ids, 0)}"
            raise RaggedColumn(f"{column}: row {_row(ids, i // per_row)} has {int(lengths[i])} values on axis "
                               f"{axis}, expected {want if want is not None else k} ({want_text})")
        dims.append(k)
        per_row *= k
        cur = values
    if shape is not None and len(dims) != len(shape):
        raise RaggedColumn(f"{column}: rows are {len(dims)}-D lists, expected shape {tuple(shape)}")
    if cur.null_count and not pa.types.is_floating(cur.type):
        i = int(np.flatnonzero(np.asarray(cur.is_null()))[0]) // max(per_row, 1)
        raise RaggedColumn(f"{column}: row {_row(ids, i)} holds a null value", null=True)
    if pa.types.is_string(cur.type) or pa.types.is_large_string(cur.type):
        values = np.asarray(cur.to_pylist(), dtype=object)
    else:
        values = cur.to_numpy(zero_copy_only=False)
    return values.reshape(n, *dims)


def collate_arrays(spec, column: str, arrays: dict[str, np.ndarray], ids: list[str]) -> dict:
    """The trainer collator's tensors of `column` for `len(ids)` present rows, from whole
    [rows, *shape] arrays: bit for bit what `Collator({column: spec}, len(ids))` makes of the same
    rows one by one (centre crop / pad of images, spectra cut or padded to `spec.length` with the
    last wavelength carried on). Arrays already of the model's shape and dtype are not copied.

    Args:
        spec: the model's `ModalityConfig` of `column` (kind image or spectrum).
        column: the model's column name (for the errors).
        arrays: field -> [rows, C, H, W] (image: flux, ivar, mask) or [rows, N] (spectrum: flux,
            ivar, mask, lambda).
        ids: the rows' object ids.

    Raises:
        ValueError: images with another number of bands than `spec.channels` (the collator's error).
    """
    from mmu.pretrain.data import _fit

    n = len(ids)
    if spec.kind == "image":
        C, S = spec.channels, spec.size
        flux = arrays["flux"]
        if flux.shape[1] != C:
            raise ValueError(f"{column}: sample {ids[0]!r} has shape {flux.shape[1:]}; the config says {C} bands "
                             f"(model.modalities.{column}.channels)")
        H, W = flux.shape[2:]
        if (H, W) == (S, S):
            out = {"flux": flux, "ivar": arrays["ivar"], "mask": arrays["mask"]}
        else:
            (sy, dy), (sx, dx) = _fit(H, S), _fit(W, S)
            out = {f: np.zeros((n, C, S, S), np.float32) for f in ("flux", "ivar")}
            out["mask"] = np.ones((n, C, S, S), bool)
            for f in ("flux", "ivar", "mask"):
                out[f][:, :, dy, dx] = arrays[f][:, :, sy, sx]
    elif spec.kind == "spectrum":
        L, N = spec.length, arrays["flux"].shape[1]
        k = min(N, L)
        if N == L:
            out = {f: arrays[f] for f in ("flux", "ivar", "lambda", "mask")}
        else:
            out = {f: np.zeros((n, L), np.float32) for f in ("flux", "ivar", "lambda")}
            out["mask"] = np.ones((n, L), bool)
            for f in ("flux", "ivar", "lambda", "mask"):
                out[f][:, :k] = arrays[f][:, :k]
            out["lambda"][:, k:] = arrays["lambda"][:, k - 1:k] if k else 0.0
    else:
        raise ValueError(f"{column}: {spec.kind} columns are collated row by row")
    out["present"] = np.ones(n, bool)
    return {f: _tensor(v, bool if f in ("mask", "present") else np.float32) for f, v in out.items()}


def _tensor(x: np.ndarray, dtype) -> torch.Tensor:
    """A tensor over `x` as `dtype`, sharing its memory when the dtype matches, also when `x` is a
    read-only view of the batch's own Arrow buffers (no one else holds them; in a DataLoader
    worker the tensor is copied to shared memory anyway, and `embed_batch` only reads it)."""
    x = np.ascontiguousarray(x, dtype)
    if x.flags.writeable:
        return torch.from_numpy(x)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(x)


# the fields the trainer's collator reads, per kind
BLOCK_FIELDS = {"image": ("flux", "ivar", "mask"), "spectrum": ("flux", "ivar", "mask", "lambda")}


def block_layout(spec, path: str | Path, column: str) -> tuple[tuple[str, ...], tuple[int, ...]] | None:
    """(fields, row shape) of `column` in file `path` to read as whole arrays for a model column
    of `spec`, or None when its rows go the per-row way: light curves, images or spectra whose
    dataset spec has no fixed shape, a file lacking one of the fields."""
    from mmu.model.schema import ImageSpec, SpectrumSpec, modalities_of

    fields = BLOCK_FIELDS.get(getattr(spec, "kind", None))
    schema = pq.read_schema(path)
    have = modalities_of(schema).get(column)
    if fields is None or have is None or have.kind != spec.kind:
        return None
    if isinstance(have, ImageSpec) and have.height and have.width:
        shape = (len(have.bands), have.height, have.width)
    elif isinstance(have, SpectrumSpec) and have.length:
        shape = (have.length,)
    else:
        return None
    names = {f.name for f in schema.field(column).type}
    return (fields, shape) if all(f in names for f in fields) else None


def batch_arrays(t: pa.Table, split: str, column: str, fields: tuple[str, ...], shape: tuple[int, ...],
                 path) -> tuple[list[str], dict[str, np.ndarray]]:
    """(object ids, field -> [rows, *shape]) of the rows of table `t` in `split` having `column`.

    Raises:
        RaggedColumn: a row of another shape than the dataset's, or a null inside a present row;
            the message names the file, the column and field, and the row's object id.
    """
    keep = pc.and_(pc.equal(t.column(SPLIT_COLUMN), split), pc.is_valid(t.column(column)))
    if not pc.all(keep, skip_nulls=False).as_py():  # a partition file usually holds one split: no copy
        t = t.filter(keep)
    if t.num_rows == 0:
        return [], {}
    ids = [str(o) for o in t.column("object_id").to_pylist()]
    struct = t.column(column)
    out = {}
    for f in fields:
        child = pa.chunked_array([c.field(f) for c in struct.chunks], struct.type.field(f).type)
        out[f] = fixed_shape_values(child, f"{path}: {column}.{f}", shape, ids)
    return ids, out


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
        spec: the model's `ModalityConfig` of `model_column` when `collate` is the trainer's
            collator (`model_spec`): images and fixed-length spectra are then read and collated
            as whole arrays (`collate_arrays`); None: every batch row by row through `collate`.
        mark_units: after each unit also yield `(unit, None, [], None)`, its end, so that the
            batches can be streamed in unit order whatever the number of workers (`in_unit_order`).
    """

    def __init__(self, units, split: str, column: str, model_column: str, batch_rows: int,
                 collate: Callable, spec=None, mark_units: bool = False):
        self.units, self.split, self.column = units, split, column
        self.model_column, self.batch_rows, self.collate = model_column, batch_rows, collate
        self.spec = spec
        self.mark_units = mark_units

    def __iter__(self) -> Iterator:
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        # in a worker, one thread: the parallelism is the workers (16 workers x 16 Arrow threads
        # on 16 cores only thrash)
        threads = info is None
        layouts: dict[str, tuple | None] = {}
        for u in range(wid, len(self.units), nw):
            yield from self._unit(u, threads, layouts)
            if self.mark_units:
                yield u, None, [], None

    def _unit(self, u: int, threads: bool, layouts: dict) -> Iterator:
        from mmu.eval.tasks import table_samples

        path, groups = self.units[u]
        if path not in layouts:
            layouts[path] = block_layout(self.spec, path, self.column) if self.spec is not None else None
        layout = layouts[path]
        # only the fields the collator reads (a spectrum's lsf_sigma is a fifth of its bytes)
        wanted = [f"{self.column}.{f}" for f in layout[0]] if layout else [self.column]
        t = pq.ParquetFile(path).read_row_groups(groups, columns=["object_id", SPLIT_COLUMN, *wanted],
                                                 use_threads=threads)
        for s in range(0, t.num_rows, self.batch_rows):
            part = t.slice(s, self.batch_rows)
            if layout:
                oids, arrays = batch_arrays(part, self.split, self.column, *layout, path)
                if oids:
                    yield u, s, oids, collate_arrays(self.spec, self.model_column, arrays, oids)
                continue
            oids, samples = table_samples(part, self.split, self.column, path)
            if not oids:
                continue
            if self.model_column != self.column:
                samples = [{"object_id": x["object_id"], self.model_column: x[self.column]} for x in samples]
            yield u, s, oids, self.collate(samples, self.model_column)


def model_spec(embedder, model_column: str):
    """The `ModalityConfig` of `model_column` when `embedder` collates with the trainer's collator
    unchanged (a `CheckpointEmbedder` or a config baseline of `mmu.eval.baselines`, not a subclass
    with its own `collate`), else None."""
    from mmu.eval.baselines import _ConfigInputs
    from mmu.eval.embed import CheckpointEmbedder

    collate = getattr(type(embedder), "collate", None)
    if collate is CheckpointEmbedder.collate:
        return embedder.p.config.model.modalities.get(model_column)
    if collate is _ConfigInputs.collate:
        return embedder.cfg.model.modalities.get(model_column)
    return None


def in_unit_order(items: Iterator) -> Iterator:
    """`HubRows(..., mark_units=True)` items, from any number of workers, back in unit order:
    each unit's batches (which one worker yields in order) are held until every earlier unit has
    ended. The end markers are dropped.

    Raises:
        RuntimeError: the stream ended while a unit had not (its later units' batches would be
            lost).
    """
    pending: dict[int, list] = {}
    ended: set[int] = set()
    nxt = 0
    for item in items:
        u = int(item[0])
        if item[1] is None:
            ended.add(u)
        else:
            pending.setdefault(u, []).append(item)
        while True:
            yield from pending.pop(nxt, ())
            if nxt not in ended:
                break
            ended.discard(nxt)
            nxt += 1
    if pending:
        raise RuntimeError(f"the loader's stream ended before unit {nxt} did: "
                           f"{sum(map(len, pending.values()))} batch(es) of later units were not yielded")


def iter_inputs(embedder, files: list[Path], split: str, column: str, model_column: str, batch_rows: int,
                num_workers: int) -> Iterator[tuple[list[str], dict]]:
    """(object ids, collated inputs) of the rows of `split` having `column`, at most `batch_rows` a
    batch, read and collated by `num_workers` DataLoader workers (0: in this process) and yielded
    in the files' row order whatever the number of workers. The tensors are pinned when
    `embedder.device` is a GPU.

    `embedder` provides `collate(samples, column)` (runs in the workers)."""
    units = plan_units(files, batch_rows)
    ds = HubRows(units, split, column, model_column, batch_rows, embedder.collate,
                 spec=model_spec(embedder, model_column), mark_units=True)
    pin = str(getattr(embedder, "device", "cpu")).startswith("cuda")
    loader = DataLoader(ds, batch_size=None, num_workers=num_workers, pin_memory=pin,
                        prefetch_factor=4 if num_workers else None)
    for _u, _s, oids, inputs in in_unit_order(iter(loader)):
        yield oids, inputs


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
    ids: list[str] = []
    parts = []
    for oids, inputs in iter_inputs(embedder, files, split, column, model_column, batch_rows, num_workers):
        emb = np.asarray(embedder.embed_batch(inputs, model_column, which), np.float32)
        if emb.ndim != 2 or len(emb) < len(oids):
            raise ValueError(f"embedder returned shape {emb.shape} for {len(oids)} samples")
        ids += oids
        parts.append(emb[:len(oids)])
    if not parts:
        return np.array([], object), np.zeros((0, 0), np.float32)
    return np.asarray(ids, dtype=object).astype(str), np.concatenate(parts)
