"""TESS SPOC 2-minute light curves -> one light-curve row per TIC star, all its sectors in one
series.

Format (the TESS Science Data Products Description Document, EXP-TESS-ARC-ICD-0014; served by
MAST under https://archive.stsci.edu/missions/tess/tid/s{sector:04d}/{tic 4/4/4/4 digits}/):
``tess{date}-s{sector:04d}-{tic:016d}-{scid:04d}-s_lc.fits``, one file per star and sector.
HDU 0 (primary header): TICID, SECTOR, CAMERA, CCD, RA_OBJ, DEC_OBJ, TESSMAG, TEFF, LOGG, MH,
RADIUS. HDU 1 ``LIGHTCURVE``: TIME (BTJD = BJD_TDB - 2457000), CADENCENO, PDCSAP_FLUX and
PDCSAP_FLUX_ERR (e-/s), QUALITY (bitmask) and others not read here. HDU 2 ``APERTURE`` (not read).

A row holds every sector of its star, in time order; `time` is BJD_TDB - 2400000.5 (TIME +
56999.5: a barycentric MJD, as the hub's light-curve time is MJD). `mask` is True where
QUALITY & `quality_bitmask` != 0 (lightkurve's "default" bitmask, 17087, by default) or
PDCSAP_FLUX / PDCSAP_FLUX_ERR is not finite or the error not positive. The raw QUALITY and
CADENCENO are kept per cadence, so other bitmasks can be applied later. Cadences with no TIME
(NaN: the spacecraft assigned none, e.g. in the downlink gap) cannot be placed on the time axis:
they are left out of the series and counted per sector in ``sector_n_no_time``.

A second modality column, ``binned_lightcurve``, holds the same series in time bins of
`bin_minutes` (120 by default; 0: no such column), as TESS users bin with lightkurve's
``LightCurve.bin``: per bin, the mean PDCSAP flux of the unmasked cadences and its propagated
error sqrt(sum err^2) / n (the error of the mean; lightkurve 2.6 reports sqrt(sum err^2 / n), the
error of one cadence), at the bin's centre. Bins are fixed in BTJD (edges at multiples of
the bin width from BTJD 0), the same for every star. A bin holding cadences but no unmasked one
is kept, masked (flux and error NaN; ``binned_n_good`` 0); where the series has no cadence (a
downlink, between sectors) there is no bin. The raw cadences stay in ``lightcurve``: binning
adds a column, it throws nothing away.
"""
from __future__ import annotations

import logging
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from mmu.engine.builder import Builder, BuilderConfig, InputRejected, RawInput, Rejection, register_builder
from mmu.model.schema import LightcurveSpec, lightcurve_array

from ._common import common_columns, download, native, open_fits, require_columns, require_hdu

log = logging.getLogger(__name__)

ARCHIVE = "https://archive.stsci.edu/missions/tess/"  # + download_scripts/sector/tesscurl_sector_N_lc.sh
NAME_RE = re.compile(r"^tess([0-9]{13})-s([0-9]{4})-([0-9]{16})-([0-9]{4})-s_lc\.fits$")
SCRIPT_RE = re.compile(r"-o\s+(tess[0-9]{13}-s[0-9]{4}-[0-9]{16}-[0-9]{4}-s_lc\.fits)\s+(\S+)")
BTJD_TO_MJD = 2457000.0 - 2400000.5
BAND = "tess-t"
# lightkurve's TessQualityFlags.DEFAULT_BITMASK: AttitudeTweak 1 | SafeMode 2 | CoarsePoint 4 |
# EarthPoint 8 | Argabrightening 16 | Desat 32 | ManualExclude 128 | ImpulsiveOutlier 512 |
# BadCalibrationExclude 16384
DEFAULT_BITMASK = 1 | 2 | 4 | 8 | 16 | 32 | 128 | 512 | 16384
HEADER = {"tmag": "TESSMAG", "teff": "TEFF", "logg": "LOGG", "mh": "MH", "radius": "RADIUS"}
LC_COLUMNS = ("TIME", "CADENCENO", "PDCSAP_FLUX", "PDCSAP_FLUX_ERR", "QUALITY")
BINNED = "binned_lightcurve"  # the binned series' modality column (`<prefix>_binned_lightcurve` when paired)


