"""The build engine: raw survey files -> a standardized, HATS-partitioned hub dataset.

Two stages on Dask, the same for every survey:

1. *standardize* — one task per raw input runs the builder, conforms and validates its rows,
   rejects bad rows or the whole input with reasons, adds the `split` column, and atomically
   writes standardized Parquet plus a marker (rows, rejections, per-row digests). A finished
   input is never redone: this is the unit of resumption.
2. *partition* (mmu/engine/partition.py) — the standardized files become a HATS catalog and a
   margin cache, in one pass by default (mmu/engine/hats_writer.py: planned on the workers from
   ra/dec, each partition task reads only its rows' row groups and writes its neighbours' margin
   shards; hats-import's partitions and rows) or by hats-import (``writer="hats-import"``); a byte
   threshold per partition, or for fixed-size rows, spectra and image cutouts, the equivalent row
   threshold; adapted where one pixel of the deepest order the margin allows is denser; small row
   groups, zstd level 3. Then the engine writes the dataset card and `build.json` and moves the
   collection into place.

Between the stages, object ids repeated across inputs are dropped (the first input keeps an id),
and the split counts and the content revision are computed: in the driver up to `DRIVER_ROWS`
rows, above on the workers (a Dask sort of the ids by object_id, then one task streaming the
revision's sha256 through the sorted files), so that the driver holds the inputs' markers, the
rejections, counts and task graphs, never a value per row.

Memory per worker: one builder chunk in stage 1; one sorted partition of ids
(`SORT_PARTITION_ROWS`) between the stages; one partition (`partition_bytes`, uncompressed) in
stage 2. None grows with the dataset. An up-to-date check writes nothing, so it also works
on a read-only hub; a build that has work to do there fails with `HubNotWritable`.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import socket
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mmu import __version__
from mmu.engine.builder import Builder, RawInput, Rejection, get_builder
from mmu.engine.cluster import Progress, dask_client, local_workers, make_client  # noqa: F401  (make_client re-exported)
from mmu.engine.errors import BuildError, BuildLocked, HubNotWritable  # noqa: F401  (re-exported)
from mmu.engine.partition import partition as _partition
from mmu.engine.partition import preload as _preload_stage2
from mmu.hub.layout import MANIFEST, STAGING, atomic_path, atomic_write_json, dataset_dir, read_manifest, replace_dir
from mmu.hub.manifest import MANIFEST_FORMAT_VERSION, BuildManifest, write_manifest
from mmu.model.hashing import ChecksumCache, content_revision, file_sha256, row_digests, sha256_json
from mmu.model.schema import SCHEMA_VERSION, SPLIT_COLUMN, SPLITS, modalities_of
from mmu.model.splits import SplitDefinition
from mmu.model.validate import RowProblem, SchemaMismatch, conform, validate_rows
from mmu.registry.catalog import Catalog, DatasetEntry, load_catalog

log = logging.getLogger(__name__)

ENGINE_VERSION = "1"
SIM_MANIFEST = "mmu-sim.json"


_READ_ONLY_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})


def _not_writable(hub: Path, what: str, cause: str = "permission denied") -> HubNotWritable:
    return HubNotWritable(f"hub folder {hub} is not writable ({cause}): {what}; make it writable "
                          f"(chmod u+w {hub}) or pass a --hub folder you can write to")


def hub_writable(hub: Path) -> bool:
    """Whether this process may create files in `hub` and in its staging folder (if present)."""
    staging = hub / STAGING
    return os.access(hub, os.W_OK | os.X_OK) and (not staging.exists() or os.access(staging, os.W_OK | os.X_OK))


# ----------------------------------------------------------------------------------------------
# environment faults: the machine failed, not the input. They fail the build and record nothing,
# so that a rerun redoes the input (an input rejection would be reused by every rerun).

ENVIRONMENT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EIO,
                                errno.EROFS, errno.ENOMEM})
# pyarrow sometimes reports an errno only in its message; match the strerror texts too
_ENV_TEXTS = tuple(os.strerror(n) for n in sorted(ENVIRONMENT_ERRNOS))
_ENV_REASON = re.compile(r"^(MemoryError|\w*Error: \[Errno ({})\])".format("|".join(
    str(n) for n in sorted(ENVIRONMENT_ERRNOS))))
# Dask / distributed failures of the cluster itself (a killed or out-of-memory worker, a lost
# connection to the scheduler), matched by class name so that dask need not be imported here
_CLUSTER_FAULTS = frozenset({"KilledWorker", "CommClosedError", "CancelledError", "FutureCancelledError",
                             "TimeoutError", "StreamClosedError",
                             # the P2P shuffle of the de-duplication (a worker died or left mid-shuffle)
                             "ShuffleClosedError", "P2PConsistencyError"})


def environment_fault(e: BaseException) -> str | None:
    """Why `e` is a fault of the environment (disk, permissions, memory, cluster), or None when
    it may be the input's fault. Follows ``__cause__``/``__context__`` (wrapped errors)."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, MemoryError):
            return "out of memory"
        if type(e).__name__ == "P2POutOfDiskError":  # an OSError without an errno
            return (f"{os.strerror(errno.ENOSPC)} (the Dask shuffle's spill on a worker's local disk: "
                    f"give the workers more local disk, `dask worker --local-directory`)")
        if type(e).__name__ in _CLUSTER_FAULTS:
            return f"Dask cluster failure ({type(e).__name__}: a killed worker or a lost connection)"
        if isinstance(e, OSError):
            if e.errno in ENVIRONMENT_ERRNOS:
                return os.strerror(e.errno)
            if e.errno is None and any(t in str(e) for t in _ENV_TEXTS):
                return next(t for t in _ENV_TEXTS if t in str(e))
        e = e.__cause__ or e.__context__
    return None


def _describe(e: BaseException) -> str:
    try:
        text = str(e)
    except Exception:  # noqa: BLE001 - some Dask errors cannot print themselves out of context
        text = ""
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


