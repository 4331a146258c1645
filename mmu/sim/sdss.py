"""SDSS DR17 mock: spec-PLATE-MJD-FIBER.fits spec-lite files of the SDSS and BOSS spectrographs.

SDSS-I/II (Main Galaxy Sample-like, r < 17.77; plates < 3000, RUN2D 26, 640 fibres, 3,800-9,200
Å) under sdss/dr17/spectra/PLATE/: HDU1 COADD (flux, loglam, ivar, and_mask, or_mask, wdisp, sky,
model), HDU2 SPECOBJ (the specObj row), HDU3 SPZLINE (line fits). BOSS/eBOSS (fainter galaxies on
some fields, sdss_r_limit <= r < boss_r_limit; plates >= 3586, RUN2D v5_13_2, 1,000 fibres,
3,600-10,400 Å) under the SAS path sdss/dr17/eboss/spectro/redux/v5_13_2/spectra/lite/PLATE/,
with HDU2 SPALL (the spAll row: SPECBOSS, the *_NOQSO redshift). Selection is on SDSS-band
photometry (Petrosian approximated by the model magnitude). The spectra are convolved with a
pixel-integrated Gaussian of sigma `wdisp` pixels (the LSF before pixelisation, as wdisp is).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import erf

from mmu.sim import fitsio_util, spectro
from mmu.sim.config import SimConfig, rng_for

LOGLAM0, DLOGLAM, NPIX = 3.5800, 1e-4, 3841
FIBERS_PER_PLATE = 640
RUN2D, VERS2D = "26", "v5_7_0"
# the BOSS spectrograph: 3,600.3-10,399.6 Å, 1,000 fibres, plates from 3586 (2009-12)
BOSS = {"loglam0": 3.5563, "npix": 4608, "fibers": 1000, "first_plate": 3586, "run2d": "v5_13_2",
        "resolution": 2000.0}
SDSS = {"loglam0": LOGLAM0, "npix": NPIX, "fibers": FIBERS_PER_PLATE, "first_plate": 266, "run2d": RUN2D,
        "resolution": 1800.0}
SPZ_LINES = (("[O_II] 3727", 3728.48), ("H_beta", 4862.68), ("[O_III] 5007", 5008.24),
             ("[N_II] 6548", 6549.86), ("H_alpha", 6564.61), ("[N_II] 6583", 6585.27))


def loglam(instrument: str = "SDSS") -> np.ndarray:
    spec = BOSS if instrument == "BOSS" else SDSS
    return (spec["loglam0"] + DLOGLAM * np.arange(spec["npix"])).astype(np.float32)


def pixel_integrated_resolution(sigma_pix: np.ndarray, ndiag: int = 11) -> np.ndarray:
    """Resolution diagonals (desispec layout, as spectro.gaussian_resolution) of a Gaussian of
    sigma `sigma_pix` integrated over each pixel: the kernel's variance is sigma² + 1/12."""
    offsets = ndiag // 2 - np.arange(ndiag)
    s = np.sqrt(2.0) * np.asarray(sigma_pix, np.float64)[None, :]
    kern = 0.5 * (erf((offsets[:, None] + 0.5) / s) - erf((offsets[:, None] - 0.5) / s))
    return (kern / kern.sum(axis=0, keepdims=True)).astype(np.float32)


