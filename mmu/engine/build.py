"""The build engine: raw survey files -> a standardized, HATS-partitioned hub dataset.

Two stages on Dask, the same for every survey:

1. *standardize* — one task per raw input runs the builder, conforms and validates its rows,
   rejects bad rows or the whole input with reasons, adds the `split` column, and atomically
   writes standardized Parquet plus a marker (rows, rejections, per-row digests). A finished
   input is never redone: this is the unit of resumption.
2. *partition* — hats-import, with its stock Parquet reader, turns the standardized files into a
   HATS catalog and a margin cache (byte threshold per partition, small row groups, zstd level 3),
   then the engine writes the dataset card and `build.json` and moves the collection into place.

Memory per worker: one builder chunk in stage 1; one partition (`partition_bytes`, uncompressed)
in stage 2. Neither grows with the dataset.
"""
from __future__ import annotations

import json
import os
import shutil
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
from mmu.engine.cluster import Progress, dask_client, make_client  # noqa: F401  (make_client re-exported)
from mmu.registry.catalog import Catalog, DatasetEntry, load_catalog
from mmu.model.hashing import ChecksumCache, content_revision, file_sha256, row_digests, sha256_json
from mmu.hub.layout import MANIFEST, STAGING, atomic_write_json, dataset_dir, replace_dir
from mmu.model.schema import SCHEMA_VERSION, SPLIT_COLUMN, SPLITS, modalities_of
from mmu.model.splits import SplitDefinition
from mmu.model.validate import RowProblem, SchemaMismatch, conform, validate_rows

ENGINE_VERSION = "1"
SIM_MANIFEST = "mmu-sim.json"


class BuildError(RuntimeError):
    pass


@dataclass
class PartitionSettings:
    """hats-import settings tuned for large rows (images, spectra)."""

    partition_bytes: int = 256 * 2**20  # max uncompressed bytes per partition (= memory bound)
    row_group_bytes: int = 32 * 2**20  # target row group size; rows per group derived from it
    compression_level: int = 3  # zstd; level 15 (the hats default) is ~7x slower on image rows
    highest_order: int = 8
    margin_delta: int = 5  # margin order = max(deepest partition order + delta, 10)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class BuildResult:
    name: str
    path: Path
    manifest: dict
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
        return json.loads(marker_path.read_text())
    builder = get_builder(builder_ref).from_options(options)
    schema = builder.schema()
    modalities = builder.modalities()
    splits = SplitDefinition(order=split["order"], seed=split["seed"], **split["fractions"],
                             method=split["method"])
    tmp = out / f".{stem}.{uuid.uuid4().hex[:8]}"
    parquet_tmp, digest_tmp = tmp.with_suffix(".parquet"), tmp.with_suffix(".digests.parquet")
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
                                  np.clip(np.nan_to_num(part.column("dec").to_numpy(zero_copy_only=False).astype(float)), -90, 90)),
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
            if writer is None:
                writer = pq.ParquetWriter(parquet_tmp, table.schema, compression="zstd",
                                          compression_level=1)
            writer.write_table(table, row_group_size=max(1, min(table.num_rows, 512)))
            rows += table.num_rows
            ids.extend(table.column("object_id").to_pylist())
            digests.extend(row_digests(table))
            split_col.extend(table.column(SPLIT_COLUMN).to_pylist())
        if writer is not None:
            writer.close()
            writer = None
    except Exception as e:  # noqa: BLE001 - any builder failure rejects the input, with reason
        if writer is not None:
            writer.close()
        for p in (parquet_tmp, digest_tmp):
            p.unlink(missing_ok=True)
        reason = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        if not isinstance(e, (SchemaMismatch, OSError, ValueError, KeyError)) and \
                type(e).__name__ != "InputRejected":
            reason += f" [{traceback.format_exc(limit=-1).strip().splitlines()[-2].strip()}]"
        marker = {"key": item.key, "rejected": reason, "rows": 0, "row_rejections": row_rejections}
        atomic_write_json(marker_path, marker)
        return marker
    marker = {"key": item.key, "rejected": None, "rows": rows, "row_rejections": row_rejections,
              "seconds": round(time.perf_counter() - t0, 3)}
    if rows:
        pq.write_table(pa.table({"object_id": pa.array(ids, pa.string()),
                                 "digest": pa.array(digests, pa.binary(32)),
                                 SPLIT_COLUMN: pa.array(split_col, pa.string())}), digest_tmp)
        os.replace(parquet_tmp, out / f"{stem}.parquet")
        os.replace(digest_tmp, out / f"{stem}.digests.parquet")
        marker["parquet"] = f"{stem}.parquet"
        marker["digests"] = f"{stem}.digests.parquet"
    atomic_write_json(marker_path, marker)
    return marker


