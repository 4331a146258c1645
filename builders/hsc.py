"""HSC-SSP PDR3 Wide coadd patches -> image rows: g,r,i,z,y cutouts centred on catalogue objects.

Format (hsc-release.mtk.nao.ac.jp/doc, PDR3 data products): `deepCoadd-results/<filter>/<tract>/
<patch>/calexp-<filter>-<tract>-<patch>.fits`, with `<filter>` HSC-G, HSC-R2 (or HSC-R), HSC-I2
(or HSC-I), HSC-Z, HSC-Y and `<patch>` "x,y". HDU 0 is empty (its header holds FLUXMAG0, the flux
of a 0-mag source: the coadds have a 27.0 AB zero point), HDU 1 `IMAGE` (float32, the tract's TAN
WCS shifted to the patch, 0.168"/pixel), HDU 2 `MASK` (int32 bit planes; the header's `MP_<NAME>`
cards give each plane's bit) and HDU 3 `VARIANCE`. The das cutout service writes the same three
HDUs, so its files read the same way. The objects come from a PDR3 catalogue query (CAS SQL,
saved as FITS) under `catalog/`: object_id, ra, dec, tract and the per-band PSF moments
`<b>_sdssshape_psf_shape11/22`.

One raw input is one tract: its catalogue rows and every patch file of the tract. Patches of a
tract overlap by 100 px; each object is cut from the patch that holds its whole cutout (the one
where it lies farthest from the edge), else from the patch holding its pixel (padded, see
`HscConfig.edge_policy`). Cutouts are plain pixel copies (`astropy.nddata.Cutout2D`, no
resampling): the object's pixel, round(WCS x, y), sits at index (S//2, S//2).

Units: flux in nanomaggies (AB 22.5), as the Legacy Survey builder writes: flux x 1e9 / FLUXMAG0
(x 10^(-0.4 (27.0 - 22.5)) = 1/63.0957 when FLUXMAG0 is absent); ivar = 1 / variance in the same
units, 0 where the variance is <= 0 or not finite. The mask is True where a pixel has one of
`HscConfig.mask_planes` set, where ivar is 0, where the flux is not finite, or off the patch.

A band without a file for the chosen patch is kept masked (flux 0, ivar 0, mask True, psf_fwhm
0) and left out of `bands_observed`. A patch file that cannot be read rejects the objects cut
from it, naming the file; a tract without a catalogue row or without patch files is rejected.
"""
from __future__ import annotations

import contextlib
import logging
import netrc
import os
import re
import urllib.request
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from mmu.engine.builder import Builder, BuilderConfig, InputRejected, RawInput, Rejection, register_builder
from mmu.model.schema import ImageSpec, image_array

from ._common import (
    FetchError,
    common_columns,
    download,
    has_column,
    native,
    open_fits,
    require_columns,
    reraise_environment,
)

log = logging.getLogger(__name__)

CALEXP_RE = re.compile(r"^calexp-(HSC-[GRIZY]2?)-([0-9]+)-([0-9]+,[0-9]+)\.fits$")
#: filters of each band, preferred first (PDR3 Wide: the r2/i2 filters replaced r/i in 2016)
FILTERS = {"g": ("HSC-G",), "r": ("HSC-R2", "HSC-R"), "i": ("HSC-I2", "HSC-I"), "z": ("HSC-Z",), "y": ("HSC-Y",)}
BAND_OF = {f: b for b, fs in FILTERS.items() for f in fs}
ZEROPOINT_AB = 27.0  # PDR3 coadds: mag = 27.0 - 2.5 log10(flux)
NANOMAGGY_AB = 22.5
#: mask planes that make a pixel bad by default (the rest, e.g. DETECTED, BRIGHT_OBJECT, CLIPPED,
#: NOT_DEBLENDED, INEXACT_PSF, REJECTED, SENSOR_EDGE, CROSSTALK, describe good pixels)
DEFAULT_MASK_PLANES = ("BAD", "SAT", "INTRP", "CR", "EDGE", "NO_DATA", "SUSPECT", "UNMASKEDNAN")
FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))
ARCHIVE = "https://hsc-release.mtk.nao.ac.jp/archive/filetree/{rerun}/"
ARCHIVE_HOST = "hsc-release.mtk.nao.ac.jp"
USER_ENV, PASSWORD_ENV = "HSC_SSP_CAS_USER", "HSC_SSP_CAS_PASSWORD"
CATALOG_COLUMNS = [("hsc_object_id", pa.int64()), ("tract", pa.int32()), ("patch", pa.int32()),
                   ("i_extendedness_value", pa.float32())]
