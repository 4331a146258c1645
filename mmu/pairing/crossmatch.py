"""Cross-matching hub datasets by sky position into a paired catalog.

Matching uses ids and positions only (LSDB on Dask; margin caches make it correct across
partition borders). The modality columns are then joined per left partition with pyarrow by a
paired "builder" that runs through the ordinary build engine, so a paired catalog gets the same
validation, resumption, HATS partitioning, card and build.json as any dataset.

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
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mmu.engine.builder import Builder, BuilderConfig, RawInput
from mmu.registry.catalog import NAME_RE
from mmu.hub.layout import MANIFEST, STAGING, NotBuilt, catalog_dir, dataset_dir, read_manifest
from mmu.model.schema import INDEX_COLUMN, SPLIT_COLUMN, modalities_of
from mmu.model.splits import most_restrictive



class CrossmatchError(ValueError):
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
    manifest: dict
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


def _nearest(anchor, right, radius: float, n_neighbors: int, progress: bool):
    xm = anchor.crossmatch(right, n_neighbors=n_neighbors, radius_arcsec=radius, suffixes=("_l", "_r"), suffix_method="all_columns")
    df = xm.compute(progress_bar=progress)
    df = pd.DataFrame({c: np.asarray(df[c]) for c in df.columns if not c.startswith("_healpix")})
    return df


def match_pairs(hub: Path, inputs: list[_Input], radius: float, method: str, max_dlr: float,
                host_columns: tuple[str, str, str], keep_unmatched: bool,
                progress: bool = False, primary_only: bool = True) -> tuple[pd.DataFrame, dict]:
    """The paired object ids: one row per kept left object, `<prefix>_object_id` per input."""
    import lsdb

    left = inputs[0]
    base_cols = ["object_id", "ra", "dec", SPLIT_COLUMN]
    left_df = _open(hub, left.name, base_cols, primary_only).compute(progress_bar=progress)
    base = pd.DataFrame({
        "object_id": np.asarray(left_df["object_id"], dtype=object),
        "ra": np.asarray(left_df["ra"], float), "dec": np.asarray(left_df["dec"], float),
        SPLIT_COLUMN: np.asarray(left_df[SPLIT_COLUMN], dtype=object)})
    base["anchor_ra"], base["anchor_dec"] = base["ra"], base["dec"]
    stats = {"left_rows": int(len(base)), "matched": {}, "many_to_one_dropped": {}}
    anchor_cat = _open(hub, left.name, ["object_id", "ra", "dec"], primary_only)
    for k, right in enumerate(inputs[1:], start=1):
        if k > 1:  # chain: anchor on the previous member's position (left's when it is missing)
            frame = pd.DataFrame({"object_id": base["object_id"], "ra": base["anchor_ra"],
                                  "dec": base["anchor_dec"]})
            anchor_cat = lsdb.from_dataframe(frame, ra_column="ra", dec_column="dec",
                                             margin_threshold=max(radius * 2, 10.0))
        host = method == "host" and k == 1  # later members chain by position to the host
        rcols = ["object_id", "ra", "dec", SPLIT_COLUMN]
        if host:
            rcols += list(host_columns)
        rcat = _open(hub, right.name, rcols, primary_only)
        df = _nearest(anchor_cat, rcat, radius if method == "nearest" or host else 1.0, 16 if host else 1, progress)
        df = df.rename(columns={"object_id_l": "anchor_id", "object_id_r": "rid"})
        df["dist"] = df.pop("_dist_arcsec")
        if host:
            east, north = _offsets_arcsec(df["ra_l"], df["dec_l"], df["ra_r"], df["dec_r"])
            r_eff, e1, e2 = (df[f"{c}_r"].to_numpy(float) for c in host_columns)
            dlr = directional_light_radius(east, north, r_eff, e1, e2)
            df["dlr"] = df["dist"] / dlr
            df = df[df["dlr"] < max_dlr].sort_values(["anchor_id", "dlr", "rid"])
            df = df.drop_duplicates("anchor_id", keep="first")
        else:
            df["dlr"] = np.nan
        # one-to-one: the closest left object keeps a shared right neighbour -- except for hosts:
        # a galaxy can host several transients
        before = len(df)
        if method == "nearest":  # after a host step, later members follow the (shared) host
            df = df.sort_values(["rid", "dist", "anchor_id"]).drop_duplicates("rid", keep="first")
        stats["many_to_one_dropped"][right.prefix] = int(before - len(df))
        df = df.set_index("anchor_id")
        p = right.prefix
        idx = base["object_id"]
        base[f"{p}_object_id"] = idx.map(df["rid"]).astype(object)
        base[f"{p}_split"] = idx.map(df[f"{SPLIT_COLUMN}_r"]).astype(object)
        base[f"{p}_match_dist_arcsec"] = idx.map(df["dist"]).astype(float)
        base[f"{p}_ra_"] = idx.map(df["ra_r"]).astype(float)
        base[f"{p}_dec_"] = idx.map(df["dec_r"]).astype(float)
        if host:
            base[f"{p}_host_dlr"] = idx.map(df["dlr"]).astype(float)
        hit = base[f"{p}_object_id"].notna()
        stats["matched"][p] = int(hit.sum())
        base.loc[hit, "anchor_ra"] = idx[hit].map(df["ra_r"]).astype(float)
        base.loc[hit, "anchor_dec"] = idx[hit].map(df["dec_r"]).astype(float)
    id_cols = [f"{i.prefix}_object_id" for i in inputs[1:]]
    if not keep_unmatched:
        base = base[base[id_cols].notna().all(axis=1)]
    stats["rows"] = int(len(base))
    return base.drop(columns=["anchor_ra", "anchor_dec"]).reset_index(drop=True), stats


def _partition_files(hub: Path, name: str) -> dict[tuple[int, int], str]:
    from hats import read_hats
    from hats.io import paths

    root = catalog_dir(hub, name)
    cat = read_hats(root)
    return {(p.order, p.pixel): Path(str(paths.pixel_catalog_file(root, p))).relative_to(dataset_dir(hub, name)).as_posix()
            for p in cat.get_healpix_pixels()}


def _locate(ra, dec, partitions: dict[tuple[int, int], str]) -> np.ndarray:
    """The partition file holding each position (by its HEALPix pixel at the partition order)."""
    from hats.pixel_math.spatial_index import compute_spatial_index

    h29 = np.asarray(compute_spatial_index(np.asarray(ra, float), np.asarray(dec, float)), np.int64)
    out = np.empty(len(h29), dtype=object)
    for order in sorted({o for o, _ in partitions}):
        pix = h29 >> (2 * (29 - order))
        for i in np.flatnonzero(pd.isna(out)):
            f = partitions.get((order, int(pix[i])))
            if f is not None:
                out[i] = f
    return out


# ----------------------------------------------------------------------------------------------
# the paired builder: joins full rows for one left partition


@dataclass(frozen=True)
class PairedConfig(BuilderConfig):
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
        pairs = pq.read_table(self.config.pairs, columns=["left_partition"])
        files = sorted(set(pairs.column("left_partition").to_pylist()))
        hub = Path(self.config.hub)
        left = self.config.inputs[0]
        return [RawInput(f, (str(dataset_dir(hub, left) / f), self.config.pairs)) for f in files]

    def manifest_extra(self):
        import json
        return {"paired": True, "inputs_datasets": list(self.config.inputs),
                "inputs_revisions": list(self.config.revisions), "prefixes": list(self.config.prefixes),
                "method": self.config.method, "radius_arcsec": self.config.radius_arcsec,
                "keep_unmatched": self.config.keep_unmatched, "match": json.loads(self.config.stats_json)}

    def read(self, item):
        cfg = self.config
        hub = Path(cfg.hub)
        pairs = pq.read_table(cfg.pairs, filters=[("left_partition", "=", item.key)])
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
        for k, (name, prefix) in enumerate(zip(cfg.inputs[1:], cfg.prefixes[1:]), start=1):
            rows = self._right_rows(hub, name, pairs, prefix)
            self._add_prefixed(cols, rows, prefix, pairs)
        yield pa.table(cols)

    @functools.cached_property
    def _survey_release(self) -> tuple[str, str]:
        manifests = [read_manifest(self.config.hub, n) for n in self.config.inputs]
        return ("+".join(sorted({m["survey"] for m in manifests})),
                "+".join(m["release"] for m in manifests))

    def _right_rows(self, hub, name, pairs, prefix) -> pa.Table:
        """The right rows in pair order (null rows where unmatched)."""
        ids = pairs.column(f"{prefix}_object_id")
        files = [f for f in set(pairs.column(f"{prefix}_partition").to_pylist()) if f]
        parts = [pq.read_table(dataset_dir(hub, name) / f, filters=pc.is_in(pc.field("object_id"), value_set=ids.drop_null()))
                 for f in sorted(files)]
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
               primary_only: bool = True, client=None, workers: int | None = None, scheduler: str | None = None,
               progress: bool = True, log=print):
    """Match `names` left to right into the paired catalog HUB/out (a hub dataset)."""
    from mmu.engine.build import BuildResult, PartitionSettings, build_inputs
    from mmu.engine.cluster import dask_client
    from mmu.registry.catalog import load_catalog

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
            pairs, stats = match_pairs(hub, inputs, radius_arcsec, method, max_dlr, host_columns,
                                      keep_unmatched, progress, primary_only)
        stats["primary_only"] = {i.prefix: primary_column(hub, i.name) if primary_only else None
                                 for i in inputs}
        log(f"matched {stats['rows']} of {stats['left_rows']} {names[0]} objects "
            f"in {time.perf_counter() - t0:.1f} s: {stats['matched']}")
        if len(pairs) == 0:
            raise CrossmatchError(f"no pairs within {radius_arcsec} arcsec between {', '.join(names)}")
        revisions = [i.manifest["content_revision"] for i in inputs]
        pairs_path = _write_pairs(hub, out, inputs, pairs, revisions, radius_arcsec, method, stats)
        entry = _entry(out, inputs)
        import json
        builder = PairedBuilder(PairedConfig(
            hub=str(hub), inputs=tuple(names), prefixes=tuple(i.prefix for i in inputs),
            revisions=tuple(revisions), pairs=str(pairs_path), method=method,
            radius_arcsec=float(radius_arcsec), keep_unmatched=keep_unmatched,
            stats_json=json.dumps(stats, sort_keys=True)))
        split_def = load_catalog().split_definition
        mock = [i.manifest for i in inputs if i.manifest.get("mock")]
        sim = {"seed": mock[0].get("mock_seed"), "simulator_version": mock[0].get("simulator_version")} if mock else None
        if overwrite and (dataset_dir(hub, out) / MANIFEST).exists():
            (dataset_dir(hub, out) / MANIFEST).unlink()
        result: BuildResult = build_inputs(entry, builder, builder.list_inputs(hub), raw=hub, hub=hub,
                                           client=client, split_def=split_def, sim=sim, strict=False,
                                           progress=progress, settings=PartitionSettings(), log=log)
        pairs_path.unlink(missing_ok=True)
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
    versions = {i.manifest["schema_version"] for i in inputs}
    if len(versions) > 1:
        raise CrossmatchError("schema versions differ: " + ", ".join(
            f"{i.name}={i.manifest['schema_version']}" for i in inputs) + "; rebuild the older ones")
    splits = {i.manifest["split"]["hash"] for i in inputs}
    if len(splits) > 1:
        raise CrossmatchError("the inputs were built with different split definitions; rebuild them")
    for i in inputs[1:]:
        thr = i.manifest["partition"]["margin_threshold_arcsec"]
        if radius > thr:
            raise CrossmatchError(f"--radius-arcsec {radius} exceeds the margin cache of {i.name} "
                                  f"({thr} arcsec): matches near partition borders would be lost")
    surveys = [i.manifest["survey"] for i in inputs]
    auto = [s if surveys.count(s) == 1 else i.name for s, i in zip(surveys, inputs)]
    chosen = prefixes or auto
    if len(chosen) != len(inputs) or len(set(chosen)) != len(chosen) or not all(NAME_RE.match(p) for p in chosen):
        raise CrossmatchError(f"prefixes {chosen} must be unique lower-case names, one per input")
    for i, p in zip(inputs, chosen):
        i.prefix = p
    return inputs


def _write_pairs(hub, out, inputs, pairs: pd.DataFrame, revisions, radius, method, stats) -> Path:
    from mmu.model.hashing import sha256_json

    key = sha256_json([revisions, radius, method, [i.prefix for i in inputs], len(pairs)])[:16]
    path = hub / STAGING / f"pairs-{out}-{key}.parquet"
    left_parts = _partition_files(hub, inputs[0].name)
    table = {"object_id": pairs["object_id"].astype(str).to_numpy(), "ra": pairs["ra"].to_numpy(),
             "dec": pairs["dec"].to_numpy()}
    table["left_partition"] = _locate(pairs["ra"], pairs["dec"], left_parts)
    member_splits = [pairs[SPLIT_COLUMN].to_numpy()]
    for k, i in enumerate(inputs[1:], start=1):
        p = i.prefix
        ids = pairs[f"{p}_object_id"]
        table[f"{p}_object_id"] = pa.array([None if pd.isna(v) else str(v) for v in ids], pa.string())
        table[f"{p}_match_dist_arcsec"] = pairs[f"{p}_match_dist_arcsec"].to_numpy(float)
        if method == "host" and k == 1:
            table[f"{p}_host_dlr"] = pairs[f"{p}_host_dlr"].to_numpy(float)
        rp = _partition_files(hub, i.name)
        hit = ids.notna().to_numpy()
        loc = np.full(len(pairs), None, dtype=object)
        if hit.any():  # the right row's own partition, from its position in the match
            loc[hit] = _locate(pairs[f"{p}_ra_"].to_numpy()[hit], pairs[f"{p}_dec_"].to_numpy()[hit], rp)
        table[f"{p}_partition"] = pa.array(list(loc), pa.string())
        member_splits.append(pairs[f"{p}_split"].to_numpy())
    paired = [most_restrictive(*[s for s in row if isinstance(s, str)]) for row in zip(*member_splits)]
    table["paired_split"] = np.array(paired, dtype=object)
    left_split = pairs[SPLIT_COLUMN].to_numpy()
    stats["split_conflicts"] = int(sum(a != b for a, b in zip(paired, left_split)))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(pa.table(table).sort_by("object_id"), tmp)
    tmp.replace(path)
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
        name=out, survey="+".join(i.manifest["survey"] for i in inputs),
        release="+".join(i.manifest["release"] for i in inputs),
        description=f"Paired catalog: {' x '.join(i.name for i in inputs)} matched by sky position "
                    f"(mmu crossmatch); each input's columns carry its prefix "
                    f"({', '.join(i.prefix + '_' for i in inputs)}).",
        modalities=sorted({m for e in entries if e for m in e.modalities}),
        builder="mmu.pairing.crossmatch:PairedBuilder", builder_config={},
        raw=RawSource(archive="hub", pattern=" x ".join(i.name for i in inputs), docs="docs/crossmatch.md"),
        license=lic, citation=citations, acknowledgement="\n\n".join(acks), homepage="docs/crossmatch.md",
        expected_rows=None, mock_only=any(i.manifest.get("mock") for i in inputs), keywords=["paired"])