def _checksums(paths: list[str], cache_file: str) -> dict[str, str]:
    cache = ChecksumCache(Path(cache_file))
    out = {}
    for p in paths:
        digest = cache.get(p)
        if digest is None:
            digest = file_sha256(p)
        out[p] = digest
    return out


# ----------------------------------------------------------------------------------------------
# the driver


def find_sim_manifest(raw: Path) -> dict | None:
    """The mock observatory's marker at the raw root (or a parent of it), if any."""
    for d in [raw, *raw.parents][:4]:
        f = d / SIM_MANIFEST
        if f.is_file():
            data = json.loads(f.read_text())
            return data if data.get("mock") else None
    return None


def build(name: str, raw: str | Path, hub: str | Path, *, workers: int | None = None,
          scheduler: str | None = None, client=None, strict: bool = False, progress: bool = True,
          catalog: Catalog | None = None, settings: PartitionSettings | None = None,
          log=print) -> BuildResult:
    """Build dataset `name` from the raw files under `raw` into `hub/name`."""
    catalog = catalog or load_catalog()
    entry = catalog.dataset(name)
    settings = settings or PartitionSettings()
    raw, hub = Path(raw).resolve(), Path(hub).resolve()
    if not raw.is_dir():
        raise BuildError(f"--raw {raw}: not a directory")
    builder_cls = get_builder(entry.builder)
    builder = builder_cls.from_options(entry.builder_config)
    inputs = sorted(builder.list_inputs(raw), key=lambda i: i.key)
    if not inputs:
        raise BuildError(f"no raw inputs for {name} under {raw}: builder {entry.builder!r} looks "
                         f"for {entry.raw.pattern}")
    keys = [i.key for i in inputs]
    if len(set(keys)) != len(keys):
        raise BuildError(f"builder {entry.builder!r} listed duplicate input keys")
    hub.mkdir(parents=True, exist_ok=True)
    split_def = catalog.split_definition
    sim = find_sim_manifest(raw)
    with dask_client(workers, scheduler, client) as own_client:
        return build_inputs(entry, builder, inputs, raw=raw, hub=hub, client=own_client,
                            split_def=split_def, sim=sim, strict=strict, progress=progress,
                            settings=settings, log=log)