def select(seed: int, galaxies: pd.DataFrame, cfg: SimConfig, sdss_tiles: set,
           boss_tiles: set = frozenset(), points: pd.DataFrame | None = None) -> pd.DataFrame:
    """Plates of the SDSS spectrograph (r < sdss_r_limit on `sdss_tiles`) and of BOSS
    (sdss_r_limit <= r < boss_r_limit on `boss_tiles`); column `instrument` says which.

    `points` (stars and quasars: source_id, kind, tile, flux_sdss_*) adds quasars (i <
    sdss_qso_i_limit on SDSS plates; fainter, g < boss_qso_g_limit on BOSS plates) and a fraction
    `sdss_star_fraction` of the stars in each spectrograph's r range, drawn from their own random
    stream. Rows carry `source_id` (the galaxy_id for galaxies) and `kind`.
    """
    rng = rng_for(seed, "sdss-selection")
    flux = galaxies["flux_sdss_r"].to_numpy(float)
    r_obs = 22.5 - 2.5 * np.log10(np.clip(flux, 1e-30, None)) + rng.normal(0, 0.03, len(galaxies))
    u = rng.random(len(galaxies))
    tile = galaxies["tile"]
    keep = (r_obs < cfg.sdss_r_limit) & tile.isin(sdss_tiles).to_numpy() & (u < cfg.sdss_completeness)
    boss_rng = rng_for(seed, "boss-selection")
    boss = ((r_obs >= cfg.sdss_r_limit) & (r_obs < cfg.boss_r_limit) & tile.isin(boss_tiles).to_numpy()
            & (boss_rng.random(len(galaxies)) < cfg.boss_completeness))
    cand = galaxies[["galaxy_id", "tile"]].rename(columns={"galaxy_id": "source_id"}).assign(kind="galaxy")
    keep_all, boss_all = [keep], [boss]
    if points is not None and len(points):
        prng = rng_for(seed, "sdss-selection-psf")
        m = {b: 22.5 - 2.5 * np.log10(np.clip(points[f"flux_sdss_{b}"].to_numpy(float)
                                               * points[f"mw_transmission_sdss_{b}"].to_numpy(float), 1e-30, None))
             + prng.normal(0, 0.03, len(points)) for b in "gri"}
        kind = points["kind"].to_numpy()
        ptile = points["tile"]
        u_s, u_b, u_star = prng.random(len(points)), prng.random(len(points)), prng.random(len(points))
        is_q, is_s = kind == "qso", kind == "star"
        p_keep = ((is_q & (m["i"] < cfg.sdss_qso_i_limit))
                  | (is_s & (m["r"] >= cfg.sdss_star_r_min) & (m["r"] < cfg.sdss_r_limit)
                     & (u_star < cfg.sdss_star_fraction)))
        p_keep &= ptile.isin(sdss_tiles).to_numpy() & (u_s < cfg.sdss_completeness)
        p_boss = ((is_q & (m["i"] >= cfg.sdss_qso_i_limit) & (m["g"] < cfg.boss_qso_g_limit))
                  | (is_s & (m["r"] >= cfg.sdss_r_limit) & (m["r"] < cfg.boss_r_limit)
                     & (u_star < cfg.sdss_star_fraction)))
        p_boss &= ptile.isin(boss_tiles).to_numpy() & (u_b < cfg.boss_completeness) & ~p_keep
        cand = pd.concat([cand, points[["source_id", "tile", "kind"]]], ignore_index=True)
        keep_all.append(p_keep)
        boss_all.append(p_boss)
    keep, boss = np.concatenate(keep_all), np.concatenate(boss_all)
    parts = []
    for instrument, chosen in (("SDSS", keep), ("BOSS", boss)):
        spec = BOSS if instrument == "BOSS" else SDSS
        sel = cand[chosen].sort_values(["tile", "source_id"], kind="stable")
        plates, fibers, mjds = [], [], []
        next_plate = spec["first_plate"]
        plate_rng = rng if instrument == "SDSS" else boss_rng
        for _, grp in sel.groupby("tile", sort=True):
            for start in range(0, len(grp), spec["fibers"]):
                chunk = grp.iloc[start:start + spec["fibers"]]
                plates += [next_plate] * len(chunk)
                fibers += list(1 + np.sort(plate_rng.choice(spec["fibers"], len(chunk), replace=False)))
                mjd0 = 51600 if instrument == "SDSS" else 55200
                mjds += [mjd0 + (next_plate * 37) % 2900] * len(chunk)
                next_plate += 1
        if instrument == "SDSS" and next_plate > 2999:
            raise ValueError("too many SDSS plates for the legacy plate-number range; lower sdss_field_fraction")
        out = sel[["source_id", "kind"]].copy()
        out["plate"], out["mjd"], out["fiberid"] = plates, mjds, fibers
        out["instrument"] = instrument
        parts.append(out)
    return pd.concat(parts, ignore_index=True)


