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

import errno
import hashlib
import logging
import math
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from mmu.hub.layout import MANIFEST, atomic_path, dataset_dir, inside, read_manifest, replace_dir
from mmu.model.schema import INDEX_COLUMN, SPLIT_COLUMN, ImageSpec, SpectrumSpec, modalities_of
from mmu.model.validate import flat_values
from mmu.shards.format import (
    FORMAT_VERSION,
    INDEX_PARQUET,
    ShardEntry,
    ShardIndex,
    encode_sample,
    sample_key,
    shard_name,
    write_index,
    write_tar,
)

log = logging.getLogger(__name__)


class ExportError(ValueError):
    pass


def parse_size(text: str | int) -> int:
    """A byte count from a size such as ``"256MiB"``, read by `dask.utils.parse_bytes`.

    Units as dask (and the SI / IEC standards) define them: ``kB``/``MB``/``GB`` are powers of
    1000, ``KiB``/``MiB``/``GiB`` powers of 1024 (so ``"256MB"`` is 256,000,000 bytes and
    ``"256MiB"`` 268,435,456); a bare number is bytes.

    Args:
        text: the size, or an int of bytes.

    Returns:
        The number of bytes, > 0.

    Raises:
        ExportError: `text` is not a size or not positive (the message names it).

    Example:
        >>> parse_size("32MiB"), parse_size("32MB")
        (33554432, 32000000)
    """
    from dask.utils import parse_bytes

    try:
        n = int(text) if isinstance(text, int) else (parse_bytes(text) if str(text).strip() else None)
    except ValueError:
        n = None
    if n is None or n <= 0:
        raise ExportError(f"shard size {text!r}: expected a positive size such as 256MiB "
                          f"(MiB = 2**20 bytes, MB = 10**6)")
    return n


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
        for f, child in zip(struct.type, struct.flatten(), strict=True):
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


def parse_scalars(specs: list[str] | dict | None) -> dict[str, list[str]]:
    """Scalar modalities to pack from catalog columns: ``["gaia_scalars=c1,c2,..."]`` (the CLI's
    form) or a mapping ``{"gaia_scalars": ["c1", "c2"]}``.

    Raises:
        ExportError: a spec without ``NAME=`` or without columns, a column given twice, or a name
            given twice (the message names the spec).
    """
    if not specs:
        return {}
    if isinstance(specs, dict):
        items = [(str(k), [str(c) for c in v]) for k, v in specs.items()]
    else:
        items = []
        for spec in specs:
            name, sep, cols = str(spec).partition("=")
            if not sep or not name.strip():
                raise ExportError(f"--scalars {spec!r}: expected NAME=COLUMN,COLUMN,... "
                                  "(e.g. gaia_scalars=gaia_phot_g_mean_mag,gaia_parallax)")
            items.append((name.strip(), [c.strip() for c in cols.split(",") if c.strip()]))
    out: dict[str, list[str]] = {}
    for name, cols in items:
        if name in out:
            raise ExportError(f"--scalars {name!r} is given twice")
        if not cols:
            raise ExportError(f"--scalars {name!r}: no columns listed")
        if len(set(cols)) != len(cols):
            raise ExportError(f"--scalars {name!r}: a column is listed twice in {cols}")
        out[name] = cols
    return out


def _check_scalars(schema: pa.Schema, modalities: dict, scalars: dict[str, list[str]], source: str) -> None:
    """Every scalar column exists and is an integer or float column; names clash with nothing."""
    for name, cols in scalars.items():
        if name in modalities or name in schema.names:
            raise ExportError(f"--scalars {name!r}: {source} already has a column of that name; pick another")
        for c in cols:
            if c not in schema.names:
                raise ExportError(f"--scalars {name!r}: {source} has no column {c!r}")
            t = schema.field(c).type
            if not (pa.types.is_integer(t) or pa.types.is_floating(t)):
                raise ExportError(f"--scalars {name!r}: column {c!r} of {source} is {t}, not a number")


