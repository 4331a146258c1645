"""Partition-by-partition matching: the pair table is computed and written by the workers.

`mmu crossmatch` runs one LSDB crossmatch of the left catalog against the first right member
with a custom algorithm (`ChainMatch`, LSDB's `AbstractCrossmatchAlgorithm` hook) and
`how="outer"`, so that every task sees, for one aligned HEALPix pixel:

- the left rows native to the pixel, followed by *neighbour* rows from the left margin cache (and
  from a coarser left partition) within `radius_arcsec` of the pixel;
- the first member's rows in and around the pixel (its partition plus its margin cache);
- later members of a chain are read by the task itself, from the member's partitions that overlap
  the pixel plus their margin caches.

Ownership rule: a pair is emitted only by the task whose pixel holds its left object. The
one-to-one policy (the closest left object keeps a shared right neighbour) is resolved in every
task over native *and* neighbour left objects. The ring of neighbours is wide enough to hold every
left object that can claim a right object matched by a native one, so all tasks that see a
contested right object (the one holding it and the ones across the border) agree on its winner,
and the result equals the global computation. `required_ring` gives the ring's width; `_check`
refuses a request whose ring the margin caches cannot hold.

Each task writes its pairs to one Parquet file under the staging directory and returns a few
counts; the driver holds only the task graph and those counts.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from lsdb.core.crossmatch.abstract_crossmatch_algorithm import AbstractCrossmatchAlgorithm
from lsdb.core.crossmatch.kdtree_utils import _find_crossmatch_indices, _get_chord_distance, _lon_lat_to_xyz

from mmu.hub.layout import atomic_path, atomic_write
from mmu.model.schema import SPLIT_COLUMN
from mmu.model.splits import most_restrictive

SPATIAL_INDEX = "_healpix_29"


def required_ring(radii: list[float], one_to_one: bool) -> float:
    """Width (arcsec) of the neighbour ring around a pixel that makes per-pixel results exact.

    With one-to-one matching a right object matched at step k can be claimed by left objects whose
    anchors lie within 2 r of each other, and an anchor is displaced from its left position by at
    most the previous steps' radii: 4 r per step covers both. Many-to-one (host) steps decide
    each left object alone and need no ring; LSDB's outer join still wants a positive one.
    """
    if not one_to_one:
        return float(max(radii))
    return float(sum(4 * r for r in radii))


@dataclass(frozen=True)
class Step:
    """One member of the chain, matched to the current anchor positions."""
    prefix: str
    radius_arcsec: float
    host: bool = False                 # directional-light-radius association (many-to-one)
    one_to_one: bool = True
    max_dlr: float = 4.0
    host_columns: tuple = ()
    # later members: read by the task from their partitions (relative path per (order, pixel))
    root: str = ""
    native_files: tuple = ()           # ((order, pixel, relative file), ...)
    margin_files: tuple = ()
    columns: tuple = ()
    primary_flag: str | None = None
    partitions: tuple = ()             # the member's own partition files, to locate its rows


def _overlapping(files, order: int, pixel: int):
    for o, p, f in files:
        if (o <= order and pixel >> 2 * (order - o) == p) or (o > order and p >> 2 * (o - order) == pixel):
            yield o, p, f


def _read(path: Path, columns, flag) -> pd.DataFrame:
    filters = [(flag, "==", True)] if flag else None
    return pq.read_table(path, columns=[SPATIAL_INDEX, *columns], filters=filters).to_pandas()


def load_member(step: Step, order: int, pixel: int) -> pd.DataFrame:
    """A later member's rows in and around pixel (order, pixel): overlapping partitions + margins."""
    root = Path(step.root)
    native = list(_overlapping(step.native_files, order, pixel))
    frames = [_read(root / f, step.columns, step.primary_flag) for _, _, f in native]
    for _, _, f in _overlapping(step.margin_files, order, pixel):
        m = _read(root / f, step.columns, step.primary_flag)
        # a margin row that is native to another loaded partition is already there
        h = m[SPATIAL_INDEX].to_numpy(np.int64)
        seen = np.zeros(len(m), bool)
        for o, p, _ in native:
            seen |= (h >> 2 * (29 - o)) == p
        frames.append(m[~seen])
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=object if c == "object_id" else float) for c in step.columns})
    return pd.concat(frames, ignore_index=True)


