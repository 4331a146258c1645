"""HSC-SSP PDR3 Wide mock: calexp coadd patches (IMAGE, MASK, VARIANCE) and a catalogue query.

The mock universe's galaxies are drawn with the sim's own galaxy profiles
(`mmu.sim.morphology.galsim_profile`, bulge + disk) convolved with a Moffat PSF of HSC seeing,
on 0.168"/pixel TAN grids, in the PDR3 coadd units (AB zero point 27.0, FLUXMAG0 in HDU 0). Each
field of the universe (its `tile`) is one tract: a TAN projection about the field's centre cut
into patches of `patch_size` pixels that overlap their neighbours by `overlap` pixels on each
side, as the real skymap's 4000 + 2 x 100 px patches. Only patches that hold galaxies are
written, cropped to the galaxies plus `pad` pixels (the real patches are 4200 px; the crop keeps
the mock small and shifts CRPIX and LTV1/2 as the pipeline's xy0 does).

Band fluxes are the galaxies' SEDs (rebuilt from the truth columns with `mmu.sim.sed`) through the
speclite `hsc2017` filter curves (r2 and i2 for r and i, as PDR3 Wide), after Milky Way dust, or
the `flux_hsc_<band>` columns when the table has them. The noise is the PDR3 Wide median depth
(5-sigma point source, Aihara et al. 2022), Gaussian and sky-limited: VARIANCE is its square. The
MASK planes carry the pipeline's `MP_<NAME>` cards; the mock sets DETECTED (> 2 sigma), SAT and
INTRP (a saturation level), CR (a few cosmic-ray pixels left in a coadd) and BAD (a bad column,
rarely, with infinite variance). A band without coverage (`missing`) has no file, as in PDR3.

The catalogue (catalog/pdr3_wide-mock.fits) holds what a PDR3 CAS query returns for the builder:
object_id (tract << 42 | patch << 32 | n), ra, dec, tract, patch (x * 100 + y), per band
cmodel mag / magerr and the PSF's adaptive moments `<b>_sdssshape_psf_shape11/22` (arcsec^2),
i_extendedness_value.
"""
from __future__ import annotations

import contextlib
import functools
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from mmu.sim import fitsio_util, morphology
from mmu.sim.config import SimConfig

log = logging.getLogger(__name__)

HSC_BANDS = ("g", "r", "i", "z", "y")
FILTERS = {"g": "HSC-G", "r": "HSC-R2", "i": "HSC-I2", "z": "HSC-Z", "y": "HSC-Y"}
SPECLITE = {"g": "hsc2017-g", "r": "hsc2017-r2", "i": "hsc2017-i2", "z": "hsc2017-z", "y": "hsc2017-y"}
PIXSCALE = 0.168  # arcsec / pixel
ZEROPOINT = 27.0
FLUXMAG0 = 10 ** (0.4 * ZEROPOINT)
COUNTS_PER_NMGY = 10 ** (0.4 * (ZEROPOINT - 22.5))
#: PDR3 Wide medians (Aihara et al. 2022, table 2): seeing FWHM [arcsec], 5-sigma depth [AB]
SEEING = {"g": 0.79, "r": 0.75, "i": 0.61, "z": 0.68, "y": 0.68}
DEPTH = {"g": 26.5, "r": 26.5, "i": 26.2, "z": 25.2, "y": 24.4}
#: the pipeline's mask planes and bits (hscPipe 8, as in the PDR3 calexp MASK headers)
MASK_PLANES = {"BAD": 0, "SAT": 1, "INTRP": 2, "CR": 3, "EDGE": 4, "DETECTED": 5, "DETECTED_NEGATIVE": 6,
               "SUSPECT": 7, "NO_DATA": 8, "BRIGHT_OBJECT": 9, "CROSSTALK": 10, "NOT_DEBLENDED": 11,
               "UNMASKEDNAN": 12, "REJECTED": 13, "CLIPPED": 14, "SENSOR_EDGE": 15, "INEXACT_PSF": 16}
SATURATION_COUNTS = 3.0e4
CR_PER_PIXEL = 2e-5
BAD_COLUMN_PROB = 0.05
TRACT_OFFSET = 9000  # tract = TRACT_OFFSET + tile
NPATCH = 9  # patches on a side of a tract