def build_inputs(entry: DatasetEntry, builder: Builder, inputs: list[RawInput], *, raw: Path,
                 hub: Path, client, split_def: SplitDefinition, sim: dict | None = None,
                 strict: bool = False, progress: bool = True,
                 settings: PartitionSettings | None = None, log=print) -> BuildResult:
    """Run both stages for an already-listed set of inputs on `client`; `build` without the set-up.

    Used by `build` and by the paired builder of `mmu crossmatch`, whose inputs are partitions of
    other hub datasets rather than raw files. Args are as for `build`, plus the catalog entry, the
    builder instance, its inputs, the split definition and the mock marker (`sim`, or None).
    """
    settings = settings or PartitionSettings()
    t_start = time.perf_counter()
    name = entry.name
    cache_file = str(hub / STAGING / "sha256-cache.json")
    all_paths = sorted({p for i in inputs for p in i.paths})
    chunks = [all_paths[i:i + 64] for i in range(0, len(all_paths), 64)]
    checks: dict[str, str] = {}
    for part in client.gather(client.map(_checksums, chunks, cache_file=cache_file, pure=False)):
        checks.update(part)
    cache = ChecksumCache(Path(cache_file))
    for p, d in checks.items():
        cache.put(p, d)
    cache.save()
    input_records = [{"key": i.key, "files": [
        {"path": os.path.relpath(p, raw), "sha256": checks[p], "bytes": os.path.getsize(p)}
        for p in i.paths]} for i in inputs]
    key_material = {"builder": builder.name, "builder_version": builder.version,
                    "config": builder.options(), "schema_version": SCHEMA_VERSION,
                    "engine_version": ENGINE_VERSION, "split_hash": split_def.hash,
                    "partition": settings.as_dict(),
                    "inputs": [[r["key"], [f["sha256"] for f in r["files"]]] for r in input_records]}
    build_key = sha256_json(key_material)
    target = dataset_dir(hub, name)
    existing = target / MANIFEST
    if existing.is_file():
        old = json.loads(existing.read_text())
        if old.get("build_key") == build_key:
            log(f"{name}: up to date (build key {build_key[:12]}); nothing to do")
            return BuildResult(name, target, old, up_to_date=True)

    staging = hub / STAGING / f"{name}-{build_key[:16]}"
    std_dir = staging / "standardized"
    std_dir.mkdir(parents=True, exist_ok=True)
    bar = Progress(len(inputs), f"{name}: standardize", progress)
    ref = builder.name if ":" not in entry.builder else entry.builder
    futures = client.map(standardize_input, [ref] * len(inputs), [builder.options()] * len(inputs),
                         inputs, [str(std_dir)] * len(inputs), [split_def.as_dict()] * len(inputs),
                         pure=False)
    from dask.distributed import as_completed
    markers = {}
    for fut in as_completed(futures):
        m = fut.result()
        markers[m["key"]] = m
        bar.update()
    bar.close()
    t_std = time.perf_counter() - t_start
    ordered = [markers[i.key] for i in inputs]
    rejected_inputs = [{"input": m["key"], "reason": m["rejected"]} for m in ordered if m["rejected"]]
    rejected_rows = [r for m in ordered for r in m["row_rejections"]]

    # object ids must be unique across inputs too; later inputs' repeats are rejected rows
    files, id_parts = [], []
    for m in ordered:
        if m.get("parquet"):
            files.append(m)
            id_parts.append(pq.read_table(std_dir / m["digests"]))
    rejected_rows += _drop_cross_input_duplicates(files, id_parts, std_dir)
    if strict and (rejected_inputs or rejected_rows):
        _print_rejections(name, rejected_inputs, rejected_rows, log)
        raise BuildError(f"{name}: --strict and {len(rejected_inputs)} input(s), "
                         f"{len(rejected_rows)} row(s) were rejected (listed above)")
    if not files:
        _print_rejections(name, rejected_inputs, rejected_rows, log)
        raise BuildError(f"{name}: no rows survived standardization "
                         f"({len(rejected_inputs)} of {len(inputs)} inputs rejected)")
    ids = pa.concat_tables(id_parts)
    total_rows = ids.num_rows
    revision = content_revision(ids.column("object_id").to_pylist(), ids.column("digest").to_pylist())
    split_counts = {s: 0 for s in SPLITS}
    for s, c in zip(*np.unique(np.asarray(ids.column(SPLIT_COLUMN).to_pylist(), dtype=object),
                               return_counts=True)):
        split_counts[s] = int(c)

    t1 = time.perf_counter()
    out_root = staging / "hats"
    shutil.rmtree(out_root, ignore_errors=True)
    std_files = [str(std_dir / m["parquet"]) for m in files]
    margin = _partition(name, std_files, out_root, client, split_def, settings, progress, total_rows)
    t_part = time.perf_counter() - t1
    collection = out_root / name
    from mmu.hub.card import split_data_files, write_card

    data_files = split_data_files(collection, name, split_def)
    manifest = {
        "name": name, "survey": entry.survey, "release": entry.release,
        "builder": builder.name, "builder_version": builder.version, "config": builder.options(),
        "schema_version": SCHEMA_VERSION, "code_version": code_version(),
        "engine_version": ENGINE_VERSION,
        "build_key": build_key, "content_revision": revision,
        "mock": bool(sim), "mock_seed": sim.get("seed") if sim else None,
        "simulator_version": sim.get("simulator_version") if sim else None,
        "split": {**split_def.as_dict(), "hash": split_def.hash},
        "rows": {"total": total_rows, **split_counts},
        "inputs": [{**r, "rows": markers[r["key"]]["rows"]} for r in input_records],
        "rejected_inputs": rejected_inputs, "rejected_rows": rejected_rows,
        "partition": {**settings.as_dict(), "margin_threshold_arcsec": margin["threshold"],
                      "margin_order": margin["order"], "margin_catalog": margin["name"]},
        "modalities": {k: {"kind": v.kind, **v.describe()} for k, v in builder.modalities().items()},
        "data_files": data_files,
        "split_bytes": {s: sum((collection / f).stat().st_size for f in fs) for s, fs in data_files.items()},
        **builder.manifest_extra(),
        "timings_s": {"standardize": round(t_std, 2), "partition": round(t_part, 2)},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    schema = pq.read_schema(next((collection / name / "dataset").rglob("*.parquet")))
    write_card(collection, entry, manifest, schema, modalities_of(schema))
    atomic_write_json(collection / MANIFEST, manifest)
    replace_dir(collection, target)
    shutil.rmtree(staging, ignore_errors=True)
    manifest["timings_s"]["total"] = round(time.perf_counter() - t_start, 2)
    _summary(manifest, target, log)
    return BuildResult(name, target, manifest, rejections=rejected_inputs + rejected_rows)


def _drop_cross_input_duplicates(files: list[dict], id_parts: list[pa.Table], std_dir: Path) -> list[dict]:
    seen: dict[str, str] = {}
    rejected = []
    for k, (m, ids) in enumerate(zip(files, id_parts)):
        oid = ids.column("object_id").to_pylist()
        drop = [i for i, o in enumerate(oid) if o in seen]
        for i, o in enumerate(oid):
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
                tmp = dedup.with_name(f".{dedup.name}.tmp")
                pq.write_table(pq.read_table(path).filter(mask), tmp)
                os.replace(tmp, dedup)
            m[key] = dedup.name
        id_parts[k] = pq.read_table(std_dir / m["digests"])
        m["rows"] = id_parts[k].num_rows
    return rejected


def _partition(name, std_files, out_root: Path, client, split_def, settings: PartitionSettings,
               progress: bool, total_rows: int) -> dict:
    from hats import read_hats
    from hats_import.catalog.arguments import ImportArguments
    from hats_import.collection.arguments import CollectionArguments
    from hats_import.pipeline import pipeline_with_client

    bytes_per_row = max(1, sum(os.path.getsize(f) for f in std_files) * 3 // max(1, total_rows))
    rows_per_group = int(np.clip(settings.row_group_bytes // bytes_per_row, 100, 100_000))
    common = dict(progress_bar=progress, simple_progress_bar=True,
                  write_table_kwargs={"compression": "zstd",
                                      "compression_level": settings.compression_level},
                  tmp_dir=str(out_root / "_tmp"))
    out_root.mkdir(parents=True, exist_ok=True)
    args = ImportArguments(
        output_path=str(out_root / name), output_artifact_name=name,
        input_file_list=std_files, file_reader="parquet", ra_column="ra", dec_column="dec",
        lowest_healpix_order=split_def.order, highest_healpix_order=settings.highest_order,
        byte_pixel_threshold=int(settings.partition_bytes), expected_total_rows=total_rows,
        row_group_kwargs={"num_rows": rows_per_group}, **common)
    pipeline_with_client(args, client)
    cat = read_hats(out_root / name / name)
    deepest = max(p.order for p in cat.get_healpix_pixels())
    margin_order = max(deepest + settings.margin_delta, 10)
    import hats.pixel_math.healpix_shim as hp
    threshold = float(hp.order2mindist(margin_order) * 60.0)
    margin_name = f"{name}_{int(threshold)}arcs"
    coll = (CollectionArguments(output_path=str(out_root), output_artifact_name=name, **common)
            .catalog(output_artifact_name=name)
            .add_margin(margin_threshold=None, margin_order=margin_order,
                        output_artifact_name=margin_name, is_default=True))
    pipeline_with_client(coll, client)
    shutil.rmtree(out_root / "_tmp", ignore_errors=True)
    return {"order": margin_order, "threshold": round(threshold, 3), "name": margin_name}


def code_version() -> str:
    """Package version plus the git commit of a checkout, when there is one."""
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


def _print_rejections(name, rejected_inputs, rejected_rows, log, limit=20):
    if rejected_inputs:
        log(f"{name}: {len(rejected_inputs)} input(s) rejected:")
        for r in rejected_inputs[:limit]:
            log(f"  {r['input']}: {r['reason']}")
        if len(rejected_inputs) > limit:
            log(f"  ... and {len(rejected_inputs) - limit} more (see build.json)")
    if rejected_rows:
        log(f"{name}: {len(rejected_rows)} row(s) rejected:")
        for r in rejected_rows[:limit]:
            where = f"row {r.get('row')}" + (f" ({r['object_id']})" if r.get("object_id") else "")
            log(f"  {r['input']} {where}: {r.get('column', '')}: {r['reason']}")
        if len(rejected_rows) > limit:
            log(f"  ... and {len(rejected_rows) - limit} more (see build.json)")


def _summary(m: dict, path: Path, log) -> None:
    rows = m["rows"]
    log("")
    log(f"built {m['name']}{'  [MOCK DATA, seed %s]' % m['mock_seed'] if m['mock'] else ''}")
    log(f"  path              {path}")
    log(f"  rows              {rows['total']}  (train {rows['train']}, val {rows['val']}, test {rows['test']})")
    log(f"  inputs            {len(m['inputs'])} read, {len(m['rejected_inputs'])} rejected; "
        f"{len(m['rejected_rows'])} row(s) rejected")
    log(f"  content revision  {m['content_revision'][:16]}   build key {m['build_key'][:16]}")
    log(f"  margin cache      {m['partition']['margin_catalog']}")
    log(f"  time              standardize {m['timings_s']['standardize']} s, partition {m['timings_s']['partition']} s")
    _print_rejections(m["name"], m["rejected_inputs"], m["rejected_rows"], log, limit=10)
    log(f"  open with         datasets.load_dataset({str(path)!r}, streaming=True) or lsdb.open_catalog({str(path)!r})")