def spec_path(out_root: Path, plate: int, mjd: int, fiber: int, instrument: str = "SDSS") -> Path:
    name = f"spec-{plate:04d}-{mjd:05d}-{fiber:04d}.fits"
    if instrument == "BOSS":  # the SAS layout of the eboss tree: one folder per reduction
        return (Path(out_root) / "sdss" / "dr17" / "eboss" / "spectro" / "redux" / BOSS["run2d"] / "spectra"
                / "lite" / f"{plate:04d}" / name)
    return Path(out_root) / "sdss" / "dr17" / "spectra" / f"{plate:04d}" / name


def specobjid(plate, fiber, mjd, run2d="26") -> str:
    """SDSS DR8+ bit-encoded specObjID (plate<<50 | fiber<<38 | (mjd-50000)<<24 | run2d<<10), run2d
    vN_M_P encoded as (N-5)*10000 + M*100 + P."""
    r = str(run2d)
    if r.startswith("v"):
        n, m, p_ = (int(x) for x in r[1:].split("_"))
        code = (n - 5) * 10000 + m * 100 + p_
    else:
        code = int(r)
    return str((int(plate) << 50) | (int(fiber) << 38) | ((int(mjd) - 50000) << 24) | (code << 10))


def write_plate(seed: int, plate: int, sel: pd.DataFrame, truth: pd.DataFrame, out_root: Path,
                cfg: SimConfig) -> pd.DataFrame:
    instrument = str(sel["instrument"].iloc[0]) if "instrument" in sel else "SDSS"
    spec = BOSS if instrument == "BOSS" else SDSS
    npix, run2d = spec["npix"], spec["run2d"]
    rng = rng_for(seed, "sdss-spectra", int(plate))
    rows = truth.loc[sel["source_id"].to_numpy()]
    kinds = rows["kind"].to_numpy() if "kind" in rows else np.full(len(rows), "galaxy")
    ll = loglam(instrument)
    wave = 10 ** ll.astype(np.float64)
    model = spectro.fibre_model(rows, wave, "fiber_frac_sdss", cfg.cosmology)
    wdisp_pix = np.full(npix, 1.0 / (spec["resolution"] * 2.3548 * np.log(10) * DLOGLAM), np.float32)
    model = spectro.apply_resolution(pixel_integrated_resolution(wdisp_pix), model)
    sky_lines = spectro.sky_lines(rng_for(0, "sdss-sky"), wave[0], wave[-1], per_1000a=20)
    sky = spectro.sky_spectrum(wave, sky_lines, 2.0)
    sky_flux = (8.0 * sky).astype(np.float32)
    sigma = np.sqrt(0.6**2 * sky[None, :] + 0.03 * np.clip(model, 0, None))
    z_true = rows["z"].to_numpy(float)
    results = []
    plate_ra, plate_dec = float(rows["ra"].mean()), float(rows["dec"].mean())
    for k in range(len(sel)):
        fiber, mjd = int(sel["fiberid"].iloc[k]), int(sel["mjd"].iloc[k])
        flux = model[k] + rng.normal(0, 1, npix) * sigma[k]
        ivar = 1.0 / sigma[k] ** 2
        and_mask = np.zeros(npix, np.int32)
        bright_sky = sky > 6.0
        and_mask[bright_sky] |= 1 << 23  # BRIGHTSKY
        ivar[bright_sky] *= 0.5
        snr = float(np.median(model[k] * np.sqrt(ivar)))
        kind = str(kinds[k])
        fail = rng.random() < 0.01
        z_err = {"star": 1e-5, "qso": 4e-4}.get(kind, 3e-5) * (1 + z_true[k]) * np.clip(10.0 / max(snr, 0.5), 0.3, 20)
        z = float(rng.uniform(0, 0.8)) if fail else float(z_true[k] + rng.normal() * z_err)
        cls, subclass, objtype = _classification(rows.iloc[k], kind)
        coadd = fitsio_util.table([
            ("flux", "E", flux.astype(np.float32)), ("loglam", "E", ll), ("ivar", "E", ivar.astype(np.float32)),
            ("and_mask", "J", and_mask), ("or_mask", "J", and_mask.copy()), ("wdisp", "E", wdisp_pix),
            ("sky", "E", sky_flux), ("model", "E", model[k].astype(np.float32))], "COADD")
        obj = dict(PLATE=plate, MJD=mjd, FIBERID=fiber)
        specobj_cols = [
            ("PLATE", "J", [plate]), ("MJD", "J", [mjd]), ("FIBERID", "J", [fiber]),
            ("RUN2D", f"{len(run2d)}A", [run2d]), ("RUN1D", f"{len(run2d)}A", [run2d]),
            ("PLUG_RA", "D", [rows["ra"].iloc[k]]), ("PLUG_DEC", "D", [rows["dec"].iloc[k]]),
            ("CLASS", "6A", [cls]), ("SUBCLASS", "21A", [subclass]),
            ("Z", "E", [z]), ("Z_ERR", "E", [z_err]), ("ZWARNING", "J", [4 if fail else 0]),
            ("RCHI2", "E", [float(10 ** rng.normal(0, 0.03))]), ("DOF", "J", [npix - 10]),
            ("VDISP", "E", [float(np.clip(10 ** (2.0 + 0.3 * (rows["logmass"].iloc[k] - 10.5)), 30, 400))
                            if kind == "galaxy" else 0.0]),
            ("VDISP_ERR", "E", [20.0]), ("SN_MEDIAN_ALL", "E", [snr]),
            ("SPECPRIMARY", "B", [1]), ("SPECOBJID", "19A", [specobjid(plate, fiber, mjd, run2d)]),
            ("OBJTYPE", "16A", [objtype]),
            ("SPECTROFLUX", "5E", [np.zeros(5, np.float32)]), ("SPECTROFLUX_IVAR", "5E", [np.zeros(5, np.float32)]),
        ]
        # the best fit without QSO templates: a quasar is then fitted as a galaxy at a wrong z
        cls_noqso = "GALAXY" if cls == "QSO" else cls
        z_noqso = float(rng.uniform(0.0, 0.8)) if cls == "QSO" else z
        if instrument == "BOSS":  # spAll: the BOSS flags and the galaxy-only (NOQSO) redshift
            specobj_cols += [
                ("SPECBOSS", "J", [1]), ("SPECLEGACY", "J", [0]), ("PROGRAMNAME", "8A", ["boss"]),
                ("CHUNK", "8A", ["boss9"]), ("BOSS_TARGET1", "K", [BOSS_TARGET1[kind]]),
                ("Z_NOQSO", "E", [z_noqso]), ("Z_ERR_NOQSO", "E", [z_err]), ("ZWARNING_NOQSO", "J", [4 if fail else 0]),
                ("CLASS_NOQSO", "6A", [cls_noqso]), ("SUBCLASS_NOQSO", "21A", [subclass if cls_noqso == cls else ""])]
        else:
            specobj_cols += [("LEGACY_TARGET1", "J", [LEGACY_TARGET1[kind]])]
        specobj = fitsio_util.table(specobj_cols, "SPALL" if instrument == "BOSS" else "SPECOBJ")
        zline = fitsio_util.table(_spzline(rng, rows.iloc[k], obj, z, wave, model[k], sigma[k]), "SPZLINE")
        cards = [("TELESCOP", "SDSS 2.5-M", ""), ("PLATEID", plate, ""), ("MJD", mjd, ""), ("FIBERID", fiber, ""),
                 ("RUN2D", run2d, ""), ("VERS2D", run2d if instrument == "BOSS" else VERS2D, ""),
                 ("COEFF0", spec["loglam0"], "log10 wavelength of pixel 0"),
                 ("COEFF1", DLOGLAM, "log10 dispersion per pixel"), ("BUNIT", "1E-17 erg/cm^2/s/Ang", ""),
                 ("RA", plate_ra, "plate centre"), ("DEC", plate_dec, "plate centre"),
                 ("PLUG_RA", float(rows["ra"].iloc[k]), ""), ("PLUG_DEC", float(rows["dec"].iloc[k]), ""),
                 ("NEXP", 3, ""), ("EXPTIME", 2700.0, "")]
        fitsio_util.write_fits(spec_path(out_root, plate, mjd, fiber, instrument),
                               [fitsio_util.primary(seed, cards), coadd, specobj, zline])
        results.append({"source_id": int(sel["source_id"].iloc[k]), "kind": kind, "sdss_plate": plate,
                        "sdss_mjd": mjd, "sdss_fiberid": fiber, "sdss_z": z, "sdss_zwarning": 4 if fail else 0,
                        "sdss_class": cls, "sdss_subclass": subclass})
    return pd.DataFrame(results)


