"""DESI DR1 mock: target selection on the Legacy Survey catalogue, healpix coadds and redrock files.

Files follow the desidatamodel pages for `coadd-SURVEY-PROGRAM-PIXNUM.fits` and
`redrock-SURVEY-PROGRAM-PIXNUM.fits` (iron): FIBERMAP, then B/R/Z WAVELENGTH, FLUX, IVAR, MASK,
RESOLUTION; REDSHIFTS + FIBERMAP. TARGETIDs are encoded like desitarget's (OBJID, BRICKID, RELEASE)
with the MOCK bit set. Redshifts are the truth plus redrock-like errors and failures; redrock is
not run.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mmu.sim import fitsio_util, spectro
from mmu.sim.config import SimConfig, rng_for

ARMS = {"B": (3600.0, 5800.0), "R": (5760.0, 7620.0), "Z": (7520.0, 9824.0)}
DWAVE = 0.8
HPX_ORDER = 6  # nside 64, nested
#: LSF sigma in Angstrom at the ends of each arm (R ~ 2000-5500)
LSF_SIGMA_A = {"B": (0.95, 0.80), "R": (0.80, 0.75), "Z": (0.80, 0.85)}
#: 1-sigma noise per pixel [1e-17 erg/s/cm2/A] at the nominal effective time, sky continuum level
NOISE_SIGMA = {"bright": {"B": 2.0, "R": 1.4, "Z": 1.5}, "dark": {"B": 0.8, "R": 0.6, "Z": 0.8}}
NOMINAL_EFFTIME = {"bright": 180.0, "dark": 1000.0}
# desitarget bit numbers (targetmask.yaml, sv3_targetmask.yaml)
DESI_BITS = {"LRG": 0, "ELG": 1, "QSO": 2, "LRG_SOUTH": 16, "ELG_SOUTH": 17, "QSO_SOUTH": 18, "BGS_ANY": 60,
             "MWS_ANY": 61}
BGS_BITS = {"BGS_FAINT": 0, "BGS_BRIGHT": 1, "BGS_FAINT_SOUTH": 16, "BGS_BRIGHT_SOUTH": 17}
MWS_BITS = {"MWS_BROAD": 0, "MWS_MAIN_BLUE": 8, "MWS_MAIN_BLUE_SOUTH": 10, "MWS_MAIN_RED": 11,
            "MWS_MAIN_RED_SOUTH": 13}
#: desitarget's initial priorities (UNOBS) of the classes
PRIORITY = {"QSO": 3400, "LRG": 3200, "ELG": 3000, "BGS": 2100, "MWS": 1400}
SPECTYPES = ("GALAXY", "QSO", "STAR")
OBSCONDITIONS = {"dark": 1, "bright": 4}
ZWARN_SMALL_DELTA_CHI2 = 4


def wavelength(arm: str) -> np.ndarray:
    lo, hi = ARMS[arm]
    return lo + DWAVE * np.arange(int(round((hi - lo) / DWAVE)) + 1)


def encode_targetid(objid, brickid, release, mock: int = 1) -> np.ndarray:
    """desitarget's TARGETID layout: OBJID bits 0-21, BRICKID 22-41, RELEASE 42-57, MOCK 58."""
    return (np.asarray(objid, np.int64) | (np.asarray(brickid, np.int64) << 22)
            | (np.asarray(release, np.int64) << 42) | (np.int64(mock) << 58))


def dered_mags(cat: pd.DataFrame, band: str, kind: str = "flux") -> np.ndarray:
    f = cat[f"{kind}_{band}"].to_numpy(float) / cat[f"mw_transmission_{band}"].to_numpy(float)
    return np.where(f > 0, 22.5 - 2.5 * np.log10(np.clip(f, 1e-30, None)), 99.0)


