"""Legacy Surveys DR10 bricks -> image rows: C x S x S cutouts centred on Tractor sources.

Format (legacysurvey.org/dr10/files): `<region>/coadd/<bri>/<brick>/legacysurvey-<brick>-
{image,invvar}-<band>.fits.fz` (nanomaggies, TAN WCS), `-maskbits.fits.fz` (MASKBITS bit
values of legacysurvey.org/dr10/bitmasks) and `<region>/tractor/<bri>/tractor-<brick>.fits`.
One raw input is one brick. Cutouts are plain pixel copies (no resampling): the source's pixel,
round(WCS x, y), sits at index (S//2, S//2). Edge policy: see `LegacySurveyConfig.edge_policy`.

A band without images in a brick (DR10 south has i-band over part of its footprint) is a masked
band: the brick's rows are kept with that band's pixels flux 0, ivar 0, mask True and psf_fwhm
0, and `bands_observed` lists the bands that have images. A brick without a catalogue, without
maskbits, without any band's images, or with an image lacking its invvar (or the reverse) is
rejected with its reason.
"""
from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from mmu.engine.builder import Builder, BuilderConfig, InputRejected, RawInput, Rejection, register_builder
from mmu.model.schema import ImageSpec, image_array

from ._common import (
    FetchError,
    column_or_null,
    common_columns,
    decode_text,
    describe_text,
    download,
    has_column,
    native,
    open_fits,
    require_columns,
    reraise_environment,
)

log = logging.getLogger(__name__)

TRACTOR_RE = re.compile(r"^tractor-([0-9]{4}[pm][0-9]{3})\.fits$")
COADD_RE = re.compile(r"^legacysurvey-([0-9]{4}[pm][0-9]{3})-(image|invvar|maskbits)(-[a-z])?\.fits\.fz$")
# MASKBITS that make a pixel bad in one band: SATUR_<band> and ALLMASK_<band> (DR10 adds i)
SATUR_BIT = {"g": 2, "r": 3, "z": 4, "i": 14}
ALLMASK_BIT = {"g": 5, "r": 6, "z": 7, "i": 15}
ARCHIVE = "https://portal.nersc.gov/cfs/cosmo/data/legacysurvey/dr10/{region}/"
# Tractor `release` becomes `tractor_release` (the common `release` column is the data release)
CATALOG = [("tractor_release", pa.int16()), ("brickid", pa.int32()), ("brickname", pa.string()),
           ("objid", pa.int32()), ("brick_primary", pa.bool_()), ("type", pa.string()),
           ("maskbits", pa.int32()), ("ebv", pa.float32()), ("ref_cat", pa.string()),
           ("shape_r", pa.float32()), ("shape_e1", pa.float32()), ("shape_e2", pa.float32()),
           ("sersic", pa.float32()), ("bx", pa.float32()), ("by", pa.float32())]
PER_BAND = [("flux_{b}", pa.float32()), ("flux_ivar_{b}", pa.float32()),
            ("mw_transmission_{b}", pa.float32()), ("nobs_{b}", pa.int16()), ("psfsize_{b}", pa.float32())]


@dataclass(frozen=True)
class LegacySurveyConfig(BuilderConfig):
    region: str = "south"
    bands: tuple = ("g", "r", "i", "z")
    cutout_size: int = 96
    #: "pad": a cutout reaching past the image edge is kept, the missing pixels are flux 0,
    #: ivar 0, mask True; "skip": such a source is rejected with its reason. A source whose own
    #: pixel is off the image is always rejected. (Brick-primary sources of real DR10 bricks lie
    #: >= ~80 px inside the 3600 px image; only overlap duplicates reach the edge.)
    edge_policy: str = "pad"
    #: selection cuts (sources cut here are not rejections: they are the dataset's definition)
    exclude_types: tuple = ()  # Tractor TYPEs to leave out, e.g. ["PSF", "DUP"]
    mag_limit: float | None = None  # keep sources brighter than this AB mag in `mag_band`
    mag_band: str = "r"
    only_brick_primary: bool = False  # False: overlap repeats kept, flagged by brick_primary
    chunk_rows: int = 64

    def __post_init__(self):
        if self.edge_policy not in ("pad", "skip"):
            raise ValueError(f"edge_policy must be 'pad' or 'skip', not {self.edge_policy!r}")
        unknown = [b for b in self.bands if b not in SATUR_BIT]
        if unknown:
            raise ValueError(f"bands {unknown} are not Legacy Survey optical bands {sorted(SATUR_BIT)}")