@dataclass
class PartitionSettings:
    """hats-import settings tuned for large rows (images, spectra).

    The margin cache and the partitioning are set separately. `margin_threshold_arcsec` is the
    width every build's margin cache holds at least (cross-matching needs it: `mmu crossmatch`
    refuses a radius the margin cannot hold); the margin is made of HEALPix pixels of order
    ``margin_order`` = the finest order whose pixels are at least that wide (hats-import's rule), so
    partitions may be at most one order coarser than that. Within that bound the partitioning
    adapts to the density: a partition is split down to `highest_order` (capped at
    ``margin_order - 1``) until it holds at most `partition_bytes`; where even a pixel of the
    deepest allowed order holds more, the build raises its byte threshold to that pixel's bytes and
    says so (a warning naming the pixel size and the settings to change) instead of failing.

    Override any field by passing ``settings=PartitionSettings(...)`` to `build`, or with
    ``PartitionSettings.from_overrides({"margin_threshold_arcsec": 16})``.
    """

    partition_bytes: int = 256 * 2**20  # target max uncompressed bytes per partition (= memory bound)
    row_group_bytes: int = 32 * 2**20  # target row group size; rows per group derived from it
    compression_level: int = 3  # zstd; level 15 (the hats default) is ~7x slower on image rows
    highest_order: int = 10  # deepest partition order allowed (also capped by the margin order)
    margin_threshold_arcsec: float = 128.0  # the margin cache holds at least this much (order 10)
    writer: str = "mmu"  # "mmu": one pass (mmu.engine.hats_writer); "hats-import": its pipelines

    def __post_init__(self):
        problems = []
        if not (isinstance(self.partition_bytes, int) and self.partition_bytes > 0):
            problems.append(f"partition_bytes must be a positive integer (got {self.partition_bytes!r})")
        if not (isinstance(self.highest_order, int) and 0 <= self.highest_order <= 19):
            problems.append(f"highest_order must be an integer in 0..19 (got {self.highest_order!r})")
        if not (isinstance(self.margin_threshold_arcsec, (int, float))
                and 0.1 <= self.margin_threshold_arcsec <= 3600):
            problems.append(f"margin_threshold_arcsec must be a number in 0.1..3600 "
                            f"(got {self.margin_threshold_arcsec!r})")
        if self.writer not in ("mmu", "hats-import"):
            problems.append(f"writer must be 'mmu' or 'hats-import' (got {self.writer!r})")
        if problems:
            raise BuildError("partition settings: " + "; ".join(problems))

    @classmethod
    def from_overrides(cls, overrides: dict | None) -> PartitionSettings:
        """The default settings with `overrides` (field name -> value) applied.

        Raises:
            BuildError: an unknown field or a value out of range, naming it.

        Example:
            >>> PartitionSettings.from_overrides({"margin_threshold_arcsec": 16}).margin_order
            13
        """
        overrides = dict(overrides or {})
        unknown = sorted(set(overrides) - set(cls.__dataclass_fields__))
        if unknown:
            raise BuildError(f"partition settings: unknown setting(s) {', '.join(unknown)}; known: "
                             f"{', '.join(cls.__dataclass_fields__)}")
        return cls(**overrides)

    @property
    def margin_order(self) -> int:
        """HEALPix order of the margin cache: the finest whose pixels are >= the margin threshold."""
        import hats.pixel_math.healpix_shim as hp
        return int(hp.margin2order(margin_thr_arcmin=self.margin_threshold_arcsec / 60.0))

    def as_dict(self) -> dict:
        """The settings as the build key hashes them."""
        return dict(self.__dict__)


@dataclass
class BuildResult:
    """What `build` did: the dataset's folder, its manifest, and what was rejected."""

    name: str
    path: Path
    manifest: BuildManifest
    up_to_date: bool = False
    rejections: list[dict] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------
# stage 1: standardize one input (runs on a Dask worker)


def _safe_key(key: str) -> str:
    import hashlib
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in key)[-80:]
    return f"{stem}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"


def standardize_input(builder_ref: str, options: dict, item: RawInput, out_dir: str,
                      split: dict) -> dict:
    """Run the builder on one input; write `<key>.parquet`, `<key>.digests.parquet`, then the
    marker `<key>.json` (its presence means the input is finished). Returns the marker."""
    out = Path(out_dir)
    stem = _safe_key(item.key)
    marker_path = out / f"{stem}.json"
    if marker_path.exists():
        marker = json.loads(marker_path.read_text())
        if not (marker.get("rejected") and _ENV_REASON.match(marker["rejected"])):
            return marker
        # written by an older engine that took an environment fault for a bad input: redo it
        marker_path.unlink(missing_ok=True)
    builder = get_builder(builder_ref).from_options(options)
    schema = builder.schema()
    modalities = builder.modalities()
    splits = SplitDefinition(order=split["order"], seed=split["seed"], **split["fractions"],
                             method=split["method"])
    tmp = f".{stem}.{uuid.uuid4().hex[:8]}"  # unique per attempt; the suffixes keep it so
    parquet_tmp, digest_tmp = out / f"{tmp}.parquet", out / f"{tmp}.digests.parquet"
    row_rejections: list[dict] = []
    rows = 0
    offset = 0
    ids: list[str] = []
    digests: list[bytes] = []
    split_col: list[str] = []
    seen: set[str] = set()
    writer = None
    t0 = time.perf_counter()
    try:
        for part in builder.read(item):
            if isinstance(part, Rejection):
                row_rejections.append(part.as_dict())
                continue
            if SPLIT_COLUMN not in part.column_names and "ra" in part.column_names:
                part = part.append_column(SPLIT_COLUMN, pa.array(
                    splits.assign(np.nan_to_num(part.column("ra").to_numpy(zero_copy_only=False).astype(float)),
                                  np.clip(np.nan_to_num(part.column("dec").to_numpy(zero_copy_only=False)
                                                        .astype(float)), -90, 90)),
                    pa.string()))
            table = conform(part, schema)  # `split` is a common column
            problems = validate_rows(table, modalities, builder.nullable_modalities)
            bad = {p.row for p in problems}
            oid = table.column("object_id").to_pylist()
            for i, o in enumerate(oid):  # duplicates across this input's chunks
                if i not in bad and o in seen:
                    bad.add(i)
                    problems.append(RowProblem(i, "object_id", "duplicate object_id within this input", o))
                elif i not in bad:
                    seen.add(o)
            for p in problems:
                row_rejections.append(Rejection(item.key, p.reason, offset + p.row, p.object_id,
                                                p.column).as_dict())
            if bad:
                keep = np.ones(table.num_rows, bool)
                keep[list(bad)] = False
                table = table.filter(pa.array(keep))
            offset += part.num_rows
            if table.num_rows == 0:
                continue
            table = _in_sky_order(table)
            if writer is None:
                writer = pq.ParquetWriter(parquet_tmp, table.schema, **std_write_kwargs(table.schema))
            writer.write_table(table, row_group_size=_std_group_rows(table))
            rows += table.num_rows
            ids.extend(table.column("object_id").to_pylist())
            digests.extend(row_digests(table))
            split_col.extend(table.column(SPLIT_COLUMN).to_pylist())
        if writer is not None:
            writer.close()
            writer = None
    except (Exception, MemoryError) as e:  # noqa: BLE001 - a builder failure rejects the input
        _discard(writer, parquet_tmp, digest_tmp)
        fault = environment_fault(e)
        if fault:  # not the input's fault: no marker, so that a rerun redoes this input
            raise BuildError(f"input {item.key}: environment fault while standardizing ({fault}): "
                             f"{_describe(e)}; nothing was recorded for it, rerun the build once "
                             f"the fault is fixed") from e
        reason = _describe(e)
        if not isinstance(e, (SchemaMismatch, OSError, ValueError, KeyError)) and \
                type(e).__name__ != "InputRejected":
            reason += f" [{traceback.format_exc(limit=-1).strip().splitlines()[-2].strip()}]"
        marker = {"key": item.key, "rejected": reason, "rows": 0, "row_rejections": row_rejections}
        atomic_write_json(marker_path, marker)
        return marker
    marker = {"key": item.key, "rejected": None, "rows": rows, "row_rejections": row_rejections,
              "seconds": round(time.perf_counter() - t0, 3)}
    try:
        if rows:
            pq.write_table(pa.table({"object_id": pa.array(ids, pa.string()),
                                     "digest": pa.array(digests, pa.binary(32)),
                                     SPLIT_COLUMN: pa.array(split_col, pa.string())}), digest_tmp,
                           row_group_size=DIGEST_ROW_GROUP)
            os.replace(parquet_tmp, out / f"{stem}.parquet")
            os.replace(digest_tmp, out / f"{stem}.digests.parquet")
            marker["parquet"] = f"{stem}.parquet"
            marker["digests"] = f"{stem}.digests.parquet"
        atomic_write_json(marker_path, marker)
    except (OSError, MemoryError) as e:  # writing our own output: never the input's fault
        _discard(None, parquet_tmp, digest_tmp)
        raise BuildError(f"input {item.key}: environment fault while writing its standardized "
                         f"rows ({environment_fault(e) or 'write failed'}): {_describe(e)}; nothing "
                         f"was recorded for it, rerun the build once the fault is fixed") from e
    return marker