PER_BAND = [("{b}_cmodel_mag", pa.float32()), ("{b}_cmodel_magerr", pa.float32())]


@dataclass(frozen=True)
class HscConfig(BuilderConfig):
    rerun: str = "pdr3_wide"
    bands: tuple = ("g", "r", "i", "z", "y")
    #: 160 px x 0.168" = 26.9", the field of the Legacy Survey's 96 px x 0.262" = 25.2" cutout
    #: (the nearest even size above 25.2"/0.168" = 150 px, so both cover the same galaxy scale)
    cutout_size: int = 160
    #: "pad": a cutout reaching past every patch is kept with the missing pixels flux 0, ivar 0,
    #: mask True; "skip": such an object is rejected with its reason. An object whose own pixel
    #: is off every patch of its tract is always rejected.
    edge_policy: str = "pad"
    mask_planes: tuple = DEFAULT_MASK_PLANES
    #: the AB magnitude of flux 1 when a file has no FLUXMAG0 card (PDR3: 27.0)
    zeropoint_mag: float = ZEROPOINT_AB
    #: units of the catalogue's `<b>_sdssshape_psf_shape11/22` (PDR3 database: arcsec^2)
    psf_moment_unit: str = "arcsec2"
    mag_limit: float | None = None  # keep objects brighter than this cmodel mag in `mag_band`
    mag_band: str = "i"
    chunk_rows: int = 64

    def __post_init__(self):
        if self.edge_policy not in ("pad", "skip"):
            raise ValueError(f"edge_policy must be 'pad' or 'skip', not {self.edge_policy!r}")
        if self.psf_moment_unit not in ("arcsec2", "pixel2"):
            raise ValueError(f"psf_moment_unit must be 'arcsec2' or 'pixel2', not {self.psf_moment_unit!r}")
        unknown = [b for b in self.bands if b not in FILTERS]
        if unknown:
            raise ValueError(f"bands {unknown} are not HSC broad bands {list(FILTERS)}")
        if self.cutout_size < 2:
            raise ValueError(f"cutout_size must be >= 2, not {self.cutout_size}")


@dataclass
class _Plane:
    """One band's patch file, opened: the three planes (memory-mapped), WCS and calibration."""

    path: Path
    filter: str
    image: np.ndarray
    mask: np.ndarray
    variance: np.ndarray
    wcs: object
    bad_bits: int
    to_nmgy: float