def scalar_arrays(table: pa.Table, scalars: dict[str, list[str]]) -> list[dict[str, np.ndarray]]:
    """Per row, ``{"<name>.values": float32[K], "<name>.mask": bool[K]}`` for each scalar modality
    (mask True where the column is null or not finite); a row where every column is missing has
    no such arrays (the modality is absent, as a missing spectrum is)."""
    rows: list[dict[str, np.ndarray]] = [dict() for _ in range(table.num_rows)]
    for name, cols in scalars.items():
        vals = np.stack([table.column(c).cast(pa.float64()).to_numpy(zero_copy_only=False) for c in cols], 1) \
            if table.num_rows else np.zeros((0, len(cols)))
        vals = np.asarray(vals, np.float64)
        mask = ~np.isfinite(vals)
        for i in range(table.num_rows):
            if mask[i].all():
                continue
            rows[i][f"{name}.values"] = np.where(mask[i], 0.0, vals[i]).astype(np.float32)
            rows[i][f"{name}.mask"] = mask[i].copy()
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


def _scatter(path: str, split: str, n_shards: int, order: dict, bucket_dir: str, tag: str,
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
        with atomic_path(d / f"{tag}.arrow") as tmp, ipc.new_file(tmp, part.schema) as w:
            w.write_table(part)
        written += part.num_rows
    return {"rows": written, "constant": ok}


def _gather(shard: int, split: str, bucket_dir: str, out_dir: str, constants: dict,
            scalars: dict[str, list[str]] | None = None) -> dict:
    d = Path(bucket_dir) / f"{shard:06d}"
    parts = [ipc.open_file(f).read_all() for f in sorted(d.glob("*.arrow"))] if d.exists() else []
    if not parts:
        raise ExportError(f"shard {shard} received no samples")
    table = pa.concat_tables(parts, promote_options="default").sort_by("__pos")
    modalities = modalities_of(parts[0].schema)
    metas = _meta_rows(table.drop_columns(["__pos"]), modalities)
    arrays = row_arrays(table, modalities, constants)
    if scalars:
        arrays = [{**a, **b} for a, b in zip(arrays, scalar_arrays(table, scalars), strict=True)]
    keys = [sample_key(m["object_id"]) for m in metas]
    info = write_tar(Path(out_dir) / shard_name(split, shard),
                     ((k, encode_sample(m, a)) for k, m, a in zip(keys, metas, arrays, strict=True)))
    info["index"] = {"object_id": [m["object_id"] for m in metas], "ra": [m["ra"] for m in metas],
                     "dec": [m["dec"] for m in metas], "key": keys}
    return info


def export_wds(name: str, hub: str | Path, out: str | Path, *, split: str = "train",
               shard_size: str | int = "256MiB", seed: int = 0, shard_multiple: int = 8,
               overwrite: bool = False, client=None, workers: int | None = None,
               scheduler: str | None = None, scalars: list[str] | dict | None = None) -> ShardIndex:
    """Write dataset `name`'s `split` rows to globally shuffled WebDataset shards in `out`.

    Args:
        name: a built dataset or paired catalog in `hub`.
        hub: the hub directory.
        out: the output folder (replaced atomically when done).
        split: ``"train"``, ``"val"`` or ``"test"``.
        shard_size: target bytes per shard, e.g. ``"256MiB"`` (see `parse_size`).
        seed: shuffle seed: the sample order is a pure function of it and the object ids.
        shard_multiple: the shard count is rounded up to a multiple of this (ranks x workers).
        overwrite: replace a non-empty `out`.
        client: a Dask client to run on (not closed).
        workers: local Dask worker processes when neither `client` nor `scheduler` is given.
        scheduler: address of a running Dask scheduler.
        scalars: catalog columns to pack as ``scalars`` modalities, ``["NAME=col1,col2"]`` or
            ``{"NAME": ["col1", "col2"]}`` (see `parse_scalars`): each sample gets
            ``NAME.values.npy`` (float32, one value per column, in order) and ``NAME.mask.npy``
            (True where the value is null or not finite); the columns stay in the sample's JSON too.

    Returns:
        The `ShardIndex` written to ``out/index.json``.

    Raises:
        NotBuilt: `name` is not built in `hub`.
        UnsafePath: `name` is a path, not a dataset name, or the dataset's build.json names a data
            file outside the dataset's folder.
        ExportError: a bad split or size, a bad `scalars` spec or column, `out` not empty without
            `overwrite`, a folder beside `out` that cannot be written, no rows in the split, or two
            object ids that map to the same sample key.

    Example:
        >>> ix = export_wds("ls_desi", "hub", "shards/train", shard_size="64MiB")   # doctest: +SKIP
        >>> ix.samples, len(ix.shards)  # doctest: +SKIP
    """
    hub, out = Path(hub).resolve(), Path(out).resolve()
    manifest = read_manifest(hub, name)
    if split not in ("train", "val", "test"):
        raise ExportError(f"--split must be train, val or test, got {split!r}")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ExportError(f"{out} exists and is not empty; pass --overwrite to replace it")
    folder = dataset_dir(hub, name)
    files = [str(inside(folder, f, source=folder / MANIFEST, entry=f"data_files.{split}[{k}]",
                        fix=f"rebuild {name}"))
             for k, f in enumerate(manifest.data_files.get(split, []))]
    if not files:
        raise ExportError(f"{name} has no {split} rows")
    shard_bytes = parse_size(shard_size)
    scalars = parse_scalars(scalars)
    staging = _make_staging(out)
    try:
        return _export(name, manifest, files, out, staging, split=split, shard_bytes=shard_bytes, seed=seed,
                       shard_multiple=shard_multiple, client=client, workers=workers, scheduler=scheduler,
                       scalars=scalars)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _make_staging(out: Path) -> Path:
    """The export's working folder beside `out` (`.OUT.export-tmp`, emptied), so that the finished
    export replaces `out` by a rename; refused, before any work, where that folder cannot be written."""
    staging = out.with_name(f".{out.name}.export-tmp")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        (staging / "shards").mkdir(parents=True)
    except OSError as e:
        if e.errno not in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT):
            raise
        raise ExportError(f"--out {out}: cannot write the export: it is made in {out.parent} and renamed "
                          f"into place, and {out.parent} refuses writes ({e.strerror}); choose a writable "
                          "--out") from None
    return staging