def bin_lightcurve(btjd: np.ndarray, flux: np.ndarray, flux_err: np.ndarray, mask: np.ndarray,
                   bin_days: float) -> dict[str, np.ndarray]:
    """Time-bin one light curve: bins [k, k + 1) * `bin_days` in BTJD, for every k holding at
    least one cadence; per bin the mean flux of the unmasked cadences, the propagated error
    sqrt(sum err^2) / n, and n. A bin with no unmasked cadence is masked (flux, error NaN).

    Args:
        btjd: cadence times (BTJD, finite, any order).
        flux, flux_err: per cadence (masked ones may be NaN).
        mask: True where the cadence is bad.
        bin_days: the bin width (days, > 0).

    Returns:
        ``{"btjd": bin centres, "flux", "flux_err" (float32), "mask", "n_good" (int32)}``, in time order.
    """
    if not bin_days > 0:
        raise ValueError(f"bin width {bin_days!r} d: must be positive")
    k = np.floor(np.asarray(btjd, np.float64) / bin_days).astype(np.int64)
    keys, inv = np.unique(k, return_inverse=True)
    good = ~np.asarray(mask, bool)
    f = np.where(good, np.asarray(flux, np.float64), 0.0)
    e2 = np.where(good, np.asarray(flux_err, np.float64) ** 2, 0.0)
    n = np.bincount(inv, weights=good, minlength=len(keys))
    total = np.bincount(inv, weights=f, minlength=len(keys))
    var = np.bincount(inv, weights=e2, minlength=len(keys))
    empty = n == 0
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(empty, np.nan, total / n)
        err = np.where(empty, np.nan, np.sqrt(var) / n)
    return {"btjd": (keys + 0.5) * bin_days, "flux": mean.astype(np.float32), "flux_err": err.astype(np.float32),
            "mask": empty, "n_good": n.astype(np.int32)}


@dataclass(frozen=True)
class TessConfig(BuilderConfig):
    quality_bitmask: int = DEFAULT_BITMASK  # QUALITY bits that mask a cadence
    n_groups: int = 256  # inputs: stars grouped by TIC id modulo this (a unit of work and resumption)
    chunk_stars: int = 200  # rows per Arrow chunk
    sectors: tuple[int, ...] = (1, 2, 3)  # what `fetch` downloads
    bin_minutes: float = 120.0  # width of the `binned_lightcurve` bins; 0: no binned column

    def __post_init__(self):
        if not (self.bin_minutes == 0 or self.bin_minutes > 0) or self.bin_minutes > 30 * 1440:
            raise ValueError(f"tess builder_config bin_minutes = {self.bin_minutes!r}: expected 0 (no binned "
                             "light curve) or a width in minutes, at most 30 days")


def parse_name(name: str) -> tuple[int, int] | None:
    """(TIC id, sector) of a SPOC light-curve file name, or None when it is not one."""
    m = NAME_RE.match(name)
    return (int(m.group(3)), int(m.group(2))) if m else None


def _header_float(h, key) -> float:
    v = h.get(key)
    try:
        return float(v) if v is not None else np.nan
    except (TypeError, ValueError):
        return np.nan


