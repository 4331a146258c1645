"""Cross-matching hub datasets by sky position into a paired catalog.

Matching uses ids and positions only and runs partition by partition on the workers
(mmu.pairing.partitioned: an LSDB crossmatch with a custom algorithm; margin caches make it
correct across partition borders); the driver gets counts, never rows. The modality columns are
then joined per left partition with pyarrow by a paired "builder" that runs through the ordinary
build engine, so a paired catalog gets the same validation, resumption, HATS partitioning, card
and build.json as any dataset.

Policies (docs/crossmatch.md):
- chaining: A B C matches B to A's positions, then C to B's (A's where B is missing);
- one-to-one: a right object is used at most once; when several left objects share their
  nearest right neighbour, the closest pair wins and the others count as unmatched (host
  association is many-to-one: a galaxy may host several transients);
- legitimate repeats (a DESI TARGETID in several coadds, a Legacy Survey source in two bricks):
  only rows flagged `primary` / `brick_primary` take part unless `primary_only=False`;
- inner join by default; `keep_unmatched` keeps left objects with the missing modality null;
- split: the most restrictive of the members' splits (test > val > train), so no test object is
  ever trained on; rows whose split is stricter than their left position's are counted in
  build.json (`split_conflicts`), and the `split` column is authoritative;
- `method="host"`: each transient goes to the candidate galaxy of smallest directional light
  radius distance (Sullivan et al. 2006; Gupta et al. 2016), with a cut-off `max_dlr`; inputs
  after the host catalogue are matched to the host's position within 1 arcsec.
"""
from __future__ import annotations

import functools
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mmu.engine.builder import Builder, BuilderConfig, RawInput
from mmu.hub.layout import MANIFEST, STAGING, NotBuilt, catalog_dir, dataset_dir, read_manifest
from mmu.hub.manifest import BuildManifest
from mmu.model.schema import INDEX_COLUMN, SPLIT_COLUMN, modalities_of
from mmu.registry.catalog import NAME_RE


class CrossmatchError(ValueError):
    """A cross-match cannot run: bad arguments, incompatible inputs, or no pairs found."""
    pass


# ----------------------------------------------------------------------------------------------
# geometry


def directional_light_radius(dra_arcsec, ddec_arcsec, r_eff, e1, e2, floor=0.05):
    """Directional light radius (arcsec) of a galaxy towards offsets (east, north).

    Tractor ellipse convention: |e| = hypot(e1, e2), b/a = (1-|e|)/(1+|e|), position angle of
    the major axis phi = atan2(e2, e1)/2 measured east of north. `r_eff` is the semi-major
    half-light radius; point sources get `floor`.
    """
    e = np.clip(np.hypot(e1, e2), 0, 0.99)
    a = np.maximum(np.asarray(r_eff, float), floor)
    b = np.maximum(a * (1 - e) / (1 + e), floor)
    phi = 0.5 * np.arctan2(e2, e1)
    direction = np.arctan2(dra_arcsec, ddec_arcsec)  # east of north
    psi = direction - phi
    return a * b / np.sqrt((a * np.sin(psi)) ** 2 + (b * np.cos(psi)) ** 2)


def _offsets_arcsec(ra1, dec1, ra2, dec2):
    """Offset of (ra1, dec1) from (ra2, dec2): east and north, arcsec (tangent plane)."""
    ra1, dec1, ra2, dec2 = map(np.radians, (ra1, dec1, ra2, dec2))
    cosc = np.sin(dec2) * np.sin(dec1) + np.cos(dec2) * np.cos(dec1) * np.cos(ra1 - ra2)
    xi = np.cos(dec1) * np.sin(ra1 - ra2) / cosc
    eta = (np.cos(dec2) * np.sin(dec1) - np.sin(dec2) * np.cos(dec1) * np.cos(ra1 - ra2)) / cosc
    return np.degrees(xi) * 3600, np.degrees(eta) * 3600


# ----------------------------------------------------------------------------------------------
# matching on ids and positions


