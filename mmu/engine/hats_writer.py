"""Stage 2 of a build, one pass: the standardized files become a HATS catalog and its margin cache
with each row read once and written once (`write_collection`).

hats-import (the default before, still selectable with ``PartitionSettings(writer="hats-import")``)
is a general importer: it reads any input, so it maps every row to a pixel (one pass over the
input), splits every row into shard files per destination pixel (a second read and a write),
reduces the shards into partitions (a third read and a write), and then builds the margin cache
from the finished catalog (each partition read again, margin rows written to shards, read back and
written). Our inputs are already standardized Parquet, so most of that is avoidable:

1. **plan** (one task per file, reads ra/dec only): rows (and, for rows of variable size, hats'
   in-memory byte estimate) per HEALPix pixel of the deepest allowed order, sparse. A tree of
   worker tasks merges them (`merge_weights`), and one worker task aligns them into partitions
   with hats-import's own rule (`plan`, `align`: the coarsest order whose pixels all fit, then
   hats' `drop_empty_siblings` agglomeration), so the partitions are the ones hats-import writes.
   The driver receives the partition list and a skymap of order <= 8, never per-pixel counts.
2. **route** (one task per file, reads ra/dec again): which partitions the file's rows go to, and
   in which of its row groups they are. The driver gets a few numbers per (file, partition).
3. **write** (one task per partition): reads only the row groups holding its rows, adds
   ``_healpix_29``, sorts by it, writes the partition file (hats' Parquet settings: byte-stream-split
   floats, the sorting column recorded) and, from the rows already in memory, the margin shards: a
   row belongs to the margin of every other partition (or empty-sky pixel of the negative tree)
   that one of its 8 neighbouring pixels of the margin order falls in, which is hats-import's
   margin rule (`hats.pixel_math.get_margin`: the pixels of the margin order bordering a pixel).
4. **margin** (one task per margin pixel with rows): its shards, sorted by ``_healpix_29``, into one
   margin file.
5. **finish** (one worker task): hats' own writers for ``_metadata``/``_common_metadata`` (which
   gathers every partition's footer), partition_info.csv, the skymap and the properties, and the
   collection.properties tying catalog and margin together.

Each step's tasks go to Dask as one map, biggest first (partitions and margin files by rows), so a
step ends on small tasks on every worker.

Every row is read from its standardized file once (plus ra/dec twice), and written once; margin
rows (a fraction) once more to a shard. The partitions, their rows and their order
(``_healpix_29``) and the margin rows equal hats-import's: tests/test_hats_writer.py builds both
on the same files. What differs:

- the skymap is written at order <= `SKYMAP_MAX_ORDER` (hats-import writes a dense histogram of
  its mapping order, up to 12 * 4^10 pixels);
- the margin's ``hats_primary_table_url`` names the primary table (hats-import writes its absolute
  staging path), and ``hats_builder`` says mmu;
- margin rows are sorted by ``_healpix_29`` across the whole file (hats-import: per source partition);
- rows at the very same position (equal ``_healpix_29``) keep the order of the standardized files;
  hats-import's follows its shard file names, in which ``split_10`` comes before ``split_2``;
- with rows of variable size (a byte threshold), each row's in-memory size is hats' estimate over
  all of its columns; hats-import measures the variable-length columns per row and adds the mean
  size of the others over the first chunk of the first file, so a cell whose weight is within a
  fraction of a percent of the threshold can be split by one and merged by the other. With rows of
  one size (spectra on a grid, image cutouts, catalogs: a row threshold) there is no difference.
"""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np

from mmu.engine.errors import BuildError

log = logging.getLogger(__name__)

SPATIAL_ORDER = 29  # hats' _healpix_29
SKYMAP_MAX_ORDER = 8  # 786,432 pixels: a dense skymap larger than this is not written


# ----------------------------------------------------------------------------------------------
# planning


