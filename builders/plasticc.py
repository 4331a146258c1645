"""PLAsTiCC light-curve + metadata CSVs -> one light-curve row per object.

Format (Zenodo 2539456, the unblinded release; Kaggle names also accepted):
`plasticc_{train,test}_lightcurves[_NN].csv[.gz]` with object_id, mjd, passband (0..5 = LSST
u,g,r,i,z,y), flux, flux_err, detected_bool (FLUXCAL units), and
`plasticc_{train,test}_metadata.csv[.gz]` with object_id, ra, decl, ddf_bool, host-galaxy
redshifts, target / true_* labels. The light-curve file (~2 GB each, ~20 GB in all) is streamed
in blocks, never loaded whole; its rows must be grouped by object_id, as the released files are.
"""
from __future__ import annotations

import gzip
import io
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from mmu.engine.builder import Builder, BuilderConfig, InputRejected, RawInput, Rejection, register_builder
from mmu.model.schema import LightcurveSpec, lightcurve_array

from ._common import common_columns, download, reraise_environment

LSST_BANDS = "ugrizy"
LC_RE = re.compile(r"^(?:plasticc_(train|test)_lightcurves(?:_[0-9]+)?|(training|test)_set)\.csv(\.gz)?$")
ALIASES = {"detected": "detected_bool", "ddf": "ddf_bool", "dec": "decl"}  # Kaggle / other names
LC_COLUMNS = ["object_id", "mjd", "passband", "flux", "flux_err"]
LC_TYPES = {"object_id": pa.int64(), "mjd": pa.float64(), "passband": pa.int64(), "flux": pa.float64(),
            "flux_err": pa.float64(), "detected_bool": pa.int8()}
META_REQUIRED = ["object_id", "ra", "decl"]
META_COLUMNS = ([("ddf_bool", pa.bool_()), ("hostgal_specz", pa.float64()), ("hostgal_photoz", pa.float64()),
                 ("hostgal_photoz_err", pa.float64()), ("distmod", pa.float64()), ("mwebv", pa.float64()),
                 ("target", pa.int32()), ("true_target", pa.int32()), ("true_submodel", pa.int32()),
                 ("true_z", pa.float64()), ("true_distmod", pa.float64()), ("true_lensdmu", pa.float64()),
                 ("true_vpec", pa.float64()), ("true_rv", pa.float64()), ("true_av", pa.float64()),
                 ("true_peakmjd", pa.float64()), ("libid_cadence", pa.int32()),
                 ("gal_l", pa.float64()), ("gal_b", pa.float64())]
                + [(f"tflux_{b}", pa.float64()) for b in LSST_BANDS])
ARCHIVE = "https://zenodo.org/records/2539456/files/"


@dataclass(frozen=True)
class PlasticcConfig(BuilderConfig):
    block_bytes: int = 16 << 20  # CSV bytes parsed at a time (bounds memory with chunk_objects)
    chunk_objects: int = 2000  # light curves per Arrow chunk


def _header(path: Path) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:  # bytes: a bad byte further down is that line's problem
            line = f.readline().decode("utf-8")
    except (OSError, EOFError, UnicodeDecodeError) as e:
        reraise_environment(e)
        raise InputRejected(f"{path.name}: unreadable ({e}); re-download it") from None
    return [ALIASES.get(c.strip().lower(), c.strip().lower()) for c in line.strip().split(",")]


def _reader(path: Path, names: list[str], include: list[str], types: dict, block_bytes: int):
    return pacsv.open_csv(
        path, read_options=pacsv.ReadOptions(block_size=block_bytes, skip_rows=1, column_names=names),
        convert_options=pacsv.ConvertOptions(include_columns=include, column_types=types,
                                             strings_can_be_null=True))


class BadLine:
    """A CSV line that cannot be parsed: its line number (1 = the header), the column at fault
    (None when the line has the wrong number of fields), the object id when its first field
    reads as one, and pyarrow's reason."""

    def __init__(self, line: int, column: str | None, object_id: str | None, why: str):
        self.line, self.column, self.object_id, self.why = line, column, object_id, why