STD_GROUP_BYTES = 8 * 2**20  # row groups of a standardized file: about this much in memory


def _in_sky_order(table: pa.Table) -> pa.Table:
    """The chunk's rows sorted by HEALPix pixel (hats' `_healpix_29`, stable): stage 2 then finds a
    partition's rows of this chunk in one or two row groups, instead of reading every row group of
    an input that spans several partitions."""
    if "ra" not in table.column_names or "dec" not in table.column_names or table.num_rows < 2:
        return table
    from mmu.engine.hats_writer import sort_rows, spatial_index

    return sort_rows(table, spatial_index(table))[0]


def std_write_kwargs(schema: pa.Schema) -> dict:
    """Parquet settings of a standardized file: hats' own choices for its partitions (dictionary
    encoding for text and integers only, byte-stream-split floats), with lz4. Arrow's default
    tries a dictionary for every column chunk, spectra and pixels included: on DESI spectra
    that made writing 3.7x slower (0.84 -> 0.22 ms of CPU per spectrum) and the file larger
    (32.5 -> 20.0 MB per 400 spectra; zstd 1 before), and reading back 2.2x slower."""
    from hats.io import file_io

    kwargs = file_io.get_parquet_write_table_kwargs(schema, write_table_kwargs={"compression": "lz4"})
    kwargs.pop("row_group_size", None)
    return kwargs


