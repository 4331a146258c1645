"""`mmu export-wds`: a hub dataset's split -> globally shuffled WebDataset tar shards + index.

HATS order is spatial, so neighbouring rows share sky, depth and seeing; the exporter shuffles
globally with an external shuffle whose memory is bounded by one partition and one shard:

1. ids: read `object_id` of the split's rows; a row's rank in sha256(seed:object_id) order
   decides its shard and its position (so the order is a pure function of seed and ids);
2. scatter (one Dask task per partition): rows -> per-shard bucket files (Arrow IPC);
3. gather (one Dask task per shard): read its buckets, sort by position, encode samples
   (mmu.shards.format format), write the tar atomically;
4. index.json + index.parquet.
"""
from __future__ import annotations

import hashlib
import math
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from mmu.hub.layout import atomic_write_json, dataset_dir, read_manifest
from mmu.model.schema import INDEX_COLUMN, SPLIT_COLUMN, ImageSpec, SpectrumSpec, modalities_of
from mmu.model.validate import flat_values
from mmu.shards.format import FORMAT_VERSION, INDEX_JSON, INDEX_PARQUET, encode_sample, sample_key, shard_name, write_tar


class ExportError(ValueError):
    pass


def parse_size(text: str | int) -> int:
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*([0-9.]+)\s*([kKmMgG]?)[bB]?\s*", str(text))
    if not m:
        raise ExportError(f"cannot read size {text!r}; use e.g. 256MB")
    scale = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30}[m.group(2).lower()]
    return int(float(m.group(1)) * scale)


def _order_key(seed: int, ids: list[str]) -> np.ndarray:
    return np.array([int.from_bytes(hashlib.sha256(f"{seed}:{o}".encode()).digest()[:8], "big")
                     for o in ids], dtype=np.uint64)


def row_arrays(table: pa.Table, modalities: dict, constants: dict) -> list[dict[str, np.ndarray]]:
    """Per-row numpy arrays of every modality field, minus the dataset constants."""
    n = table.num_rows
    rows: list[dict[str, np.ndarray]] = [dict() for _ in range(n)]
    for col, spec in modalities.items():
        struct = table.column(col).combine_chunks()
        valid = np.asarray(struct.is_valid())
        for f, child in zip(struct.type, struct.flatten()):
            name = f"{col}.{f.name}"
            if name in constants:
                continue
            is_list = pa.types.is_list(child.type) or pa.types.is_fixed_size_list(child.type)
            values, off = flat_values(child)
            shape = None
            if isinstance(spec, ImageSpec) and f.name in ("flux", "ivar", "mask") and spec.height:
                shape = (len(spec.bands), spec.height, spec.width)
            for i in range(n):
                if not valid[i]:
                    continue
                if not is_list:
                    rows[i][name] = np.asarray(values[i])
                    continue
                v = values[off[i]:off[i + 1]]
                if v.dtype == object:
                    v = np.asarray(v.tolist() if v.ndim else [v], dtype=str)
                rows[i][name] = v.reshape(shape) if shape else v
    return rows


def _meta_rows(table: pa.Table, modalities: dict) -> list[dict]:
    cols = [c for c in table.column_names if c not in modalities and c != INDEX_COLUMN]
    return table.select(cols).to_pylist()


def _constants(table: pa.Table, modalities: dict) -> dict:
    """Fields identical in every row of a sample table: fixed spectrum grids, image band lists."""
    out = {}
    for col, spec in modalities.items():
        struct = table.column(col).combine_chunks()
        names = []
        if isinstance(spec, SpectrumSpec) and spec.length:
            names.append("lambda")
        if isinstance(spec, ImageSpec):
            names.append("band")
        for name in names:
            arr = struct.field(name).drop_null() if struct.null_count else struct.field(name)
            if len(arr) == 0:
                continue
            first = arr[0].as_py()
            out[f"{col}.{name}"] = first
    return out


def _scatter(path: str, split: str, seed: int, n_shards: int, order: dict, bucket_dir: str, tag: str,
             constants: dict) -> dict:
    """Rows of one partition -> bucket files per shard; checks the constants really are."""
    table = pq.read_table(path)
    table = table.filter(pc.equal(table.column(SPLIT_COLUMN), split))
    ok = {}
    for name, value in constants.items():
        col, field = name.split(".", 1)
        arr = table.column(col).combine_chunks().field(field)
        ref = np.asarray(value)
        ok[name] = all(v is None or np.array_equal(np.asarray(v), ref) for v in arr.to_pylist())
    ids = table.column("object_id").to_pylist()
    pos = np.array([order[o] for o in ids], dtype=np.int64)
    shard = pos % n_shards
    table = table.append_column("__pos", pa.array(pos))
    written = 0
    for s in np.unique(shard):
        part = table.filter(pa.array(shard == s))
        d = Path(bucket_dir) / f"{int(s):06d}"
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / f".{tag}.tmp"
        with ipc.new_file(tmp, part.schema) as w:
            w.write_table(part)
        tmp.replace(d / f"{tag}.arrow")
        written += part.num_rows
    return {"rows": written, "constant": ok}


def _gather(shard: int, split: str, bucket_dir: str, out_dir: str, constants: dict) -> dict:
    d = Path(bucket_dir) / f"{shard:06d}"
    parts = [ipc.open_file(f).read_all() for f in sorted(d.glob("*.arrow"))] if d.exists() else []
    if not parts:
        raise ExportError(f"shard {shard} received no samples")
    table = pa.concat_tables(parts, promote_options="default").sort_by("__pos")
    modalities = modalities_of(parts[0].schema)
    metas = _meta_rows(table.drop_columns(["__pos"]), modalities)
    arrays = row_arrays(table, modalities, constants)
    keys = [sample_key(m["object_id"]) for m in metas]
    info = write_tar(Path(out_dir) / shard_name(split, shard),
                     ((k, encode_sample(m, a)) for k, m, a in zip(keys, metas, arrays)))
    info["index"] = {"object_id": [m["object_id"] for m in metas], "ra": [m["ra"] for m in metas],
                     "dec": [m["dec"] for m in metas], "key": keys}
    return info


