"""Quasars: a power-law continuum, broad emission lines and Lyman-alpha forest absorption.

Rest frame: f_nu ∝ nu^alpha (alpha ~ N(-0.45, 0.25) blueward of 5,000 Å, as the Vanden Berk et
al. 2001 composite, steeper redward), broad Gaussian lines with rest equivalent widths near the
composite's (Lyα+N V, Si IV, C IV, C III], Mg II, Hγ, Hβ, Hα) scattered by 0.15 dex, FWHM
~ 4,000 km/s; narrow [O III]. Observed frame: the Lyα forest between Lyβ... Lyα, a set of discrete
absorbers (b ~ 30 km/s, a power-law of central optical depths) scaled so that the mean
transmission follows tau_eff(z) = 0.0018 (1+z)^3.92 (Faucher-Giguère et al. 2008), and the Lyman
limit below 912 Å. Redshifts 0.5-3.5; counts dN/dr ∝ 10^(0.35 r) (r < `qso_r_max`).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from mmu.sim import sed
from mmu.sim.config import SimConfig, rng_for

C_KMS = 299792.458
LYA, LYB, LYLIMIT = 1215.67, 1025.72, 911.75
#: (name, rest vacuum wavelength Å, rest equivalent width Å, FWHM km/s)
LINES = (("Lya", 1215.67, 90.0, 5000.0), ("NV", 1240.14, 15.0, 4000.0), ("SiIV", 1397.6, 8.0, 4500.0),
         ("CIV", 1549.06, 24.0, 4500.0), ("CIII]", 1908.73, 22.0, 5000.0), ("MgII", 2799.12, 32.0, 4000.0),
         ("H_gamma", 4341.68, 14.0, 3500.0), ("H_beta", 4862.68, 46.0, 3500.0), ("[OIII]", 5008.24, 13.0, 500.0),
         ("H_alpha", 6564.61, 190.0, 3000.0))
#: the observed-frame grid on which the forest is drawn (covers Lyman limit to Lyα for z <= 3.5)
FOREST_WAVE = np.arange(3000.0, 5600.0, 0.25)
PHOT_WAVE = np.arange(2900.0, 11600.0, 0.5)


def tau_eff(z) -> np.ndarray:
    return 0.0018 * (1.0 + np.asarray(z, float)) ** 3.92


def continuum(wave_rest, alpha_blue, alpha_red) -> np.ndarray:
    """f_lambda (n, m) of a broken power law f_nu ∝ nu^alpha, 1 at 3,000 Å rest."""
    w = np.asarray(wave_rest, float)
    ab = np.asarray(alpha_blue, float)[:, None]
    ar = np.asarray(alpha_red, float)[:, None]
    blue = (w / 3000.0) ** (-2.0 - ab)
    at_break = (5000.0 / 3000.0) ** (-2.0 - ab)
    red = at_break * (w / 5000.0) ** (-2.0 - ar)
    return np.where(w < 5000.0, blue, red)


def rest_spectrum(wave_rest, alpha_blue, alpha_red, line_scale, fwhm_scale) -> np.ndarray:
    """Continuum plus emission lines (no absorption), f_lambda (n, m) in continuum units."""
    cont = continuum(wave_rest, alpha_blue, alpha_red)
    w = np.asarray(wave_rest, float)
    out = cont.copy()
    for k, (_, lam, ew, fwhm) in enumerate(LINES):
        c_at = continuum(np.array([lam]), alpha_blue, alpha_red)  # (n, 1)
        sig = lam * fwhm * (fwhm_scale[:, None] if fwhm > 1000 else 1.0) / C_KMS / 2.3548
        amp = ew * line_scale[:, k:k + 1] * c_at / (sig * np.sqrt(2 * np.pi))
        x = (w - lam) / sig
        out = out + amp * np.exp(-0.5 * np.clip(x * x, 0, 200.0))
    return out


def forest_transmission(forest_seed: int, z: float) -> np.ndarray:
    """Transmission on FOREST_WAVE for a quasar at z: discrete absorbers between the Lyman limit
    and Lyα (observed), scaled to the mean tau_eff(z_abs), and the Lyman limit below 912 Å."""
    rng = rng_for(int(forest_seed), "qso-forest")
    w = FOREST_WAVE
    lo, hi = LYLIMIT * (1 + z), LYA * (1 + z)
    inside = (w > lo) & (w < hi)
    trans = np.ones_like(w)
    if inside.any():
        n_abs = rng.poisson(1.2 * (hi - lo))
        centre = rng.uniform(lo, hi, n_abs)
        tau0 = 0.15 * (1.0 - rng.random(n_abs)) ** (-1.0 / 1.3)  # power law of central optical depths
        tau0 = np.minimum(tau0, 30.0)
        b = rng.normal(30.0, 6.0, n_abs).clip(12.0, 60.0)
        tau = np.zeros(w.size)
        for c, t0, bb in zip(centre, tau0, b):
            s = c * bb / C_KMS / np.sqrt(2.0)
            j0, j1 = np.searchsorted(w, [c - 6 * s, c + 6 * s])
            tau[j0:j1] += t0 * np.exp(-0.5 * ((w[j0:j1] - c) / s) ** 2)
        # scale to the observed mean transmission, evolving with the absorber redshift
        evo = ((w[inside] / LYA) / (1 + z)) ** 3.92
        target = np.mean(np.exp(-tau_eff(w[inside] / LYA - 1.0)))
        s_lo, s_hi = 0.0, 50.0
        for _ in range(40):
            mid = 0.5 * (s_lo + s_hi)
            if np.mean(np.exp(-mid * tau[inside] * evo)) > target:
                s_lo = mid
            else:
                s_hi = mid
        trans[inside] = np.exp(-0.5 * (s_lo + s_hi) * tau[inside] * evo)
    trans[w <= lo] = np.exp(-2.0) * np.clip(w[w <= lo] / lo, 0, 1) ** 3
    return trans


def observed_flambda(rows: pd.DataFrame, wave_obs: np.ndarray, with_forest: bool = True) -> np.ndarray:
    """Observed f_lambda [erg/s/cm²/Å] (n, len(wave_obs)) of quasar truth rows, Milky Way dust applied."""
    wave_obs = np.asarray(wave_obs, float)
    z = rows["z"].to_numpy(float)
    rest = wave_obs[None, :] / (1.0 + z[:, None])
    line_scale = np.column_stack([rows[f"line_scale_{k}"].to_numpy(float) for k in range(len(LINES))])
    out = np.empty((len(rows), wave_obs.size))
    alpha_b, alpha_r = rows["alpha_blue"].to_numpy(float), rows["alpha_red"].to_numpy(float)
    fwhm = rows["fwhm_scale"].to_numpy(float)
    norm = rows["sed_scale"].to_numpy(float)
    ebv = rows["ebv_mw"].to_numpy(float)
    ext = sed._ccm_interp(wave_obs)
    seeds = rows["forest_seed"].to_numpy(np.int64)
    for i in range(len(rows)):
        f = rest_spectrum(rest[i], alpha_b[i:i + 1], alpha_r[i:i + 1], line_scale[i:i + 1], fwhm[i:i + 1])[0]
        if with_forest:
            t = forest_transmission(int(seeds[i]), float(z[i]))
            f = f * np.interp(wave_obs, FOREST_WAVE, t, left=t[0], right=1.0)
        out[i] = f * norm[i] * 10 ** (-0.4 * 3.1 * ebv[i] * ext)
    return out


def draw_tile(seed: int, tile: int, box: tuple, ebv: float, cfg: SimConfig) -> pd.DataFrame:
    """Quasars in one tile's box (ra_lo, ra_hi, dec_lo, dec_hi): redshift, SED parameters, r mag."""
    rng = rng_for(seed, "qsos", int(tile))
    ra_lo, ra_hi, dec_lo, dec_hi = box
    area = max((ra_hi - ra_lo) * np.cos(np.radians(0.5 * (dec_lo + dec_hi))) * (dec_hi - dec_lo), 1e-5)
    n = rng.poisson(cfg.qso_per_deg2 * area)
    a = 0.35 * np.log(10)
    lo, hi = cfg.qso_r_range
    r = np.log(np.exp(a * lo) + rng.random(n) * (np.exp(a * hi) - np.exp(a * lo))) / a
    z0, z1 = cfg.qso_z_range
    df = pd.DataFrame({
        "tile": np.full(n, int(tile), np.int64), "ra": np.mod(ra_lo + rng.random(n) * (ra_hi - ra_lo), 360.0),
        "dec": dec_lo + rng.random(n) * (dec_hi - dec_lo), "r_mag": r,
        "z": z0 + (z1 - z0) * rng.beta(1.6, 1.9, n),
        "alpha_blue": rng.normal(-0.45, 0.25, n), "alpha_red": rng.normal(-1.5, 0.3, n),
        "fwhm_scale": 10 ** rng.normal(0.0, 0.12, n),
        "ebv_mw": np.full(n, float(ebv)) * 10 ** rng.normal(0, 0.03, n),
        "forest_seed": rng.integers(0, 2**62, n, dtype=np.int64),
    })
    scales = 10 ** rng.normal(0.0, 0.15, (n, len(LINES)))
    for k in range(len(LINES)):
        df[f"line_scale_{k}"] = scales[:, k]
    return df


def photometry(qsos: pd.DataFrame) -> pd.DataFrame:
    """Normalise to the drawn r magnitude (after MW dust) and add the true band fluxes, as stars.photometry."""
    out = qsos.copy()
    if len(out) == 0:
        return out
    tmp = out.assign(sed_scale=1.0, ebv_mw=0.0)
    unit = observed_flambda(tmp, PHOT_WAVE)
    ebv = out["ebv_mw"].to_numpy(float)
    res = {}
    for survey, names in sed.FILTER_NAMES.items():
        m, m_mw = sed.ab_maggies(np.broadcast_to(PHOT_WAVE, unit.shape), unit, names, ebv_mw=ebv)
        for j, nm in enumerate(names):
            res[(survey, nm.split("-")[-1])] = (m[:, j], m_mw[:, j] / m[:, j])
    m_r, t_r = res[("decam", "r")]
    scale = 10 ** (-0.4 * (out["r_mag"].to_numpy(float) - 22.5)) * 1e-9 / (m_r * t_r)
    out["sed_scale"] = scale
    for (survey, b), (m, t) in res.items():
        out[f"flux_{survey}_{b}"] = m * scale * 1e9
        if survey != "lsst":
            out[f"mw_transmission_{survey}_{b}"] = t
    return out