def locate(ra, dec, partitions) -> np.ndarray:
    """The partition file holding each position, from ((order, pixel, file), ...)."""
    from hats.pixel_math.spatial_index import compute_spatial_index

    out = np.full(len(ra), None, dtype=object)
    if len(out) == 0:
        return out
    h29 = np.asarray(compute_spatial_index(np.asarray(ra, float), np.asarray(dec, float)), np.int64)
    by_order: dict[int, dict[int, str]] = {}
    for o, p, f in partitions:
        by_order.setdefault(o, {})[p] = f
    for o in sorted(by_order):
        pix = h29 >> 2 * (29 - o)
        todo = np.flatnonzero(pd.isna(out))
        out[todo] = [by_order[o].get(int(x)) for x in pix[todo]]
    return out


class ChainMatch(AbstractCrossmatchAlgorithm):
    """The whole chain of `mmu crossmatch` for the left objects native to one aligned pixel."""

    extra_columns = None

    def __init__(self, steps: list[Step], left_partitions, ring_arcsec: float, out_dir: str,
                 keep_unmatched: bool):
        super().__init__()
        self.steps = steps
        self.left_partitions = tuple(left_partitions)
        self.radius_arcsec = ring_arcsec  # LSDB's outer join reads the neighbour ring from here
        self.out_dir = out_dir
        self.keep_unmatched = keep_unmatched
        self.meta = None  # the crossmatch's empty result frame, set once LSDB has planned it

    def crossmatch(self, crossmatch_args, how, suffixes, suffix_method="all_columns"):
        """Match, write this pixel's pairs and counts under `out_dir`; the frame LSDB gets back is
        empty, so that nothing per row travels to the driver."""
        frame, (order, pixel) = self.match(crossmatch_args)
        host = self.steps[0].prefix if self.steps[0].host else None
        write_part(frame, self.out_dir, f"{order}-{pixel}", [s.prefix for s in self.steps], host,
                   self.keep_unmatched)
        return self.meta

    def match(self, args) -> tuple[pd.DataFrame | None, tuple[int, int]]:
        """This pixel's native left objects with their matches, and the aligned pixel."""
        left = args.left_df
        native = int(args.left_native_len or 0)
        order, pixel = args.left_order, args.left_pixel
        if args.right_order is not None and (order is None or args.right_order > order):
            order, pixel = args.right_order, args.right_pixel
        if args.left_order is None or native == 0:
            return None, (order, pixel)
        ids = np.asarray(left["object_id"], dtype=object)
        ra = np.asarray(left["ra"], float)
        dec = np.asarray(left["dec"], float)
        out = {"object_id": ids[:native], "ra": ra[:native], "dec": dec[:native],
               SPLIT_COLUMN: np.asarray(left[SPLIT_COLUMN], dtype=object)[:native]}
        out["left_partition"] = np.full(native, _file_of(self.left_partitions, args.left_order, args.left_pixel),
                                        dtype=object)
        anchor_ra, anchor_dec = ra.copy(), dec.copy()
        for k, step in enumerate(self.steps):
            right = args.right_df if k == 0 else load_member(step, order, pixel)
            res = self._step(step, ids, anchor_ra, anchor_dec, right)
            hit = res["rid"].notna().to_numpy()
            anchor_ra = np.where(hit, res["ra_r"].to_numpy(float), anchor_ra)
            anchor_dec = np.where(hit, res["dec_r"].to_numpy(float), anchor_dec)
            p = step.prefix
            out[f"{p}_object_id"] = res["rid"].to_numpy(object)[:native]
            out[f"{p}_split"] = res["split_r"].to_numpy(object)[:native]
            out[f"{p}_match_dist_arcsec"] = res["dist"].to_numpy(float)[:native]
            if step.host:
                out[f"{p}_host_dlr"] = res["dlr"].to_numpy(float)[:native]
            out[f"{p}_dropped"] = res["dropped"].to_numpy(bool)[:native]
            out[f"{p}_partition"] = np.full(native, None, dtype=object)
            h = hit[:native]
            out[f"{p}_partition"][h] = locate(res["ra_r"].to_numpy(float)[:native][h],
                                              res["dec_r"].to_numpy(float)[:native][h], step.partitions)
        return pd.DataFrame(out), (order, pixel)

    @staticmethod
    def _step(step: Step, ids, anchor_ra, anchor_dec, right: pd.DataFrame) -> pd.DataFrame:
        """Per left row: the matched right object (or null), its split, distance and position."""
        n = len(ids)
        res = pd.DataFrame({"rid": pd.Series([None] * n, dtype=object),
                            "split_r": pd.Series([None] * n, dtype=object),
                            "dist": np.full(n, np.nan), "ra_r": np.full(n, np.nan),
                            "dec_r": np.full(n, np.nan), "dlr": np.full(n, np.nan),
                            "dropped": np.zeros(n, bool)})
        if len(right) == 0 or n == 0:
            return res
        chord, li, ri = _find_crossmatch_indices(
            _lon_lat_to_xyz(anchor_ra, anchor_dec),
            _lon_lat_to_xyz(np.asarray(right["ra"], float), np.asarray(right["dec"], float)),
            n_neighbors=16 if step.host else 1, min_distance=_get_chord_distance(0.0),
            max_distance=_get_chord_distance(step.radius_arcsec))
        df = pd.DataFrame({
            "li": li, "anchor_id": ids[li], "rid": np.asarray(right["object_id"], dtype=object)[ri],
            "split_r": np.asarray(right[SPLIT_COLUMN], dtype=object)[ri],
            "ra_r": np.asarray(right["ra"], float)[ri], "dec_r": np.asarray(right["dec"], float)[ri],
            "dist": np.degrees(2.0 * np.arcsin(0.5 * chord)) * 3600})
        if step.host:
            from mmu.pairing.crossmatch import _offsets_arcsec, directional_light_radius

            east, north = _offsets_arcsec(anchor_ra[li], anchor_dec[li], df["ra_r"], df["dec_r"])
            r_eff, e1, e2 = (np.asarray(right[c], float)[ri] for c in step.host_columns)
            df["dlr"] = df["dist"] / directional_light_radius(east, north, r_eff, e1, e2)
            df = df[df["dlr"] < step.max_dlr].sort_values(["anchor_id", "dlr", "rid"])
            df = df.drop_duplicates("anchor_id", keep="first")
        else:
            df["dlr"] = np.nan
        if step.one_to_one:
            kept = df.sort_values(["rid", "dist", "anchor_id"]).drop_duplicates("rid", keep="first")
            res.loc[np.setdiff1d(df["li"].to_numpy(), kept["li"].to_numpy()), "dropped"] = True
            df = kept
        rows = df["li"].to_numpy()
        for c in ("rid", "split_r", "dist", "ra_r", "dec_r", "dlr"):
            res.loc[rows, c] = df[c].to_numpy()
        return res