@register_builder("hsc")
class Hsc(Builder):
    version = "1"
    Config = HscConfig

    def __init__(self, config=None):
        super().__init__(config)
        self._missing: dict[str, dict[str, list[str]]] = {}  # tract -> band -> patches without it

    def modalities(self):
        c = self.config
        return {"image": ImageSpec(tuple(f"hsc-{b}" for b in c.bands), c.cutout_size, c.cutout_size, "nanomaggy")}

    def extra_columns(self):
        fields = [pa.field(n, t) for n, t in CATALOG_COLUMNS]
        fields += [pa.field("cutout_patch", pa.string()), pa.field("bands_observed", pa.list_(pa.string())),
                   pa.field("filters", pa.list_(pa.string()))]
        for b in self.config.bands:
            fields += [pa.field(n.format(b=b), t) for n, t in PER_BAND]
        return fields

    # ---------------------------------------------------------------------------------------

    def _patch_files(self, raw) -> dict[int, dict[str, dict[str, Path]]]:
        """{tract: {patch: {band: path}}} of the calexp files under `raw` (preferred filter first)."""
        out: dict[int, dict[str, dict[str, Path]]] = defaultdict(lambda: defaultdict(dict))
        rank: dict[tuple, int] = {}
        for p in sorted(Path(raw).rglob("calexp-HSC-*.fits")):
            m = CALEXP_RE.match(p.name)
            if not m or m.group(1) not in BAND_OF:
                continue
            filt, tract, patch = m.group(1), int(m.group(2)), m.group(3)
            band = BAND_OF[filt]
            if band not in self.config.bands:
                continue
            r = FILTERS[band].index(filt)
            if rank.get((tract, patch, band), 99) > r:
                rank[tract, patch, band] = r
                out[tract][patch][band] = p
        return out

    def _catalog_files(self, raw) -> list[Path]:
        return sorted(p for p in Path(raw).rglob("*.fits") if p.parent.name == "catalog")

    def list_inputs(self, raw):
        patches = self._patch_files(raw)
        catalogs = self._catalog_files(raw)
        tracts: dict[int, list[Path]] = defaultdict(list)
        unreadable = []
        for cat in catalogs:
            try:
                with open_fits(cat) as hd:
                    if len(hd) > 1 and hasattr(hd[1], "columns") and has_column(hd[1].data, "tract"):
                        for t in np.unique(native(hd[1].data["tract"]).astype(np.int64)).tolist():
                            tracts[t].append(cat)
                        continue
            except InputRejected:
                pass
            unreadable.append(cat)
        out = []
        for t in sorted(set(tracts) | set(patches)):
            files = [str(c) for c in tracts.get(t, [])] + [str(p) for patch in sorted(patches.get(t, {}))
                                                           for p in patches[t][patch].values()]
            out.append(RawInput(f"{self.config.rerun}/tract-{t}", tuple(files)))
        # a catalogue that cannot be read (or has no tract column): listed, so `read` rejects it
        out += [RawInput(f"{self.config.rerun}/catalog/{c.name}", (str(c),)) for c in unreadable]
        self._missing = {}
        for t, per_patch in patches.items():
            for patch, bands in sorted(per_patch.items()):
                for b in self.config.bands:
                    if b not in bands:
                        self._missing.setdefault(str(t), {}).setdefault(b, []).append(patch)
        return sorted(out, key=lambda i: i.key)

    def manifest_extra(self) -> dict:
        """Patches kept with some bands masked (information, not rejections)."""
        if not self._missing:
            return {}
        return {"input_notes": {"patches_missing_bands": self._missing}}

    # ---------------------------------------------------------------------------------------

    def read(self, item):
        c = self.config
        if "/catalog/" in item.key:
            path = Path(item.paths[0])
            with open_fits(path) as hd:
                if len(hd) < 2 or not hasattr(hd[1], "columns"):
                    raise InputRejected(f"{path.name}: HDU 1 is not a catalogue table; save the PDR3 CAS "
                                        "query as FITS")
                require_columns(hd[1].data, ["object_id", "ra", "dec", "tract"], path, "HDU1",
                                "is this a PDR3 catalogue query with tract?")
            raise InputRejected(f"{path.name}: catalogue has no rows")
        tract = int(item.key.rsplit("tract-", 1)[1])
        cats = [Path(p) for p in item.paths if Path(p).parent.name == "catalog"]
        calexps = [Path(p) for p in item.paths if CALEXP_RE.match(Path(p).name)]
        if not cats:
            raise InputRejected(f"tract {tract}: patch files {sorted({p.parent.name for p in calexps})} but no "
                                f"catalogue rows with tract = {tract} (expected a FITS table under catalog/); "
                                "query the PDR3 catalogue for it")
        if not calexps:
            raise InputRejected(f"tract {tract}: catalogue rows but no calexp files under "
                                f"deepCoadd-results/<filter>/{tract}/; download them (mmu fetch)")
        cat = self._catalog(cats, tract)
        files: dict[str, dict[str, Path]] = defaultdict(dict)
        for p in calexps:
            m = CALEXP_RE.match(p.name)
            files[m.group(3)][BAND_OF[m.group(1)]] = p
        keep = np.ones(len(cat["ra"]), bool)
        if c.mag_limit is not None:
            mags = cat["mag"]
            if mags is None:
                raise InputRejected(f"tract {tract}: catalogue lacks {c.mag_band}_cmodel_mag needed by mag_limit")
            with np.errstate(invalid="ignore"):
                keep &= mags < c.mag_limit
        bad_files: dict[Path, str] = {}
        geometry = {}  # patch -> (wcs, (h, w)) from the first readable band file
        for patch, bands in sorted(files.items()):
            for b in c.bands:
                if b not in bands or bands[b] in bad_files:
                    continue
                try:
                    geometry[patch] = _geometry(bands[b])
                    break
                except InputRejected as e:
                    bad_files[bands[b]] = str(e)
        # each object's best patch: the largest margin between its cutout and the patch edge
        # (>= 0: the whole cutout inside); one vectorised WCS call per patch
        half, n = c.cutout_size // 2, len(keep)
        sky_ok = (cat["ra"] >= 0) & (cat["ra"] < 360) & (cat["dec"] >= -90) & (cat["dec"] <= 90)
        names = sorted(geometry)
        margin = np.full((len(names), n), -np.inf)
        for k, patch in enumerate(names):
            wcs, (h, w) = geometry[patch]
            with np.errstate(invalid="ignore"):
                x, y = wcs.all_world2pix(np.where(sky_ok, cat["ra"], 0.0), np.where(sky_ok, cat["dec"], 0.0), 0)
            cx, cy = np.floor(x + 0.5), np.floor(y + 0.5)
            on = (cx >= 0) & (cx < w) & (cy >= 0) & (cy < h)
            m = np.minimum.reduce([cx - half, cy - half, w - (cx - half + c.cutout_size),
                                   h - (cy - half + c.cutout_size)])
            margin[k] = np.where(on, m, -np.inf)
        best = np.argmax(margin, axis=0) if names else np.zeros(n, int)
        best_margin = margin[best, np.arange(n)] if names else np.full(n, -np.inf)
        chosen = np.array([names[k] for k in best], object) if names else np.full(n, "", object)
        for i in np.flatnonzero(keep):
            where = f"{cat['file'][i]} row {cat['row'][i]} (object_id {cat['object_id'][i]})"
            ra, dec = cat["ra"][i], cat["dec"][i]
            if not sky_ok[i]:  # NaN fails too
                keep[i] = False
                yield Rejection(item.key, f"{where}: ra, dec = {ra}, {dec} out of range", int(cat["row"][i]),
                                str(cat["object_id"][i]), "dec" if 0 <= ra < 360 else "ra", cat["file"][i])
            elif not np.isfinite(best_margin[i]):
                keep[i] = False
                bad = [f.name for f in bad_files]
                yield Rejection(item.key, f"{where}: ra, dec = {ra:.6f}, {dec:.6f} lies on no readable patch of "
                                f"tract {tract} (patches {sorted(files)}" + (f"; unreadable {bad}" if bad else "")
                                + ")", int(cat["row"][i]), str(cat["object_id"][i]), file=cat["file"][i])
            elif best_margin[i] < 0 and c.edge_policy == "skip":
                keep[i] = False
                yield Rejection(item.key, f"{where}: {c.cutout_size}px cutout reaches past the edge of every "
                                f"patch (best {chosen[i]}; edge_policy: skip)", int(cat["row"][i]),
                                str(cat["object_id"][i]), file=cat["file"][i])
        for patch in sorted(set(chosen[keep])):
            rows = np.flatnonzero(keep & (chosen == patch))
            with contextlib.ExitStack() as stack:
                planes, broken = {}, None
                for b in c.bands:
                    path = files[patch].get(b)
                    if path is None:
                        continue
                    if path in bad_files:
                        broken = (path, bad_files[path])
                        break
                    try:
                        planes[b] = _plane(stack.enter_context(open_fits(path, memmap=True)), path, c)
                    except InputRejected as e:
                        bad_files[path] = str(e)
                        broken = (path, str(e))
                        break
                if broken is not None:
                    for i in rows:
                        yield Rejection(item.key, f"object_id {cat['object_id'][i]}: its patch {patch} file "
                                        f"{broken[1]}", int(cat["row"][i]), str(cat["object_id"][i]),
                                        file=broken[0].name)
                    continue
                for s in range(0, len(rows), c.chunk_rows):
                    yield self._chunk(cat, rows[s:s + c.chunk_rows], planes, patch)

    def _catalog(self, paths: list[Path], tract: int) -> dict:
        c = self.config
        parts = defaultdict(list)
        for path in paths:
            with open_fits(path) as hd:
                if len(hd) < 2 or not hasattr(hd[1], "columns"):
                    raise InputRejected(f"{path.name}: HDU 1 is not a catalogue table")
                t = hd[1].data
                need = ["object_id", "ra", "dec", "tract"] + [f"{b}_sdssshape_psf_shape{k}"
                                                             for b in c.bands for k in ("11", "22")]
                require_columns(t, need, path, "HDU1", "query the PDR3 catalogue with these columns (docs/hsc.md)")
                sel = np.flatnonzero(native(t["tract"]).astype(np.int64) == tract)
                n = len(sel)
                parts["row"].append(sel)
                parts["file"].append(np.full(n, path.name, object))
                parts["object_id"].append(native(t["object_id"]).astype(np.int64)[sel])
                parts["ra"].append(native(t["ra"]).astype(float)[sel])
                parts["dec"].append(native(t["dec"]).astype(float)[sel])
                moments = []
                for b in c.bands:
                    m = (native(t[f"{b}_sdssshape_psf_shape11"]).astype(float)[sel]
                         + native(t[f"{b}_sdssshape_psf_shape22"]).astype(float)[sel]) / 2.0
                    moments.append(m)
                parts["psf_moment"].append(np.stack(moments, 1))
                mag_col = f"{c.mag_band}_cmodel_mag"
                parts["mag"].append(native(t[mag_col]).astype(float)[sel] if has_column(t, mag_col)
                                    else np.full(n, np.nan))
                parts["has_mag"].append(has_column(t, mag_col))
                cols = {}
                for name, typ in CATALOG_COLUMNS:
                    src = "object_id" if name == "hsc_object_id" else name
                    cols[name] = _column(t, src, typ, sel)
                for b in c.bands:
                    for pattern, typ in PER_BAND:
                        cols[pattern.format(b=b)] = _column(t, pattern.format(b=b), typ, sel)
                parts["columns"].append(pa.table(cols))
        cat = {k: np.concatenate(parts[k]) for k in ("row", "file", "object_id", "ra", "dec", "psf_moment", "mag")}
        cat["mag"] = cat["mag"] if all(parts["has_mag"]) else None
        cat["columns"] = pa.concat_tables(parts["columns"])
        with np.errstate(invalid="ignore"):
            sigma = np.sqrt(cat["psf_moment"])
        cat["sigma"] = sigma  # arcsec, or pixels (psf_moment_unit: pixel2, scaled per patch)
        return cat

    def _chunk(self, cat, rows, planes: dict[str, _Plane], patch: str) -> pa.Table:
        from astropy.nddata import Cutout2D, NoOverlapError
        from astropy.wcs.utils import proj_plane_pixel_scales

        c = self.config
        n, nb, size = len(rows), len(c.bands), c.cutout_size
        flux = np.zeros((n, nb, size, size), np.float32)
        ivar = np.zeros((n, nb, size, size), np.float32)
        mask = np.ones((n, nb, size, size), bool)
        psf = np.zeros((n, nb), np.float32)
        scale = None
        for j, b in enumerate(c.bands):
            p = planes.get(b)
            if p is None:  # no file in this band: flux 0, ivar 0, mask True, psf_fwhm 0
                continue
            pix = float(np.mean(proj_plane_pixel_scales(p.wcs))) * 3600.0
            scale = pix if scale is None else scale
            sigma = cat["sigma"][rows, j] * (pix if c.psf_moment_unit == "pixel2" else 1.0)
            psf[:, j] = np.nan_to_num(FWHM_PER_SIGMA * sigma, nan=0.0)  # not measured: 0 (unknown)
            x, y = p.wcs.all_world2pix(cat["ra"][rows], cat["dec"][rows], 0)
            for k in range(n):
                pos = (int(np.floor(x[k] + 0.5)), int(np.floor(y[k] + 0.5)))
                try:
                    cut = Cutout2D(p.image, pos, (size, size), mode="partial", fill_value=np.nan, copy=True)
                except NoOverlapError:  # this band's pixel grid misses the object: stays masked
                    continue
                src, dst = cut.slices_original, (k, j) + cut.slices_cutout
                img = cut.data.astype(np.float64)[cut.slices_cutout]
                var = p.variance[src].astype(np.float64)
                good = np.isfinite(var) & (var > 0) & np.isfinite(img)
                with np.errstate(divide="ignore", invalid="ignore"):
                    iv = np.where(good, 1.0 / (var * p.to_nmgy**2), 0.0)
                flux[dst] = np.where(np.isfinite(img), img * p.to_nmgy, 0.0)
                ivar[dst] = iv
                mask[dst] = ((p.mask[src] & p.bad_bits) != 0) | ~good
        cols = common_columns([str(o) for o in cat["object_id"][rows]], cat["ra"][rows], cat["dec"][rows], "hsc",
                              c.rerun.split("_")[0])  # release: pdr3
        cols["image"] = image_array(self.modalities()["image"], flux, ivar, mask, psf, scale or 0.168)
        table = cat["columns"].take(pa.array(rows))
        for name in table.column_names:
            cols[name] = table[name].combine_chunks()
        cols["cutout_patch"] = pa.array([patch] * n, pa.string())
        cols["bands_observed"] = pa.array([[f"hsc-{b}" for b in c.bands if b in planes]] * n, pa.list_(pa.string()))
        cols["filters"] = pa.array([[planes[b].filter for b in c.bands if b in planes]] * n, pa.list_(pa.string()))
        return pa.table(cols)

    # ---------------------------------------------------------------------------------------

    def fetch(self, raw, limit=None, patches: list[str] | None = None):
        """Download the calexp coadd of each band for each "tract/x,y" patch in `patches` (the
        first `limit` of them) into RAW/hsc/<rerun>/deepCoadd-results/<filter>/<tract>/<patch>/.

        The PDR3 release site needs an account (hsc-release.mtk.nao.ac.jp/datasearch/new_user):
        the user name and password come from the environment (HSC_SSP_CAS_USER,
        HSC_SSP_CAS_PASSWORD) or from ~/.netrc (`machine hsc-release.mtk.nao.ac.jp login U
        password P`). r and i try HSC-R2 / HSC-I2 first, then HSC-R / HSC-I; a band the archive has
        no file of for a patch is skipped with a warning (`mmu build` masks it). The catalogue is a
        CAS SQL query result (docs/hsc.md gives the query), saved as FITS under
        RAW/hsc/<rerun>/catalog/."""
        if not patches:
            raise ValueError("hsc fetch needs patches as 'tract/x,y', e.g. patches=['9813/4,4']")
        bad = [p for p in patches if not re.fullmatch(r"[0-9]+/[0-9]+,[0-9]+", p)]
        if bad:
            raise ValueError(f"hsc patches {bad} are not 'tract/x,y' (e.g. '9813/4,4')")
        user, password = credentials()
        base = ARCHIVE.format(rerun=self.config.rerun)
        root = Path(raw) / "hsc" / self.config.rerun
        got = []
        manager = urllib.request.HTTPPasswordMgrWithDefaultRealm()
        manager.add_password(None, base, user, password)
        previous = urllib.request._opener  # download() opens through the global opener
        urllib.request.install_opener(urllib.request.build_opener(urllib.request.HTTPBasicAuthHandler(manager)))
        try:
            for item in patches[:limit] if limit else patches:
                tract, patch = item.split("/")
                for b in self.config.bands:
                    for k, filt in enumerate(FILTERS[b]):
                        rel = f"deepCoadd-results/{filt}/{tract}/{patch}/calexp-{filt}-{tract}-{patch}.fits"
                        try:
                            got.append(download(base + rel, root / rel))
                            break
                        except FetchError as e:
                            if e.status == 401:
                                raise FetchError(e.url, f"{e.reason}: the PDR3 account was refused; check "
                                                 f"{USER_ENV}/{PASSWORD_ENV} or ~/.netrc", 401) from None
                            if e.status != 404:
                                raise
                            if k == len(FILTERS[b]) - 1:
                                log.warning("patch %s has no %s-band coadd in the archive (no coverage; `mmu "
                                            "build` masks the band): %s", item, b, e)
        finally:
            urllib.request.install_opener(previous)
        return got