def _std_group_rows(table: pa.Table) -> int:
    """Rows per row group of a standardized file: about `STD_GROUP_BYTES`, 16..512 rows."""
    per_row = max(1, table.nbytes // max(1, table.num_rows))
    return int(np.clip(STD_GROUP_BYTES // per_row, 16, 512))


def _discard(writer, *paths: Path) -> None:
    """Close a half-written Parquet writer and remove temporary files, ignoring further faults."""
    if writer is not None:
        try:
            writer.close()
        except Exception:  # noqa: BLE001 - the original error is the one to report
            pass
    for p in paths:
        try:
            p.unlink(missing_ok=True)
        except OSError:
            pass


def _checksums(paths: list[str]) -> dict[str, str]:
    """sha256 of each file (a worker task over a chunk of raw files)."""
    return {p: file_sha256(p) for p in paths}


# ----------------------------------------------------------------------------------------------
# the driver


def find_sim_manifest(raw: Path) -> dict | None:
    """The mock observatory's marker (`mmu-sim.json`) at the raw root or up to 3 parents above it.

    Args:
        raw: the raw root of a build.

    Returns:
        The marker's content when it says ``"mock": true``, else None (survey data).

    Example:
        >>> find_sim_manifest(Path("raw"))["seed"]        # doctest: +SKIP
        1
    """
    for d in [raw, *raw.parents][:4]:
        f = d / SIM_MANIFEST
        if f.is_file():
            data = json.loads(f.read_text())
            return data if data.get("mock") else None
    return None


def build(name: str, raw: str | Path, hub: str | Path, *, workers: int | None = None,
          scheduler: str | None = None, client=None, strict: bool = False,
          catalog: Catalog | None = None, settings: PartitionSettings | None = None,
          rehash: bool = False) -> BuildResult:
    """Build dataset `name` of the catalog from the raw files under `raw` into `hub/name`.

    Progress goes to the ``mmu.engine.build`` logger and `mmu.logs` bars; a rerun with the same
    build key is a no-op, and a killed build rerun resumes from its finished inputs.

    Args:
        name: a dataset of the catalog, e.g. ``"desi_dr1"``.
        raw: directory holding the survey's raw files (the builder's layout).
        hub: the hub directory; the dataset goes to ``hub/name``.
        workers: local Dask worker processes when neither `client` nor `scheduler` is given;
            left out, a build of less than 2 GiB of raw files runs on 2 threads of this process
            (no worker start-up), a bigger one on up to 2 worker processes.
        scheduler: address of a running Dask scheduler.
        client: a Dask client to run on (not closed).
        strict: any rejected input or row is an error.
        catalog: the catalog to look `name` up in (default: `load_catalog()`).
        settings: hats-import settings (default: the catalog entry's `partition` settings over
            `PartitionSettings()`'s defaults).
        rehash: re-hash every raw file instead of trusting the (path, size, mtime) cache.

    Returns:
        The `BuildResult`, with the typed manifest.

    Raises:
        KeyError: `name` is not in the catalog, or its builder is not registered.
        BuildError: `raw` is not a directory, the builder lists no (or duplicate) inputs, no row
            survived, or `strict` and something was rejected; `HubNotWritable` when the hub
            cannot be created or written and the dataset is not up to date there.

    Example:
        >>> r = build("desi_dr1", "raw", "hub", workers=2)          # doctest: +SKIP
        >>> r.manifest.rows.total, r.manifest.content_revision[:12]  # doctest: +SKIP
    """
    catalog = catalog or load_catalog()
    entry = catalog.dataset(name)
    raw, hub = Path(raw).resolve(), Path(hub).resolve()
    if not raw.is_dir():
        raise BuildError(f"--raw {raw}: not a directory")
    builder = get_builder(entry.builder).from_options(entry.builder_config)
    inputs = sorted(builder.list_inputs(raw), key=lambda i: i.key)
    if not inputs:
        raise BuildError(f"no raw inputs for {name} under {raw}: builder {entry.builder!r} looks "
                         f"for {entry.raw.pattern}")
    keys = [i.key for i in inputs]
    if len(set(keys)) != len(keys):
        raise BuildError(f"builder {entry.builder!r} listed duplicate input keys")
    try:
        hub.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        if e.errno not in _READ_ONLY_ERRNOS:
            raise
        raise HubNotWritable(f"hub folder {hub} cannot be created ({os.strerror(e.errno).lower()}: "
                             f"{e.filename or hub}); create it, or pass a --hub folder you can write to") from None
    if settings is None:
        try:
            settings = PartitionSettings.from_overrides(entry.partition)
        except (BuildError, TypeError, ValueError) as e:
            raise BuildError(f"catalog entry {name}: partition {entry.partition}: {e}") from None
    if client is None and not rehash:  # a no-op needs no cluster when every checksum is cached
        done = _up_to_date_from_cache(entry, builder, inputs, raw, hub, catalog.split_definition, settings)
        if done is not None:
            return done
    raw_bytes = sum(os.path.getsize(p) for i in inputs for p in i.paths)
    with dask_client(workers, scheduler, client, processes=local_workers(raw_bytes, workers)) as own_client:
        return build_inputs(entry, builder, inputs, raw=raw, hub=hub, client=own_client,
                            split_def=catalog.split_definition, sim=find_sim_manifest(raw),
                            strict=strict, settings=settings, rehash=rehash)


@dataclass
class _Standardized:
    """What stage 1 left: the surviving inputs' markers, their row and split counts, the content
    revision, the rejections."""

    markers: dict[str, dict]  # input key -> marker
    files: list[dict]  # markers of inputs with rows (parquet + digests, after de-duplication)
    rows: int  # surviving rows
    split_counts: dict[str, int]  # split -> surviving rows
    content_revision: str
    rejected_inputs: list[dict]
    rejected_rows: list[dict]


def build_inputs(entry: DatasetEntry, builder: Builder, inputs: list[RawInput], *, raw: Path,
                 hub: Path, client, split_def: SplitDefinition, sim: dict | None = None,
                 strict: bool = False, settings: PartitionSettings | None = None,
                 rehash: bool = False) -> BuildResult:
    """Run both stages for an already-listed set of inputs on `client`: `build` without the set-up.

    Used by `build` and by the paired builder of `mmu crossmatch`, whose inputs are partitions of
    other hub datasets rather than raw files.

    Args:
        entry: the dataset's catalog entry.
        builder: the builder instance (configured).
        inputs: its inputs, in a stable order.
        raw: the root the inputs' paths are recorded relative to.
        hub: the hub directory.
        client: the Dask client to run on.
        split_def: the split definition.
        sim: the mock observatory's marker (`find_sim_manifest`), or None for survey data.
        strict: any rejection is an error.
        settings: hats-import settings (default: `PartitionSettings()`).
        rehash: re-hash every input file instead of trusting the checksum cache.

    Returns:
        The `BuildResult`; ``up_to_date`` when the hub already holds this build key.

    Raises:
        BuildError: no row survived, `strict` and something was rejected, an environment fault
            (full disk, permission, I/O, memory, a lost worker) stopped the build, or another
            build of this dataset holds its lock (`BuildLocked`).

    Example:
        >>> build_inputs(entry, builder, builder.list_inputs(raw), raw=raw, hub=hub,  # doctest: +SKIP
        ...              client=client, split_def=load_catalog().split_definition)
    """
    settings = settings or PartitionSettings()
    name = entry.name
    t_start = time.perf_counter()
    # the up-to-date check reads the raw files' checksums and build.json and writes nothing
    input_records, checksums = _input_records(client, inputs, raw, hub, rehash=rehash)
    build_key = _build_key(builder, split_def, settings, input_records)
    if not hub_writable(hub):
        old = _built_with(hub, name, build_key)
        if old is not None:
            log.info("%s: up to date (build key %s); nothing to do (the hub is read-only)", name, build_key[:12])
            return BuildResult(name, dataset_dir(hub, name), old, up_to_date=True)
        raise _not_writable(hub, f"{name} needs building (it is not built there, or its build key changed)")
    try:
        lock = dataset_lock(hub, name).__enter__()
    except OSError as e:
        if e.errno not in _READ_ONLY_ERRNOS:
            raise
        raise _not_writable(hub, f"cannot take the build lock of {name} in {hub / STAGING}",
                            os.strerror(e.errno).lower()) from None
    try:
        return _build_locked(entry, builder, inputs, raw=raw, hub=hub, client=client,
                             split_def=split_def, sim=sim, strict=strict, settings=settings,
                             input_records=input_records, checksums=checksums, build_key=build_key,
                             t_start=t_start)
    finally:
        lock.__exit__(None, None, None)


def _up_to_date_from_cache(entry: DatasetEntry, builder: Builder, inputs: list[RawInput], raw: Path,
                           hub: Path, split_def: SplitDefinition, settings: PartitionSettings) -> BuildResult | None:
    """The up-to-date result when every raw file's checksum is cached and the hub holds this build
    key; None when that needs hashing or a build (then the caller starts a cluster)."""
    cache = ChecksumCache(hub / STAGING / "sha256-cache.json")
    digests = {}
    for p in sorted({p for i in inputs for p in i.paths}):
        d = cache.get(p)
        if d is None:
            return None
        digests[p] = d
    records = [{"key": i.key, "files": [{"path": os.path.relpath(p, raw), "sha256": digests[p]} for p in i.paths]}
               for i in inputs]
    build_key = _build_key(builder, split_def, settings, records)
    old = _built_with(hub, entry.name, build_key)
    if old is None:
        return None
    if hub_writable(hub):
        with dataset_lock(hub, entry.name):  # what a killed build left behind
            _remove_leftovers(hub, entry.name)
    log.info("%s: up to date (build key %s); nothing to do", entry.name, build_key[:12])
    return BuildResult(entry.name, dataset_dir(hub, entry.name), old, up_to_date=True)


def _built_with(hub: Path, name: str, build_key: str) -> BuildManifest | None:
    """The dataset's manifest when the hub holds it built with `build_key`, else None."""
    target = dataset_dir(hub, name)
    if (target / MANIFEST).is_file():
        old = read_manifest(hub, name)
        if old.build_key == build_key:
            return old
    return None


def _build_locked(entry: DatasetEntry, builder: Builder, inputs: list[RawInput], *, raw: Path,
                  hub: Path, client, split_def: SplitDefinition, sim: dict | None, strict: bool,
                  settings: PartitionSettings, input_records: list[dict], checksums: ChecksumCache,
                  build_key: str, t_start: float) -> BuildResult:
    name = entry.name
    try:
        checksums.save()  # only when a digest was computed (a changed or new raw file)
    except OSError as e:  # a cache, not an output: the build goes on and the next one re-hashes
        log.warning("%s: could not save the checksum cache %s (%s)", name, checksums.path, _describe(e))
    target = dataset_dir(hub, name)
    old = _built_with(hub, name, build_key)  # read again under the lock: another build may have finished
    if old is not None:
        log.info("%s: up to date (build key %s); nothing to do", name, build_key[:12])
        _remove_leftovers(hub, name)
        return BuildResult(name, target, old, up_to_date=True)

    staging = hub / STAGING / f"{name}-{build_key[:16]}"
    std_dir = staging / "standardized"
    std_dir.mkdir(parents=True, exist_ok=True)
    _preload_stage2()  # the driver's stage-2 imports, while the workers standardize
    sizes = {r["key"]: sum(f["bytes"] for f in r["files"]) for r in input_records}
    markers = _stage("standardize", name, _standardize_all, client, entry, builder, inputs,
                     std_dir, split_def, sizes)
    t_std = time.perf_counter() - t_start
    std = _stage("collect", name, _collect_standardized, name, inputs, markers, std_dir, strict, client)

    t1 = time.perf_counter()
    out_root = staging / "hats"
    shutil.rmtree(out_root, ignore_errors=True)
    std_files = [str(std_dir / m["parquet"]) for m in std.files]
    margin = _stage("partition", name, _partition, name, std_files, out_root, client, split_def,
                    settings, std.rows)
    t_part = time.perf_counter() - t1
    collection = out_root / name
    manifest = _make_manifest(entry, builder, collection, build_key, split_def, settings, sim,
                              input_records, std, margin,
                              {"standardize": round(t_std, 2), "partition": round(t_part, 2)})
    _stage("install", name, _install, collection, entry, manifest, target)
    _remove_leftovers(hub, name)  # this build's staging, and any a killed build left behind
    manifest.timings_s["total"] = round(time.perf_counter() - t_start, 2)
    _log_summary(manifest, target)
    return BuildResult(name, target, manifest, rejections=std.rejected_inputs + std.rejected_rows)


def _stage(stage: str, name: str, fn, *args):
    """Run one stage; an environment fault in it becomes a `BuildError` naming the stage."""
    try:
        return fn(*args)
    except (BuildError, KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as e:  # noqa: BLE001 - re-raised unless an environment fault (a Dask
        fault = environment_fault(e)  # cancellation is an asyncio.CancelledError: BaseException)
        if fault is None:
            raise
        raise BuildError(f"{name}: environment fault during {stage} ({fault}): {_describe(e)}; "
                         f"finished inputs are kept, rerun the build once the fault is fixed") from e


def _remove_leftovers(hub: Path, name: str) -> None:
    """Remove every staging folder of dataset `name` and any old copy a swap left behind (a build
    killed between the swap and its clean-up). Runs under the dataset's lock, after the dataset
    is in place, so no staging of `name` is still useful."""
    pattern = re.compile(rf"{re.escape(name)}-[0-9a-f]{{16}}")
    stage_root = hub / STAGING
    if stage_root.is_dir():
        for d in stage_root.iterdir():
            if d.is_dir() and pattern.fullmatch(d.name):
                log.debug("removing staging %s", d)
                shutil.rmtree(d, ignore_errors=True)
    old = re.compile(rf"\.{re.escape(name)}\.old-[0-9a-f]{{8}}")
    for d in hub.iterdir():
        if d.is_dir() and old.fullmatch(d.name):
            log.debug("removing the swapped-out copy %s", d)
            shutil.rmtree(d, ignore_errors=True)


# ----------------------------------------------------------------------------------------------
# one build per dataset at a time


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class dataset_lock:  # noqa: N801 - used as a context manager
    """An exclusive lock on `hub/.mmu-staging/<name>.lock`, created atomically (O_EXCL) and holding
    the owner's pid, host and start time. A lock whose pid is dead on this host is stale and taken
    over; any other held lock fails at once with `BuildLocked` naming its holder."""

    def __init__(self, hub: Path, name: str):
        self.name = name
        self.path = Path(hub) / STAGING / f"{name}.lock"
        self.token = uuid.uuid4().hex

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(),
              "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "token": self.token}
        for _ in range(5):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is None and not self._abandoned():  # being written or removed: look again
                    time.sleep(0.1)
                    continue
                if holder is None or (holder.get("host") == me["host"]
                                      and not _pid_alive(int(holder.get("pid", -1)))):
                    log.warning("%s: taking over the stale lock %s (its build, pid %s, is no longer "
                                "running)", self.name, self.path, (holder or {}).get("pid", "unknown"))
                    stale = self.path.with_name(f"{self.path.name}.stale-{self.token}")
                    try:
                        os.replace(self.path, stale)  # only one contender wins this rename
                    except FileNotFoundError:
                        continue
                    moved = json.loads(stale.read_text() or "{}") if stale.exists() else {}
                    if holder is not None and moved.get("token") != holder.get("token"):
                        os.replace(stale, self.path)  # a live build's fresh lock: put it back
                    else:
                        stale.unlink(missing_ok=True)
                    continue
                raise BuildLocked(f"another build of {self.name} holds the lock (pid {holder.get('pid')} "
                                  f"on host {holder.get('host')}, since {holder.get('since')}); wait "
                                  f"for it to finish, or remove {self.path} if no such build runs") from None
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            return self
        raise BuildLocked(f"could not take the lock {self.path} of {self.name} (it keeps changing)")

    def _abandoned(self) -> bool:
        """An unreadable lock file older than 10 s: its writer died between create and write."""
        try:
            return time.time() - self.path.stat().st_mtime > 10
        except FileNotFoundError:
            return False

    def _holder(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def __exit__(self, *exc):
        holder = self._holder()
        if holder is not None and holder.get("token") == self.token:
            self.path.unlink(missing_ok=True)
        return False


def _input_records(client, inputs: list[RawInput], raw: Path, hub: Path,
                   rehash: bool = False) -> tuple[list[dict], ChecksumCache]:
    """Checksum every raw file on the workers (cached by path, size and mtime; `rehash` reads
    every file again): the manifest's `inputs` without their row counts, and the checksum cache
    holding the new digests (not saved: the caller saves it once it may write to the hub)."""
    all_paths = sorted({p for i in inputs for p in i.paths})
    cache = ChecksumCache(hub / STAGING / "sha256-cache.json")
    checks: dict[str, str] = {}
    missing = all_paths
    if not rehash:  # cached digests are looked up here; only the others go to the workers
        checks = {p: d for p in all_paths if (d := cache.get(p)) is not None}
        missing = [p for p in all_paths if p not in checks]
    chunks = [missing[i:i + 64] for i in range(0, len(missing), 64)]
    if chunks:
        for part in client.gather(client.map(_checksums, chunks, pure=False)):
            checks.update(part)
    for p in missing:
        cache.put(p, checks[p])
    return [{"key": i.key, "files": [
        {"path": os.path.relpath(p, raw), "sha256": checks[p], "bytes": os.path.getsize(p)}
        for p in i.paths]} for i in inputs], cache


def _build_key(builder: Builder, split_def: SplitDefinition, settings: PartitionSettings,
               input_records: list[dict]) -> str:
    """sha256 of everything that determines the output (style: hash what determines an output)."""
    return sha256_json({"builder": builder.name, "builder_version": builder.version,
                        "config": builder.options(), "schema_version": SCHEMA_VERSION,
                        "engine_version": ENGINE_VERSION, "split_hash": split_def.hash,
                        "partition": settings.as_dict(),
                        "inputs": [[r["key"], [f["sha256"] for f in r["files"]]] for r in input_records]})


def _standardize_all(client, entry: DatasetEntry, builder: Builder, inputs: list[RawInput],
                     std_dir: Path, split_def: SplitDefinition, sizes: dict[str, int]) -> dict[str, dict]:
    """Stage 1: one `standardize_input` task per input (`sizes`: input key -> bytes of its
    files, as the checksum step recorded them); returns input key -> marker."""
    from dask.distributed import as_completed

    bar = Progress(len(inputs), f"{entry.name}: standardize")
    ref = builder.name if ":" not in entry.builder else entry.builder
    n = len(inputs)
    # largest inputs first (Dask runs a map's tasks in its order): the stage ends on small tasks,
    # not on one big input read by one worker while the others wait (an input's markers are keyed,
    # and the first-input-keeps-an-id rule uses the input order, not this one)
    todo = sorted(inputs, key=lambda i: sizes[i.key], reverse=True)
    futures = client.map(standardize_input, [ref] * n, [builder.options()] * n, todo,
                         [str(std_dir)] * n, [split_def.as_dict()] * n, pure=False)
    which = {f.key: item for f, item in zip(futures, todo, strict=True)}
    markers = {}
    failed = []
    for fut in as_completed(futures):  # on a failure, let the others finish: their work is kept
        if fut.status == "error":
            failed.append(fut)
            continue
        m = fut.result()
        markers[m["key"]] = m
        bar.update()
    bar.close()
    if failed:
        log.error("%s: %d of %d input(s) failed to standardize", entry.name, len(failed), n)
        for fut in failed[1:]:
            log.error("  %s", _task_failure(entry.name, which[fut.key], fut.exception()))
        e = failed[0].exception()
        if isinstance(e, BuildError) or environment_fault(e) is None:
            raise e  # the task's own one-line error, or a bug (its traceback with -v)
        raise BuildError(_task_failure(entry.name, which[failed[0].key], e)) from e
    return markers


def _task_failure(name: str, item: RawInput, e: BaseException) -> str:
    """One line for a standardize task that failed outside the builder (its worker died, the
    cluster failed): which input it was reading, and what to do."""
    if isinstance(e, BuildError):
        return str(e)
    files = ", ".join(item.paths[:3]) + (f" and {len(item.paths) - 3} more" if len(item.paths) > 3 else "")
    fault = environment_fault(e)
    if type(e).__name__ == "KilledWorker":
        why = ("the Dask worker reading it died, on every retry (out of memory is the usual cause: give "
               "workers more memory, e.g. `dask worker --memory-limit`, or fewer threads per worker)")
    else:
        why = f"environment fault ({fault})" if fault else "the task failed"
    return (f"{name}: input {item.key} ({files}) could not be standardized: {why}: {_describe(e)}; "
            f"nothing was recorded for it, finished inputs are kept; rerun the build once the fault is fixed")


def _collect_standardized(name: str, inputs: list[RawInput], markers: dict[str, dict],
                          std_dir: Path, strict: bool, client=None) -> _Standardized:
    """Gather stage 1's rejections, drop object ids repeated across inputs (the first input in
    input order keeps an id; later repeats become rejected rows and those inputs' standardized
    files are rewritten without them), count the splits and compute the content revision; stop the
    build when nothing survived or `strict` and something was rejected.

    Up to `DRIVER_ROWS` rows this runs here; above, on the workers of `client`
    (`_dedup_on_workers`): the driver then holds the markers, the rejections and counts, never a
    value per surviving row."""
    ordered = [markers[i.key] for i in inputs]
    rejected_inputs = [{"input": m["key"], "reason": m["rejected"]} for m in ordered if m["rejected"]]
    rejected_rows = [r for m in ordered for r in m["row_rejections"]]
    # object ids must be unique across inputs too; later inputs' repeats are rejected rows
    files = [m for m in ordered if m.get("parquet")]
    total = sum(m["rows"] for m in files)
    if total > DRIVER_ROWS and client is not None and len(files) > 0:
        rejected, finish = _dedup_on_workers(client, name, files, std_dir)
    else:
        rejected, finish = _dedup_in_driver(files, std_dir)
    rejected_rows += rejected
    if strict and (rejected_inputs or rejected_rows):
        _log_rejections(name, rejected_inputs, rejected_rows)
        raise BuildError(f"{name}: --strict and {len(rejected_inputs)} input(s), "
                         f"{len(rejected_rows)} row(s) were rejected (listed above)")
    if not files:
        _log_rejections(name, rejected_inputs, rejected_rows)
        raise BuildError(f"{name}: no rows survived standardization "
                         f"({len(rejected_inputs)} of {len(inputs)} inputs rejected)")
    rows, counts, revision = finish()
    if rows != sum(m["rows"] for m in files):  # the revision's rows are the files' rows, or a bug
        raise BuildError(f"{name}: the content revision covers {rows} rows but the standardized files "
                         f"hold {sum(m['rows'] for m in files)}; rerun with -v and report this")
    return _Standardized(markers, files, rows, counts, revision, rejected_inputs, rejected_rows)


# Up to this many standardized rows, the cross-input de-duplication, the split counts and the
# content revision run in the driver (its ids and digests: ~120 bytes a row, so <= ~120 MB);
# above, on the workers (`_dedup_on_workers`), and the driver's memory does not grow with the rows.
DRIVER_ROWS = 1_000_000
# rows per partition of the object-id sort on the workers (~60 bytes a row in the shuffle)
SORT_PARTITION_ROWS = 2_000_000
# row group of the digest files: the unit a big input's digests are split into for the sort
DIGEST_ROW_GROUP = 250_000


def _dedup_in_driver(files: list[dict], std_dir: Path):
    """The small-build path: every input's ids and digests read here (bounded by `DRIVER_ROWS`)."""
    id_parts = [pq.read_table(std_dir / m["digests"]) for m in files]
    rejected = _drop_cross_input_duplicates(files, id_parts, std_dir)

    def finish():
        ids = pa.concat_tables(id_parts) if id_parts else None
        if ids is None:
            return 0, {s: 0 for s in SPLITS}, content_revision([], [])
        return ids.num_rows, _split_counts(ids), content_revision(ids.column("object_id").to_pylist(),
                                                                  ids.column("digest").to_pylist())
    return rejected, finish


def _split_counts(ids: pa.Table) -> dict[str, int]:
    counts = {s: 0 for s in SPLITS}
    values, n = np.unique(np.asarray(ids.column(SPLIT_COLUMN).to_pylist(), dtype=object), return_counts=True)
    for s, c in zip(values, n, strict=True):
        counts[s] = int(c)
    return counts


# ----------------------------------------------------------------------------------------------
# cross-input de-duplication, split counts and content revision on the workers
#
# A dask.dataframe over the inputs' digest files (one partition per input; columns object_id,
# the digest as four uint64, the split as a code, the input's index and the row number) is sorted
# by object_id on the workers (a range shuffle: Dask samples quantiles of the ids, then moves rows
# with its P2P shuffle, spilling to the workers' disks). Equal ids meet in one partition, so each
# partition task finds the repeats on its own: the first input keeps an id, the others' rows are
# returned as rejections (O(rejections) to the driver). The surviving rows of each partition are
# written, sorted, to `ids-sorted/part-NNNNNN.parquet`; one worker task then streams those files
# in order into the sha256 of the content revision (`SortedRevision`), one file at a time.


def _ids_frame(table: pa.Table, k: int, first_row: int = 0):
    """The shuffle's rows of one digests table (input index `k`, rows from `first_row`), as pandas."""
    import pandas as pd

    n = table.num_rows
    dig = table.column("digest").combine_chunks()
    words = np.frombuffer(dig.buffers()[1], "<u8", n * 4, dig.offset * 32).reshape(n, 4) if n else \
        np.zeros((0, 4), "<u8")
    split = pd.Categorical(table.column(SPLIT_COLUMN).to_pylist(), categories=list(SPLITS))
    if n and (split.codes < 0).any():
        bad = table.column(SPLIT_COLUMN)[int(np.flatnonzero(split.codes < 0)[0])].as_py()
        raise BuildError(f"standardized input #{k}: split value {bad!r} is not one of {list(SPLITS)}")
    return pd.DataFrame({"object_id": pd.Series(table.column("object_id").to_pylist(), dtype="string[pyarrow]"),
                         **{f"d{j}": words[:, j].copy() for j in range(4)},
                         "split": split.codes.astype(np.int8), "input": np.full(n, k, np.int32),
                         "row": np.arange(first_row, first_row + n, dtype=np.int64)})


def _read_ids(piece: tuple[int, str, int, int]):
    """`dd.from_map` reader of one piece of an input's digests file: input index `k`, path, piece
    `j` of `pieces`. A piece is the row groups that start in its share of the rows, so that a big
    input is read as several partitions and every row is in exactly one piece."""
    k, path, j, pieces = piece
    f = pq.ParquetFile(path)
    starts = np.cumsum([0] + [f.metadata.row_group(g).num_rows for g in range(f.num_row_groups)])
    total = int(starts[-1])
    lo, hi = total * j // pieces, total * (j + 1) // pieces
    groups = [g for g in range(f.num_row_groups) if lo <= starts[g] < hi]
    if not groups:
        return _ids_frame(_EMPTY_IDS, k)
    return _ids_frame(f.read_row_groups(groups), k, int(starts[groups[0]]))


_EMPTY_IDS = pa.table({"object_id": pa.array([], pa.string()), "digest": pa.array([], pa.binary(32)),
                       SPLIT_COLUMN: pa.array([], pa.string())})


def _dedup_partition(df, number: int, out_dir: str) -> dict:
    """One range of object ids (all rows of each id are here): reject the repeats of later inputs,
    write the survivors sorted by id, and return their count per split and the rejections."""
    df = df.sort_values(["object_id", "input"], kind="stable")
    ids = df["object_id"].to_numpy(dtype=object)
    repeat = np.zeros(len(df), bool)
    if len(df):
        repeat[1:] = ids[1:] == ids[:-1]
    inputs = df["input"].to_numpy()
    first = np.maximum.accumulate(np.where(~repeat, np.arange(len(df)), 0))  # each row's id's first row
    rejected = [(int(inputs[i]), int(r), ids[i], int(inputs[first[i]]))
                for i, r in zip(np.flatnonzero(repeat), df["row"].to_numpy()[repeat], strict=True)]
    keep = df[~repeat]
    n = len(keep)
    words = np.ascontiguousarray(keep[["d0", "d1", "d2", "d3"]].to_numpy(np.dtype("<u8")))
    table = pa.table({"object_id": pa.array(keep["object_id"].to_numpy(dtype=object), pa.string()),
                      "digest": pa.Array.from_buffers(pa.binary(32), n, [None, pa.py_buffer(words.tobytes())])})
    path = Path(out_dir) / f"part-{number:06d}.parquet"
    pq.write_table(table, path, compression="zstd", compression_level=1)
    counts = np.bincount(keep["split"].to_numpy(), minlength=len(SPLITS))
    return {"number": number, "rows": n, "path": str(path), "rejected": rejected,
            "splits": {s: int(c) for s, c in zip(SPLITS, counts, strict=True)}}


def _stream_revision(paths: list[str]) -> tuple[str, int]:
    """The content revision of the sorted survivor files, read in order one row group at a time
    (a worker task: memory is one row group, whatever the dataset's size)."""
    from mmu.model.hashing import SortedRevision

    rev = SortedRevision()
    for path in paths:
        f = pq.ParquetFile(path)
        for g in range(f.num_row_groups):
            t = f.read_row_group(g)
            rev.update(t.column("object_id"), t.column("digest"))
    return rev.hexdigest(), rev.rows


def _filter_input(std_dir: str, marker: dict, drop: list[int]) -> dict:
    """Rewrite one input's standardized files without rows `drop` (as `.dedup.parquet`, reused
    when a killed build left it); returns the new file names and row count (a worker task)."""
    out = {}
    for key in ("parquet", "digests"):
        path = Path(std_dir) / marker[key]
        dedup = path.with_name(path.name.replace(".parquet", ".dedup.parquet"))
        if not dedup.exists():
            table = pq.read_table(path)
            keep = np.ones(table.num_rows, bool)
            keep[drop] = False
            with atomic_path(dedup) as tmp:
                pq.write_table(table.filter(pa.array(keep)), tmp)
        out[key] = dedup.name
    out["rows"] = pq.ParquetFile(Path(std_dir) / out["digests"]).metadata.num_rows
    return out


def _dedup_on_workers(client, name: str, files: list[dict], std_dir: Path):
    """Cross-input de-duplication on the workers of `client`; returns the rejections (the
    driver keeps only those) and a `finish()` computing (rows, split counts, content revision)
    with one worker task. Rewrites the affected inputs' files as `_drop_cross_input_duplicates`."""
    import dask
    import dask.dataframe as dd

    total = sum(m["rows"] for m in files)
    out_dir = std_dir.parent / "ids-sorted"
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    t0 = time.perf_counter()
    meta = _ids_frame(_EMPTY_IDS, 0)
    # a big input is read in several pieces (row groups), each at most ~SORT_PARTITION_ROWS rows
    pieces = [(k, str(std_dir / m["digests"]), j, n) for k, m in enumerate(files)
              for n in [max(1, -(-m["rows"] // SORT_PARTITION_ROWS))] for j in range(n)]
    frame = dd.from_map(_read_ids, pieces, meta=meta, divisions=[None] * (len(pieces) + 1),
                        enforce_metadata=False)
    nparts = max(1, -(-total // SORT_PARTITION_ROWS))
    ordered = frame.sort_values("object_id", npartitions=nparts)
    tasks = [dask.delayed(_dedup_partition, pure=False)(part, i, str(out_dir))
             for i, part in enumerate(ordered.to_delayed())]
    parts = client.gather(client.compute(tasks))
    parts.sort(key=lambda p: p["number"])
    log.info("%s: %d rows de-duplicated across %d inputs on the workers (%d sorted partitions) in %.1f s",
             name, total, len(files), len(parts), time.perf_counter() - t0)
    # rejections in input order then row order, as the driver path gives them
    found = sorted((r for p in parts for r in p.pop("rejected")), key=lambda r: (r[0], r[1]))
    rejected, drops = [], {}
    for k, row, oid, first in found:
        rejected.append(Rejection(files[k]["key"], f"object_id also produced by input {files[first]['key']!r}",
                                  None, oid, "object_id").as_dict())
        drops.setdefault(k, []).append(row)
    if drops:
        ks = sorted(drops)
        done = client.gather(client.map(_filter_input, [str(std_dir)] * len(ks), [files[k] for k in ks],
                                        [drops[k] for k in ks], pure=False))
        for k, new in zip(ks, done, strict=True):
            files[k].update(new)

    def finish():
        counts = {s: sum(p["splits"][s] for p in parts) for s in SPLITS}
        t1 = time.perf_counter()
        revision, rows = client.submit(_stream_revision, [p["path"] for p in parts], pure=False).result()
        log.info("%s: content revision of %d rows streamed on a worker in %.1f s", name, rows,
                 time.perf_counter() - t1)
        if rows != sum(counts.values()):
            raise BuildError(f"{name}: the sorted ids hold {rows} rows but their split counts "
                             f"{sum(counts.values())}; rerun with -v and report this")
        shutil.rmtree(out_dir, ignore_errors=True)
        return rows, counts, revision
    return rejected, finish


def _make_manifest(entry: DatasetEntry, builder: Builder, collection: Path, build_key: str,
                   split_def: SplitDefinition, settings: PartitionSettings, sim: dict | None,
                   input_records: list[dict], std: _Standardized, margin: dict,
                   timings: dict[str, float]) -> BuildManifest:
    """The build.json of a finished stage 2 (`collection` = the staged HATS collection)."""
    from mmu.hub.card import split_data_files

    name = entry.name
    data_files = split_data_files(collection, name, split_def)
    return BuildManifest.model_validate({
        "format_version": MANIFEST_FORMAT_VERSION,
        "name": name, "survey": entry.survey, "release": entry.release,
        "builder": builder.name, "builder_version": builder.version, "config": builder.options(),
        "schema_version": SCHEMA_VERSION, "code_version": code_version(),
        "engine_version": ENGINE_VERSION, "build_key": build_key,
        "content_revision": std.content_revision,
        "mock": bool(sim), "mock_seed": sim.get("seed") if sim else None,
        "simulator_version": sim.get("simulator_version") if sim else None,
        "split": {**split_def.as_dict(), "hash": split_def.hash},
        "rows": {"total": std.rows, **std.split_counts},
        "inputs": [{**r, "rows": std.markers[r["key"]]["rows"]} for r in input_records],
        "rejected_inputs": std.rejected_inputs, "rejected_rows": std.rejected_rows,
        "partition": {"writer": settings.writer, "partition_bytes": margin["partition_bytes"],
                      "row_group_bytes": settings.row_group_bytes,
                      "compression_level": settings.compression_level,
                      "highest_order": margin["highest_order"],
                      "margin_delta": margin["order"] - margin["deepest_order"],
                      "margin_threshold_arcsec": margin["threshold"],
                      "margin_order": margin["order"], "margin_catalog": margin["name"]},
        "modalities": {k: {"kind": v.kind, **v.describe()} for k, v in builder.modalities().items()},
        "data_files": data_files,
        "split_bytes": {s: sum((collection / f).stat().st_size for f in fs) for s, fs in data_files.items()},
        **builder.manifest_extra(),
        "timings_s": timings,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    })


def _install(collection: Path, entry: DatasetEntry, manifest: BuildManifest, target: Path) -> None:
    """Write the card and build.json into the staged collection, then swap it into `target`."""
    from mmu.hub.card import write_card

    name = entry.name
    schema = pq.read_schema(next((collection / name / "dataset").rglob("*.parquet")))
    write_card(collection, entry, manifest, schema, modalities_of(schema))
    write_manifest(collection, manifest)
    replace_dir(collection, target)


def _drop_cross_input_duplicates(files: list[dict], id_parts: list[pa.Table], std_dir: Path) -> list[dict]:
    seen: dict[str, str] = {}
    rejected = []
    for k, (m, ids) in enumerate(zip(files, id_parts, strict=True)):
        oid = ids.column("object_id").to_pylist()
        drop = [i for i, o in enumerate(oid) if o in seen]
        for o in oid:
            seen.setdefault(o, m["key"])
        if not drop:
            continue
        for i in drop:
            rejected.append(Rejection(m["key"], f"object_id also produced by input {seen[oid[i]]!r}",
                                      None, oid[i], "object_id").as_dict())
        keep = np.ones(len(oid), bool)
        keep[drop] = False
        mask = pa.array(keep)
        for key in ("parquet", "digests"):
            path = std_dir / m[key]
            dedup = path.with_name(path.name.replace(".parquet", ".dedup.parquet"))
            if not dedup.exists():
                with atomic_path(dedup) as tmp:
                    pq.write_table(pq.read_table(path).filter(mask), tmp)
            m[key] = dedup.name
        id_parts[k] = pq.read_table(std_dir / m["digests"])
        m["rows"] = id_parts[k].num_rows
    return rejected


def code_version() -> str:
    """The mmu version recorded in build.json: the package version, plus ``+g<commit>[.dirty]``
    when mmu runs from a git checkout.

    Returns:
        e.g. ``"0.1.0"`` or ``"0.1.0+g1a2b3c4d5e6f.dirty"``.
    """
    import subprocess
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
                                capture_output=True, text=True, timeout=5)
        if commit.returncode == 0 and (root / "pyproject.toml").exists():
            dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=5).stdout.strip()
            return f"{__version__}+g{commit.stdout.strip()}{'.dirty' if dirty else ''}"
    except (OSError, subprocess.SubprocessError):
        pass
    return __version__


def _log_rejections(name: str, rejected_inputs: list[dict], rejected_rows: list[dict], limit: int = 20) -> None:
    """Warn about the first `limit` rejected inputs and rows (all are in build.json)."""
    lines = []
    if rejected_inputs:
        lines.append(f"{name}: {len(rejected_inputs)} input(s) rejected:")
        lines += [f"  {r['input']}: {r['reason']}" for r in rejected_inputs[:limit]]
        if len(rejected_inputs) > limit:
            lines.append(f"  ... and {len(rejected_inputs) - limit} more (see build.json)")
    if rejected_rows:
        lines.append(f"{name}: {len(rejected_rows)} row(s) rejected:")
        for r in rejected_rows[:limit]:
            where = f"row {r.get('row')}" + (f" ({r['object_id']})" if r.get("object_id") else "")
            lines.append(f"  {r['input']} {where}: {r.get('column', '')}: {r['reason']}")
        if len(rejected_rows) > limit:
            lines.append(f"  ... and {len(rejected_rows) - limit} more (see build.json)")
    if lines:
        log.warning("\n".join(lines))


def _log_summary(m: BuildManifest, path: Path) -> None:
    rows = m.rows
    log.info("\n".join([
        "",
        f"built {m.name}{f'  [MOCK DATA, seed {m.mock_seed}]' if m.mock else ''}",
        f"  path              {path}",
        f"  rows              {rows.total}  (train {rows.train}, val {rows.val}, test {rows.test})",
        f"  inputs            {len(m.inputs)} read, {len(m.rejected_inputs)} rejected; "
        f"{len(m.rejected_rows)} row(s) rejected",
        f"  content revision  {m.content_revision[:16]}   build key {m.build_key[:16]}",
        f"  margin cache      {m.partition.margin_catalog}",
        f"  time              standardize {m.timings_s['standardize']} s, partition {m.timings_s['partition']} s",
        f"  open with         datasets.load_dataset({str(path)!r}, streaming=True) or lsdb.open_catalog({str(path)!r})",
    ]))
    _log_rejections(m.name, [r.model_dump(exclude_none=True) for r in m.rejected_inputs],
                    [r.model_dump(exclude_none=True) for r in m.rejected_rows], limit=10)