def _export(name: str, manifest, files: list[str], out: Path, staging: Path, *, split: str, shard_bytes: int,
            seed: int, shard_multiple: int, client, workers: int | None, scheduler: str | None,
            scalars: dict[str, list[str]] | None = None) -> ShardIndex:
    """Steps 1-4 of the module doc in `staging`, then the swap onto `out`."""
    from mmu.engine.cluster import dask_client

    t0 = time.perf_counter()
    order = _shuffled_positions(files, split, seed)
    if not order:
        raise ExportError(f"{name} has no rows with split == {split!r}")
    scalars = scalars or {}
    modalities, constants, bytes_per_sample = _probe(files[0], split)
    _check_scalars(pq.read_schema(files[0]), modalities, scalars, name)
    n = len(order)
    n_shards = _shard_count(n, bytes_per_sample, shard_bytes, shard_multiple)
    shards_dir = staging / "shards"
    with dask_client(workers, scheduler, client) as client:
        constants = _scatter_all(client, files, split, n_shards, order, staging / "buckets", constants)
        shards = _gather_all(client, name, split, n_shards, staging / "buckets", shards_dir, constants, scalars)
    index_sha = _write_sample_index(shards, n, shards_dir)
    index = ShardIndex(
        format_version=FORMAT_VERSION, dataset=name, content_revision=manifest.content_revision,
        build_key=manifest.build_key, split=split, split_hash=manifest.split.hash, seed=seed,
        samples=n, shards=[ShardEntry(**s) for s in shards], shard_multiple=shard_multiple,
        modalities={**{k: {"kind": v.kind, **v.describe()} for k, v in modalities.items()},
                    **{k: {"kind": "scalars", "features": list(cols)} for k, cols in scalars.items()}},
        constants=constants, mock=manifest.mock, inputs_datasets=manifest.source_datasets,
        inputs_revisions=manifest.source_revisions, index_parquet_sha256=index_sha,
        seconds=round(time.perf_counter() - t0, 2))
    write_index(shards_dir, index)
    replace_dir(shards_dir, out)  # the old export is renamed away first, then removed
    total = sum(s["bytes"] for s in shards)
    log.info("exported %d %s samples of %s to %s: %d shards, %.1f MiB, %s s",
             n, split, name, out, n_shards, total / 2**20, index.seconds)
    return index