@dataclass
class _Input:
    name: str
    prefix: str
    manifest: BuildManifest
    pixels: list = field(default_factory=list)


PRIMARY_COLUMNS = ("primary", "brick_primary")


def primary_column(hub: Path, name: str) -> str | None:
    """The dataset's flag for the preferred row among legitimate repeats, if it has one."""
    names = pq.read_schema(catalog_dir(hub, name) / "dataset" / "_common_metadata").names
    return next((c for c in PRIMARY_COLUMNS if c in names), None)


def _open(hub: Path, name: str, columns: list[str], primary_only: bool = False):
    import lsdb

    flag = primary_column(hub, name) if primary_only else None
    filters = [(flag, "==", True)] if flag else None
    return lsdb.open_catalog(str(dataset_dir(hub, name)), columns=columns, filters=filters)


def _partitions(root: Path, base: Path) -> tuple:
    """((order, pixel, file relative to `base`), ...) of the HATS catalog at `root`."""
    from hats import read_hats
    from hats.io import paths

    cat = read_hats(root)
    return tuple((p.order, p.pixel, Path(str(paths.pixel_catalog_file(root, p))).relative_to(base).as_posix())
                 for p in cat.get_healpix_pixels())


def _margin_partitions(hub: Path, name: str) -> tuple:
    from hats import read_hats

    margin = read_hats(dataset_dir(hub, name)).default_margin_catalog_dir
    return _partitions(Path(str(margin)), dataset_dir(hub, name)) if margin else ()


def _steps(hub: Path, inputs: list[_Input], radius: float, method: str, max_dlr: float,
           host_columns: tuple[str, str, str], primary_only: bool):
    from mmu.pairing.partitioned import Step

    steps = []
    for k, right in enumerate(inputs[1:], start=1):
        host = method == "host" and k == 1  # later members chain by position to the host
        cols = ("object_id", "ra", "dec", SPLIT_COLUMN) + (tuple(host_columns) if host else ())
        flag = primary_column(hub, right.name) if primary_only else None
        later = {} if k == 1 else dict(
            root=str(dataset_dir(hub, right.name)), columns=cols, primary_flag=flag,
            native_files=_partitions(catalog_dir(hub, right.name), dataset_dir(hub, right.name)),
            margin_files=_margin_partitions(hub, right.name))
        steps.append(Step(prefix=right.prefix, radius_arcsec=radius if method == "nearest" or host else 1.0,
                          host=host, one_to_one=method == "nearest", max_dlr=max_dlr,
                          host_columns=tuple(host_columns) if host else (),
                          partitions=_partitions(catalog_dir(hub, right.name), dataset_dir(hub, right.name)),
                          **later))
    return steps


def match_pairs(hub: Path, inputs: list[_Input], radius: float, method: str, max_dlr: float,
                host_columns: tuple[str, str, str], keep_unmatched: bool, pairs_dir: Path,
                primary_only: bool = True) -> tuple[dict, list[str]]:
    """Match on the workers, one aligned HEALPix pixel per task, writing the pair table under
    `pairs_dir` (one folder per left partition). Returns the summed counts and the left partition
    files that have pairs; nothing that grows with the rows comes back to the driver."""
    import dask

    from mmu.pairing.partitioned import ChainMatch, merge_stats, required_ring

    steps = _steps(hub, inputs, radius, method, max_dlr, host_columns, primary_only)
    ring = required_ring([s.radius_arcsec for s in steps], method == "nearest")
    left = _open(hub, inputs[0].name, ["object_id", "ra", "dec", SPLIT_COLUMN], primary_only)
    rcols = list(steps[0].columns or ("object_id", "ra", "dec", SPLIT_COLUMN)) + list(steps[0].host_columns)
    right = _open(hub, inputs[1].name, list(dict.fromkeys(rcols)), primary_only)
    algorithm = ChainMatch(steps, _partitions(catalog_dir(hub, inputs[0].name), dataset_dir(hub, inputs[0].name)),
                           ring, str(pairs_dir), keep_unmatched)
    xm = left.crossmatch(right, algorithm=algorithm, how="outer", suffixes=("_l", "_r"),
                         suffix_method="all_columns", log_changes=False)
    algorithm.meta = xm._ddf._meta if hasattr(xm, "_ddf") else xm.to_dask_dataframe()._meta
    pairs_dir.mkdir(parents=True, exist_ok=True)
    dask.compute(*xm.to_delayed())  # empty frames: the pairs and counts are on disk
    stats, left_files = merge_stats(pairs_dir)
    return stats, left_files