def credentials() -> tuple[str, str]:
    """The PDR3 account: HSC_SSP_CAS_USER / HSC_SSP_CAS_PASSWORD, else ~/.netrc's entry for the
    release host. Raises ValueError (one line, saying where to put them) when neither has it."""
    user, password = os.environ.get(USER_ENV), os.environ.get(PASSWORD_ENV)
    if user and password:
        return user, password
    try:
        entry = netrc.netrc().authenticators(ARCHIVE_HOST)
    except (FileNotFoundError, netrc.NetrcParseError):
        entry = None
    if entry and entry[0] and entry[2]:
        return entry[0], entry[2]
    raise ValueError(f"hsc fetch needs a PDR3 account (hsc-release.mtk.nao.ac.jp): set {USER_ENV} and "
                     f"{PASSWORD_ENV}, or add 'machine {ARCHIVE_HOST} login USER password PASS' to ~/.netrc")


def _column(t, name: str, typ, sel) -> pa.Array:
    if not has_column(t, name):
        return pa.nulls(len(sel), typ)
    return pa.array(native(t[name])[sel]).cast(typ)


def _geometry(path: Path):
    """(WCS, (height, width)) of a calexp's IMAGE HDU, from its header only."""
    from astropy.wcs import WCS

    with open_fits(path, memmap=True) as hd:
        _check_hdus(hd, path)
        h = hd["IMAGE"].header
        return WCS(h), (int(h["NAXIS2"]), int(h["NAXIS1"]))