def _file_of(partitions, order, pixel) -> str:
    for o, p, f in partitions:
        if o == order and p == pixel:
            return f
    raise KeyError(f"left partition Norder={order} Npix={pixel} is not in the catalog")


def pixel_dir(left_file: str) -> str:
    """Directory name under the pairs staging folder for one left partition file."""
    return left_file.replace("/", "_").replace("=", "").removesuffix(".parquet")


def write_part(frame: pd.DataFrame | None, out_dir: str, part: str, prefixes: list[str],
               host_prefix: str | None, keep_unmatched: bool) -> dict:
    """Write one task's pairs (Parquet, one file per left partition) and its counts (JSON)."""
    stats = {"left_rows": 0, "rows": 0, "split_conflicts": 0, "left_partitions": [],
             "matched": {p: 0 for p in prefixes}, "many_to_one_dropped": {p: 0 for p in prefixes}}
    if frame is None or len(frame) == 0:
        return _write_counts(out_dir, part, stats)
    frame = frame.reset_index(drop=True)
    stats["left_rows"] = int(len(frame))
    for p in prefixes:
        stats["matched"][p] = int(frame[f"{p}_object_id"].notna().sum())
        stats["many_to_one_dropped"][p] = int(frame[f"{p}_dropped"].sum())
    if not keep_unmatched:
        frame = frame[frame[[f"{p}_object_id" for p in prefixes]].notna().all(axis=1)]
    stats["rows"] = int(len(frame))
    if len(frame) == 0:
        return _write_counts(out_dir, part, stats)
    members = [frame[SPLIT_COLUMN].to_numpy()] + [frame[f"{p}_split"].to_numpy() for p in prefixes]
    paired = [most_restrictive(*[s for s in row if isinstance(s, str)]) for row in zip(*members)]
    stats["split_conflicts"] = int(sum(a != b for a, b in zip(paired, frame[SPLIT_COLUMN])))
    table = {"object_id": pa.array(frame["object_id"].astype(str).to_numpy(), pa.string()),
             "ra": frame["ra"].to_numpy(float), "dec": frame["dec"].to_numpy(float),
             "left_partition": pa.array(frame["left_partition"].to_numpy(), pa.string())}
    for p in prefixes:
        ids = frame[f"{p}_object_id"].to_numpy(object)
        table[f"{p}_object_id"] = pa.array([None if pd.isna(v) else str(v) for v in ids], pa.string())
        table[f"{p}_match_dist_arcsec"] = frame[f"{p}_match_dist_arcsec"].to_numpy(float)
        if p == host_prefix:
            table[f"{p}_host_dlr"] = frame[f"{p}_host_dlr"].to_numpy(float)
        table[f"{p}_partition"] = pa.array(frame[f"{p}_partition"].to_numpy(object), pa.string(), from_pandas=True)
    table["paired_split"] = pa.array(paired, pa.string())
    out = Path(out_dir)
    for left_file, group in _groups(pa.table(table)):
        d = out / pixel_dir(left_file)
        d.mkdir(parents=True, exist_ok=True)
        with atomic_path(d / f"part-{part}.parquet") as tmp:
            pq.write_table(group.sort_by("object_id"), tmp)
        stats["left_partitions"].append(left_file)
    return _write_counts(out_dir, part, stats)