def select_targets(tractor: pd.DataFrame, cfg: SimConfig) -> pd.DataFrame:
    """Mock BGS / LRG / ELG selections on primary, non-PSF tractor rows (docs/sim.md)."""
    cat = tractor[(tractor["brick_primary"]) & (tractor["type"] != "PSF")].copy()
    g, r, i, z = (dered_mags(cat, b) for b in "griz")
    rfib = dered_mags(cat, "r", "fiberflux")
    bgs_bright = r < cfg.bgs_r_limit
    bgs_faint = (r >= cfg.bgs_r_limit) & (r < cfg.bgs_faint_r_limit) & (rfib < cfg.bgs_faint_rfib_limit)
    # the r-i term applies where the brick has i-band images (DR10 south lacks them in places;
    # DESI's own LRG cut uses g, r, z and W1 only)
    i_observed = cat["nobs_i"].to_numpy() > 0
    lrg = (z < 20.4) & (r - z > 1.0) & ((r - i > 0.45) | ~i_observed) & (z > 16.0)
    elg = ((g > 20.0) & (g < 23.4) & (r - z > 0.15) & (g - r < 1.15 * (r - z) - 0.15)
           & (g - r < -1.2 * (r - z) + 1.6))
    desi = np.zeros(len(cat), np.int64)
    bgs = np.zeros(len(cat), np.int64)
    desi |= np.where(lrg, (1 << DESI_BITS["LRG"]) | (1 << DESI_BITS["LRG_SOUTH"]), 0)
    desi |= np.where(elg, (1 << DESI_BITS["ELG"]) | (1 << DESI_BITS["ELG_SOUTH"]), 0)
    desi |= np.where(bgs_bright | bgs_faint, 1 << DESI_BITS["BGS_ANY"], 0)
    bgs |= np.where(bgs_bright, (1 << BGS_BITS["BGS_BRIGHT"]) | (1 << BGS_BITS["BGS_BRIGHT_SOUTH"]), 0)
    bgs |= np.where(bgs_faint, (1 << BGS_BITS["BGS_FAINT"]) | (1 << BGS_BITS["BGS_FAINT_SOUTH"]), 0)
    cat["DESI_TARGET"] = desi
    cat["BGS_TARGET"] = bgs
    cat["MWS_TARGET"] = np.zeros(len(cat), np.int64)
    cat["bright_program"] = bgs_bright | bgs_faint
    cat["dark_program"] = lrg | elg
    return cat[(cat["bright_program"]) | (cat["dark_program"])].reset_index(drop=True)


def select_psf_targets(tractor: pd.DataFrame, cfg: SimConfig) -> pd.DataFrame:
    """Mock MWS and QSO selections on primary TYPE PSF tractor rows (extinction corrected).

    MWS (bright program): desi_mws_r_range in r; MWS_MAIN_BLUE for g - r < 0.7, else MWS_MAIN_RED.
    QSO (dark program): desi_qso_r_range in r, g - r < 0.5, r - z < 1.2 and r - z at least 0.15 mag
    redder than the stellar locus r - z = 0.85 (g - r) - 0.27 (quasars' flat spectra put them
    there), standing in for DESI's optical + WISE selection (WISE is not simulated): photometric
    scatter brings in faint blue stars and compact galaxies, as in the real selection.
    """
    cat = tractor[(tractor["brick_primary"]) & (tractor["type"] == "PSF")].copy()
    g, r, z = (dered_mags(cat, b) for b in "grz")
    mws = (r >= cfg.desi_mws_r_range[0]) & (r < cfg.desi_mws_r_range[1])
    blue = g - r < 0.7
    off_locus = (r - z) - (0.85 * (g - r) - 0.27) > 0.15
    qso = (r >= cfg.desi_qso_r_range[0]) & (r < cfg.desi_qso_r_range[1]) & (g - r < 0.5) & (r - z < 1.2) & off_locus
    desi = np.where(qso, (1 << DESI_BITS["QSO"]) | (1 << DESI_BITS["QSO_SOUTH"]), 0).astype(np.int64)
    desi |= np.where(mws, np.int64(1) << DESI_BITS["MWS_ANY"], 0)
    mws_bits = np.where(mws & blue, (1 << MWS_BITS["MWS_MAIN_BLUE"]) | (1 << MWS_BITS["MWS_MAIN_BLUE_SOUTH"]), 0)
    mws_bits |= np.where(mws & ~blue, (1 << MWS_BITS["MWS_MAIN_RED"]) | (1 << MWS_BITS["MWS_MAIN_RED_SOUTH"]), 0)
    cat["DESI_TARGET"] = desi
    cat["BGS_TARGET"] = np.zeros(len(cat), np.int64)
    cat["MWS_TARGET"] = mws_bits.astype(np.int64)
    cat["bright_program"] = mws
    cat["dark_program"] = qso
    return cat[mws | qso].reset_index(drop=True)