def hsc_fluxes(galaxies: pd.DataFrame, cfg: SimConfig | None = None) -> np.ndarray:
    """(n, 5) g,r,i,z,y fluxes in nanomaggies, below the Milky Way's dust.

    From `flux_hsc_<b>` (and `mw_transmission_hsc_<b>` when given) if the table has them, else
    from each galaxy's SED rebuilt from its truth columns (coeff0-4, line_scale, av, sed_tilt1/2,
    z, mass_formed, ebv_mw) as `mmu.sim.universe.draw_cell` builds it.
    """
    if all(f"flux_hsc_{b}" in galaxies for b in HSC_BANDS):
        out = np.column_stack([galaxies[f"flux_hsc_{b}"].to_numpy(float) for b in HSC_BANDS])
        mw = [f"mw_transmission_hsc_{b}" for b in HSC_BANDS]
        if all(c in galaxies for c in mw):
            out = out * np.column_stack([galaxies[c].to_numpy(float) for c in mw])
        return out
    from mmu.sim import sed
    from mmu.sim.config import cosmology

    cfg = cfg or SimConfig()
    if not len(galaxies):
        return np.zeros((0, len(HSC_BANDS)))
    coeffs = galaxies[[f"coeff{k}" for k in range(5)]].to_numpy(float)
    tilt = galaxies[["sed_tilt1", "sed_tilt2"]].to_numpy(float)
    rest = sed.rest_spectra(coeffs, galaxies["line_scale"].to_numpy(float), galaxies["av"].to_numpy(float), tilt)
    z = galaxies["z"].to_numpy(float)
    dl = cosmology(cfg.cosmology).luminosity_distance(z).value
    wave, flux = sed.observed_spectra(rest, z, galaxies["mass_formed"].to_numpy(float), dl)
    _, maggies_mw = sed.ab_maggies(wave, flux, [SPECLITE[b] for b in HSC_BANDS],
                                   ebv_mw=galaxies["ebv_mw"].to_numpy(float))
    return maggies_mw * 1e9


def tract_wcs_header(ra0: float, dec0: float, patch_size: int) -> dict:
    """The TAN WCS of a tract about (ra0, dec0): NPATCH x NPATCH patches, the centre in the middle."""
    s = PIXSCALE / 3600.0
    full = NPATCH * patch_size
    return {"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRVAL1": float(ra0), "CRVAL2": float(dec0),
            "CRPIX1": (full + 1) / 2.0, "CRPIX2": (full + 1) / 2.0, "CD1_1": -s, "CD1_2": 0.0, "CD2_1": 0.0,
            "CD2_2": s, "CUNIT1": "deg", "CUNIT2": "deg", "RADESYS": "ICRS", "EQUINOX": 2000.0}


def _wcs(header: dict):
    from astropy.wcs import WCS

    return WCS(header)


def _psf(fwhm_arcsec: float, cfg: SimConfig):
    import galsim

    return galsim.Moffat(beta=cfg.moffat_beta, fwhm=fwhm_arcsec / PIXSCALE)