# ----------------------------------------------------------------------------------------------
# the paired builder: joins full rows for one left partition


@dataclass(frozen=True)
class PairedConfig(BuilderConfig):
    """Builder config of a paired catalog: the hub, input datasets with their column prefixes and
    revisions, the folder of matched pairs, the match settings and the match statistics (as JSON).
    """

    hub: str = ""
    inputs: tuple = ()
    prefixes: tuple = ()
    revisions: tuple = ()
    pairs: str = ""
    method: str = "nearest"
    radius_arcsec: float = 1.0
    keep_unmatched: bool = False
    stats_json: str = "{}"


class PairedBuilder(Builder):
    """Builds a paired catalog from matched pairs through the ordinary build engine.

    One row per matched pair; each input's modality columns (the left one's too) are added as `<prefix>_<column>`.
    """

    name = "crossmatch"
    version = "1"
    Config = PairedConfig

    @property
    def nullable_modalities(self):  # type: ignore[override]
        return self.config.keep_unmatched

    def _schemas(self) -> list[pa.Schema]:
        hub = Path(self.config.hub)
        out = []
        for n in self.config.inputs:
            meta = catalog_dir(hub, n) / "dataset" / "_common_metadata"
            out.append(pq.read_schema(meta))
        return out

    def modalities(self):
        mods = {}
        for prefix, schema in zip(self.config.prefixes, self._schemas()):
            for col, spec in modalities_of(schema).items():
                mods[f"{prefix}_{col}"] = spec
        return mods

    def extra_columns(self):
        mods = self.modalities()
        fields = []
        for k, (prefix, schema) in enumerate(zip(self.config.prefixes, self._schemas())):
            for f in schema:
                name = f"{prefix}_{f.name}"
                if f.name == INDEX_COLUMN or name in mods:
                    continue
                fields.append(f.with_name(name).with_nullable(k > 0 or f.nullable))
            if k > 0:
                fields.append(pa.field(f"{prefix}_match_dist_arcsec", pa.float64()))
                if self.config.method == "host" and k == 1:
                    fields.append(pa.field(f"{prefix}_host_dlr", pa.float64()))
        return fields

    def list_inputs(self, raw):
        from mmu.pairing.partitioned import pixel_dir

        hub = Path(self.config.hub)
        left = self.config.inputs[0]
        out = []
        for _, _, f in _partitions(catalog_dir(hub, left), dataset_dir(hub, left)):
            parts = sorted(str(p) for p in (Path(self.config.pairs) / pixel_dir(f)).glob("part-*.parquet"))
            if parts:
                out.append(RawInput(f, (str(dataset_dir(hub, left) / f), *parts)))
        return out

    def manifest_extra(self):
        import json
        return {"paired": True, "inputs_datasets": list(self.config.inputs),
                "inputs_revisions": list(self.config.revisions), "prefixes": list(self.config.prefixes),
                "method": self.config.method, "radius_arcsec": self.config.radius_arcsec,
                "keep_unmatched": self.config.keep_unmatched, "match": json.loads(self.config.stats_json)}

    def read(self, item):
        cfg = self.config
        hub = Path(cfg.hub)
        pairs = pa.concat_tables([pq.read_table(f) for f in item.paths[1:]]).sort_by("object_id")
        left = pq.read_table(item.paths[0])
        left = left.filter(pc.is_in(left.column("object_id"), value_set=pairs.column("object_id")))
        order = {o: i for i, o in enumerate(left.column("object_id").to_pylist())}
        take = pa.array([order[o] for o in pairs.column("object_id").to_pylist()])
        left = left.take(take)
        cols = {c: pairs.column(c) for c in ("object_id", "ra", "dec")}
        survey, release = self._survey_release
        cols["survey"] = pa.array([survey] * pairs.num_rows)
        cols["release"] = pa.array([release] * pairs.num_rows)
        cols[SPLIT_COLUMN] = pairs.column("paired_split")
        self._add_prefixed(cols, left, cfg.prefixes[0], None)
        for name, prefix in zip(cfg.inputs[1:], cfg.prefixes[1:]):
            rows = self._right_rows(hub, name, pairs, prefix)
            self._add_prefixed(cols, rows, prefix, pairs)
        yield pa.table(cols)

    @functools.cached_property
    def _survey_release(self) -> tuple[str, str]:
        manifests = [read_manifest(self.config.hub, n) for n in self.config.inputs]
        return ("+".join(sorted({m.survey for m in manifests})),
                "+".join(m.release for m in manifests))

    def _right_rows(self, hub, name, pairs, prefix) -> pa.Table:
        """The right rows in pair order (null rows where unmatched)."""
        ids = pairs.column(f"{prefix}_object_id")
        files = [f for f in set(pairs.column(f"{prefix}_partition").to_pylist()) if f]
        wanted = pc.is_in(pc.field("object_id"), value_set=ids.drop_null())
        parts = [pq.read_table(dataset_dir(hub, name) / f, filters=wanted) for f in sorted(files)]
        schema = pq.read_schema(catalog_dir(hub, name) / "dataset" / "_common_metadata")
        table = pa.concat_tables(parts) if parts else schema.empty_table()
        pos = {o: i for i, o in enumerate(table.column("object_id").to_pylist())}
        idx = [pos.get(o) if o is not None else None for o in ids.to_pylist()]
        missing = [o for o, i in zip(ids.to_pylist(), idx) if o is not None and i is None]
        if missing:
            raise RuntimeError(f"{name}: matched rows {missing[:3]} not found in their partitions")
        return table.take(pa.array(idx, pa.int64()))

    def _add_prefixed(self, cols, table, prefix, pairs):
        for f in table.schema:
            if f.name == INDEX_COLUMN:
                continue
            cols[f"{prefix}_{f.name}"] = table.column(f.name)
        if pairs is not None:
            cols[f"{prefix}_match_dist_arcsec"] = pairs.column(f"{prefix}_match_dist_arcsec")
            if f"{prefix}_host_dlr" in pairs.column_names:
                cols[f"{prefix}_host_dlr"] = pairs.column(f"{prefix}_host_dlr")