def _batches(path: Path, names: list[str], include: list[str], types: dict, block_bytes: int,
             careful: bool):
    """The CSV's rows as (columns, line numbers) blocks, and a `BadLine` for each bad line.

    Not `careful`: pyarrow's streaming reader (fast; the first bad line raises ArrowInvalid).
    `careful`: the file is read in blocks of lines; a block that pyarrow cannot parse is retried
    in pieces of 256 lines, and a piece that fails line by line, so that only the bad lines are
    left out (with their line numbers and reasons) and every other line is parsed exactly as the
    fast path parses it."""
    if not careful:
        line0 = 2
        for batch in _reader(path, names, include, types, block_bytes):
            cols = {k: batch.column(k) for k in include}
            yield cols, np.arange(batch.num_rows) + line0
            line0 += batch.num_rows
        return
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        f.readline()  # the header
        line0 = 2
        while lines := f.readlines(block_bytes):
            yield from _parse_lines(lines, line0, names, include, types, piece=256)
            line0 += len(lines)


def _parse(lines: list[bytes], names, include, types) -> pa.Table:
    return pacsv.read_csv(io.BytesIO(b"".join(lines)),
                          read_options=pacsv.ReadOptions(column_names=names, use_threads=False),
                          convert_options=pacsv.ConvertOptions(include_columns=include, column_types=types,
                                                               strings_can_be_null=True))


def _parse_lines(lines: list[bytes], line0: int, names, include, types, piece: int | None):
    try:
        t = _parse(lines, names, include, types)
    except pa.ArrowInvalid as e:
        if len(lines) == 1:
            yield _bad_line(lines[0], line0, names, e)
            return
        step = piece if piece and piece < len(lines) else 1  # pieces, then a failing piece line by line
        for s in range(0, len(lines), step):
            yield from _parse_lines(lines[s:s + step], line0 + s, names, include, types, None)
        return
    numbers = np.arange(len(lines)) + line0
    if t.num_rows != len(lines):  # empty lines are skipped by the parser
        numbers = numbers[[bool(x.strip()) for x in lines]]
    yield {k: t.column(k) for k in include}, numbers


def _bad_line(text: bytes, line: int, names: list[str], e: Exception) -> BadLine:
    why = " ".join(str(e).split())
    m = re.search(r"column #([0-9]+)", why)
    column = names[int(m.group(1))] if m and int(m.group(1)) < len(names) else None
    first = text.split(b",", 1)[0].strip()
    oid = first.decode("ascii") if first.isdigit() else None
    shown = text.rstrip(b"\r\n")
    shown = shown[:60] + (b"..." if len(shown) > 60 else b"")
    if column is None:
        why = f"{len(text.split(b','))} fields where the header has {len(names)} ({shown!r})"
    else:
        why = f"column {column}: {why.split(': ', 1)[-1] if 'conversion error' in why else why} ({shown!r})"
    return BadLine(line, column, oid, why)