def write_hsc(galaxies: pd.DataFrame, out_dir, rng: np.random.Generator, *, seed: int = 0,
              cfg: SimConfig | None = None, rerun: str = "pdr3_wide", patch_size: int = 4000,
              overlap: int = 100, pad: int = 100, seeing: dict | None = None, depth: dict | None = None,
              missing: dict | None = None, compress: bool = False) -> dict:
    """Write HSC PDR3 calexp patches and the catalogue of `galaxies` under `out_dir`/hsc/`rerun`/.

    Args:
        galaxies: the universe's galaxies (sim_truth galaxies columns: ra, dec, tile, the shape
            columns of `mmu.sim.morphology.draw` and the SED columns, see `hsc_fluxes`).
        out_dir: the raw root (the layout `mmu build hsc_pdr3_wide --raw out_dir` reads).
        rng: the noise, mask and catalogue-scatter stream.
        seed: written in the primary headers (MMUSEED).
        cfg: the sim config (Moffat beta, cosmology); the default config when None.
        rerun: the release folder name.
        patch_size: inner patch size in pixels (real: 4000); `overlap` pixels on each side.
        overlap: pixels a patch reaches into each neighbour (real: 100).
        pad: pixels kept around the galaxies when a patch is cropped.
        seeing: per-band PSF FWHM in arcsec (default `SEEING`); `depth` per-band 5-sigma AB depth.
        depth: per-band 5-sigma point-source depth, AB mag (default `DEPTH`).
        missing: {(tract, "x,y"): [bands]} whose files are not written (no coverage).
        compress: RICE tile-compress the three planes (floats quantised at 16 levels per noise
            sigma, as the Legacy Survey mock): ~4x smaller files. PDR3's own calexps are not
            compressed; the builder reads both.

    Returns:
        {"files": [paths], "catalog": path, "objects": n, "patches": [(tract, "x,y")]}.
    """
    cfg = cfg or SimConfig()
    seeing = {**SEEING, **(seeing or {})}
    depth = {**DEPTH, **(depth or {})}
    missing = missing or {}
    root = Path(out_dir) / "hsc" / rerun
    gal = galaxies.reset_index(drop=True)
    fluxes = hsc_fluxes(gal, cfg)
    tiles = gal["tile"].to_numpy(np.int64) if "tile" in gal else np.zeros(len(gal), np.int64)
    files, patches_written = [], []
    cat_parts = []
    for tile in np.unique(tiles):
        sel = np.flatnonzero(tiles == tile)
        tract = int(TRACT_OFFSET + tile)
        ra0 = float(np.degrees(np.angle(np.mean(np.exp(1j * np.radians(gal["ra"].to_numpy()[sel])))))) % 360.0
        dec0 = float(np.mean(gal["dec"].to_numpy()[sel]))
        thdr = tract_wcs_header(round(ra0, 4), round(dec0, 4), patch_size)
        x, y = _wcs(thdr).all_world2pix(gal["ra"].to_numpy()[sel], gal["dec"].to_numpy()[sel], 0)
        px, py = np.floor(x / patch_size).astype(int), np.floor(y / patch_size).astype(int)
        off = (px < 0) | (px >= NPATCH) | (py < 0) | (py >= NPATCH)
        if off.any():
            log.warning("tract %d: %d galaxies lie beyond the %d x %d patches of the tract; not observed",
                        tract, int(off.sum()), NPATCH, NPATCH)
        for (ix, iy) in sorted({(int(a), int(b)) for a, b in zip(px[~off], py[~off])}):
            x0, y0 = ix * patch_size - overlap, iy * patch_size - overlap
            x1, y1 = x0 + patch_size + 2 * overlap, y0 + patch_size + 2 * overlap
            near = (x >= x0 - pad) & (x < x1 + pad) & (y >= y0 - pad) & (y < y1 + pad)
            inside = (x >= x0) & (x < x1) & (y >= y0) & (y < y1)
            cx0 = int(max(x0, np.floor(x[inside].min()) - pad))
            cy0 = int(max(y0, np.floor(y[inside].min()) - pad))
            cx1 = int(min(x1, np.ceil(x[inside].max()) + pad + 1))
            cy1 = int(min(y1, np.ceil(y[inside].max()) + pad + 1))
            patch = f"{ix},{iy}"
            written = _render_patch(seed, rng, gal.iloc[sel[near]], fluxes[sel[near]], x[near] - cx0,
                                    y[near] - cy0, thdr, tract, patch, (cx0, cy0, cx1 - cx0, cy1 - cy0), root,
                                    cfg, seeing, depth, missing.get((tract, patch), ()), compress)
            files += written
            patches_written.append((tract, patch))
        # catalogue rows: the objects whose inner patch is written, ids packed as the skymap does
        idx = sel[~off]
        pxi, pyi = px[~off], py[~off]
        order = np.lexsort((idx, pyi, pxi))
        seq = np.zeros(len(idx), np.int64)
        key = pxi[order] * 100 + pyi[order]
        for k in np.unique(key):
            seq[order[key == k]] = np.arange(np.sum(key == k))
        patch_code = (pxi * 100 + pyi).astype(np.int64)
        oid = (np.int64(tract) << 42) | (patch_code << 32) | seq
        cat_parts.append(_catalog_rows(rng, gal.iloc[idx], fluxes[idx], oid, tract, patch_code, seeing, depth))
    cat_path = root / "catalog" / f"{rerun}-mock.fits"
    rows = {k: np.concatenate([p[k] for p in cat_parts]) for k in cat_parts[0]} if cat_parts else {}
    _write_catalog(seed, rows, cat_path)
    return {"files": [str(f) for f in files], "catalog": str(cat_path), "objects": len(rows.get("object_id", [])),
            "patches": patches_written}