def _write_counts(out_dir: str, part: str, stats: dict) -> dict:
    import json

    atomic_write(Path(out_dir) / f"counts-{part}.json", json.dumps(stats))
    return stats


def _groups(table: pa.Table):
    import pyarrow.compute as pc

    for key in sorted(set(table.column("left_partition").to_pylist())):
        yield key, table.filter(pc.equal(table.column("left_partition"), key))


def read_pairs(pairs_dir: str | Path, left_file: str) -> pa.Table:
    """The pairs of one left partition, sorted by object id."""
    files = sorted((Path(pairs_dir) / pixel_dir(left_file)).glob("part-*.parquet"))
    return pa.concat_tables([pq.read_table(f) for f in files]).sort_by("object_id")


def merge_stats(out_dir: str | Path) -> tuple[dict, list[str]]:
    """The summed counts of every task (one small JSON file per task)."""
    import json

    parts = [json.loads(p.read_text()) for p in sorted(Path(out_dir).glob("counts-*.json"))]
    total = {"left_rows": 0, "rows": 0, "split_conflicts": 0, "matched": {}, "many_to_one_dropped": {}}
    partitions = set()
    for s in parts:
        for k in ("left_rows", "rows", "split_conflicts"):
            total[k] += s[k]
        for k in ("matched", "many_to_one_dropped"):
            for p, v in s[k].items():
                total[k][p] = total[k].get(p, 0) + v
        partitions.update(s["left_partitions"])
    return total, sorted(partitions)