@register_builder("plasticc")
class Plasticc(Builder):
    version = "1"
    Config = PlasticcConfig

    def modalities(self):
        return {"lightcurve": LightcurveSpec("FLUXCAL")}

    def extra_columns(self):
        return ([pa.field("detected_bool", pa.list_(pa.bool_()))]
                + [pa.field(n, t) for n, t in META_COLUMNS])

    def list_inputs(self, raw):
        out = []
        for p in sorted(Path(raw).rglob("*.csv*")):
            m = LC_RE.match(p.name)
            if not m:
                continue
            stem = f"plasticc_{m.group(1)}_metadata" if m.group(1) else f"{m.group(2)}_set_metadata"
            meta = [q for q in (p.parent / f"{stem}.csv", p.parent / f"{stem}.csv.gz") if q.exists()]
            out.append(RawInput(p.relative_to(raw).as_posix(), (str(p), *map(str, meta[:1]))))
        return out

    def read(self, item):
        lc_path = Path(item.paths[0])
        if len(item.paths) < 2:
            raise InputRejected(f"{lc_path.name}: its metadata CSV (object_id, ra, decl, ...) is missing "
                                "from the same directory; download it next to the light curves")
        meta_path = Path(item.paths[1])
        lc_names = _header(lc_path)
        missing = [c for c in LC_COLUMNS if c not in lc_names]
        if missing:
            raise InputRejected(f"{lc_path.name}: CSV header lacks column(s) {missing} (has {lc_names})")
        include = LC_COLUMNS + (["detected_bool"] if "detected_bool" in lc_names else [])
        types = {k: LC_TYPES[k] for k in include}
        ids, careful = self._object_ids(lc_path, lc_names, include, types)
        meta, dup_lines, bad_meta = self._metadata(meta_path, ids)
        for b in bad_meta:
            yield Rejection(item.key, f"{meta_path.name} line {b.line}: {b.why}; the line is left out",
                            b.line, b.object_id, b.column, meta_path.name)
        for oid, line in dup_lines:
            yield Rejection(item.key, f"{meta_path.name} line {line}: a second metadata row for object "
                            f"{oid}; the first one is used", line, str(oid), "object_id")
        yield from self._light_curves(item.key, lc_path, lc_names, include, types, careful, ids, meta)

    def _object_ids(self, path: Path, names: list[str], include: list[str], types: dict) -> tuple[np.ndarray, bool]:
        """Pass 1: the sorted distinct object ids of the light-curve file, and whether the file
        has lines pyarrow cannot parse (then both passes read it `careful`ly, line by line where
        a block fails, and leave out just those lines). Every column is converted here, so that
        pass 2 meets no line this pass did not."""
        for careful in (False, True):
            parts = []
            try:
                for cols, _ in (b for b in _batches(path, names, include, types, self.config.block_bytes, careful)
                                if not isinstance(b, BadLine)):
                    parts.append(np.unique(cols["object_id"].to_numpy()))
            except pa.ArrowInvalid:
                if careful:
                    raise
                continue  # a bad line somewhere: read the file carefully
            except (OSError, EOFError) as e:
                reraise_environment(e)
                raise InputRejected(f"{path.name}: cannot parse ({e})") from None
            return (np.unique(np.concatenate(parts)) if parts else np.array([], np.int64)), careful
        raise AssertionError("unreachable")  # pragma: no cover

    def _metadata(self, path: Path, ids: np.ndarray):
        """The metadata rows of just these objects, streamed (the test metadata has 3.5M rows)."""
        names = _header(path)
        missing = [c for c in META_REQUIRED if c not in names]
        if missing:
            raise InputRejected(f"{path.name}: CSV header lacks column(s) {missing} (has {names})")
        present = [n for n, _ in META_COLUMNS if n in names]
        types = {"object_id": pa.int64(), "ra": pa.float64(), "decl": pa.float64(),
                 **{n: (pa.int8() if t == pa.bool_() else t) for n, t in META_COLUMNS if n in present}}
        want = pa.array(ids)
        for careful in (False, True):
            parts, bad = [], []
            try:
                for b in _batches(path, names, META_REQUIRED + present, types, self.config.block_bytes, careful):
                    if isinstance(b, BadLine):
                        bad.append(b)
                        continue
                    cols, lines = b
                    rows = np.flatnonzero(pc.is_in(cols["object_id"], value_set=want).to_numpy(zero_copy_only=False))
                    t = pa.table(cols).take(pa.array(rows))
                    parts.append(t.append_column("_line", pa.array(lines[rows])))
            except pa.ArrowInvalid:
                if careful:
                    raise
                continue  # a bad line somewhere: read the file carefully
            except (OSError, EOFError) as e:
                reraise_environment(e)
                raise InputRejected(f"{path.name}: cannot parse ({e})") from None
            break
        table = pa.concat_tables(parts) if parts else None
        oid = table.column("object_id").to_numpy() if table is not None else np.array([], np.int64)
        _, first = np.unique(oid, return_index=True)
        dup = np.setdiff1d(np.arange(len(oid)), first)
        dups = [(int(oid[i]), int(table.column("_line")[int(i)].as_py())) for i in dup]
        index = {int(o): int(i) for o, i in zip(oid[first], first)}
        return (table, index, present), dups, bad

    def _light_curves(self, key, path: Path, names, include, types, careful, ids, meta):
        table, index, present = meta
        done = np.zeros(len(ids), bool)
        pending: list[dict] = []
        carry = None  # the last object's rows of a block may continue in the next one
        for b in _batches(path, names, include, types, self.config.block_bytes, careful):
            if isinstance(b, BadLine):  # that line alone is left out; its object keeps its other epochs
                yield Rejection(key, f"{path.name} line {b.line}: {b.why}; the line is left out"
                                + (f", object {b.object_id} keeps its other epochs" if b.object_id else ""),
                                b.line, b.object_id, b.column, path.name)
                continue
            arrays, lines = b
            cols = {k: v.to_numpy(zero_copy_only=False) for k, v in arrays.items()}
            cols["_line"] = lines
            if carry is not None:
                cols = {k: np.concatenate([carry[k], v]) for k, v in cols.items()}
            oid = cols["object_id"]
            if not len(oid):
                continue
            starts = np.flatnonzero(np.r_[True, oid[1:] != oid[:-1]])
            ends = np.r_[starts[1:], len(oid)]
            carry = {k: v[starts[-1]:] for k, v in cols.items()}
            for s, e in zip(starts[:-1], ends[:-1]):
                yield from self._object(key, path, cols, s, e, ids, done, index, pending)
                if len(pending) >= self.config.chunk_objects:
                    yield self._table(pending, table, present)
                    pending = []
        if carry is not None and len(carry["object_id"]):
            yield from self._object(key, path, carry, 0, len(carry["object_id"]), ids, done, index, pending)
        if pending:
            yield self._table(pending, table, present)

    @staticmethod
    def _object(key, path, cols, s, e, ids, done, index, pending):
        o = int(cols["object_id"][s])
        line = int(cols["_line"][s])
        k = int(np.searchsorted(ids, o))
        if done[k]:
            yield Rejection(key, f"{path.name} line {line}: object {o} reappears after other objects "
                            "(rows must be grouped by object_id); its earlier rows were kept", line, str(o))
            return
        done[k] = True
        if o not in index:
            yield Rejection(key, f"{path.name} line {line}: object {o} has no row in the metadata CSV",
                            line, str(o), "object_id")
            return
        pb = cols["passband"][s:e]
        bad = (pb < 0) | (pb > 5)
        if bad.any():
            at = int(cols["_line"][s + int(np.argmax(bad))])
            yield Rejection(key, f"{path.name} line {at}: passband {int(pb[bad][0])} is not 0..5 "
                            "(LSST u,g,r,i,z,y)", at, str(o), "passband")
            return
        pending.append({"object_id": o, "meta_row": index[o], "time": cols["mjd"][s:e],
                        "band": pb, "flux": cols["flux"][s:e], "flux_err": cols["flux_err"][s:e],
                        "detected": cols["detected_bool"][s:e] if "detected_bool" in cols else None})

    @staticmethod
    def _table(pending, meta: pa.Table, present) -> pa.Table:
        rows = pa.array([p["meta_row"] for p in pending])
        m = meta.take(rows)
        names = np.array([f"lsst-{b}" for b in LSST_BANDS])
        cols = common_columns([str(p["object_id"]) for p in pending], m.column("ra").to_numpy(),
                              m.column("decl").to_numpy(), "plasticc", "2018")
        # PLAsTiCC has no per-epoch quality flag: every epoch is a measurement (mask all False);
        # a NaN flux or a flux_err <= 0 is then caught by the engine's validator, with its reason
        cols["lightcurve"] = lightcurve_array(
            LightcurveSpec("FLUXCAL"), [p["time"] for p in pending], [names[p["band"]] for p in pending],
            [p["flux"] for p in pending], [p["flux_err"] for p in pending],
            [np.zeros(len(p["time"]), bool) for p in pending])
        lengths = np.array([len(p["time"]) for p in pending])
        offsets = pa.array(np.r_[0, np.cumsum(lengths)].astype(np.int32))
        if pending[0]["detected"] is None:
            cols["detected_bool"] = pa.nulls(len(pending), pa.list_(pa.bool_()))
        else:
            flat = np.concatenate([p["detected"] for p in pending]).astype(bool)
            cols["detected_bool"] = pa.ListArray.from_arrays(offsets, pa.array(flat))
        for n, t in META_COLUMNS:
            cols[n] = m.column(n).cast(t) if n in present else pa.nulls(len(pending), t)
        return pa.table(cols)

    def fetch(self, raw, limit=None):
        """Download the unblinded release from Zenodo (train set only when `limit` is given)."""
        names = ["plasticc_train_metadata.csv.gz", "plasticc_train_lightcurves.csv.gz"]
        if not limit:
            names += ["plasticc_test_metadata.csv.gz"] + [
                f"plasticc_test_lightcurves_{i:02d}.csv.gz" for i in range(1, 12)]
        return [download(ARCHIVE + n + "?download=1", Path(raw) / "plasticc" / n) for n in names]