def assign_observations(seed: int, targets: pd.DataFrame, cfg: SimConfig, sv3_tiles: set,
                        purpose: str = "desi-assignment") -> pd.DataFrame:
    """One row per (target, survey, program) actually observed; `purpose` keys the random stream
    (galaxy and point-source targets draw from their own)."""
    from mmu.sim.footprint import healpix_nest

    rng = rng_for(seed, purpose)
    u_main = rng.random((len(targets), 2))
    u_sv3 = rng.random((len(targets), 2))
    hpix = healpix_nest(targets["ra"].to_numpy(), targets["dec"].to_numpy(), HPX_ORDER)
    in_sv3 = targets["tile"].isin(sv3_tiles).to_numpy()
    obs = []
    for k, program in enumerate(("bright", "dark")):
        wanted = targets[f"{program}_program"].to_numpy()
        for survey, u, p, extra in (("main", u_main[:, k], cfg.desi_completeness, True),
                                    ("sv3", u_sv3[:, k], cfg.sv3_completeness, in_sv3)):
            sel = wanted & extra & (u < p)
            part = targets[sel].copy()
            part["survey"] = survey
            part["program"] = program
            part["hpix"] = hpix[sel]
            obs.append(part)
    out = pd.concat(obs, ignore_index=True)
    return out.sort_values(["survey", "program", "hpix", "TARGETID"], kind="stable").reset_index(drop=True)