def _check_hdus(hd, path: Path) -> None:
    names = [h.name for h in hd]
    missing = [n for n in ("IMAGE", "MASK", "VARIANCE") if n not in names]
    if missing:
        raise InputRejected(f"{path.name}: HDU(s) {missing} missing (found {names}); is this a calexp coadd?")
    shapes = {n: (hd[n].header.get("NAXIS2"), hd[n].header.get("NAXIS1")) for n in ("IMAGE", "MASK", "VARIANCE")}
    if len(set(shapes.values())) != 1 or hd["IMAGE"].header.get("NAXIS") != 2:
        raise InputRejected(f"{path.name}: IMAGE, MASK and VARIANCE shapes differ ({shapes})")


def mask_bits(header, planes) -> dict[str, int]:
    """{plane: bit} of the `MP_<plane>` cards of a MASK header, for the planes it has."""
    return {p: int(header[f"MP_{p}"]) for p in planes if f"MP_{p}" in header}


def _plane(hd, path: Path, c: HscConfig) -> _Plane:
    """The planes, WCS, masked bits and nanomaggy factor of an open calexp (data memory-mapped)."""
    from astropy.wcs import WCS

    _check_hdus(hd, path)
    fluxmag0 = hd[0].header.get("FLUXMAG0", hd["IMAGE"].header.get("FLUXMAG0"))
    if fluxmag0 is not None and not (isinstance(fluxmag0, (int, float)) and np.isfinite(fluxmag0) and fluxmag0 > 0):
        raise InputRejected(f"{path.name}: FLUXMAG0 = {fluxmag0!r} is not a positive number")
    to_nmgy = 1e9 / float(fluxmag0) if fluxmag0 is not None else 10 ** (-0.4 * (c.zeropoint_mag - NANOMAGGY_AB))
    bits = mask_bits(hd["MASK"].header, c.mask_planes)
    if not bits:
        raise InputRejected(f"{path.name}: MASK header has none of the MP_* cards of {list(c.mask_planes)}")
    try:
        image, mask, variance = (hd[n].data for n in ("IMAGE", "MASK", "VARIANCE"))
    except (OSError, ValueError, TypeError) as e:
        reraise_environment(e)
        raise InputRejected(f"{path.name}: image data unreadable ({e}); re-download it") from None
    m = CALEXP_RE.match(path.name)
    return _Plane(path, m.group(1) if m else "", image, mask, variance, WCS(hd["IMAGE"].header),
                  sum(1 << b for b in bits.values()), to_nmgy)