def _shuffled_positions(files: list[str], split: str, seed: int) -> dict[str, int]:
    """object_id -> its position in the shuffled order (rank of sha256(seed:object_id))."""
    ids = []
    for f in files:
        t = pq.read_table(f, columns=["object_id", SPLIT_COLUMN])
        ids += t.filter(pc.equal(t.column(SPLIT_COLUMN), split)).column("object_id").to_pylist()
    n = len(ids)
    ranks = np.argsort(_order_key(seed, ids), kind="stable")
    position = np.empty(n, np.int64)
    position[ranks] = np.arange(n)
    return dict(zip(ids, position.tolist(), strict=True))


def _probe(first_file: str, split: str) -> tuple[dict, dict, float]:
    """From up to 16 rows of the first partition: the modalities, the candidate constants
    (checked on every row later) and the mean encoded bytes per sample."""
    sample = pq.ParquetFile(first_file).read_row_group(0)
    sample = sample.filter(pc.equal(sample.column(SPLIT_COLUMN), split)).slice(0, 16)
    modalities = modalities_of(sample.schema)
    if not sample.num_rows:
        return modalities, {}, 1024
    constants = _constants(sample, modalities)
    sizes = [sum(len(v) for v in encode_sample(m, a).values())
             for m, a in zip(_meta_rows(sample, modalities), row_arrays(sample, modalities, constants), strict=True)]
    return modalities, constants, float(np.mean(sizes))


def _shard_count(n: int, bytes_per_sample: float, shard_bytes: int, shard_multiple: int) -> int:
    """Shards of about `shard_bytes`, rounded up to a multiple of `shard_multiple`, at most `n`."""
    n_shards = max(1, math.ceil(n * bytes_per_sample / shard_bytes))
    return min(n, math.ceil(n_shards / shard_multiple) * shard_multiple)


def _scatter_all(client, files: list[str], split: str, n_shards: int, order: dict,
                 buckets: Path, constants: dict) -> dict:
    """Step 2 on the workers; returns the constants that really are constant in every row."""
    order_f = client.scatter(order, broadcast=True)
    futs = [client.submit(_scatter, f, split, n_shards, order_f, str(buckets), f"p{k:06d}",
                          constants, pure=False) for k, f in enumerate(files)]
    results = client.gather(futs)
    bad = {k for r in results for k, ok in r["constant"].items() if not ok}
    # not constant after all: keep the field in every sample
    return {k: v for k, v in constants.items() if k not in bad}


def _gather_all(client, name: str, split: str, n_shards: int, buckets: Path, shards_dir: Path,
                constants: dict, scalars: dict[str, list[str]] | None = None) -> list[dict]:
    """Step 3 on the workers: one tar per shard; returns their infos in shard order."""
    from dask.distributed import as_completed

    from mmu.engine.cluster import Progress

    bar = Progress(n_shards, f"{name}: shards", unit="shard")
    futs = [client.submit(_gather, s, split, str(buckets), str(shards_dir), constants, scalars, pure=False)
            for s in range(n_shards)]
    infos = {}
    for fut in as_completed(futs):
        info = fut.result()
        infos[info["name"]] = info
        bar.update()
    bar.close()
    return [infos[shard_name(split, s)] for s in range(n_shards)]


def _write_sample_index(shards: list[dict], n: int, shards_dir: Path) -> str:
    """Write index.parquet (every sample's object_id, ra, dec, key, shard, position) from the
    shards' infos (removing their `index` entries); returns its sha256."""
    index_rows: dict[str, list] = {"object_id": [], "ra": [], "dec": [], "key": [], "shard": [], "position": []}
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
    return hashlib.sha256((shards_dir / INDEX_PARQUET).read_bytes()).hexdigest()