@register_builder("legacysurvey")
class LegacySurvey(Builder):
    version = "2"  # 2: a band without images is masked (bands_observed), not a rejected brick
    Config = LegacySurveyConfig

    def __init__(self, config=None):
        super().__init__(config)
        self._missing_bands: dict[str, list[str]] = {}  # input key -> bands without images

    def modalities(self):
        c = self.config
        return {"image": ImageSpec(tuple(f"legacysurvey-{b}" for b in c.bands), c.cutout_size,
                                   c.cutout_size, "nanomaggy")}

    def extra_columns(self):
        fields = [pa.field(n, t) for n, t in CATALOG] + [pa.field("ls_id", pa.int64()),
                                                         pa.field("bands_observed", pa.list_(pa.string()))]
        for b in self.config.bands:
            fields += [pa.field(n.format(b=b), t) for n, t in PER_BAND]
        return fields

    def list_inputs(self, raw):
        out, seen = [], set()
        self._missing_bands = {}
        for p in sorted(Path(raw).rglob("tractor-*.fits")):
            m = TRACTOR_RE.match(p.name)
            if not m:
                continue
            if p.parents[1].name == "tractor" and p.parents[2].name != self.config.region:
                continue  # another region (north / south) of the same mirror
            files = self._coadd_files(p, m.group(1))
            key = f"{self.config.region}/{m.group(1)}"
            seen.add(key)
            out.append(RawInput(key, tuple(str(f) for f in [p, *files.values()] if f.exists())))
            missing = [b for b in self.config.bands
                       if not files[f"image-{b}"].exists() and not files[f"invvar-{b}"].exists()]
            if missing and len(missing) < len(self.config.bands) and files["maskbits"].exists():
                self._missing_bands[key] = missing
        # coadd folders without a catalogue: listed, so that `read` rejects them by name
        bricks: dict[str, list[str]] = {}
        for p in sorted(Path(raw).rglob("legacysurvey-*.fits.fz")):
            m = COADD_RE.match(p.name)
            if not m or p.parent.name != m.group(1):
                continue
            if p.parents[2].name == "coadd" and p.parents[3].name != self.config.region:
                continue
            key = f"{self.config.region}/{m.group(1)}"
            if key not in seen:
                bricks.setdefault(key, []).append(str(p))
        out += [RawInput(k, tuple(v)) for k, v in sorted(bricks.items())]
        return sorted(out, key=lambda i: i.key)

    def manifest_extra(self) -> dict:
        """Bricks whose rows are kept with some bands masked (information, not rejections)."""
        if not self._missing_bands:
            return {}
        per_band = Counter(b for bands in self._missing_bands.values() for b in bands)
        return {"input_notes": {"bricks_missing_bands": {
            "count": len(self._missing_bands), "by_band": dict(sorted(per_band.items())),
            "bricks": dict(sorted(self._missing_bands.items()))}}}

    def _coadd_files(self, tractor: Path, brick: str) -> dict[str, Path]:
        top = tractor.parents[2] if tractor.parents[1].name == "tractor" else tractor.parent
        d = top / "coadd" / brick[:3] / brick
        files = {"maskbits": d / f"legacysurvey-{brick}-maskbits.fits.fz"}
        for b in self.config.bands:
            for kind in ("image", "invvar"):
                files[f"{kind}-{b}"] = d / f"legacysurvey-{brick}-{kind}-{b}.fits.fz"
        return files

    # ---------------------------------------------------------------------------------------

    def read(self, item):
        c = self.config
        tractor = Path(item.paths[0])
        m = TRACTOR_RE.match(tractor.name)
        if not m:
            brick = item.key.rsplit("/", 1)[-1]
            raise InputRejected(f"brick {brick}: coadd files {[Path(x).name for x in item.paths]} but no "
                                f"catalogue tractor-{brick}.fits (expected in <region>/tractor/{brick[:3]}/); "
                                "download it")
        brick = m.group(1)
        files = self._coadd_files(tractor, brick)
        where = f"(expected in {files['maskbits'].parent})"
        if not files["maskbits"].exists():
            raise InputRejected(f"tractor-{brick}.fits: {files['maskbits'].name} missing {where}; download it")
        observed = []
        for b in c.bands:
            have = [k for k in ("image", "invvar") if files[f"{k}-{b}"].exists()]
            if len(have) == 1:
                lacks = "invvar" if have == ["image"] else "image"
                raise InputRejected(f"tractor-{brick}.fits: {files[f'{have[0]}-{b}'].name} present but "
                                    f"{files[f'{lacks}-{b}'].name} missing {where}; re-download the {b} band")
            if have:
                observed.append(b)
        if not observed:
            raise InputRejected(f"tractor-{brick}.fits: no image files for any of bands {list(c.bands)} {where}; "
                                "download them")
        cat = self._catalog(tractor)
        keep = self._select(cat)
        for i, (column, text) in sorted(cat["bad"].items()):  # unreadable text: that row alone
            keep[i] = False
            yield Rejection(item.key, f"{tractor.name} HDU 1 row {i} (objid {cat['objid'][i]}) column {column}: "
                            f"{text}", int(i), f"{brick}-{cat['objid'][i]}", column, tractor.name)
        if not keep.any():
            return
        maskbits, _, _ = _image(files["maskbits"], "MASKBITS", None)
        planes = {}
        for b in observed:
            img, wcs, hdr = _image(files[f"image-{b}"], "nanomaggy", maskbits.shape)
            ivar, _, _ = _image(files[f"invvar-{b}"], None, maskbits.shape)
            # lossy fpack quantisation can turn ivar = 0 into small values of either sign:
            # a negative inverse variance carries no information, so it becomes 0 (masked)
            np.maximum(ivar, 0, out=ivar, where=~np.isnan(ivar))
            # the band's bad pixels, once per plane (cheaper than per cutout: cutouts overlap)
            bad_bits = (1 << SATUR_BIT[b]) | (1 << ALLMASK_BIT[b])
            bad = ((maskbits & bad_bits) != 0) | (ivar <= 0)
            planes[b] = (img, ivar, wcs, hdr, bad)
        wcs0 = planes[observed[0]][2]
        from astropy.wcs.utils import proj_plane_pixel_scales
        scale = float(np.mean(proj_plane_pixel_scales(wcs0))) * 3600.0  # deg -> arcsec
        centres = {}
        for j, b in enumerate(observed):
            same = next((o for o in observed[:j] if _same_wcs(planes[o][2], planes[b][2])), None)
            if same is not None:  # the bands of a brick share its pixel grid: one projection
                centres[b] = centres[same]
                continue
            x, y = planes[b][2].all_world2pix(cat["ra"], cat["dec"], 0)
            x, y = (np.nan_to_num(v, nan=-1e9, posinf=-1e9, neginf=-1e9) for v in (x, y))
            centres[b] = (np.floor(x + 0.5).astype(np.int64), np.floor(y + 0.5).astype(np.int64))
        h, w = maskbits.shape
        half, size = c.cutout_size // 2, c.cutout_size
        ra, dec = cat["ra"], cat["dec"]
        # rows that pass every check below (most of them), found at once; only the others are
        # walked one by one, in row order, to say why they are rejected
        with np.errstate(invalid="ignore"):
            fine = keep & (ra >= 0) & (ra < 360) & (dec >= -90) & (dec <= 90)
        for b in observed:
            cx, cy = centres[b]
            fine &= (cx - half >= 0) & (cy - half >= 0) & (cx - half + size <= w) & (cy - half + size <= h)
        ok = keep.copy()
        for i in np.flatnonzero(keep & ~fine):
            where = f"tractor-{brick}.fits row {i} (objid {cat['objid'][i]})"
            if not (0 <= ra[i] < 360 and -90 <= dec[i] <= 90):  # NaN fails too
                ok[i] = False
                yield Rejection(item.key, f"{where}: ra, dec = {ra[i]}, {dec[i]} out of range", int(i),
                                cat["object_id"][i], "dec" if 0 <= ra[i] < 360 else "ra")
                continue
            for b in observed:
                cx, cy = centres[b][0][i], centres[b][1][i]
                if not (0 <= cx < w and 0 <= cy < h):
                    ok[i] = False
                    yield Rejection(item.key, f"{where}: source pixel ({cx}, {cy}) lies outside the "
                                    f"{w}x{h} {b}-band image", int(i), cat["object_id"][i])
                    break
                if c.edge_policy == "skip":  # not fine, on the image: the cutout reaches past an edge
                    inside = cx - half >= 0 and cy - half >= 0 and cx - half + size <= w and cy - half + size <= h
                    if not inside:
                        ok[i] = False
                        yield Rejection(item.key, f"{where}: {size}px cutout reaches past the image "
                                        "edge (edge_policy: skip)", int(i), cat["object_id"][i])
                        break
        rows = np.flatnonzero(ok)
        for s in range(0, len(rows), c.chunk_rows):
            yield self._chunk(cat, rows[s:s + c.chunk_rows], planes, (h, w), centres, scale)

    def _catalog(self, path: Path) -> dict:
        c = self.config
        with open_fits(path) as hd:
            if len(hd) < 2 or not hasattr(hd[1], "columns"):
                raise InputRejected(f"{path.name}: HDU 1 is not the Tractor catalogue table")
            t = hd[1].data
            need = ["ra", "dec", "brickname", "objid", "brick_primary", "type"] + [f"psfsize_{b}" for b in c.bands]
            require_columns(t, need, path, "HDU1", "is this a DR10 tractor catalogue?")
            n = len(t)
            cat = {"ra": native(t["ra"]).astype(float), "dec": native(t["dec"]).astype(float),
                   "objid": native(t["objid"]).astype(np.int64)}
            # a row whose text is not ASCII (a stray 0xff byte) is rejected alone: {row: (column, why)}
            bad: dict[int, tuple[str, str]] = {}
            for col in ("type", "brickname"):
                raw = np.asarray(t[col])
                cat[col], rows = decode_text(raw)
                for r in rows.tolist():
                    bad.setdefault(r, (col, describe_text(raw[r])))
            cat["object_id"] = [f"{bn}-{o}" for bn, o in zip(cat["brickname"], cat["objid"].tolist())]
            cat["psf"] = np.stack([native(t[f"psfsize_{b}"]).astype(np.float32) for b in c.bands], 1)
            cat["brick_primary"] = native(t["brick_primary"]).astype(bool)
            flux_col = f"flux_{c.mag_band}"
            cat["mag_flux"] = native(t[flux_col]).astype(float) if has_column(t, flux_col) else None
            bad_cols: dict[int, str] = {}
            cols = {name: column_or_null(t, name.removeprefix("tractor_"), typ, n, bad_cols) for name, typ in CATALOG}
            for b in c.bands:
                for pattern, typ in PER_BAND:
                    cols[pattern.format(b=b)] = column_or_null(t, pattern.format(b=b), typ, n, bad_cols)
            for r, col in bad_cols.items():
                bad.setdefault(r, (col, describe_text(np.asarray(t[col])[r])))
            cat["bad"] = bad
            if has_column(t, "release") and has_column(t, "brickid"):
                ls_id = (native(t["release"]).astype(np.int64) << 40) | \
                        (native(t["brickid"]).astype(np.int64) << 16) | cat["objid"]
                cols["ls_id"] = pa.array(ls_id)
            else:
                cols["ls_id"] = pa.nulls(n, pa.int64())
            cat["columns"] = cols
        return cat

    def _select(self, cat) -> np.ndarray:
        c = self.config
        keep = np.ones(len(cat["ra"]), bool)
        if c.exclude_types:
            keep &= ~np.isin(cat["type"], list(c.exclude_types))
        if c.only_brick_primary:
            keep &= cat["brick_primary"]
        if c.mag_limit is not None:
            if cat["mag_flux"] is None:
                raise InputRejected(f"tractor catalogue lacks flux_{c.mag_band} needed by mag_limit")
            with np.errstate(invalid="ignore", divide="ignore"):
                keep &= 22.5 - 2.5 * np.log10(cat["mag_flux"]) < c.mag_limit
        return keep

    def _chunk(self, cat, rows, planes, shape, centres, scale) -> pa.Table:
        c = self.config
        n, nb, size = len(rows), len(c.bands), c.cutout_size
        flux = np.zeros((n, nb, size, size), np.float32)
        ivar = np.zeros((n, nb, size, size), np.float32)
        mask = np.ones((n, nb, size, size), bool)
        psf = cat["psf"][rows].copy()
        for j, b in enumerate(c.bands):
            if b not in planes:  # no images in this band: flux 0, ivar 0, mask True, psf_fwhm 0
                psf[:, j] = 0.0
                continue
            img, iv, _, _, bad = planes[b]
            x0 = centres[b][0][rows] - size // 2
            y0 = centres[b][1][rows] - size // 2
            _cutouts(img, x0, y0, size, flux[:, j])
            _cutouts(iv, x0, y0, size, ivar[:, j])
            _cutouts(bad, x0, y0, size, mask[:, j])
        cols = common_columns([cat["object_id"][i] for i in rows], cat["ra"][rows], cat["dec"][rows],
                              "legacysurvey", "dr10")
        cols["image"] = image_array(self.modalities()["image"], flux, ivar, mask, psf, scale)
        take = pa.array(rows)
        for name, arr in cat["columns"].items():
            cols[name] = arr.take(take)
        observed = [f"legacysurvey-{b}" for b in c.bands if b in planes]
        cols["bands_observed"] = pa.array([observed] * n, pa.list_(pa.string()))
        return pa.table(cols)

    # ---------------------------------------------------------------------------------------

    def fetch(self, raw, limit=None, bricks: list[str] | None = None):
        """Download the tractor catalogue, maskbits and per-band image + invvar coadds of each
        brick in `bricks` (the first `limit` of them) into RAW/legacysurvey/dr10/<region>/. The
        region's brick list is not parsed here: pass brick names (e.g. '1126p222'). A brick the
        archive lacks the catalogue or maskbits of (HTTP 404: not in this region) is skipped with
        a warning; a band the archive has no images of in a brick (no coverage: DR10 south's i)
        is skipped with a warning, and `mmu build` keeps the brick with that band masked."""
        if not bricks:
            raise ValueError("legacysurvey fetch needs brick names, e.g. bricks=['1126p222']")
        base = ARCHIVE.format(region=self.config.region)
        root = Path(raw) / "legacysurvey/dr10" / self.config.region
        got = []
        for brick in bricks[:limit] if limit else bricks:
            rel = f"tractor/{brick[:3]}/tractor-{brick}.fits"
            try:
                got.append(download(base + rel, root / rel))
                files = self._coadd_files(root / rel, brick)
                got.append(download(base + files["maskbits"].relative_to(root).as_posix(), files["maskbits"]))
            except FetchError as e:
                if e.status != 404:
                    raise
                log.warning("skipped brick %s: not in the archive: %s", brick, e)
                continue
            for b in self.config.bands:
                try:
                    for kind in ("image", "invvar"):
                        f = files[f"{kind}-{b}"]
                        got.append(download(base + f.relative_to(root).as_posix(), f))
                except FetchError as e:
                    if e.status != 404:
                        raise
                    log.warning("brick %s has no %s-band images in the archive (no coverage; `mmu build` "
                                "masks the band): %s", brick, b, e)
        return got