def _render_patch(seed, rng, src, fluxes, px, py, thdr, tract, patch, crop, root, cfg, seeing, depth, missing,
                  compress=False):
    import galsim

    x0, y0, nx, ny = crop
    hdr = dict(thdr, CRPIX1=thdr["CRPIX1"] - x0, CRPIX2=thdr["CRPIX2"] - y0)
    records = src.to_dict("records")
    out = []
    for b_i, band in enumerate(HSC_BANDS):
        psf = _psf(seeing[band], cfg)
        img = psf.drawImage(nx=64, ny=64, scale=1.0).array
        nea = float(1.0 / np.sum((img / img.sum()) ** 2))
        sig_pix = 10 ** (-0.4 * (depth[band] - ZEROPOINT)) / 5.0 / np.sqrt(nea)  # counts
        model = galsim.ImageF(nx, ny, scale=1.0)
        for i, row in enumerate(records):
            flux = fluxes[i, b_i] * COUNTS_PER_NMGY
            if not flux > 0:
                continue
            prof = galsim.Convolve(morphology.galsim_profile(row, flux, PIXSCALE), psf)
            hlr_pix = float(row["hlr_arcsec"]) / PIXSCALE
            size = int(np.clip(2 * np.ceil(8 * hlr_pix + 3 * seeing[band] / PIXSCALE), 32, 512))
            stamp = prof.drawImage(nx=size, ny=size, scale=1.0, center=galsim.PositionD(px[i] + 1.0, py[i] + 1.0))
            overlap = stamp.bounds & model.bounds
            if overlap.isDefined():
                model[overlap] += stamp[overlap]
        m = model.array.astype(np.float64)
        data = m + rng.normal(0.0, sig_pix, (ny, nx))
        variance = np.full((ny, nx), sig_pix**2, np.float32)
        mask = np.where(m > 2 * sig_pix, 1 << MASK_PLANES["DETECTED"], 0).astype(np.int32)
        sat = m > SATURATION_COUNTS
        if sat.any():
            data[sat] = SATURATION_COUNTS
            mask[sat] |= 1 << MASK_PLANES["SAT"]
            grown = sat.copy()
            grown[1:] |= sat[:-1]
            grown[:-1] |= sat[1:]
            mask[grown & ~sat] |= 1 << MASK_PLANES["INTRP"]
        n_cr = rng.poisson(CR_PER_PIXEL * nx * ny)
        cy, cx = rng.integers(0, ny, n_cr), rng.integers(0, nx, n_cr)
        data[cy, cx] += rng.uniform(20, 200, n_cr) * sig_pix
        mask[cy, cx] |= (1 << MASK_PLANES["CR"])
        if rng.random() < BAD_COLUMN_PROB:
            col = int(rng.integers(0, nx))
            data[:, col] = 0.0
            variance[:, col] = np.inf
            mask[:, col] |= 1 << MASK_PLANES["BAD"]
        if band in missing:  # drawn (the random stream stays aligned), never written
            continue
        out.append(write_calexp(root, FILTERS[band], tract, patch, data.astype(np.float32), mask, variance, hdr,
                                (x0, y0), seed, compress=compress))
    return out


def calexp_path(root: Path, filt: str, tract: int, patch: str) -> Path:
    return Path(root) / "deepCoadd-results" / filt / str(tract) / patch / f"calexp-{filt}-{tract}-{patch}.fits"


def write_calexp(root, filt: str, tract: int, patch: str, image, mask, variance, wcs_header: dict, xy0=(0, 0),
                 seed: int = 0, planes: dict | None = None, compress: bool = False) -> Path:
    """One calexp file: empty HDU 0 (FLUXMAG0), IMAGE, MASK (MP_* cards), VARIANCE; returns its path."""
    path = calexp_path(root, filt, tract, patch)
    primary = [("FILTER", filt, "filter"), ("TRACT", int(tract), ""), ("PATCH", patch, ""),
               ("FLUXMAG0", FLUXMAG0, "flux of a zero-magnitude source"), ("FLUXMAG0ERR", 0.0, "")]
    wcs_cards = [(k, v, "") for k, v in wcs_header.items()]
    wcs_cards += [("LTV1", -float(xy0[0]), "-x0 of the patch"), ("LTV2", -float(xy0[1]), "-y0 of the patch"),
                  ("INHERIT", True, "")]
    mp = [(f"MP_{k}", int(v), "mask plane bit") for k, v in (planes or MASK_PLANES).items()]
    hdus = [(np.asarray(image, np.float32), "IMAGE", wcs_cards + [("BUNIT", "count", "")]),
            (np.asarray(mask, np.int32), "MASK", wcs_cards + mp),
            (np.asarray(variance, np.float32), "VARIANCE", wcs_cards)]
    if not compress:
        fitsio_util.write_fits(path, [fitsio_util.primary(seed, primary)]
                               + [fitsio_util.image(d, name, cards) for d, name, cards in hdus])
        return path
    # fitsio names no compressed HDU (EXTNAME): astropy writes these, with a fixed dither seed
    from astropy.io import fits

    from mmu.hub.layout import atomic_path

    dither = 1 + (int(tract) * 97 + sum(map(ord, filt + patch))) % 10000
    head = fits.PrimaryHDU()
    for k, v, c in primary + fitsio_util.mock_cards(seed):
        head.header[k if len(k) <= 8 else f"HIERARCH {k}"] = (v, c)
    out = [head]
    for d, name, cards in hdus:
        h = fits.Header()
        for k, v, c in cards:
            h[k if len(k) <= 8 else f"HIERARCH {k}"] = (v, c)
        out.append(fits.CompImageHDU(d, h, name=name, compression_type="RICE_1", quantize_level=16.0,
                                     quantize_method=2, dither_seed=dither))
    with atomic_path(path) as tmp, _gzip_without_mtime():
        fits.HDUList(out).writeto(tmp)
    return path