def pixel_weights(path: str, order: int, byte_mode: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Rows (and, with `byte_mode`, hats' in-memory byte estimate) per pixel of `order` in one
    standardized file, sparse: (pixels, rows, bytes or None). Reads ra/dec only unless `byte_mode`,
    one row group at a time."""
    import pyarrow.parquet as pq
    from hats.io import size_estimates

    pf = pq.ParquetFile(path)
    pix, size = [], []
    for i in range(pf.metadata.num_row_groups):
        t = pf.read_row_group(i) if byte_mode else pf.read_row_group(i, columns=["ra", "dec"])
        p = spatial_index(t) >> 2 * (SPATIAL_ORDER - order)
        pix.append(p)
        if byte_mode:
            size.append(size_estimates.get_mem_size_per_row(t))
    if not pix:
        return np.empty(0, np.int64), np.empty(0, np.int64), (np.empty(0) if byte_mode else None)
    p = np.concatenate(pix)
    u, inv = np.unique(p, return_inverse=True)
    n = np.bincount(inv, minlength=len(u)).astype(np.int64)
    b = np.bincount(inv, weights=np.concatenate(size), minlength=len(u)) if byte_mode else None
    return u.astype(np.int64), n, b


def merge_weights(client, std_files: list[str], order: int, byte_mode: bool, fan_in: int = 8):
    """`pixel_weights` of every file, merged on the workers by a tree of `fan_in`-way merges: a
    future of (pixels, rows, bytes or None), pixels ascending. The merged counts (bounded by the
    occupied pixels of `order`) stay on a worker; the driver holds futures only."""
    futures = client.map(pixel_weights, std_files, order=order, byte_mode=byte_mode, pure=False)
    while len(futures) > 1:
        futures = [client.submit(_merge, futures[i:i + fan_in], pure=False)
                   for i in range(0, len(futures), fan_in)]
    return futures[0]


def plan(merged, highest: int, lowest: int, threshold: int, row_bytes: float | None, total_rows: int,
         sky_max_order: int) -> dict:
    """The partitions from the merged weights (a worker task: the driver gets the partition list,
    the threshold used and a skymap of order <= `sky_max_order`, never the per-pixel counts).

    `threshold` is in bytes; with `row_bytes` (every row the same size) it becomes a row threshold,
    rows <= floor(threshold / row_bytes), as hats-import's pixel_threshold. Where one pixel of order
    `highest` weighs more, the threshold becomes that pixel's weight (``raised``: True)."""
    pix, rows, size = merged
    if int(rows.sum()) != total_rows:
        raise BuildError(f"the standardized files hold {int(rows.sum())} rows, {total_rows} expected")
    if row_bytes is None:
        weight, limit = size, float(threshold)
    else:
        weight, limit = rows.astype(np.float64), float(max(1, int(threshold // row_bytes)))
    raised = bool(len(weight) and weight.max() > limit)
    if raised:
        limit = float(np.ceil(weight.max()))
        threshold = int(np.ceil(weight.max() * (row_bytes or 1)))
    parts, mapping_order = align(pix, rows, weight, highest, lowest, limit)
    sky_order = min(mapping_order, sky_max_order)
    sky_pix, sky_rows = _sum_by(pix >> 2 * (highest - sky_order), rows.astype(np.float64))
    return {"partitions": parts, "threshold": threshold, "raised": raised, "sky_order": sky_order,
            "sky": (sky_pix, np.rint(sky_rows).astype(np.int64))}


def _merge(parts):
    if len(parts) == 1:
        return parts[0]
    pix = np.concatenate([p[0] for p in parts]).astype(np.int64)
    u, inv = np.unique(pix, return_inverse=True)
    rows = np.bincount(inv, weights=np.concatenate([p[1] for p in parts]), minlength=len(u)).astype(np.int64)
    size = None
    if parts[0][2] is not None:
        size = np.bincount(inv, weights=np.concatenate([p[2] for p in parts]), minlength=len(u))
    return u, rows, size


def align(pix: np.ndarray, rows: np.ndarray, weight: np.ndarray, highest: int, lowest: int,
          threshold: float) -> tuple[list[tuple[int, int, int]], int]:
    """Partitions (order, pixel, rows) from sparse weights of pixels of order `highest`: hats'
    `generate_alignment(..., drop_empty_siblings=True, use_lower_order=True)`, which hats-import
    runs on a dense histogram in pure Python, done here on the occupied pixels only.

    First the coarsest order in (`lowest`, `highest`] whose pixels all weigh at most `threshold`
    (scanning from `highest` down, stopping at the first order that does not fit); then, from that
    order down to `lowest`, a cell of 4 pixels becomes one partition when it weighs at most
    `threshold` and more than one of its children holds rows.

    Returns the partitions (order, pixel, rows), ascending, and the order hats-import would have
    mapped at (the coarsest that fits).

    Example:
        >>> align(np.array([0, 1, 4]), np.array([1, 1, 1]), np.array([1, 1, 1]), 1, 0, 2)
        ([(0, 0, 2), (1, 4, 1)], 1)
    """
    if len(pix) == 0:
        return [], highest
    if weight.max() > threshold:
        raise BuildError(f"a pixel of order {highest} weighs {weight.max():.0f}, more than the "
                         f"threshold {threshold:.0f}")  # the caller raises the threshold first
    top = highest
    for order in range(highest, lowest, -1):
        if _sum_by(pix >> 2 * (highest - order), weight)[1].max() > threshold:
            break
        top = order
    upix, inv = np.unique(pix >> 2 * (highest - top), return_inverse=True)
    uw = np.bincount(inv, weights=weight, minlength=len(upix))
    urows = np.bincount(inv, weights=rows, minlength=len(upix)).astype(np.int64)
    dest = np.full(len(upix), top)
    for order in range(top - 1, lowest - 1, -1):
        cells, cinv = np.unique(upix >> 2 * (top - order), return_inverse=True)
        csum = np.bincount(cinv, weights=uw, minlength=len(cells))
        children = np.unique(upix >> 2 * (top - order - 1))
        nchild = np.bincount(np.searchsorted(cells, children >> 2), minlength=len(cells))
        collapse = (nchild > 1) & (csum <= threshold)
        dest[collapse[cinv]] = order
    dpix = upix >> 2 * (top - dest)
    key = np.stack([dest, dpix], axis=1)
    ukey, kinv = np.unique(key, axis=0, return_inverse=True)
    counts = np.bincount(kinv.ravel(), weights=urows, minlength=len(ukey)).astype(np.int64)
    return [(int(o), int(p), int(n)) for (o, p), n in zip(ukey, counts, strict=True)], top


def _sum_by(keys, weights):
    u, inv = np.unique(keys, return_inverse=True)
    return u, np.bincount(inv, weights=weights, minlength=len(u))


class PixelRanges:
    """Non-overlapping HEALPix pixels of mixed orders as sorted ranges of pixels of `order` (at
    least the deepest of them): `index(pixels_of_order)` says which holds each (-1: none)."""

    def __init__(self, pixels: list[tuple[int, int]], order: int):
        orders = np.array([o for o, _ in pixels], np.int64)
        pix = np.array([p for _, p in pixels], np.int64)
        start = pix << 2 * (order - orders)
        end = (pix + 1) << 2 * (order - orders)
        self.sort = np.argsort(start, kind="stable")
        self.start, self.end, self.order = start[self.sort], end[self.sort], order

    def index(self, p: np.ndarray) -> np.ndarray:
        i = np.searchsorted(self.start, p, side="right") - 1
        ok = (i >= 0) & (p < self.end[np.clip(i, 0, None)])
        return np.where(ok, self.sort[np.clip(i, 0, None)], -1)


# ----------------------------------------------------------------------------------------------
# worker tasks


def spatial_index(table) -> np.ndarray:
    """hats' ``_healpix_29`` of each row of a table with ra/dec columns (int64)."""
    from hats.pixel_math.spatial_index import compute_spatial_index

    return np.asarray(compute_spatial_index(table.column("ra").to_numpy(zero_copy_only=False).astype(np.float64),
                                            table.column("dec").to_numpy(zero_copy_only=False).astype(np.float64)),
                      dtype=np.int64)


def take_rows(table, indices):
    """`table.take(indices)` on one chunk per column. Arrow's take on a chunked column of lists
    is several times slower than combining the chunks first (a DESI partition of 805 spectra in
    64-row chunks: 0.13 ms per row against 0.006 + 0.027; the chunks are what a table read one
    row group at a time, or concatenated from shards, is made of)."""
    import pyarrow as pa

    if any(c.num_chunks > 1 for c in table.columns):
        table = table.combine_chunks()
    return table.take(pa.array(indices))


def sort_rows(table, key: np.ndarray):
    """`table` and `key` in stable ascending order of `key`, both returned as they are when
    already in order (stage 1 writes its chunks in sky order, so a partition or margin often is)."""
    order = np.argsort(key, kind="stable")
    if (order[1:] > order[:-1]).all():
        return table, key
    return take_rows(table, order), key[order]


def route(path: str, parts: PixelRanges) -> list[tuple[int, int, list[tuple[int, int]]]]:
    """(partition index, rows, runs of row groups holding them as [first, stop) pairs) for each
    partition the file's rows go to. Runs, not row group numbers: a chunk's rows are in sky order,
    so a partition's row groups are a few runs however many rows the file has."""
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    t = pf.read(columns=["ra", "dec"])
    if t.num_rows == 0:
        return []
    idx = parts.index(spatial_index(t) >> 2 * (SPATIAL_ORDER - parts.order))
    if (idx < 0).any():  # the plan counted every row: only a file changed since could do this
        raise BuildError(f"{path}: {int((idx < 0).sum())} row(s) outside every planned partition "
                         f"(the file changed during the build?)")
    bounds = np.cumsum([pf.metadata.row_group(i).num_rows for i in range(pf.metadata.num_row_groups)])
    rg = np.searchsorted(bounds, np.arange(t.num_rows), side="right")
    out = []
    for p in np.unique(idx):
        sel = idx == p
        groups = np.unique(rg[sel])
        breaks = np.flatnonzero(np.diff(groups) > 1) + 1
        runs = [(int(g[0]), int(g[-1]) + 1) for g in np.split(groups, breaks)]
        out.append((int(p), int(sel.sum()), runs))
    return out


def write_partition(number: int, order: int, pixel: int, rows: int,
                    sources: list[tuple[str, list[tuple[int, int]]]],
                    cat_dir: str, shard_dir: str, combined: PixelRanges, margin_order: int,
                    write_kwargs: dict, rows_per_group: int) -> dict[int, int]:
    """Write partition `number` (order, pixel) from the row groups `sources` name (runs of them
    per file, read one row group at a time), and its rows' margin shards
    (`shard_dir/<target>/<number>.parquet`); returns {margin target: rows}. Every file is written
    to a temporary name and renamed, so a retried task (a worker lost) rewrites the same files and
    a reader never sees half of one."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from hats.io import paths
    from hats.pixel_math.healpix_pixel import HealpixPixel

    pieces, h29 = [], []
    for path, runs in sources:
        pf = pq.ParquetFile(path)
        for first, stop in runs:
            for g in range(first, stop):  # one at a time: memory is the partition, not the file
                t = pf.read_row_group(g)
                h = spatial_index(t)
                keep = (h >> 2 * (SPATIAL_ORDER - order)) == pixel
                whole = keep.all()  # the usual case: stage 1 wrote the rows in sky order
                pieces.append(t if whole else t.filter(pa.array(keep)))
                h29.append(h if whole else h[keep])
    table = pa.concat_tables(pieces) if pieces else None
    del pieces
    if table is None or table.num_rows != rows:
        raise BuildError(f"partition Norder={order} Npix={pixel}: {0 if table is None else table.num_rows} "
                         f"rows read, {rows} planned (a standardized file changed during the build?)")
    table, h = sort_rows(table, np.concatenate(h29))
    table = table.add_column(0, "_healpix_29", pa.array(h))
    target = paths.pixel_catalog_file(cat_dir, HealpixPixel(order, pixel))
    Path(target.path).parent.mkdir(parents=True, exist_ok=True)
    _write(table, target.path, write_kwargs, rows_per_group)

    # margin: the other pixels (partitions or negative-tree pixels) touching each row's pixel
    import cdshealpix.nested as cds

    from mmu.engine.build import std_write_kwargs

    mp = (h >> 2 * (SPATIAL_ORDER - margin_order)).astype(np.uint64)
    nb = np.asarray(cds.neighbours(mp, margin_order), dtype=np.int64)
    nb = np.delete(nb, 4, axis=1)  # the pixel itself
    owner = np.where(nb >= 0, combined.index(np.where(nb >= 0, nb, 0) >> 2 * (margin_order - combined.order)), -1)
    owner[owner == number] = -1
    got: dict[int, int] = {}
    r, c = np.nonzero(owner >= 0)
    if len(r):
        pairs = np.unique(np.stack([owner[r, c], r], axis=1), axis=0)  # (target, row), rows ascending
        for t_idx in np.unique(pairs[:, 0]):
            sel = pairs[pairs[:, 0] == t_idx, 1]
            d = Path(shard_dir) / str(int(t_idx))
            d.mkdir(parents=True, exist_ok=True)
            shard = take_rows(table, sel)
            tmp = d / f".{number}.parquet.tmp"
            pq.write_table(shard, tmp, **std_write_kwargs(shard.schema))
            os.replace(tmp, d / f"{number}.parquet")
            got[int(t_idx)] = len(sel)
    return got


def write_margin(target: int, order: int, pixel: int, rows: int, shard_dir: str, margin_dir: str,
                 write_kwargs: dict, rows_per_group: int) -> int:
    """One margin file from the shards written for it, sorted by ``_healpix_29``. The shards are
    left in place (the driver removes the folder at the end), so a retried task finds them."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from hats.io import paths
    from hats.pixel_math.healpix_pixel import HealpixPixel

    d = Path(shard_dir) / str(target)
    shards = sorted(d.glob("*.parquet"))
    if not shards:
        raise BuildError(f"margin Norder={order} Npix={pixel}: no shard in {d}, {rows} rows written "
                         f"(the staging folder was changed during the build?)")
    table = pa.concat_tables([pq.read_table(f) for f in shards])
    if table.num_rows != rows:
        raise BuildError(f"margin Norder={order} Npix={pixel}: {table.num_rows} rows in its shards, "
                         f"{rows} written")
    table, _ = sort_rows(table, table.column("_healpix_29").to_numpy())
    out = paths.pixel_catalog_file(margin_dir, HealpixPixel(order, pixel))
    Path(out.path).parent.mkdir(parents=True, exist_ok=True)
    _write(table, out.path, write_kwargs, rows_per_group)
    return table.num_rows


def _write(table, path: str, write_kwargs: dict, rows_per_group: int | None) -> None:
    import pyarrow.parquet as pq
    from hats.io import file_io

    kwargs = dict(write_kwargs)
    kwargs["sorting_columns"] = pq.SortingColumn.from_ordering(table.schema, [("_healpix_29", "ascending")])
    kwargs = file_io.get_parquet_write_table_kwargs(table.schema, write_table_kwargs=kwargs)
    kwargs.pop("row_group_size", None)
    tmp = Path(path).with_name(f".{Path(path).name}.tmp")
    with pq.ParquetWriter(tmp, table.schema, **kwargs) as w:
        step = rows_per_group or max(1, table.num_rows)
        for start in range(0, max(1, table.num_rows), step):
            w.write_table(table.slice(start, step))
    os.replace(tmp, path)


# ----------------------------------------------------------------------------------------------
# the driver


def write_collection(name: str, std_files: list[str], out_root: Path, client, *, lowest: int,
                     highest: int, margin_order: int, margin_arcsec: float, margin_name: str,
                     threshold: float,
                     row_bytes: float | None, rows_per_group: int, compression_level: int,
                     total_rows: int, on_dense=None) -> dict:
    """Write `out_root/name/` (collection.properties, the catalog `name`, the margin cache) from
    the standardized files. `threshold` is in bytes (rows x `row_bytes` when every row has the
    same size, else hats' per-row estimate); `on_dense(pixel_bytes)` is called when one pixel of
    order `highest` is heavier than it, and the threshold becomes that pixel's weight.

    Returns the partition list actually written and the threshold used:
    ``{"partitions": [(order, pixel, rows)], "threshold": bytes, "margin_rows": n}``."""
    from mmu.engine.cluster import Progress

    byte_mode = row_bytes is None
    try:
        planned = client.submit(plan, merge_weights(client, std_files, highest, byte_mode), highest, lowest,
                                threshold, row_bytes, total_rows, SKYMAP_MAX_ORDER, pure=False).result()
    except BuildError as e:
        raise BuildError(f"{name}: {e}") from None
    parts, threshold, sky_order, sky = (planned["partitions"], planned["threshold"], planned["sky_order"],
                                        planned["sky"])
    if planned["raised"] and on_dense is not None:
        on_dense(threshold)

    from hats.pixel_math.healpix_pixel import HealpixPixel
    from hats.pixel_tree.negative_tree import compute_negative_tree_pixels
    from hats.pixel_tree.pixel_tree import PixelTree

    pixels = [HealpixPixel(o, p) for o, p, _ in parts]
    negative = compute_negative_tree_pixels(PixelTree.from_healpix(pixels)) if pixels else []
    deepest = max(o for o, _, _ in parts)
    part_ranges = PixelRanges([(o, p) for o, p, _ in parts], deepest)
    combined_list = [(o, p) for o, p, _ in parts] + [(q.order, q.pixel) for q in negative]
    combined = PixelRanges(combined_list, min(margin_order, max(o for o, _ in combined_list)))

    collection = out_root / name
    cat_dir = collection / name
    margin_dir, shard_dir = collection / margin_name, out_root / "_tmp" / "margin"
    shutil.rmtree(shard_dir, ignore_errors=True)
    write_kwargs = {"compression": "zstd", "compression_level": compression_level}

    # route: which row groups of which file each partition reads
    sources: list[list[tuple[str, list[tuple[int, int]]]]] = [[] for _ in parts]
    parts_f = client.scatter(part_ranges, broadcast=True)
    for path, fut in zip(std_files, client.map(route, std_files, parts=parts_f, pure=False), strict=True):
        for p, _n, groups in fut.result():
            sources[p].append((path, groups))
        fut.release()

    # write: partitions and margin shards
    from dask.distributed import as_completed

    comb_f = client.scatter(combined, broadcast=True)
    bar = Progress(len(parts), f"{name}: partitions", unit="partition")
    # the biggest partitions first (Dask runs one map's tasks in its order), so that the stage ends
    # on small tasks on every worker rather than on one big partition while the others wait
    todo = sorted(range(len(parts)), key=lambda i: -parts[i][2])
    futures = client.map(write_partition, todo, *zip(*(parts[i] for i in todo)), [sources[i] for i in todo],
                         cat_dir=str(cat_dir), shard_dir=str(shard_dir), combined=comb_f,
                         margin_order=margin_order, write_kwargs=write_kwargs, rows_per_group=rows_per_group,
                         pure=False)
    margin_rows: dict[int, int] = {}
    for fut in as_completed(futures):
        for t, n in fut.result().items():
            margin_rows[t] = margin_rows.get(t, 0) + n
        fut.release()
        bar.update()
    bar.close()
    by_size = sorted(margin_rows.items(), key=lambda tn: (-tn[1], tn[0]))
    mfut = client.map(write_margin, [t for t, _ in by_size], *zip(*(combined_list[t] for t, _ in by_size)),
                      [n for _, n in by_size], shard_dir=str(shard_dir), margin_dir=str(margin_dir),
                      write_kwargs=write_kwargs, rows_per_group=rows_per_group, pure=False)
    written = sum(f.result() for f in mfut)
    shutil.rmtree(out_root / "_tmp", ignore_errors=True)

    margin_pixels = [combined_list[t] for t in sorted(margin_rows)]
    # on a worker: `_metadata` gathers every partition file's footer (row groups x columns: it grows
    # with the catalog), which the driver never needs to hold
    client.submit(_finish, collection, name, margin_name, parts, margin_pixels, written, margin_arcsec,
                  sky_order, sky, threshold, row_bytes, pure=False).result()
    return {"partitions": parts, "threshold": threshold, "margin_rows": written}


def _finish(collection: Path, name: str, margin_name: str, parts, margin_pixels, margin_rows: int,
            margin_arcsec: float, sky_order: int, sky, threshold, row_bytes) -> None:
    """Metadata, partition lists, skymap and properties, with hats' own writers."""
    import pyarrow.parquet as pq
    from hats.catalog import CollectionProperties, PartitionInfo, TableProperties
    from hats.io import file_io, paths
    from hats.io.parquet_metadata import write_parquet_metadata
    from hats.io.skymap import write_skymap
    from hats.pixel_math.healpix_pixel import HealpixPixel

    from mmu.engine.build import code_version

    builder = f"mmu {code_version()}"
    cat_dir, margin_dir = collection / name, collection / margin_name
    total = sum(n for _, _, n in parts)
    info = PartitionInfo.from_healpix([HealpixPixel(o, p) for o, p, _ in parts])
    info.write_to_file(paths.get_partition_info_pointer(cat_dir))
    got = write_parquet_metadata(cat_dir)
    if got != total:
        raise BuildError(f"{name}: {got} rows in the partition files, {total} planned")
    hist = np.zeros(12 * 4**sky_order, np.int64)
    hist[sky[0]] = sky[1]
    file_io.write_fits_image(hist, paths.get_point_map_file_pointer(cat_dir))
    write_skymap(hist, cat_dir)
    schema = pq.read_schema(paths.get_common_metadata_pointer(cat_dir).path)
    provenance = TableProperties.new_provenance_dict(cat_dir, builder=builder)
    TableProperties(**(provenance | {
        "catalog_name": name, "catalog_type": "object", "total_rows": total, "ra_column": "ra",
        "dec_column": "dec", "hats_col_healpix": "_healpix_29", "hats_col_healpix_order": SPATIAL_ORDER,
        "hats_order": info.get_highest_order(), "moc_sky_fraction": f"{info.calculate_fractional_coverage():0.5f}",
        "hats_npix_suffix": ".parquet", "hats_skymap_order": sky_order,
    } | ({"hats_max_rows": int(threshold // row_bytes)} if row_bytes else {}))).to_properties_file(cat_dir)

    if margin_rows:
        got = write_parquet_metadata(margin_dir)
        if got != margin_rows:
            raise BuildError(f"{name}: {got} rows in the margin files, {margin_rows} written")
        minfo = PartitionInfo.from_healpix([HealpixPixel(o, p) for o, p in margin_pixels])
    else:
        common = paths.get_common_metadata_pointer(margin_dir)
        Path(common.path).parent.mkdir(parents=True, exist_ok=True)
        pq.write_metadata(schema, common.path)
        pq.write_metadata(schema, paths.get_parquet_metadata_pointer(margin_dir).path)
        minfo = PartitionInfo.from_healpix([])
    minfo.write_to_file(paths.get_partition_info_pointer(margin_dir))
    TableProperties(**(TableProperties.new_provenance_dict(margin_dir, builder=builder) | {
        "catalog_name": margin_name, "catalog_type": "margin", "total_rows": margin_rows, "ra_column": "ra",
        "dec_column": "dec", "primary_catalog": name, "margin_threshold": margin_arcsec,
        "hats_order": minfo.get_highest_order() if margin_rows else info.get_highest_order(),
        "moc_sky_fraction": f"{minfo.calculate_fractional_coverage():0.5f}",
        "hats_col_healpix": "_healpix_29", "hats_col_healpix_order": SPATIAL_ORDER, "npix_suffix": ".parquet",
    })).to_properties_file(margin_dir)
    CollectionProperties(**(TableProperties.new_provenance_dict(collection, builder=builder) | {
        "name": name, "hats_primary_table_url": name, "all_margins": [margin_name],
        "default_margin": margin_name})).to_properties_file(collection)
