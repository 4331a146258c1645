"""Legacy Survey DR10 mock: coadd bricks (image, invvar, maskbits) and tractor catalogs.

Each brick is rendered with galsim on the brick's own TAN pixel grid (0.262"/pix, the real
3600x3600 layout), cropped to the region that holds sources, in nanomaggies. Catalogue fluxes are
the rendered fluxes (so a zero-point error is shared by image and catalogue) plus the noise of an
optimal fit and the leak of blended neighbours; the fitting itself is not simulated.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from mmu.sim import fitsio_util, morphology
from mmu.sim.config import DECAM_BANDS, SimConfig, rng_for

RELEASE = 10000  # DR10 south (DECam), see docs/sim.md
MASKBITS = {"NPRIMARY": 0, "BRIGHT": 1, "SATUR_G": 2, "SATUR_R": 3, "SATUR_Z": 4, "ALLMASK_G": 5,
            "ALLMASK_R": 6, "ALLMASK_Z": 7, "MEDIUM": 11, "SATUR_I": 14, "ALLMASK_I": 15}
SATURATION_NMGY_PER_PIX = 40.0
#: source kinds drawn as point sources (the PSF): stars and quasars
POINT_KINDS = ("star", "qso")


def npix_full(cfg: SimConfig) -> int:
    """Pixels on a side of the full brick image: the unique area plus the real ~0.006 deg margin."""
    return int(np.ceil((cfg.brick_deg + 0.012) * 3600.0 / cfg.pixscale_arcsec))


def brick_wcs_header(info: dict, x0: int, y0: int, nx: int, ny: int, cfg: SimConfig) -> dict:
    full = npix_full(cfg)
    s = cfg.pixscale_arcsec / 3600.0
    return {
        "CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRVAL1": float(info["ra"]), "CRVAL2": float(info["dec"]),
        "CRPIX1": (full + 1) / 2.0 - x0, "CRPIX2": (full + 1) / 2.0 - y0,
        "CD1_1": -s, "CD1_2": 0.0, "CD2_1": 0.0, "CD2_2": s, "CUNIT1": "deg", "CUNIT2": "deg",
        "EQUINOX": 2000.0, "RADESYS": "ICRS", "IMAGEW": float(nx), "IMAGEH": float(ny),
    }


def _wcs(header: dict):
    from astropy.wcs import WCS

    return WCS({k: v for k, v in header.items() if k not in ("IMAGEW", "IMAGEH")})


def crop_for(info: dict, ra, dec, cfg: SimConfig):
    """(x0, y0, nx, ny) on the full brick grid covering the sources plus the padding."""
    full = npix_full(cfg)
    hdr = brick_wcs_header(info, 0, 0, full, full, cfg)
    x, y = _wcs(hdr).all_world2pix(np.asarray(ra), np.asarray(dec), 0)
    pad = cfg.crop_pad_pix
    x0 = int(np.clip(np.floor(x.min()) - pad, 0, full - 1))
    y0 = int(np.clip(np.floor(y.min()) - pad, 0, full - 1))
    x1 = int(np.clip(np.ceil(x.max()) + pad + 1, x0 + 1, full))
    y1 = int(np.clip(np.ceil(y.max()) + pad + 1, y0 + 1, full))
    return x0, y0, x1 - x0, y1 - y0


def brick_conditions(seed: int, brickname: str, cfg: SimConfig) -> dict:
    """Seeing, depth and calibration error of one brick (per band)."""
    rng = rng_for(seed, "brick-conditions", brickname)
    fwhm = np.asarray(cfg.psf_fwhm_arcsec) * 10 ** rng.normal(0, cfg.psf_fwhm_scatter_dex, 4)
    depth = np.asarray(cfg.psfdepth_mag) + rng.normal(0, cfg.psfdepth_rms_mag, 4)
    zp_err = rng.normal(0, cfg.zeropoint_rms_mag, 4)
    nobs = rng.integers(2, 7, 4)
    # DR10 south has i-band over part of its footprint only: a brick without it has no i files
    observed = np.ones(len(DECAM_BANDS), bool)
    observed[DECAM_BANDS.index("i")] = rng_for(seed, "brick-i-coverage", brickname).random() >= \
        cfg.no_i_band_brick_fraction
    return {"fwhm": fwhm, "psfdepth_mag": depth, "zp_err_mag": zp_err, "nobs": nobs, "observed": observed}


def _psf(fwhm_arcsec, cfg):
    import galsim

    return galsim.Moffat(beta=cfg.moffat_beta, fwhm=fwhm_arcsec / cfg.pixscale_arcsec)


def _nea_pixels(psf) -> float:
    img = psf.drawImage(nx=64, ny=64, scale=1.0).array
    p = img / img.sum()
    return float(1.0 / np.sum(p**2))


def render_brick(seed: int, brick: dict, sources, out_root: Path, cfg: SimConfig):
    """Write the brick's image/invvar/maskbits files and return its tractor rows (a dict).

    `brick` holds brick_info fields plus the crop; `sources` is a DataFrame of galaxies and stars
    near the brick (columns of the truth tables, `kind` = galaxy|star, `source_id`).
    """
    import galsim

    name = str(brick["brickname"])
    x0, y0, nx, ny = (int(brick[k]) for k in ("x0", "y0", "nx", "ny"))
    hdr = brick_wcs_header(brick, x0, y0, nx, ny, cfg)
    wcs = _wcs(hdr)
    cond = brick_conditions(seed, name, cfg)
    rng = rng_for(seed, "brick-pixels", name)
    px, py = wcs.all_world2pix(sources["ra"].to_numpy(), sources["dec"].to_numpy(), 0)
    in_crop = (px >= -0.5) & (px < nx - 0.5) & (py >= -0.5) & (py < ny - 0.5)
    near = (px > -40) & (px < nx + 40) & (py > -40) & (py < ny + 40)
    src = sources[near].reset_index(drop=True)
    px, py, in_crop = px[near], py[near], in_crop[near]
    zp_factor = 10 ** (-0.4 * cond["zp_err_mag"])

    # the unique brick area on this crop, for NPRIMARY and brick_primary
    # evaluated every 4th pixel: the boundary is good to ~2 pixels, enough for a mask bit
    step = 4
    yy, xx = np.mgrid[0:ny:step, 0:nx:step]
    pra, pdec = wcs.all_pix2world(xx.ravel() + step / 2, yy.ravel() + step / 2, 0)
    unique = np.repeat(np.repeat(_in_unique(brick, pra, pdec).reshape(xx.shape), step, 0), step, 1)[:ny, :nx]
    maskbits = np.where(unique, 0, 1 << MASKBITS["NPRIMARY"]).astype(np.int32)

    records = src.to_dict("records")
    images, invvars, sigma_flux_psf, neas = [], [], [], []
    for b, band in enumerate(DECAM_BANDS):
        psf = _psf(cond["fwhm"][b], cfg)
        nea = _nea_pixels(psf)
        neas.append(nea)
        sig_psf = 10 ** (-0.4 * (cond["psfdepth_mag"][b] - 22.5)) / 5.0
        sigma_flux_psf.append(sig_psf)
        sig_pix = sig_psf / np.sqrt(nea)
        img = galsim.ImageF(nx, ny, scale=1.0)
        band_flux = _band_fluxes(src, band) * zp_factor[b]
        for i, row in enumerate(records):
            flux = band_flux[i]
            if flux <= 0:
                continue
            if row["kind"] in POINT_KINDS:
                prof = psf.withFlux(flux)
                size = 64 if flux < 1e3 else 192
            else:
                gal = morphology.galsim_profile(row, flux, cfg.pixscale_arcsec)
                prof = galsim.Convolve(gal, psf)
                hlr_pix = float(row["hlr_arcsec"]) / cfg.pixscale_arcsec
                size = int(np.clip(2 * np.ceil(8 * hlr_pix + 3 * cond["fwhm"][b] / cfg.pixscale_arcsec), 32, 384))
            stamp = prof.drawImage(nx=size, ny=size, scale=1.0,
                                   center=galsim.PositionD(px[i] + 1.0, py[i] + 1.0))
            overlap = stamp.bounds & img.bounds
            if overlap.isDefined():
                img[overlap] += stamp[overlap]
        model = img.array.astype(np.float64)
        ivar = np.full((ny, nx), 1.0 / sig_pix**2, dtype=np.float32)
        data = model + rng.normal(0.0, sig_pix, (ny, nx))
        saturated = model > SATURATION_NMGY_PER_PIX
        if not cond["observed"][b]:  # drawn (the random streams stay aligned), never written
            saturated[:] = False
        if saturated.any():
            data[saturated] = SATURATION_NMGY_PER_PIX
            ivar[saturated] = 0.0
            maskbits[saturated] |= 1 << MASKBITS[f"SATUR_{band.upper()}"]
        if rng.random() < cfg.bad_column_prob and cond["observed"][b]:
            col = int(rng.integers(0, nx))
            data[:, col] = 0.0
            ivar[:, col] = 0.0
            maskbits[:, col] |= 1 << MASKBITS[f"ALLMASK_{band.upper()}"]
        images.append(data.astype(np.float32))
        invvars.append(ivar)

    _mask_bright_stars(src, px, py, maskbits, cfg)
    files = _write_brick_files(seed, brick, hdr, images, invvars, maskbits, cond, out_root, cfg)
    rows = _tractor_rows(seed, brick, src[in_crop].reset_index(drop=True), px[in_crop], py[in_crop],
                         maskbits, cond, np.asarray(sigma_flux_psf), np.asarray(neas), zp_factor, cfg)
    return rows, files


def _band_fluxes(src, band: str) -> np.ndarray:
    """Flux above the atmosphere and below the Milky Way dust, nanomaggies."""
    return src[f"flux_decam_{band}"].to_numpy(float) * src[f"mw_transmission_decam_{band}"].to_numpy(float)


def _in_unique(brick: dict, ra, dec):
    ra = np.mod(ra, 360.0)
    return (ra >= brick["ra1"]) & (ra < brick["ra2"]) & (dec >= brick["dec1"]) & (dec < brick["dec2"])


def _mask_bright_stars(src, px, py, maskbits, cfg):
    """MEDIUM within legacypipe's radius-magnitude relation (1630" x 1.396^-mag) for stars brighter
    than 16, BRIGHT within half of it for stars brighter than 13 (r band stands in for Gaia G)."""
    ny, nx = maskbits.shape
    for i in np.flatnonzero(src["kind"].to_numpy() == "star"):
        r_mag = 22.5 - 2.5 * np.log10(max(float(src["flux_decam_r"].iloc[i]), 1e-3))
        if r_mag > 16.0:
            continue
        radius_pix = 1630.0 * 1.396 ** (-r_mag) / cfg.pixscale_arcsec
        for bit, rad in ((MASKBITS["MEDIUM"], radius_pix), (MASKBITS["BRIGHT"], radius_pix / 2)):
            if bit == MASKBITS["BRIGHT"] and r_mag >= 13.0:
                continue
            y0, y1 = int(max(py[i] - rad, 0)), int(min(py[i] + rad + 1, ny))
            x0, x1 = int(max(px[i] - rad, 0)), int(min(px[i] + rad + 1, nx))
            if y0 >= y1 or x0 >= x1:
                continue
            yy, xx = np.mgrid[y0:y1, x0:x1]
            inside = (xx - px[i]) ** 2 + (yy - py[i]) ** 2 <= rad**2
            maskbits[y0:y1, x0:x1][inside] |= np.int32(1 << bit)


def brick_paths(out_root: Path, brickname: str) -> dict:
    base = Path(out_root) / "legacysurvey" / "dr10" / "south"
    coadd = base / "coadd" / brickname[:3] / brickname
    paths = {f"image-{b}": coadd / f"legacysurvey-{brickname}-image-{b}.fits.fz" for b in DECAM_BANDS}
    paths.update({f"invvar-{b}": coadd / f"legacysurvey-{brickname}-invvar-{b}.fits.fz" for b in DECAM_BANDS})
    paths["maskbits"] = coadd / f"legacysurvey-{brickname}-maskbits.fits.fz"
    paths["tractor"] = base / "tractor" / brickname[:3] / f"tractor-{brickname}.fits"
    return paths


def _write_brick_files(seed, brick, hdr, images, invvars, maskbits, cond, out_root, cfg):
    name = str(brick["brickname"])
    paths = brick_paths(out_root, name)
    dither = 1 + int(brick["brickid"]) % 10000
    common = [("BRICKNAM", name, "brick name"), ("BRICKID", int(brick["brickid"]), "brick id"),
              ("SURVEY", "DECaLS", ""), ("DRVERSIO", "DR10-mock", "")]
    wcs_cards = [(k, v, "") for k, v in hdr.items()]
    sizes = {}
    for b, band in enumerate(DECAM_BANDS):
        if not cond["observed"][b]:
            continue
        for kind, data, unit in (("image", images[b], "nanomaggy"), ("invvar", invvars[b], "1/nanomaggy^2")):
            cards = wcs_cards + common + [
                ("BAND", band, "filter"), ("BUNIT", unit, ""), ("MAGZERO", 22.5, "AB mag of 1 nanomaggy"),
                ("PSFSIZE", round(float(cond["fwhm"][b]), 4), "[arcsec] PSF FWHM"),
                ("PSFDEPTH", round(float(cond["psfdepth_mag"][b]), 4), "5-sigma point-source depth [AB]")]
            sizes[f"{kind}-{band}"] = fitsio_util.write_fits(paths[f"{kind}-{band}"], [
                fitsio_util.primary(seed, common),
                fitsio_util.compressed_image(data, cards, qlevel=16.0, dither_seed=dither)])
    sizes["maskbits"] = fitsio_util.write_fits(paths["maskbits"], [
        fitsio_util.primary(seed, common), fitsio_util.compressed_image(maskbits, wcs_cards + common)])
    return sizes


def tractor_type(src, snr_r, fwhm_r):
    hlr = src["hlr_arcsec"].to_numpy(float)
    bt = src["bulge_frac"].to_numpy(float)
    star = np.isin(src["kind"].to_numpy(), POINT_KINDS)
    t = np.where(bt > 0.7, "DEV", np.where(bt < 0.3, "EXP", "SER"))
    t = np.where((snr_r < 12) | (hlr < 0.35 * fwhm_r), "REX", t)
    t = np.where((hlr < 0.12) | star, "PSF", t)
    return t


def _tractor_rows(seed, brick, src, px, py, maskbits, cond, sig_psf, nea_psf, zp_factor, cfg):
    from scipy.spatial import cKDTree

    name = str(brick["brickname"])
    rng = rng_for(seed, "tractor", name)
    n = len(src)
    order = np.lexsort((src["ra"].to_numpy(), src["dec"].to_numpy()))
    src, px, py = src.iloc[order].reset_index(drop=True), px[order], py[order]
    is_star = src["kind"].to_numpy() == "star"
    is_point = np.isin(src["kind"].to_numpy(), POINT_KINDS)
    hlr = np.where(is_point, 0.0, src["hlr_arcsec"].fillna(0).to_numpy(float))
    ra, dec = src["ra"].to_numpy(float), src["dec"].to_numpy(float)
    primary = _in_unique(brick, ra, dec)
    # tangent-plane arcsec offsets for neighbour leaks
    xy = np.column_stack([px, py]) * cfg.pixscale_arcsec
    tree = cKDTree(xy) if n else None
    pairs = tree.query_pairs(6.0, output_type="ndarray") if n > 1 else np.zeros((0, 2), int)
    rows: dict = {}
    flux_true = np.column_stack([_band_fluxes(src, b) for b in DECAM_BANDS]) * zp_factor[None, :]
    measured = flux_true.copy()
    fib = src["fiber_frac_desi"].fillna(0.78).to_numpy(float)
    fibertot = flux_true * fib[:, None]
    sig_flux = np.empty((n, 4))
    for b in range(4):
        sig_psf_arcsec = cond["fwhm"][b] / 2.3548
        s_blend = np.sqrt(sig_psf_arcsec**2 + hlr[:, None] ** 2 + hlr[None, :] ** 2) if n else None
        for i, j in pairs:
            d2 = np.sum((xy[i] - xy[j]) ** 2)
            w = cfg.blend_leak * np.exp(-d2 / (2 * s_blend[i, j] ** 2))
            measured[i, b] += w * flux_true[j, b]
            measured[j, b] += w * flux_true[i, b]
            wf = np.exp(-d2 / (2 * (0.6**2 + hlr[j] ** 2)))
            fibertot[i, b] += fib[j] * flux_true[j, b] * wf
            wf = np.exp(-d2 / (2 * (0.6**2 + hlr[i] ** 2)))
            fibertot[j, b] += fib[i] * flux_true[i, b] * wf
        nea = nea_psf[b] * (1.0 + (hlr / sig_psf_arcsec) ** 2 / 2.0)
        sig_flux[:, b] = sig_psf[b] * np.sqrt(nea / nea_psf[b])
        measured[:, b] += rng.normal(0.0, 1.0, n) * sig_flux[:, b]
    snr_r = measured[:, 1] * np.sqrt(1.0 / sig_flux[:, 1] ** 2) if n else np.zeros(0)
    ttype = tractor_type(src, snr_r, cond["fwhm"][1]) if n else np.zeros(0, "U3")
    ix = np.clip(np.round(px).astype(int), 0, maskbits.shape[1] - 1)
    iy = np.clip(np.round(py).astype(int), 0, maskbits.shape[0] - 1)
    src_mask = maskbits[iy, ix]
    sersic = np.select([ttype == "PSF", ttype == "REX", ttype == "EXP", ttype == "DEV"], [0.0, 1.0, 1.0, 4.0],
                       default=src["sersic_n"].fillna(1.0).to_numpy(float))
    round_ = (ttype == "PSF") | (ttype == "REX")
    e1 = np.where(round_, 0.0, src["e1"].fillna(0).to_numpy(float) + rng.normal(0, 0.03, n))
    e2 = np.where(round_, 0.0, src["e2"].fillna(0).to_numpy(float) + rng.normal(0, 0.03, n))
    shape_r = np.where(ttype == "PSF", 0.0, hlr * 10 ** rng.normal(0, 0.04, n))
    astrom_sigma_deg = 0.01 / 3600 * np.clip(20.0 / np.maximum(snr_r, 1.0), 0.2, 10)
    rows["release"] = np.full(n, RELEASE, np.int16)
    rows["brickid"] = np.full(n, int(brick["brickid"]), np.int32)
    rows["brickname"] = np.full(n, name)
    rows["objid"] = np.arange(n, dtype=np.int32)
    rows["brick_primary"] = primary
    rows["maskbits"] = src_mask.astype(np.int32)
    rows["fitbits"] = np.zeros(n, np.int16)
    rows["type"] = ttype
    rows["ra"] = ra + rng.normal(0, 1, n) * astrom_sigma_deg / np.cos(np.radians(dec))
    rows["dec"] = dec + rng.normal(0, 1, n) * astrom_sigma_deg
    rows["ra_ivar"] = (1.0 / astrom_sigma_deg**2).astype(np.float32)
    rows["dec_ivar"] = (1.0 / astrom_sigma_deg**2).astype(np.float32)
    rows["bx"] = px.astype(np.float32)
    rows["by"] = py.astype(np.float32)
    rows["ebv"] = src["ebv_mw"].to_numpy(np.float32)
    rows["ref_cat"] = np.where(is_star & (measured[:, 1] > 10 ** (-0.4 * (20.5 - 22.5))), "G3", "")
    rows["ref_id"] = np.where(rows["ref_cat"] == "G3", src["source_id"].to_numpy(np.int64), 0)
    for b, band in enumerate(DECAM_BANDS):
        rows[f"flux_{band}"] = measured[:, b].astype(np.float32)
        rows[f"flux_ivar_{band}"] = (1.0 / sig_flux[:, b] ** 2).astype(np.float32)
        rows[f"fiberflux_{band}"] = (measured[:, b] * fib).astype(np.float32)
        rows[f"fibertotflux_{band}"] = fibertot[:, b].astype(np.float32)
        rows[f"mw_transmission_{band}"] = src[f"mw_transmission_decam_{band}"].to_numpy(np.float32)
        rows[f"nobs_{band}"] = np.full(n, int(cond["nobs"][b]), np.int16)
        rows[f"psfdepth_{band}"] = np.full(n, 1.0 / sig_psf[b] ** 2, np.float32)
        gal_nea = nea_psf[b] * (1.0 + (0.45 / (cond["fwhm"][b] / 2.3548)) ** 2 / 2.0)
        rows[f"galdepth_{band}"] = np.full(n, 1.0 / (sig_psf[b] ** 2 * gal_nea / nea_psf[b]), np.float32)
        rows[f"psfsize_{band}"] = np.full(n, cond["fwhm"][b], np.float32)
        if not cond["observed"][b]:  # no images in this band: Tractor writes zeros
            for key in ("flux", "flux_ivar", "fiberflux", "fibertotflux", "nobs", "psfdepth", "galdepth", "psfsize"):
                rows[f"{key}_{band}"] = np.zeros_like(rows[f"{key}_{band}"])
    for w in ("w1", "w2"):
        rows[f"flux_{w}"] = np.zeros(n, np.float32)  # WISE is not simulated: zero flux, zero ivar
        rows[f"flux_ivar_{w}"] = np.zeros(n, np.float32)
    rows["sersic"] = sersic.astype(np.float32)
    rows["sersic_ivar"] = np.where(ttype == "SER", 100.0, 0.0).astype(np.float32)
    rows["shape_r"] = shape_r.astype(np.float32)
    rows["shape_r_ivar"] = np.where(ttype == "PSF", 0.0, 1.0 / np.maximum(0.05 * shape_r, 0.01) ** 2).astype(np.float32)
    rows["shape_e1"] = e1.astype(np.float32)
    rows["shape_e1_ivar"] = np.where(round_, 0.0, 1.0 / 0.03**2).astype(np.float32)
    rows["shape_e2"] = e2.astype(np.float32)
    rows["shape_e2_ivar"] = np.where(round_, 0.0, 1.0 / 0.03**2).astype(np.float32)
    rows["mjd_min"] = np.full(n, 56300.0 + int(brick["brickid"]) % 997)
    rows["mjd_max"] = rows["mjd_min"] + 900.0
    # not tractor columns: the link back to the truth, dropped before writing
    rows["_source_id"] = src["source_id"].to_numpy(np.int64)
    rows["_kind"] = src["kind"].to_numpy()
    return rows


TRACTOR_FORMATS = {"release": "I", "brickid": "J", "brickname": "8A", "objid": "J", "brick_primary": "L",
                   "maskbits": "J", "fitbits": "I", "type": "3A", "ra": "D", "dec": "D", "ref_cat": "2A",
                   "ref_id": "K", "mjd_min": "D", "mjd_max": "D"}
TRACTOR_UNITS = {"ra": "deg", "dec": "deg", "ra_ivar": "1/deg^2", "dec_ivar": "1/deg^2", "bx": "pix", "by": "pix",
                 "ebv": "mag", "shape_r": "arcsec", "shape_r_ivar": "1/arcsec^2", "mjd_min": "d", "mjd_max": "d"}


def write_tractor(seed: int, brick: dict, rows: dict, out_root: Path) -> int:
    cols = []
    units = dict(TRACTOR_UNITS)
    for key, arr in rows.items():
        if key.startswith("_"):
            continue
        fmt = TRACTOR_FORMATS.get(key)
        if fmt is None:
            fmt = {np.dtype(np.float32): "E", np.dtype(np.float64): "D", np.dtype(np.int16): "I",
                   np.dtype(np.int32): "J", np.dtype(np.int64): "K", np.dtype(bool): "L"}[np.asarray(arr).dtype]
        if key.startswith(("flux_", "fiberflux_", "fibertotflux_")) and "ivar" not in key:
            units[key] = "nanomaggy"
        elif key.startswith("flux_ivar_") or key.startswith(("psfdepth_", "galdepth_")):
            units[key] = "1/nanomaggy^2"
        elif key.startswith("psfsize_"):
            units[key] = "arcsec"
        cols.append((key, fmt, np.asarray(arr)))
    common = [("BRICKNAM", str(brick["brickname"]), "brick name"), ("RELEASE", RELEASE, "")]
    return fitsio_util.write_fits(brick_paths(out_root, str(brick["brickname"]))["tractor"],
                                  [fitsio_util.primary(seed, common), fitsio_util.table(cols, None, units)])