# ----------------------------------------------------------------------------------------------
# the driver


def crossmatch(names: list[str], hub: str | Path, out: str, *, radius_arcsec: float = 1.0,
               method: str = "nearest", keep_unmatched: bool = False, overwrite: bool = False,
               prefixes: list[str] | None = None, max_dlr: float = 4.0,
               host_columns: tuple[str, str, str] = ("shape_r", "shape_e1", "shape_e2"),
               primary_only: bool = True, client=None, workers: int | None = None, scheduler: str | None = None):
    """Match `names` left to right into the paired catalog HUB/out (a hub dataset)."""
    from mmu.engine.build import BuildResult, PartitionSettings, build_inputs
    from mmu.engine.cluster import dask_client
    from mmu.registry.catalog import load_catalog

    log = logging.getLogger(__name__)
    hub = Path(hub).resolve()
    inputs = _check(names, hub, out, radius_arcsec, method, overwrite, prefixes)
    if method == "host":
        schema = pq.read_schema(catalog_dir(hub, inputs[1].name) / "dataset" / "_common_metadata")
        missing = [c for c in host_columns if c not in schema.names]
        if missing:
            raise CrossmatchError(f"--method host needs the host catalog's size and shape columns "
                                  f"{list(host_columns)}; {inputs[1].name} lacks {missing}")
    with dask_client(workers, scheduler, client) as client:
        import dask
        with dask.config.set(scheduler=client):
            t0 = time.perf_counter()
            revisions = [i.manifest.content_revision for i in inputs]
            pairs_dir = _pairs_dir(hub, out, inputs, revisions, radius_arcsec, method, keep_unmatched,
                                   max_dlr, primary_only)
            stats, _ = match_pairs(hub, inputs, radius_arcsec, method, max_dlr, host_columns,
                                   keep_unmatched, pairs_dir, primary_only)
        stats["primary_only"] = {i.prefix: primary_column(hub, i.name) if primary_only else None
                                 for i in inputs}
        log.info(f"matched {stats['rows']} of {stats['left_rows']} {names[0]} objects "
                 f"in {time.perf_counter() - t0:.1f} s: {stats['matched']}")
        if stats["rows"] == 0:
            shutil.rmtree(pairs_dir, ignore_errors=True)
            raise CrossmatchError(f"no pairs within {radius_arcsec} arcsec between {', '.join(names)}")
        entry = _entry(out, inputs)
        import json
        builder = PairedBuilder(PairedConfig(
            hub=str(hub), inputs=tuple(names), prefixes=tuple(i.prefix for i in inputs),
            revisions=tuple(revisions), pairs=str(pairs_dir), method=method,
            radius_arcsec=float(radius_arcsec), keep_unmatched=keep_unmatched,
            stats_json=json.dumps(stats, sort_keys=True)))
        split_def = load_catalog().split_definition
        mock = [i.manifest for i in inputs if i.manifest.mock]
        sim = {"seed": mock[0].mock_seed, "simulator_version": mock[0].simulator_version} if mock else None
        if overwrite and (dataset_dir(hub, out) / MANIFEST).exists():
            (dataset_dir(hub, out) / MANIFEST).unlink()
        result: BuildResult = build_inputs(entry, builder, builder.list_inputs(hub), raw=hub, hub=hub,
                                           client=client, split_def=split_def, sim=sim, strict=False,
                                           settings=PartitionSettings())
        shutil.rmtree(pairs_dir, ignore_errors=True)
        return result