def export_wds(name: str, hub: str | Path, out: str | Path, *, split: str = "train",
               shard_size: str | int = "256MB", seed: int = 0, shard_multiple: int = 8,
               overwrite: bool = False, client=None, workers: int | None = None,
               scheduler: str | None = None, progress: bool = True, log=print) -> dict:
    """Write dataset `name`'s `split` rows to shuffled WebDataset shards in `out`."""
    from mmu.engine.cluster import Progress, dask_client

    hub, out = Path(hub).resolve(), Path(out).resolve()
    manifest = read_manifest(hub, name)
    if split not in ("train", "val", "test"):
        raise ExportError(f"--split must be train, val or test, got {split!r}")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise ExportError(f"{out} exists and is not empty; pass --overwrite to replace it")
    files = [str(dataset_dir(hub, name) / f) for f in manifest["data_files"][split]]
    if not files:
        raise ExportError(f"{name} has no {split} rows")
    t0 = time.perf_counter()
    ids = []
    for f in files:
        t = pq.read_table(f, columns=["object_id", SPLIT_COLUMN])
        ids += t.filter(pc.equal(t.column(SPLIT_COLUMN), split)).column("object_id").to_pylist()
    n = len(ids)
    if n == 0:
        raise ExportError(f"{name} has no rows with split == {split!r}")
    ranks = np.argsort(_order_key(seed, ids), kind="stable")
    position = np.empty(n, np.int64)
    position[ranks] = np.arange(n)
    order = dict(zip(ids, position.tolist()))
    sample = pq.ParquetFile(files[0]).read_row_group(0)
    sample = sample.filter(pc.equal(sample.column(SPLIT_COLUMN), split)).slice(0, 16)
    modalities = modalities_of(sample.schema)
    constants = _constants(sample, modalities) if sample.num_rows else {}
    per_row = np.mean([sum(len(v) for v in encode_sample(m, a).values())
                       for m, a in zip(_meta_rows(sample, modalities), row_arrays(sample, modalities, constants))]) \
        if sample.num_rows else 1024
    size = parse_size(shard_size)
    n_shards = max(1, math.ceil(n * per_row / size))
    n_shards = min(n, math.ceil(n_shards / shard_multiple) * shard_multiple)
    staging = out.with_name(f".{out.name}.export-tmp")
    shutil.rmtree(staging, ignore_errors=True)
    buckets = staging / "buckets"
    shards_dir = staging / "shards"
    shards_dir.mkdir(parents=True)
    with dask_client(workers, scheduler, client) as client:
        order_f = client.scatter(order, broadcast=True)
        futs = [client.submit(_scatter, f, split, seed, n_shards, order_f, str(buckets), f"p{k:06d}", constants,
                              pure=False) for k, f in enumerate(files)]
        results = client.gather(futs)
        bad = sorted({k for r in results for k, ok in r["constant"].items() if not ok})
        for k in bad:  # not constant after all: keep the field in every sample
            constants.pop(k)
        bar = Progress(n_shards, f"{name}: shards", progress, unit="shard")
        from dask.distributed import as_completed
        futs = [client.submit(_gather, s, split, str(buckets), str(shards_dir), constants, pure=False)
                for s in range(n_shards)]
        infos = {}
        for fut in as_completed(futs):
            info = fut.result()
            infos[info["name"]] = info
            bar.update()
        bar.close()
    shards = [infos[shard_name(split, s)] for s in range(n_shards)]
    index_rows = {"object_id": [], "ra": [], "dec": [], "key": [], "shard": [], "position": []}
    for s in shards:
        idx = s.pop("index")
        for k in ("object_id", "ra", "dec", "key"):
            index_rows[k] += idx[k]
        index_rows["shard"] += [s["name"]] * s["samples"]
        index_rows["position"] += list(range(s["samples"]))
    if len(set(index_rows["key"])) != n:
        raise ExportError("two object ids map to the same WebDataset key after sanitising; "
                          "rename them before exporting")
    pq.write_table(pa.table(index_rows), shards_dir / INDEX_PARQUET)
    index = {
        "format_version": FORMAT_VERSION, "dataset": name, "content_revision": manifest["content_revision"],
        "build_key": manifest["build_key"], "split": split, "split_hash": manifest["split"]["hash"],
        "seed": seed, "samples": n, "shards": shards, "shard_multiple": shard_multiple,
        "modalities": {k: {"kind": v.kind, **v.describe()} for k, v in modalities.items()},
        "constants": constants, "mock": manifest.get("mock", False),
        "inputs_datasets": manifest.get("inputs_datasets", [name]),
        "inputs_revisions": manifest.get("inputs_revisions", [manifest["content_revision"]]),
        "index_parquet_sha256": hashlib.sha256((shards_dir / INDEX_PARQUET).read_bytes()).hexdigest(),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    atomic_write_json(shards_dir / INDEX_JSON, index)
    if out.exists():
        shutil.rmtree(out)
    shards_dir.replace(out)
    shutil.rmtree(staging, ignore_errors=True)
    total = sum(s["bytes"] for s in shards)
    log(f"exported {n} {split} samples of {name} to {out}: {n_shards} shards, "
        f"{total / 2**20:.1f} MiB, {index['seconds']} s")
    return index
