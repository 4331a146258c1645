"""Stage 2 of a build: hats-import turns the standardized Parquet files into a HATS catalog and
its margin cache (`partition`), with the partitioning and margin settings of `PartitionSettings`."""
from __future__ import annotations

import logging
import os
import re
import shutil
import sys
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
    """hats-import of the standardized files into `out_root/name` (catalog + margin cache).

    Returns what the manifest records of it: the margin cache (order, threshold, name) and the
    partitioning actually used (byte threshold, highest order, deepest partition order)."""
    from hats import read_hats
    from hats_import.catalog.arguments import ImportArguments
    from hats_import.collection.arguments import CollectionArguments
    from hats_import.pipeline import pipeline_with_client

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

    def catalog_args(byte_threshold: int):
        return ImportArguments(
            output_path=str(out_root / name), output_artifact_name=name,
            input_file_list=std_files, file_reader="parquet", ra_column="ra", dec_column="dec",
            lowest_healpix_order=split_def.order, highest_healpix_order=highest,
            byte_pixel_threshold=byte_threshold, expected_total_rows=total_rows,
            row_group_kwargs={"num_rows": rows_per_group}, **common)

    try:
        pipeline_with_client(catalog_args(threshold), client)
    except ValueError as e:
        dense = _TOO_DENSE.search(str(e))
        if dense is None:
            raise
        # one pixel of the deepest allowed order holds more than the byte threshold: partition
        # with that pixel's bytes as the threshold (hats-import resumes from its mapping histograms)
        threshold = int(dense.group(1))
        log.warning("%s: the densest order-%d pixel holds %.0f MiB of rows (uncompressed), more than "
                    "partition_bytes (%.0f MiB); partitions of up to %.0f MiB are written, and a partition "
                    "task needs a few times that in memory. Partitions cannot be deeper than order %d "
                    "because the margin cache (margin_threshold_arcsec=%g) uses order-%d pixels: a "
                    "smaller margin threshold allows deeper, smaller partitions", name, highest,
                    threshold / 2**20, settings.partition_bytes / 2**20, threshold / 2**20, highest,
                    settings.margin_threshold_arcsec, margin_order)
        pipeline_with_client(catalog_args(threshold), client)
    cat = read_hats(out_root / name / name)
    deepest = max(p.order for p in cat.get_healpix_pixels())
    margin_arcsec = _mindist_arcsec(margin_order)
    margin_name = f"{name}_{int(margin_arcsec)}arcs"
    coll = (CollectionArguments(output_path=str(out_root), output_artifact_name=name, **common)
            .catalog(output_artifact_name=name)
            .add_margin(margin_threshold=None, margin_order=margin_order,
                        output_artifact_name=margin_name, is_default=True))
    pipeline_with_client(coll, client)
    shutil.rmtree(out_root / "_tmp", ignore_errors=True)
    return {"order": margin_order, "threshold": round(margin_arcsec, 3), "name": margin_name,
            "partition_bytes": threshold, "highest_order": highest, "deepest_order": deepest}


# standardized Parquet (zstd level 1) is at most this many times smaller than hats-import's
# in-memory estimate of the same rows (image and spectrum arrays compress 1-3x)
TINY_FACTOR = 8


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