def coadd_paths(out_root: Path, survey: str, program: str, hpix: int) -> tuple[Path, Path]:
    d = (Path(out_root) / "desi" / "dr1" / "spectro" / "redux" / "iron" / "healpix" / survey / program
         / str(hpix // 100) / str(hpix))
    return d / f"coadd-{survey}-{program}-{hpix}.fits", d / f"redrock-{survey}-{program}-{hpix}.fits"


def _fibermap_columns(obs: pd.DataFrame, survey: str, program: str, rng, depth: float = 1.0) -> list[tuple]:
    n = len(obs)
    f32 = lambda c: obs[c].to_numpy(np.float32)  # noqa: E731
    prefix = "SV3_" if survey == "sv3" else ""
    numexp = rng.integers(1, 5, n).astype(np.int16)
    exptime = (numexp * (300.0 if program == "dark" else 180.0) * depth).astype(np.float32)
    cols = [
        ("TARGETID", "K", obs["TARGETID"].to_numpy(np.int64)),
        ("COADD_FIBERSTATUS", "J", np.zeros(n, np.int32)),
        ("TARGET_RA", "D", obs["ra"].to_numpy(float)), ("TARGET_DEC", "D", obs["dec"].to_numpy(float)),
        ("PMRA", "E", np.zeros(n, np.float32)), ("PMDEC", "E", np.zeros(n, np.float32)),
        ("REF_EPOCH", "E", np.zeros(n, np.float32)),
        ("FA_TARGET", "K", obs["DESI_TARGET"].to_numpy(np.int64)), ("FA_TYPE", "B", np.ones(n, np.uint8)),
        ("OBJTYPE", "3A", np.full(n, "TGT")), ("SUBPRIORITY", "D", rng.random(n)),
        ("OBSCONDITIONS", "J", np.full(n, OBSCONDITIONS[program], np.int32)),
        ("RELEASE", "I", obs["release"].to_numpy(np.int16)), ("BRICKID", "J", obs["brickid"].to_numpy(np.int32)),
        ("BRICK_OBJID", "J", obs["objid"].to_numpy(np.int32)), ("MORPHTYPE", "4A", obs["type"].to_numpy()),
    ]
    for b in "GRZ":
        cols.append((f"FLUX_{b}", "E", f32(f"flux_{b.lower()}")))
    for b in "GRZ":
        cols.append((f"FLUX_IVAR_{b}", "E", f32(f"flux_ivar_{b.lower()}")))
    cols += [
        ("MASKBITS", "I", obs["maskbits"].to_numpy(np.int16)), ("REF_ID", "K", obs["ref_id"].to_numpy(np.int64)),
        ("REF_CAT", "2A", obs["ref_cat"].to_numpy()),
        ("GAIA_PHOT_G_MEAN_MAG", "E", np.zeros(n, np.float32)), ("GAIA_PHOT_BP_MEAN_MAG", "E", np.zeros(n, np.float32)),
        ("GAIA_PHOT_RP_MEAN_MAG", "E", np.zeros(n, np.float32)), ("PARALLAX", "E", np.zeros(n, np.float32)),
        ("BRICKNAME", "8A", obs["brickname"].to_numpy()), ("EBV", "E", f32("ebv")),
        ("FLUX_W1", "E", f32("flux_w1")), ("FLUX_W2", "E", f32("flux_w2")),
        ("FLUX_IVAR_W1", "E", f32("flux_ivar_w1")), ("FLUX_IVAR_W2", "E", f32("flux_ivar_w2")),
    ]
    for b in "GRZ":
        cols.append((f"FIBERFLUX_{b}", "E", f32(f"fiberflux_{b.lower()}")))
    for b in "GRZ":
        cols.append((f"FIBERTOTFLUX_{b}", "E", f32(f"fibertotflux_{b.lower()}")))
    cols += [
        ("SERSIC", "E", f32("sersic")), ("SHAPE_R", "E", f32("shape_r")),
        ("SHAPE_E1", "E", f32("shape_e1")), ("SHAPE_E2", "E", f32("shape_e2")),
        ("PHOTSYS", "1A", np.full(n, "S")),
        ("PRIORITY_INIT", "K", _priority(obs, program)),
        ("NUMOBS_INIT", "K", np.ones(n, np.int64)),
        (f"{prefix}DESI_TARGET", "K", obs["DESI_TARGET"].to_numpy(np.int64)),
        (f"{prefix}BGS_TARGET", "K", obs["BGS_TARGET"].to_numpy(np.int64)),
        (f"{prefix}MWS_TARGET", "K", obs["MWS_TARGET"].to_numpy(np.int64)),
        (f"{prefix}SCND_TARGET", "K", np.zeros(n, np.int64)),
        ("PLATE_RA", "D", obs["ra"].to_numpy(float)), ("PLATE_DEC", "D", obs["dec"].to_numpy(float)),
        ("COADD_NUMEXP", "I", numexp), ("COADD_EXPTIME", "E", exptime),
        ("COADD_NUMNIGHT", "I", np.minimum(numexp, 2).astype(np.int16)), ("COADD_NUMTILE", "I", np.ones(n, np.int16)),
        ("MEAN_DELTA_X", "E", rng.normal(0, 0.002, n).astype(np.float32)),
        ("RMS_DELTA_X", "E", np.full(n, 0.004, np.float32)),
        ("MEAN_DELTA_Y", "E", rng.normal(0, 0.002, n).astype(np.float32)),
        ("RMS_DELTA_Y", "E", np.full(n, 0.004, np.float32)),
        ("MEAN_FIBER_RA", "D", obs["ra"].to_numpy(float)), ("STD_FIBER_RA", "E", np.full(n, 0.05, np.float32)),
        ("MEAN_FIBER_DEC", "D", obs["dec"].to_numpy(float)), ("STD_FIBER_DEC", "E", np.full(n, 0.05, np.float32)),
        ("MEAN_PSF_TO_FIBER_SPECFLUX", "E", np.full(n, 0.78, np.float32)),
    ]
    return cols


def _priority(obs: pd.DataFrame, program: str) -> np.ndarray:
    d = obs["DESI_TARGET"].to_numpy(np.int64)
    has = lambda bit: (d >> DESI_BITS[bit]) & 1 == 1  # noqa: E731
    if program == "bright":
        return np.where(has("BGS_ANY"), PRIORITY["BGS"], PRIORITY["MWS"]).astype(np.int64)
    return np.select([has("QSO"), has("LRG")], [PRIORITY["QSO"], PRIORITY["LRG"]], PRIORITY["ELG"]).astype(np.int64)


def write_healpix(seed: int, key: tuple, obs: pd.DataFrame, truth: pd.DataFrame, out_root: Path,
                  cfg: SimConfig) -> pd.DataFrame:
    """Write one coadd + redrock pair; return the redrock rows for the truth catalogue."""
    survey, program, hpix = key
    rng = rng_for(seed, "desi-spectra", survey, program, int(hpix))
    n = len(obs)
    rows = truth.loc[obs["source_id"].to_numpy()]
    efftime = (NOMINAL_EFFTIME[program] * (1.5 if survey == "sv3" else 1.0) * cfg.desi_efftime_factor
               * 10 ** rng.normal(0, 0.15, n))
    calib = 1.0 + rng.normal(0, 0.02, n)  # spectrophotometric calibration error
    sky_rng = rng_for(0, "desi-sky")  # the instrument: same sky lines in every simulation
    common = [("SURVEY", survey, ""), ("PROGRAM", program, ""), ("SPGRP", "healpix", ""),
              ("SPGRPVAL", int(hpix), ""), ("HPXNSIDE", 64, ""), ("HPXPIXEL", int(hpix), ""),
              ("HPXNEST", True, ""), ("SPECPROD", "iron", "")]
    fm_cols = _fibermap_columns(obs, survey, program, rng, cfg.desi_efftime_factor)
    hdus = [fitsio_util.primary(seed, common), fitsio_util.table(fm_cols, "FIBERMAP")]
    snr2 = np.zeros(n)
    npix_total = 0
    all_wave = np.concatenate([wavelength(a) for a in ("B", "R", "Z")])
    all_model = spectro.fibre_model(rows, all_wave, "fiber_frac_desi", cfg.cosmology) * calib[:, None]
    start = 0
    for arm in ("B", "R", "Z"):
        wave = wavelength(arm)
        lines = spectro.sky_lines(sky_rng, *ARMS[arm], per_1000a={"B": 2, "R": 25, "Z": 45}[arm])
        sky = spectro.sky_spectrum(wave, lines, 0.8)
        lo, hi = LSF_SIGMA_A[arm]
        diags = spectro.gaussian_resolution(np.linspace(lo, hi, wave.size) / DWAVE)
        model = spectro.apply_resolution(diags, all_model[:, start:start + wave.size])
        start += wave.size
        sigma = NOISE_SIGMA[program][arm] * np.sqrt(sky)[None, :] * np.sqrt(NOMINAL_EFFTIME[program] / efftime)[:, None]
        sigma = np.sqrt(sigma**2 + np.clip(model, 0, None) * 0.02)  # object shot noise
        flux = model + rng.normal(0, 1, model.shape) * sigma
        ivar = 1.0 / sigma**2
        mask = np.zeros(model.shape, np.uint32)
        bad = rng.random(model.shape) < 0.002
        mask[bad] = 1  # SOMEBADPIX
        ivar[bad] = 0.0
        snr2 += np.sum(model**2 * ivar, axis=1)
        npix_total += wave.size
        hdus += [
            fitsio_util.image(wave, f"{arm}_WAVELENGTH", [("BUNIT", "Angstrom", "")]),
            fitsio_util.image(flux.astype(np.float32), f"{arm}_FLUX", [("BUNIT", "10**-17 erg/(s cm2 Angstrom)", "")]),
            fitsio_util.image(ivar.astype(np.float32), f"{arm}_IVAR",
                              [("BUNIT", "10**+34 (s2 cm4 Angstrom2) / erg2", "")]),
            fitsio_util.image(mask, f"{arm}_MASK"),
            fitsio_util.image(np.repeat(diags[None], n, axis=0), f"{arm}_RESOLUTION"),
        ]
    coadd_path, redrock_path = coadd_paths(out_root, survey, program, int(hpix))
    fitsio_util.write_fits(coadd_path, hdus)

    zrows = _redrock(rng, rows, snr2, npix_total, cfg)
    zrows.insert(0, "TARGETID", obs["TARGETID"].to_numpy(np.int64))
    red_cols = [("TARGETID", "K", zrows["TARGETID"].to_numpy()), ("CHI2", "D", zrows["CHI2"].to_numpy()),
                ("COEFF", "10D", np.stack(zrows["COEFF"].to_numpy())), ("Z", "D", zrows["Z"].to_numpy()),
                ("ZERR", "D", zrows["ZERR"].to_numpy()), ("ZWARN", "K", zrows["ZWARN"].to_numpy()),
                ("NPIXELS", "K", zrows["NPIXELS"].to_numpy()), ("SPECTYPE", "6A", zrows["SPECTYPE"].to_numpy()),
                ("SUBTYPE", "20A", zrows["SUBTYPE"].to_numpy()), ("NCOEFF", "K", zrows["NCOEFF"].to_numpy()),
                ("DELTACHI2", "D", zrows["DELTACHI2"].to_numpy())]
    rr_cards = [("RRVER", "0.17.0-mock", "Redrock version (mock: truth + errors)"),
                ("TEMNAM00", "GALAXY", ""), ("TEMVER00", "2.6", ""), ("TEMNAM01", "QSO", ""),
                ("TEMVER01", "1.0", ""), ("TEMNAM02", "STAR", ""), ("TEMVER02", "0.1", "")] + common
    fitsio_util.write_fits(redrock_path, [fitsio_util.primary(seed, rr_cards),
                                          fitsio_util.table(red_cols, "REDSHIFTS"),
                                          fitsio_util.table(fm_cols, "FIBERMAP")])
    zrows["survey"], zrows["program"], zrows["hpix"] = survey, program, int(hpix)
    zrows["source_id"] = obs["source_id"].to_numpy()
    zrows["kind"] = obs["kind"].to_numpy()
    return zrows.drop(columns=["COEFF"])


def _redrock(rng, rows, snr2, npix, cfg) -> pd.DataFrame:
    """Redrock-like results: SPECTYPE from the object's nature (GALAXY / QSO / STAR), Z = truth
    (stars: radial velocity / c) + N(0, ZERR); failures get ZWARN = 4, a random Z and class."""
    n = len(rows)
    kind = rows["kind"].to_numpy() if "kind" in rows else np.full(n, "galaxy")
    z_true = rows["z"].to_numpy(float)
    snr = np.sqrt(snr2)
    extra = np.where(kind == "qso", cfg.redrock_qso_failure_rate, 0.0)
    p_fail = cfg.redrock_failure_rate + extra + 0.5 * np.exp(-snr / 8.0)
    fail = rng.random(n) < p_fail
    zerr = np.select([kind == "star", kind == "qso"],
                     [np.full(n, 1.5e-5), 2.5e-4 * (1 + z_true)], 2e-5 * (1 + z_true))
    zerr = zerr * np.clip(30.0 / np.maximum(snr, 1.0), 0.3, 10.0)
    z = np.where(fail, rng.uniform(0.0, 1.6, n), z_true + rng.normal(0, 1, n) * zerr)
    dchi2 = np.where(fail, rng.uniform(0.5, 9.0, n), 25.0 + snr2 * 10 ** rng.normal(-1.0, 0.2, n))
    chi2 = npix * 10 ** rng.normal(0, 0.02, n)
    u_type = rng.random(n)  # drawn last: files without point sources keep the galaxy-only draws
    spectype = np.select([kind == "star", kind == "qso"], ["STAR", "QSO"], "GALAXY")
    # a failed fit's best class is unreliable: a third of them pick another template class
    wrong = fail & (u_type < 1 / 3)
    spectype = np.where(wrong, np.where(spectype == "GALAXY", "QSO", "GALAXY"), spectype)
    z = np.where(spectype == "STAR", np.clip(z, -0.005, 0.005), z)
    subtype = np.full(n, "", dtype=object)
    if (kind == "star").any():
        from mmu.sim.stars import spectral_class

        teff = rows["teff"].to_numpy(float)
        subtype = np.where((spectype == "STAR") & (kind == "star"), spectral_class(np.nan_to_num(teff, nan=5000.0)),
                           subtype)
    coeff = np.zeros((n, 10))
    if "coeff0" in rows:
        gal = kind == "galaxy"
        coeff[gal, :5] = np.column_stack([rows[f"coeff{k}"].to_numpy(float) for k in range(5)])[gal]
    coeff[kind != "galaxy", 0] = 1.0
    return pd.DataFrame({
        "CHI2": chi2, "COEFF": list(coeff), "Z": z, "ZERR": zerr,
        "ZWARN": np.where(fail, ZWARN_SMALL_DELTA_CHI2, 0).astype(np.int64),
        "NPIXELS": np.full(n, npix, np.int64), "SPECTYPE": spectype,
        "SUBTYPE": subtype.astype(str), "NCOEFF": np.full(n, 10, np.int64), "DELTACHI2": dchi2,
    })