#: target bits: BOSS_TARGET1 GAL_CMASS (1), QSO_CORE_MAIN (40), STD_FSTAR (20); SDSS-I/II LEGACY_TARGET1
#: GALAXY (6), QSO_CAP (1); stars get no legacy bit (they came from the calibration and SEGUE
#: programmes, flagged elsewhere)
BOSS_TARGET1 = {"galaxy": 1 << 1, "qso": 1 << 40, "star": 1 << 20}
LEGACY_TARGET1 = {"galaxy": 1 << 6, "qso": 1 << 1, "star": 0}


def _classification(row, kind: str) -> tuple[str, str, str]:
    """(CLASS, SUBCLASS, OBJTYPE) of the spectro1d pipeline for one truth row."""
    if kind == "star":
        from mmu.sim.stars import spectral_subclass

        teff = float(row["teff"])
        return "STAR", str(spectral_subclass(teff)[0]), "SPECTROPHOTO_STD" if 5700 < teff < 6500 else "STAR"
    if kind == "qso":
        return "QSO", "BROADLINE", "QSO"
    return "GALAXY", "STARFORMING" if float(row["ssfr"]) > 1e-10 else "", "GALAXY"


def _spzline(rng, row, obj, z, wave, model, sigma) -> list[tuple]:
    """Gaussian line fluxes measured on the noiseless model (continuum by median), with noise."""
    names, rest, area, area_err, zs, ew = [], [], [], [], [], []
    for name, lam in SPZ_LINES:
        obs = lam * (1 + z)
        near = np.abs(wave - obs) < 8.0
        cont_win = (np.abs(wave - obs) > 15.0) & (np.abs(wave - obs) < 60.0)
        if near.sum() < 3 or cont_win.sum() < 5:
            a, e, c = 0.0, -1.0, 0.0
        else:
            c = float(np.median(model[cont_win]))
            dw = np.gradient(wave)[near]
            e = float(np.sqrt(np.sum((sigma[near] * dw) ** 2)))
            a = float(np.sum((model[near] - c) * dw)) + rng.normal() * e
        names.append(name)
        rest.append(lam)
        area.append(a)
        area_err.append(e)
        zs.append(z)
        ew.append(a / c if c > 0 else 0.0)
    n = len(names)
    return [("PLATE", "J", np.full(n, obj["PLATE"])), ("MJD", "J", np.full(n, obj["MJD"])),
            ("FIBERID", "J", np.full(n, obj["FIBERID"])), ("LINENAME", "13A", np.array(names)),
            ("LINEWAVE", "D", np.array(rest)), ("LINEZ", "E", np.array(zs, np.float32)),
            ("LINEAREA", "E", np.array(area, np.float32)), ("LINEAREA_ERR", "E", np.array(area_err, np.float32)),
            ("LINEEW", "E", np.array(ew, np.float32))]