def _check(names, hub: Path, out, radius, method, overwrite, prefixes) -> list[_Input]:
    if len(names) < 2:
        raise CrossmatchError("crossmatch needs at least two datasets")
    if len(set(names)) != len(names):
        raise CrossmatchError(f"a dataset appears twice in {names}")
    if not (radius > 0):
        raise CrossmatchError(f"--radius-arcsec must be > 0, got {radius}")
    if method not in ("nearest", "host"):
        raise CrossmatchError(f"--method must be 'nearest' or 'host', got {method!r}")
    if not NAME_RE.match(out or ""):
        raise CrossmatchError(f"output name {out!r} must be lower case letters, digits and '_'")
    if out in names:
        raise CrossmatchError(f"output name {out!r} is one of the inputs")
    if dataset_dir(hub, out).exists() and not overwrite:
        raise CrossmatchError(f"{dataset_dir(hub, out)} exists; pass --overwrite to replace it")
    inputs = []
    for n in names:
        try:
            m = read_manifest(hub, n)
        except NotBuilt as e:
            raise CrossmatchError(str(e)) from None
        inputs.append(_Input(n, "", m))
    versions = {i.manifest.schema_version for i in inputs}
    if len(versions) > 1:
        raise CrossmatchError("schema versions differ: " + ", ".join(
            f"{i.name}={i.manifest.schema_version}" for i in inputs) + "; rebuild the older ones")
    splits = {i.manifest.split.hash for i in inputs}
    if len(splits) > 1:
        raise CrossmatchError("the inputs were built with different split definitions; rebuild them")
    for i in inputs[1:]:
        thr = i.manifest.partition.margin_threshold_arcsec
        if radius > thr:
            raise CrossmatchError(f"--radius-arcsec {radius} exceeds the margin cache of {i.name} "
                                  f"({thr} arcsec): matches near partition borders would be lost")
    # matching runs per HEALPix pixel with a ring of neighbours (mmu.pairing.partitioned): the left
    # margin must hold the ring, the first member's twice the ring (LSDB's outer join), later ones
    # the ring plus their own radius
    from mmu.pairing.partitioned import required_ring

    radii = [radius if method == "nearest" or k == 1 else 1.0 for k in range(1, len(inputs))]
    ring = required_ring(radii, method == "nearest")
    for k, i in enumerate(inputs):
        need = ring if k == 0 else 2 * ring if k == 1 else ring + radii[k - 1]
        thr = i.manifest.partition.margin_threshold_arcsec
        if need > thr:
            raise CrossmatchError(
                f"--radius-arcsec {radius} exceeds the margin cache of {i.name} ({thr} arcsec): matching "
                f"{len(inputs)} catalogs partition by partition needs {need:g} arcsec of margin; use a smaller "
                f"radius or rebuild {i.name} with a wider margin")
    surveys = [i.manifest.survey for i in inputs]
    auto = [s if surveys.count(s) == 1 else i.name for s, i in zip(surveys, inputs)]
    chosen = prefixes or auto
    if len(chosen) != len(inputs) or len(set(chosen)) != len(chosen) or not all(NAME_RE.match(p) for p in chosen):
        raise CrossmatchError(f"prefixes {chosen} must be unique lower-case names, one per input")
    for i, p in zip(inputs, chosen):
        i.prefix = p
    return inputs


