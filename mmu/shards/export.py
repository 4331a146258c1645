"""`mmu export-wds`: a hub dataset's split -> globally shuffled WebDataset tar shards + index.

HATS order is spatial, so neighbouring rows share sky, depth and seeing; the exporter shuffles
globally. A row's position in the shuffled order is its rank in sha256(seed:object_id) order (a
pure function of seed and ids; ties, which need a 64-bit collision, go by file then row order);
its shard is position % shards. Every step runs on the Dask workers, partition by partition or
bucket by bucket; the driver holds task graphs, counts and one offset per bucket, never rows
(issue 15: nothing on the driver grows with the data):

1. keys (one task per partition): each row's order key, written to the hash-range bucket that
   holds it (``2**bits`` buckets of about `ROWS_PER_BUCKET` rows each), and its sample key to a
   bucket by the key's hash (for the uniqueness check);
2. rank (one task per bucket): sort the bucket's keys; a row's position is the rows in the
   buckets before (a prefix sum of the buckets' counts, on the driver) + its rank in the bucket.
   Two object ids with one sample key are refused here, before any shard is written;
3. scatter (one task per partition): rows -> per-shard bucket files (Arrow IPC);
4. gather (one task per shard): read its buckets, sort by position, encode samples
   (mmu.shards.format format), write the tar atomically and its rows' index entries;
5. index.parquet (one task, streaming the shards' entries in shard order) + index.json.
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
    file_sha256,
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


def _bucket_of(keys: np.ndarray, bits: int) -> np.ndarray:
    """The hash-range bucket of each uint64 key: its top `bits` bits (bucket order = key order)."""
    if bits == 0:
        return np.zeros(len(keys), np.int64)
    return (keys >> np.uint64(64 - bits)).astype(np.int64)


def _write_ipc(path: Path, table: pa.Table) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, ipc.new_file(tmp, table.schema) as w:
        w.write_table(table)


def _read_ipc(files) -> pa.Table | None:
    parts = [ipc.open_file(f).read_all() for f in files]
    return pa.concat_tables(parts) if parts else None


def _split_rows(path: str, split: str, columns: list[str] | None = None) -> pa.Table:
    """The rows of `split` in partition file `path`, in file order (the row numbers of steps 1-3)."""
    table = pq.read_table(path, columns=columns)
    return table.filter(pc.equal(table.column(SPLIT_COLUMN), split))


def _keys(path: str, part: int, split: str, seed: int, bits: int, work: str) -> int:
    """Step 1 for partition `part`: its rows' order keys -> keys/BUCKET/pPART.arrow (key, row), their
    sample keys -> skeys/BUCKET/pPART.arrow (key, object_id); returns its row count."""
    ids = _split_rows(path, split, ["object_id", SPLIT_COLUMN]).column("object_id").to_pylist()
    if not ids:
        return 0
    order = _order_key(seed, ids)
    bucket = _bucket_of(order, bits)
    rows = np.arange(len(ids), dtype=np.int64)
    for b in np.unique(bucket):
        sel = bucket == b
        _write_ipc(Path(work) / "keys" / f"{int(b):05d}" / f"p{part:06d}.arrow",
                   pa.table({"key": pa.array(order[sel]), "row": pa.array(rows[sel])}))
    from pandas.util import hash_array  # a fixed-key SipHash: the same bucket in every process

    keys = np.asarray([sample_key(o) for o in ids], dtype=object)
    kb = _bucket_of(hash_array(keys, categorize=False).astype(np.uint64), bits)
    ids_arr = np.asarray(ids, dtype=object)
    for b in np.unique(kb):
        sel = kb == b
        _write_ipc(Path(work) / "skeys" / f"{int(b):05d}" / f"p{part:06d}.arrow",
                   pa.table({"key": pa.array(keys[sel], pa.string()),
                             "object_id": pa.array(ids_arr[sel], pa.string())}))
    return len(ids)


def _rank(bucket: int, work: str) -> dict:
    """Step 2 for one bucket: sort its order keys (ties by partition, then row) and write each
    partition's rows' ranks within the bucket to ranks/pPART/bBUCKET.arrow (row, rank); check that
    no two rows of the bucket share a sample key. Returns {"rows", "clashes": up to 3 examples}."""
    work = Path(work)
    d = work / "keys" / f"{bucket:05d}"
    files = sorted(d.glob("p*.arrow")) if d.exists() else []
    n = 0
    if files:
        tables = [ipc.open_file(f).read_all() for f in files]
        parts = np.repeat([int(f.stem[1:]) for f in files], [t.num_rows for t in tables])
        keys = np.concatenate([t.column("key").to_numpy() for t in tables])
        rows = np.concatenate([t.column("row").to_numpy() for t in tables])
        n = len(keys)
        rank = np.empty(n, np.int64)
        rank[np.lexsort((rows, parts, keys))] = np.arange(n)  # the old global stable argsort, per bucket
        for p in np.unique(parts):
            sel = parts == p
            _write_ipc(work / "ranks" / f"p{int(p):06d}" / f"b{bucket:05d}.arrow",
                       pa.table({"row": pa.array(rows[sel]), "rank": pa.array(rank[sel])}))
    clashes = []
    d = work / "skeys" / f"{bucket:05d}"
    t = _read_ipc(sorted(d.glob("p*.arrow"))) if d.exists() else None
    if t is not None and t.num_rows:
        counts = pc.value_counts(t.column("key")).flatten()
        dup = pc.filter(counts[0], pc.greater(counts[1], 1))
        if len(dup):
            hit = t.filter(pc.is_in(t.column("key"), value_set=dup.slice(0, 3)))
            clashes = [[k, sorted(hit.filter(pc.equal(hit.column("key"), k)).column("object_id").to_pylist())]
                       for k in dup.slice(0, 3).to_pylist()]
    return {"rows": n, "clashes": clashes}


def _scatter(path: str, part: int, split: str, n_shards: int, offsets: list[int], work: str, tag: str,
             constants: dict) -> dict:
    """Step 3: rows of one partition -> bucket files per shard; checks the constants really are."""
    table = _split_rows(path, split)
    ok = {}
    for name, value in constants.items():
        col, field = name.split(".", 1)
        arr = table.column(col).combine_chunks().field(field)
        ref = np.asarray(value)
        ok[name] = all(v is None or np.array_equal(np.asarray(v), ref) for v in arr.to_pylist())
    pos = np.full(table.num_rows, -1, dtype=np.int64)
    d = Path(work) / "ranks" / f"p{part:06d}"
    for f in sorted(d.glob("b*.arrow")) if d.exists() else []:
        r = ipc.open_file(f).read_all()
        pos[r.column("row").to_numpy()] = offsets[int(f.stem[1:])] + r.column("rank").to_numpy()
    if (pos < 0).any():
        raise ExportError(f"{path}: {int((pos < 0).sum())} of its {split} rows were not ranked; the file "
                          "changed during the export? export again")
    shard = pos % n_shards
    table = table.append_column("__pos", pa.array(pos))
    written = 0
    for s in np.unique(shard):
        part_rows = table.filter(pa.array(shard == s))
        _write_ipc(Path(work) / "buckets" / f"{int(s):06d}" / f"{tag}.arrow", part_rows)
        written += part_rows.num_rows
    return {"rows": written, "constant": ok}


def _gather(shard: int, split: str, bucket_dir: str, out_dir: str, constants: dict,
            scalars: dict[str, list[str]] | None = None, index_dir: str | None = None) -> dict:
    """Step 4 for one shard: its tar, and its rows' index entries (object_id, ra, dec, key) in
    `index_dir`/SHARD.arrow (the index is written from those by `_write_sample_index`)."""
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
    if index_dir is not None:
        _write_ipc(Path(index_dir) / f"{shard:06d}.arrow", pa.table({
            "object_id": pa.array([m["object_id"] for m in metas], pa.string()),
            "ra": pa.array([m["ra"] for m in metas], pa.float64()),
            "dec": pa.array([m["dec"] for m in metas], pa.float64()), "key": pa.array(keys, pa.string())}))
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


ROWS_PER_BUCKET = 1 << 20  # rows per ranking bucket (step 2 sorts one bucket in one task)
MAX_BUCKET_BITS = 12  # at most 4096 buckets: past 4G rows a bucket grows instead


def _bucket_bits(rows: int) -> int:
    """log2 of the ranking buckets for about `rows` rows (the manifest's count: it only sizes the
    buckets, the result does not depend on it)."""
    need = max(1, math.ceil(max(rows, 0) / ROWS_PER_BUCKET))
    return min(MAX_BUCKET_BITS, (need - 1).bit_length())


def _export(name: str, manifest, files: list[str], out: Path, staging: Path, *, split: str, shard_bytes: int,
            seed: int, shard_multiple: int, client, workers: int | None, scheduler: str | None,
            scalars: dict[str, list[str]] | None = None) -> ShardIndex:
    """Steps 1-5 of the module doc in `staging`, then the swap onto `out`."""
    from mmu.engine.cluster import dask_client

    t0 = time.perf_counter()
    scalars = scalars or {}
    modalities, constants, bytes_per_sample = _probe(files[0], split)
    _check_scalars(pq.read_schema(files[0]), modalities, scalars, name)
    shards_dir = staging / "shards"
    with dask_client(workers, scheduler, client) as client:
        bits = _bucket_bits(getattr(manifest.rows, split, 0) or manifest.rows.total)
        offsets, n = _rank_all(client, name, files, split, seed, bits, staging)
        if n == 0:
            raise ExportError(f"{name} has no rows with split == {split!r}")
        n_shards = _shard_count(n, bytes_per_sample, shard_bytes, shard_multiple)
        constants = _scatter_all(client, files, split, n_shards, offsets, staging, constants)
        shutil.rmtree(staging / "ranks", ignore_errors=True)
        shards = _gather_all(client, name, split, n_shards, staging / "buckets", shards_dir, constants, scalars,
                             staging / "index")
        shutil.rmtree(staging / "buckets", ignore_errors=True)
        index_sha = client.submit(_write_sample_index, split, n_shards, str(staging / "index"), str(shards_dir),
                                  pure=False).result()
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


def _rank_all(client, name: str, files: list[str], split: str, seed: int, bits: int,
              work: Path) -> tuple[list[int], int]:
    """Steps 1-2 on the workers: (the rows before each bucket, the split's row count).

    Raises:
        ExportError: two object ids (or one id twice) with the same sample key.
    """
    counts = client.gather([client.submit(_keys, f, k, split, seed, bits, str(work), pure=False)
                            for k, f in enumerate(files)])
    ranked = client.gather([client.submit(_rank, b, str(work), pure=False) for b in range(1 << bits)])
    shutil.rmtree(work / "keys", ignore_errors=True)
    shutil.rmtree(work / "skeys", ignore_errors=True)
    clashes = [c for r in ranked for c in r["clashes"]]
    if clashes:
        shown = "; ".join(f"{ids} -> {key!r}" for key, ids in clashes[:3])
        raise ExportError(f"{name}: two object ids map to the same WebDataset key after sanitising, or an id "
                          f"is repeated ({shown}); rename them before exporting")
    per_bucket = [r["rows"] for r in ranked]
    if sum(per_bucket) != sum(counts):
        raise ExportError(f"{name}: {sum(counts)} {split} rows read but {sum(per_bucket)} ranked; "
                          "the hub changed during the export? export again")
    offsets = np.concatenate([[0], np.cumsum(per_bucket)[:-1]]).astype(np.int64).tolist()
    log.debug("%s: %d %s rows ranked in %d buckets", name, sum(counts), split, len(per_bucket))
    return offsets, int(sum(counts))


def _probe(first_file: str, split: str) -> tuple[dict, dict, float]:
    """From the first 16 rows of `split` in the first row group of the first partition (read a
    batch at a time): the modalities, the candidate constants (checked on every row later) and
    the mean encoded bytes per sample."""
    pf = pq.ParquetFile(first_file, pre_buffer=False, buffer_size=1 << 20)  # page by page, not the row group
    got, need = [], 16
    for batch in pf.iter_batches(batch_size=16, row_groups=[0]):
        t = pa.Table.from_batches([batch])
        t = t.filter(pc.equal(t.column(SPLIT_COLUMN), split)).slice(0, need)
        if t.num_rows:
            got.append(t)
            need -= t.num_rows
        if need == 0:
            break
    sample = pa.concat_tables(got) if got else pf.schema_arrow.empty_table()
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


def _scatter_all(client, files: list[str], split: str, n_shards: int, offsets: list[int],
                 work: Path, constants: dict) -> dict:
    """Step 3 on the workers; returns the constants that really are constant in every row."""
    futs = [client.submit(_scatter, f, k, split, n_shards, offsets, str(work), f"p{k:06d}",
                          constants, pure=False) for k, f in enumerate(files)]
    results = client.gather(futs)
    bad = {k for r in results for k, ok in r["constant"].items() if not ok}
    # not constant after all: keep the field in every sample
    return {k: v for k, v in constants.items() if k not in bad}


def _gather_all(client, name: str, split: str, n_shards: int, buckets: Path, shards_dir: Path,
                constants: dict, scalars: dict[str, list[str]] | None = None,
                index_dir: Path | None = None) -> list[dict]:
    """Step 4 on the workers: one tar per shard; returns their infos in shard order."""
    from dask.distributed import as_completed

    from mmu.engine.cluster import Progress

    bar = Progress(n_shards, f"{name}: shards", unit="shard")
    futs = [client.submit(_gather, s, split, str(buckets), str(shards_dir), constants, scalars,
                          str(index_dir) if index_dir else None, pure=False)
            for s in range(n_shards)]
    infos = {}
    for fut in as_completed(futs):
        info = fut.result()
        infos[info["name"]] = info
        bar.update()
    bar.close()
    return [infos[shard_name(split, s)] for s in range(n_shards)]


INDEX_SCHEMA = pa.schema([("object_id", pa.string()), ("ra", pa.float64()), ("dec", pa.float64()),
                          ("key", pa.string()), ("shard", pa.string()), ("position", pa.int64())])
INDEX_ROW_GROUP = 1 << 17  # rows per row group of index.parquet (readers go a row group at a time)


def _write_sample_index(split: str, n_shards: int, index_dir: str, shards_dir: str) -> str:
    """Step 5 (on a worker): index.parquet (every sample's object_id, ra, dec, key, shard,
    position) from the shards' entries, in shard order, streamed a row group at a time; returns
    its sha256."""
    path = Path(shards_dir) / INDEX_PARQUET
    pending: list[pa.Table] = []
    rows = 0
    with pq.ParquetWriter(path, INDEX_SCHEMA) as w:
        for s in range(n_shards):
            t = ipc.open_file(Path(index_dir) / f"{s:06d}.arrow").read_all()
            t = t.append_column("shard", pa.array([shard_name(split, s)] * t.num_rows, pa.string()))
            pending.append(t.append_column("position", pa.array(np.arange(t.num_rows, dtype=np.int64))))
            rows += t.num_rows
            if rows >= INDEX_ROW_GROUP:
                w.write_table(pa.concat_tables(pending).select(INDEX_SCHEMA.names), row_group_size=INDEX_ROW_GROUP)
                pending, rows = [], 0
        if pending:
            w.write_table(pa.concat_tables(pending).select(INDEX_SCHEMA.names), row_group_size=INDEX_ROW_GROUP)
    return file_sha256(path)
