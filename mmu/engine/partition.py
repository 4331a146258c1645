"""Stage 2 of a build: the standardized Parquet files become a HATS catalog and its margin cache
(`partition`), with the partitioning and margin settings of `PartitionSettings`: written in one
pass by `mmu.engine.hats_writer` (the default), or by hats-import (``writer="hats-import"``)."""
from __future__ import annotations

import logging
import os
import re
import shutil
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mmu.engine.errors import BuildError
from mmu.logs import progress_bars_enabled

if TYPE_CHECKING:
    from mmu.engine.build import PartitionSettings

log = logging.getLogger(__name__)


_TOO_DENSE = re.compile(r"single pixel (?:supplement|row count) (\d+) exceeds threshold (\d+)")


def partition(name, std_files, out_root: Path, client, split_def, settings: PartitionSettings,
               total_rows: int) -> dict:
    """The standardized files into `out_root/name` (catalog + margin cache), by the one-pass
    writer or by hats-import (`settings.writer`).

    Returns what the manifest records of it: the margin cache (order, threshold, name) and the
    partitioning actually used (byte threshold, highest order, deepest partition order)."""
    margin_order = settings.margin_order
    highest = min(settings.highest_order, margin_order - 1)
    if highest < split_def.order:
        raise BuildError(f"{name}: margin_threshold_arcsec={settings.margin_threshold_arcsec} needs margin "
                         f"pixels of order {margin_order}, so partitions of order <= {highest}, coarser than "
                         f"the split order {split_def.order}; use a margin threshold below "
                         f"{_mindist_arcsec(split_def.order + 1):.0f} arcsec")
    bytes_per_row = max(1, sum(os.path.getsize(f) for f in std_files) * 3 // max(1, total_rows))
    rows_per_group = int(np.clip(settings.row_group_bytes // bytes_per_row, 100, 100_000))
    bars = progress_bars_enabled() and sys.stderr.isatty()  # hats-import draws into log files otherwise
    common = dict(progress_bar=bars, simple_progress_bar=True,
                  write_table_kwargs={"compression": "zstd",
                                      "compression_level": settings.compression_level},
                  tmp_dir=str(out_root / "_tmp"))
    out_root.mkdir(parents=True, exist_ok=True)
    threshold = int(settings.partition_bytes)
    if TINY_FACTOR * sum(os.path.getsize(f) for f in std_files) <= threshold:
        # all rows surely fit one partition: partitions of the split order, and hats-import maps at
        # that order instead of histogramming (and aligning) millions of deeper pixels
        highest = split_def.order
    _cache_hats_jit()
    row_bytes = fixed_row_bytes(std_files)
    margin_arcsec = _mindist_arcsec(margin_order)
    margin_name = f"{name}_{int(margin_arcsec)}arcs"
    if settings.writer == "mmu":
        from mmu.engine.hats_writer import write_collection

        got = write_collection(
            name, std_files, out_root, client, lowest=split_def.order, highest=highest,
            margin_order=margin_order, margin_arcsec=margin_arcsec, margin_name=margin_name,
            threshold=threshold, row_bytes=row_bytes,
            rows_per_group=rows_per_group, compression_level=settings.compression_level, total_rows=total_rows,
            on_dense=lambda t: _warn_dense(name, highest, t, settings, margin_order))
        return {"order": margin_order, "threshold": round(margin_arcsec, 3), "name": margin_name,
                "partition_bytes": int(got["threshold"]), "highest_order": highest,
                "deepest_order": max(o for o, _, _ in got["partitions"])}
    from hats import read_hats
    from hats_import.catalog.arguments import ImportArguments
    from hats_import.collection.arguments import CollectionArguments
    from hats_import.pipeline import pipeline_with_client

    mapping_order, pixel_rows = highest, None
    if row_bytes is not None:
        # every row has the same in-memory size: a byte threshold is a row threshold, and
        # hats-import's mapping reads only ra/dec instead of every column (see fixed_row_bytes)
        pixel_rows = max(1, int(threshold // row_bytes))
        if highest > split_def.order:
            mapping_order, densest = _plan_orders(client, std_files, split_def.order, highest, pixel_rows)
            if densest > pixel_rows:
                threshold, pixel_rows = int(np.ceil(densest * row_bytes)), densest
                _warn_dense(name, highest, threshold, settings, margin_order)

    def catalog_args(byte_threshold: int):
        limit = ({"pixel_threshold": pixel_rows} if pixel_rows is not None
                 else {"byte_pixel_threshold": byte_threshold})
        return ImportArguments(
            output_path=str(out_root / name), output_artifact_name=name,
            input_file_list=std_files, file_reader="parquet", ra_column="ra", dec_column="dec",
            lowest_healpix_order=split_def.order, highest_healpix_order=mapping_order,
            expected_total_rows=total_rows, row_group_kwargs={"num_rows": rows_per_group}, **limit, **common)

    try:
        pipeline_with_client(catalog_args(threshold), client)
    except ValueError as e:
        dense = _TOO_DENSE.search(str(e))
        if dense is None or pixel_rows is not None:
            raise
        # one pixel of the deepest allowed order holds more than the byte threshold: partition
        # with that pixel's bytes as the threshold (hats-import resumes from its mapping histograms)
        threshold = int(dense.group(1))
        _warn_dense(name, highest, threshold, settings, margin_order)
        pipeline_with_client(catalog_args(threshold), client)
    cat = read_hats(out_root / name / name)
    deepest = max(p.order for p in cat.get_healpix_pixels())
    coll = (CollectionArguments(output_path=str(out_root), output_artifact_name=name, **common)
            .catalog(output_artifact_name=name)
            .add_margin(margin_threshold=None, margin_order=margin_order,
                        output_artifact_name=margin_name, is_default=True))
    pipeline_with_client(coll, client)
    shutil.rmtree(out_root / "_tmp", ignore_errors=True)
    return {"order": margin_order, "threshold": round(margin_arcsec, 3), "name": margin_name,
            "partition_bytes": threshold, "highest_order": highest, "deepest_order": deepest}


def fixed_row_bytes(std_files: list[str]) -> float | None:
    """In-memory bytes of one standardized row when the schema gives every row the same size, else
    None (a variable-length column: a spectrum of per-row length, a light curve).

    Fixed: fixed-width values, fixed-size lists (the hub's spectra and image cutouts) and structs of
    them. Text and lists of text (ids, names, an image's bands) are measured on a sample,
    as hats-import measures text: the rows of the sample must agree within 1% (else None). The size
    is hats' own estimate (`hats.io.size_estimates.get_mem_size_per_row`, what hats-import's
    byte-threshold mode sums per pixel), the largest over the first row group of the first file.
    Why it matters: in that mode hats-import cannot tell a fixed-size list from a variable one, so
    its mapping pass reads and decodes every spectrum or image of every file (and its column sizing
    the whole first file) only to size rows that are all alike; with a row threshold it reads ra/dec.
    """
    import pyarrow.parquet as pq
    from hats.io import size_estimates

    if not std_files:
        return None
    schema = pq.read_schema(std_files[0])
    if not all(_fixed_size(f.type, text_ok=True) for f in schema):
        return None
    pf = pq.ParquetFile(std_files[0])
    if pf.metadata.num_row_groups == 0 or pf.metadata.row_group(0).num_rows == 0:
        return None
    sizes = size_estimates.get_mem_size_per_row(pf.read_row_group(0))
    if sizes.max() > 1.01 * sizes.min():  # text that dominates the rows: size each row (byte mode)
        return None
    return float(sizes.max())


def _fixed_size(t, text_ok: bool) -> bool:
    import pyarrow as pa

    if (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)
            or pa.types.is_temporal(t) or pa.types.is_decimal(t) or pa.types.is_fixed_size_binary(t)):
        return True
    if _is_text(t):
        return text_ok  # measured on the sample
    if pa.types.is_list(t) or pa.types.is_large_list(t):  # a list of text (names): measured on the sample
        return text_ok and _is_text(t.value_type)
    if pa.types.is_fixed_size_list(t):  # an image's band names included
        return _fixed_size(t.value_type, text_ok)
    if pa.types.is_struct(t):
        return all(_fixed_size(t.field(i).type, text_ok) for i in range(t.num_fields))
    return False


def _is_text(t) -> bool:
    import pyarrow as pa

    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t)


def sky_counts(path: str, order: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows per HEALPix pixel of `order` in one standardized file, sparse (pixels, counts); reads
    ra and dec only. Pixels as hats-import's mapping computes them (`healpix_shim.radec2pix`)."""
    import hats.pixel_math.healpix_shim as hp
    import pyarrow.parquet as pq

    t = pq.read_table(path, columns=["ra", "dec"])
    pix = hp.radec2pix(order, t.column("ra").to_numpy(), t.column("dec").to_numpy())
    return np.unique(pix, return_counts=True)


def _plan_orders(client, std_files: list[str], lowest: int, highest: int, pixel_rows: int) -> tuple[int, int]:
    """The order hats-import should map at, and the rows of the densest pixel of order `highest`.

    hats-import maps every row to a pixel of its highest order and then, in its planning (pure
    Python over a dense histogram: ~1-3 CPU s at order 9, ~4 s at order 10, however few the rows),
    uses the coarsest order whose pixels all fit the threshold (`generate_alignment`'s
    `use_lower_order`, never below `lowest` + 1). This finds that order from sparse counts made by
    the workers, so hats-import maps at it directly: the same partitions, a histogram 4^(highest - order)
    times smaller. The driver holds the occupied pixels of order `highest` only (at most
    12 * 4^highest, however many rows).
    """
    from dask.distributed import as_completed

    pix, cnt, parts, size = np.empty(0, np.int64), np.empty(0, np.int64), [], 0
    for fut in as_completed(client.map(sky_counts, std_files, order=highest, pure=False)):
        p, c = fut.result()
        parts.append((p, c))
        size += len(p)
        fut.release()
        if size > 1_000_000:  # merge as results arrive: memory bounded by the occupied pixels
            pix, cnt = _merge_counts([(pix, cnt), *parts])
            parts, size = [], 0
    pix, cnt = _merge_counts([(pix, cnt), *parts])
    densest = int(cnt.max()) if len(cnt) else 0
    order = highest
    while order > lowest + 1:
        coarser = _merge_counts([(pix >> 2 * (highest - order + 1), cnt)])[1]
        if coarser.max() > pixel_rows:
            break
        order -= 1
    return (highest if densest > pixel_rows else order), densest


def _merge_counts(parts) -> tuple[np.ndarray, np.ndarray]:
    pix = np.concatenate([p for p, _ in parts]).astype(np.int64)
    cnt = np.concatenate([c for _, c in parts]).astype(np.int64)
    u, inv = np.unique(pix, return_inverse=True)
    return u, np.bincount(inv, weights=cnt, minlength=len(u)).astype(np.int64)


def _warn_dense(name, highest, threshold, settings, margin_order) -> None:
    log.warning("%s: the densest order-%d pixel holds %.0f MiB of rows (uncompressed), more than "
                "partition_bytes (%.0f MiB); partitions of up to %.0f MiB are written, and a partition "
                "task needs a few times that in memory. Partitions cannot be deeper than order %d "
                "because the margin cache (margin_threshold_arcsec=%g) uses order-%d pixels: a "
                "smaller margin threshold allows deeper, smaller partitions", name, highest,
                threshold / 2**20, settings.partition_bytes / 2**20, threshold / 2**20, highest,
                settings.margin_threshold_arcsec, margin_order)


# standardized Parquet (zstd level 1) is at most this many times smaller than hats-import's
# in-memory estimate of the same rows (image and spectrum arrays compress 1-3x)
TINY_FACTOR = 8


def preload() -> None:
    """Import what stage 2 imports in the driver (hats, and numba with it: ~1.2 s of CPU) in a
    background thread, started while stage 1 runs on the workers, and load hats' numba alignment
    (from numba's cache: ~0.4 s; compiled, ~3 s). The driver is idle then, and this work would
    otherwise run between the stages while every worker waits (on a 4,000-galaxy Legacy Survey box
    with two workers: 1.4 s between stage 1 and the plan, 0.5 s between the plan and the writes).
    An import that fails here fails again, with its message, where stage 2 needs it."""
    def run():
        try:
            import hats.io.parquet_metadata  # noqa: F401
            import hats.io.size_estimates  # noqa: F401
            from hats.pixel_math.healpix_pixel import HealpixPixel
            from hats.pixel_tree.negative_tree import compute_negative_tree_pixels
            from hats.pixel_tree.pixel_tree import PixelTree

            import mmu.engine.hats_writer  # noqa: F401
            _cache_hats_jit()
            # the margin's negative tree runs hats' numba alignment: load (or compile) it now
            compute_negative_tree_pixels(PixelTree.from_healpix([HealpixPixel(0, 0)]))
        except Exception as e:  # noqa: BLE001 - only a head start
            log.debug("stage-2 imports not preloaded: %s", e)

    threading.Thread(target=run, name="mmu-preload-stage2", daemon=True).start()


def _cache_hats_jit() -> None:
    """Let numba cache hats' pixel-tree alignment functions on disk (`Dispatcher.enable_caching`,
    what ``@njit(cache=True)`` does): the margin cache's planning JIT-compiles them in every
    process that builds (~3 s of CPU), and a cache makes later processes load them in ~0.4 s."""
    try:
        import hats.pixel_tree.pixel_alignment as alignment
    except ImportError:  # pragma: no cover - hats is a dependency of the build extra
        return
    for f in vars(alignment).values():
        if hasattr(f, "enable_caching") and not getattr(f, "_mmu_cached", False):
            try:
                f.enable_caching()  # where the package is read-only, numba uses its user cache dir
                f._mmu_cached = True
            except Exception as e:  # noqa: BLE001 - only a speed-up: compile as before
                log.debug("numba caching unavailable for %s: %s", getattr(f, "__name__", f), e)


def _mindist_arcsec(order: int) -> float:
    import hats.pixel_math.healpix_shim as hp
    return float(hp.order2mindist(order) * 60.0)