@contextlib.contextmanager
def _gzip_without_mtime():
    """astropy gzips the tiles that quantisation cannot compress (e.g. constant ones) with
    `gzip.compress`, whose header holds the current time: same seed, different bytes. Within this
    block its codec writes MTIME 0 (readers ignore the field)."""
    import gzip

    try:
        from astropy.io.fits.hdu.compressed import _codecs
    except ImportError:  # pragma: no cover - another astropy layout: the bytes may then vary
        yield
        return
    if not hasattr(_codecs, "gzip_compress"):  # pragma: no cover
        yield
        return
    saved = _codecs.gzip_compress
    _codecs.gzip_compress = functools.partial(gzip.compress, mtime=0)
    try:
        yield
    finally:
        _codecs.gzip_compress = saved


def _catalog_rows(rng, src, fluxes, oid, tract, patch_code, seeing, depth) -> dict:
    n = len(src)
    rows = {"object_id": oid.astype(np.int64), "ra": src["ra"].to_numpy(float),
            "dec": src["dec"].to_numpy(float), "tract": np.full(n, tract, np.int32),
            "patch": patch_code.astype(np.int32), "i_extendedness_value": np.ones(n, np.float32)}
    hlr = src["hlr_arcsec"].to_numpy(float) if "hlr_arcsec" in src else np.zeros(n)
    for j, b in enumerate(HSC_BANDS):
        sigma_psf = seeing[b] / 2.3548
        noise = 10 ** (-0.4 * (depth[b] - 22.5)) / 5.0 * np.sqrt(1.0 + (hlr / sigma_psf) ** 2 / 2.0)
        f = fluxes[:, j] + rng.normal(0.0, 1.0, n) * noise
        with np.errstate(invalid="ignore", divide="ignore"):
            rows[f"{b}_cmodel_mag"] = np.where(f > 0, 22.5 - 2.5 * np.log10(f), np.nan).astype(np.float32)
            rows[f"{b}_cmodel_magerr"] = np.where(f > 0, 1.0857 * noise / f, np.nan).astype(np.float32)
        rows[f"{b}_sdssshape_psf_shape11"] = np.full(n, sigma_psf**2, np.float32)
        rows[f"{b}_sdssshape_psf_shape22"] = np.full(n, sigma_psf**2, np.float32)
        rows[f"{b}_sdssshape_psf_shape12"] = np.zeros(n, np.float32)
    return rows


def _write_catalog(seed: int, rows: dict, path: Path) -> None:
    fmt = {np.dtype(np.float32): "E", np.dtype(np.float64): "D", np.dtype(np.int32): "J",
           np.dtype(np.int64): "K"}
    if not rows:
        rows = {"object_id": np.zeros(0, np.int64), "ra": np.zeros(0), "dec": np.zeros(0),
                "tract": np.zeros(0, np.int32)}
    units = {"ra": "deg", "dec": "deg"}
    for k in rows:
        if k.endswith(("_mag", "_magerr")):
            units[k] = "mag"
        elif "sdssshape" in k:
            units[k] = "arcsec^2"
    cols = [(k, fmt[np.asarray(v).dtype], np.asarray(v)) for k, v in rows.items()]
    fitsio_util.write_fits(path, [fitsio_util.primary(seed, [("RERUN", path.parent.parent.name, "")]),
                                  fitsio_util.table(cols, None, units)])