def _cutouts(plane: np.ndarray, x0: np.ndarray, y0: np.ndarray, size: int, out: np.ndarray) -> None:
    """Copy the `size` x `size` windows of `plane` whose lower corners are (`x0`, `y0`) into `out`
    ([n, size, size]). Windows inside the plane are gathered at once; a window reaching past an
    edge gets the pixels it covers, and the rest of its `out` slot is left as it was (the fill)."""
    h, w = plane.shape
    inside = (x0 >= 0) & (y0 >= 0) & (x0 + size <= w) & (y0 + size <= h)
    if inside.any():
        windows = np.lib.stride_tricks.sliding_window_view(plane, (size, size))
        out[inside] = windows[y0[inside], x0[inside]]
    for k in np.flatnonzero(~inside):
        xa, xb = max(x0[k], 0), min(x0[k] + size, w)
        ya, yb = max(y0[k], 0), min(y0[k] + size, h)
        if xa < xb and ya < yb:
            out[k, ya - y0[k]:yb - y0[k], xa - x0[k]:xb - x0[k]] = plane[ya:yb, xa:xb]


def _same_wcs(a, b) -> bool:
    """Whether two image WCSs map the sky to the same pixels (the bands of one brick do)."""
    try:
        return bool(a.wcs.compare(b.wcs)) and not a.has_distortion and not b.has_distortion
    except (AttributeError, TypeError, ValueError):
        return False