@register_builder("tess")
class Tess(Builder):
    version = "2"  # 2: the binned_lightcurve column
    Config = TessConfig

    def modalities(self):
        mods = {"lightcurve": LightcurveSpec("e-/s")}
        if self.config.bin_minutes:
            mods[BINNED] = LightcurveSpec("e-/s")
        return mods

    def extra_columns(self):
        return [pa.field("tic_id", pa.int64()),
                *(pa.field(k, pa.float64()) for k in HEADER),
                pa.field("sectors", pa.list_(pa.int16())), pa.field("cameras", pa.list_(pa.int8())),
                pa.field("ccds", pa.list_(pa.int8())),
                pa.field("sector_n_cadences", pa.list_(pa.int32())),  # cadences in the series, per sector
                pa.field("sector_n_good", pa.list_(pa.int32())),  # unmasked ones (0: a fully flagged sector)
                pa.field("sector_n_no_time", pa.list_(pa.int32())),  # rows left out: TIME is NaN
                pa.field("files", pa.list_(pa.string())),
                pa.field("quality", pa.list_(pa.int32())), pa.field("cadenceno", pa.list_(pa.int32())),
                *([pa.field("binned_n_good", pa.list_(pa.int32()))] if self.config.bin_minutes else [])]

    def list_inputs(self, raw):
        groups: dict[int, list[tuple[int, int, str]]] = defaultdict(list)
        for p in sorted(Path(raw).rglob("*_lc.fits")):
            parsed = parse_name(p.name)
            if parsed is None:
                log.warning("skipped %s: not a SPOC 2-minute light-curve name "
                            "(tess{date}-s{sector}-{tic:016d}-{scid}-s_lc.fits)", p)
                continue
            tic, sector = parsed
            groups[tic % self.config.n_groups].append((tic, sector, str(p)))
        width = len(str(self.config.n_groups - 1))
        return [RawInput(f"tic_mod{self.config.n_groups}_{g:0{width}d}",
                         tuple(p for _, _, p in sorted(files)))
                for g, files in sorted(groups.items())]

    def read(self, item):
        by_star: dict[int, list[Path]] = defaultdict(list)
        for p in map(Path, item.paths):
            tic, _ = parse_name(p.name) or (None, None)
            if tic is None:
                raise InputRejected(f"{p.name}: not a SPOC light-curve file name")
            by_star[tic].append(p)
        pending = []
        for tic in sorted(by_star):
            sectors = []
            for p in by_star[tic]:
                try:
                    sectors.append(self._sector(p, tic))
                except InputRejected as e:
                    yield Rejection(item.key, str(e), object_id=str(tic), file=p.name)
            sectors = yield from self._dedupe(item.key, tic, sectors)
            if not sectors:
                yield Rejection(item.key, f"TIC {tic}: none of its {len(by_star[tic])} light-curve file(s) "
                                "could be read (each is rejected above)", object_id=str(tic))
                continue
            pending.append(self._star(tic, sectors, self.config.bin_minutes / 1440.0))
            if len(pending) >= self.config.chunk_stars:
                yield self._table(pending)
                pending = []
        if pending:
            yield self._table(pending)

    def _sector(self, path: Path, tic: int) -> dict:
        hint = "re-download it from MAST"
        with open_fits(path, what=hint) as hdul:
            h0 = hdul[0].header
            _, sector = parse_name(path.name)
            for key, want in (("TICID", tic), ("SECTOR", sector)):
                got = h0.get(key)
                if got is None:
                    raise InputRejected(f"{path.name}: primary header lacks {key}; not a SPOC light-curve file")
                if int(got) != want:
                    raise InputRejected(f"{path.name}: primary header {key} = {got} but the file name says {want}")
            hdu = require_hdu(hdul, "LIGHTCURVE", path, "not a SPOC light-curve file")
            data = hdu.data
            if data is None:
                raise InputRejected(f"{path.name}: HDU 'LIGHTCURVE' has no rows")
            require_columns(data, LC_COLUMNS, path, "LIGHTCURVE", "not a SPOC light-curve file")
            bjdref = hdu.header.get("BJDREFI", 2457000) + hdu.header.get("BJDREFF", 0.0)
            if abs(bjdref - 2457000.0) > 1e-9:
                raise InputRejected(f"{path.name}: BJDREFI + BJDREFF = {bjdref}, expected 2457000 (BTJD)")
            time = native(data["TIME"]).astype(np.float64)
            cols = {k: native(data[k]) for k in LC_COLUMNS[1:]}
            meta = {k: _header_float(h0, v) for k, v in HEADER.items()}
            meta.update(ra=_header_float(h0, "RA_OBJ"), dec=_header_float(h0, "DEC_OBJ"),
                        camera=int(h0.get("CAMERA", 0) or 0), ccd=int(h0.get("CCD", 0) or 0))
        has_time = np.isfinite(time)
        flux = cols["PDCSAP_FLUX"].astype(np.float32)[has_time]
        err = cols["PDCSAP_FLUX_ERR"].astype(np.float32)[has_time]
        quality = cols["QUALITY"].astype(np.int32)[has_time]
        with np.errstate(invalid="ignore"):
            mask = (((quality & self.config.quality_bitmask) != 0) | ~np.isfinite(flux) | ~np.isfinite(err)
                    | ~(err > 0))
        n_good = int((~mask).sum())
        if n_good == 0:
            log.warning("%s: no usable cadence of TIC %d in sector %d (%d flagged or without flux, %d without "
                        "TIME); the sector is kept, fully masked", path.name, tic, sector, int(has_time.sum()),
                        int((~has_time).sum()))
        return {"path": path, "sector": sector, "btjd": time[has_time], "time": time[has_time] + BTJD_TO_MJD,
                "flux": flux, "err": err,
                "mask": mask, "quality": quality, "cadenceno": cols["CADENCENO"].astype(np.int32)[has_time],
                "n_no_time": int((~has_time).sum()), "n_good": n_good, **meta}

    @staticmethod
    def _dedupe(key: str, tic: int, sectors: list[dict]):
        """One file per sector: when the archive holds two (a reprocessing), the later date stamp
        is kept and the other rejected by name."""
        best: dict[int, dict] = {}
        for s in sorted(sectors, key=lambda s: s["path"].name, reverse=True):
            if s["sector"] in best:
                yield Rejection(key, f"{s['path'].name}: a second light curve of TIC {tic} in sector {s['sector']}; "
                                f"the later {best[s['sector']]['path'].name} is used", object_id=str(tic),
                                file=s["path"].name)
                continue
            best[s["sector"]] = s
        return [best[k] for k in sorted(best)]

    @staticmethod
    def _star(tic: int, sectors: list[dict], bin_days: float = 0.0) -> dict:
        time = np.concatenate([s["time"] for s in sectors])
        order = np.argsort(time, kind="stable")
        cat = {k: np.concatenate([s[k] for s in sectors])[order]
               for k in ("btjd", "time", "flux", "err", "mask", "quality", "cadenceno")}
        if bin_days:
            cat["binned"] = bin_lightcurve(cat["btjd"], cat["flux"], cat["err"], cat["mask"], bin_days)
        first = sectors[0]
        ra = next((s["ra"] for s in sectors if np.isfinite(s["ra"])), np.nan)
        dec = next((s["dec"] for s in sectors if np.isfinite(s["dec"])), np.nan)
        return {"tic": tic, "ra": ra, "dec": dec, **cat,
                **{k: next((s[k] for s in sectors if np.isfinite(s[k])), first[k]) for k in HEADER},
                "sectors": [s["sector"] for s in sectors], "cameras": [s["camera"] for s in sectors],
                "ccds": [s["ccd"] for s in sectors], "n_cadences": [len(s["time"]) for s in sectors],
                "n_good": [s["n_good"] for s in sectors], "n_no_time": [s["n_no_time"] for s in sectors],
                "files": [s["path"].name for s in sectors]}

    @staticmethod
    def _table(pending: list[dict]) -> pa.Table:
        cols = common_columns([str(p["tic"]) for p in pending], [p["ra"] for p in pending],
                              [p["dec"] for p in pending], "tess", "spoc")
        cols["lightcurve"] = lightcurve_array(
            LightcurveSpec("e-/s"), [p["time"] for p in pending], [np.full(len(p["time"]), BAND) for p in pending],
            [p["flux"] for p in pending], [p["err"] for p in pending], [p["mask"] for p in pending])
        if all("binned" in p for p in pending) and pending:
            bins = [p["binned"] for p in pending]
            cols[BINNED] = lightcurve_array(
                LightcurveSpec("e-/s"), [b["btjd"] + BTJD_TO_MJD for b in bins],
                [np.full(len(b["btjd"]), BAND) for b in bins], [b["flux"] for b in bins],
                [b["flux_err"] for b in bins], [b["mask"] for b in bins])
        cols["tic_id"] = pa.array([p["tic"] for p in pending], pa.int64())
        for k in HEADER:
            cols[k] = pa.array(np.array([p[k] for p in pending], np.float64), from_pandas=True)
        for col, k, t in (("sectors", "sectors", pa.int16()), ("cameras", "cameras", pa.int8()),
                          ("ccds", "ccds", pa.int8()), ("sector_n_cadences", "n_cadences", pa.int32()),
                          ("sector_n_good", "n_good", pa.int32()), ("sector_n_no_time", "n_no_time", pa.int32()),
                          ("files", "files", pa.string())):
            cols[col] = pa.array([p[k] for p in pending], pa.list_(t))
        lists = {"quality": [p["quality"] for p in pending], "cadenceno": [p["cadenceno"] for p in pending]}
        if BINNED in cols:
            lists["binned_n_good"] = [p["binned"]["n_good"] for p in pending]
        for col, parts in lists.items():
            offsets = np.r_[0, np.cumsum([len(a) for a in parts])].astype(np.int32)
            cols[col] = pa.ListArray.from_arrays(pa.array(offsets), pa.array(np.concatenate(parts), pa.int32()))
        return pa.table(cols)

    def fetch(self, raw, limit=None):
        """Download MAST's bulk download script of each sector in the config's `sectors`, then the
        light-curve files it lists into RAW/tess/tid/s{sector}/{tic 4/4/4/4}/ (the archive's
        layout). `limit`: the first `limit` stars (TIC ids, in the first sector's script order),
        with their files in every listed sector."""
        root = Path(raw) / "tess"
        listed: list[list[tuple[str, str]]] = []
        for sector in self.config.sectors:
            name = f"tesscurl_sector_{sector}_lc.sh"
            sh = download(ARCHIVE + "download_scripts/sector/" + name, root / "download_scripts/sector" / name)
            listed.append(SCRIPT_RE.findall(sh.read_text(errors="replace")))
        keep = None
        if limit:
            keep, seen = set(), []
            for files in listed:
                for fname, _ in files:
                    tic = parse_name(fname)[0]
                    if tic not in keep and len(seen) < limit:
                        keep.add(tic)
                        seen.append(tic)
        got = []
        for files in listed:
            for fname, url in files:
                tic, sector = parse_name(fname)
                if keep is not None and tic not in keep:
                    continue
                s = f"{tic:016d}"
                dest = root / f"tid/s{sector:04d}/{s[0:4]}/{s[4:8]}/{s[8:12]}/{s[12:16]}" / fname
                got.append(download(url, dest))
        return got