def _pairs_dir(hub: Path, out, inputs, revisions, radius, method, keep_unmatched, max_dlr, primary_only) -> Path:
    """A fresh staging folder for the pair table, named by what determines it."""
    from mmu.model.hashing import sha256_json

    key = sha256_json([revisions, radius, method, [i.prefix for i in inputs], keep_unmatched, max_dlr,
                       primary_only])[:16]
    path = hub / STAGING / f"pairs-{out}-{key}"
    shutil.rmtree(path, ignore_errors=True)  # a stale table from an interrupted run
    return path


def _entry(out: str, inputs: list[_Input]):
    from mmu.registry.catalog import DatasetEntry, License, RawSource, load_catalog

    cat = load_catalog()
    entries = []
    for i in inputs:
        try:
            entries.append(cat.dataset(i.name))
        except KeyError:
            entries.append(None)
    citations, acks, licenses = [], [], []
    for e in entries:
        if e is None:
            continue
        citations += [c for c in e.citation if c not in citations]
        if e.acknowledgement and e.acknowledgement not in acks:
            acks.append(e.acknowledgement)
        licenses.append(e.license)
    ids = sorted({lic.id for lic in licenses})
    lic = licenses[0] if len(ids) == 1 else License(
        id="other", url="see the input datasets' cards", non_commercial=any(x.non_commercial for x in licenses),
        no_derivatives=any(x.no_derivatives for x in licenses),
        notes="combined terms of: " + ", ".join(f"{i.name} ({e.license.id})" for i, e in zip(inputs, entries) if e))
    return DatasetEntry.model_construct(
        name=out, survey="+".join(i.manifest.survey for i in inputs),
        release="+".join(i.manifest.release for i in inputs),
        description=f"Paired catalog: {' x '.join(i.name for i in inputs)} matched by sky position "
                    f"(mmu crossmatch); each input's columns carry its prefix "
                    f"({', '.join(i.prefix + '_' for i in inputs)}).",
        modalities=sorted({m for e in entries if e for m in e.modalities}),
        builder="mmu.pairing.crossmatch:PairedBuilder", builder_config={},
        raw=RawSource(archive="hub", pattern=" x ".join(i.name for i in inputs), docs="docs/crossmatch.md"),
        license=lic, citation=citations, acknowledgement="\n\n".join(acks), homepage="docs/crossmatch.md",
        expected_rows=None, mock_only=any(i.manifest.mock for i in inputs), keywords=["paired"])