def _image(path: Path, unit: str | None, shape) -> tuple[np.ndarray, object, object]:
    """The first 2-D image HDU of a (possibly fpack-compressed) file, its WCS and header."""
    from astropy.wcs import WCS

    with open_fits(path) as hd:
        hdu = next((h for h in hd if h.is_image and h.header.get("NAXIS", 0) == 2), None)
        if hdu is None:
            raise InputRejected(f"{path.name}: no 2-D image HDU found")
        bunit = str(hdu.header.get("BUNIT", "")).strip().lower()
        if unit == "nanomaggy" and bunit and bunit not in ("nanomaggy", "nanomaggies"):
            raise InputRejected(f"{path.name}: BUNIT {bunit!r}, expected nanomaggy")
        try:
            data = native(hdu.data)
        except (OSError, ValueError, TypeError) as e:
            reraise_environment(e)
            raise InputRejected(f"{path.name}: image data unreadable ({e}); re-download it") from None
        if shape is not None and data.shape != shape:
            raise InputRejected(f"{path.name}: image shape {data.shape} differs from the maskbits "
                                f"image {shape}")
        wcs = WCS(hdu.header) if unit == "nanomaggy" else None
        # MASKBITS may be stored as int16 with bit 15 (ALLMASK_I) as the sign bit
        out = data.astype(np.int32 if unit == "MASKBITS" else np.float32, copy=False)
        return (out if out.flags.writeable else out.copy()), wcs, hdu.header
