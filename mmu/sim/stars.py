"""Milky Way stars: a simple Galactic population model and stellar spectra.

Spectra: no stellar library that installs from PyPI ships its grid inside the package (checked
2026-11: pyckles and milespy download their catalogues at run time, gollum/expecto fetch PHOENIX
from its server, ppxf 9 ships galaxy spectra and no stellar grid, pyphot ships Vega and filter
curves; pystellibs is not on PyPI), and the simulator runs offline. So `stellar_sed` is a
blackbody with the features that classify stars, each with an equivalent width that depends on
(Teff, log g, [M/H]): the Balmer series and Balmer jump (strongest near 9,500 K, broader at high
gravity), Ca II H & K, the G band, Mg b, Na D and the Ca triplet (metal lines, stronger in cool
stars; Na D and Mg b stronger in dwarfs, the Ca triplet in giants), TiO bands below 4,000 K and
metal line blanketing in the blue. It is a classification-grade SED, not a model atmosphere.

Population (per sky cell): number counts dN/dr ∝ 10^(0.2 r) to the survey limit with a density
that rises toward the Galactic plane as (sin 30° / sin|b|)^p; thin-disk dwarfs (mostly K/M),
halo turn-off dwarfs (metal-poor, more of them at faint magnitudes), red giants, and the
"bhb_a" population: horizontal-branch (HB) stars in the halo, A dwarfs in the disk. Radius from
log g and mass; distance from the radius, the SED and the drawn magnitude; radial velocities from
disk or halo dispersions.

The halo horizontal branch (mmu-sim 1.3) spans the RR Lyrae instability strip and the blue HB:
half of the halo HB stars lie in the strip, `INSTABILITY_STRIP_K` = 6,100-7,400 K with log g
2.4-3.0 (RR Lyrae: M = 0.6 Msun, so R = 4-8 Rsun), half on the blue HB, 7,400-10,500 K with log g
2.8-3.5. Equal numbers are the order-unity ratio of BHB stars to RR Lyrae that inner-halo field
surveys find; a red HB (metal-rich, < 6,100 K) is not drawn. Essentially every HB star inside the
strip pulsates, so `mmu.sim.tess.assign_classes` makes most of them RR Lyrae. `SimConfig.
star_halo_hb_fraction` is the share of halo stars on the HB (default 3%, as 1.2's share of the
"bhb_a" population; raised in a star-rich simulation for a task with enough RR Lyrae); disk stars
keep 3% A dwarfs (7,500-10,500 K, log g 3.9-4.3). Up to 1.2 the halo HB was drawn at
7,500-10,500 K only and held no RR Lyrae.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.special import expit

from mmu.sim import sed
from mmu.sim.config import SimConfig, rng_for

C_KMS = 299792.458
G_CGS = 6.6743e-8
MSUN_G = 1.98847e33
RSUN_CM = 6.957e10
PC_CM = 3.0856775814913673e18
#: rest vacuum wavelengths (Angstrom)
BALMER = (("H_alpha", 6564.61, 0.8), ("H_beta", 4862.68, 1.0), ("H_gamma", 4341.68, 1.0),
          ("H_delta", 4102.89, 1.0), ("H_epsilon", 3971.20, 0.9), ("H8", 3890.15, 0.8), ("H9", 3836.47, 0.7))
CA_HK = (3934.78, 3969.59)
MG_B = (5168.76, 5174.13, 5185.05)
NA_D = (5891.58, 5897.56)
CA_TRIPLET = (8500.36, 8544.44, 8664.52)
G_BAND = 4305.0
BALMER_LIMIT = 3646.0
#: TiO band heads (Angstrom) of M stars; each band degrades to the red
TIO_BANDS = (4955.0, 5167.0, 5448.0, 6159.0, 7055.0, 7589.0, 8432.0)
#: the RR Lyrae instability strip on the horizontal branch (Teff, K): red and blue edges
INSTABILITY_STRIP_K = (6100.0, 7400.0)
#: the halo HB: share of its stars inside the strip; the rest are blue-HB stars up to BHB_MAX_K
HB_STRIP_SHARE = 0.5
BHB_MAX_K = 10500.0
SPECTRAL_CLASSES = ((30000, "O"), (10000, "B"), (7500, "A"), (6000, "F"), (5200, "G"), (3700, "K"), (0, "M"))


def spectral_class(teff) -> np.ndarray:
    """Harvard class letter (O B A F G K M) of effective temperatures, as redrock's star SUBTYPE."""
    teff = np.asarray(teff, float)
    out = np.full(teff.shape, "M", dtype="<U1")
    for lo, name in reversed(SPECTRAL_CLASSES):
        out = np.where(teff >= lo, name, out)
    return out


def spectral_subclass(teff) -> np.ndarray:
    """SDSS-style subclass such as 'G2' or 'K5' (class letter and a decimal step within it)."""
    teff = np.asarray(teff, float)
    edges = [lo for lo, _ in SPECTRAL_CLASSES][::-1] + [50000]  # ascending
    letters = [n for _, n in SPECTRAL_CLASSES][::-1]
    out = []
    for t in np.atleast_1d(teff):
        k = int(np.clip(np.searchsorted(edges, t, side="right") - 1, 0, len(letters) - 1))
        lo, hi = edges[k], edges[k + 1]
        lo = max(lo, 2400.0)
        step = int(np.clip(np.floor(10 * (hi - t) / (hi - lo)), 0, 9))
        out.append(f"{letters[k]}{step}")
    return np.asarray(out)


def _absorb(wave, centre, ew, sigma):
    """Optical depth of a Gaussian absorption line whose equivalent width is `ew` (Angstrom) in
    the weak-line limit; broadcast (n, 1) parameters over (n, m) wavelengths. A strong line
    widens (as damping wings do) instead of saturating: its central optical depth stays <= 1.2."""
    sigma = np.maximum(np.maximum(sigma, 1e-3), np.asarray(ew) / (1.2 * np.sqrt(2 * np.pi)))
    tau0 = ew / (sigma * np.sqrt(2 * np.pi))
    x = (wave - centre) / sigma
    return tau0 * np.exp(-0.5 * np.clip(x * x, 0, 200.0))


def _bump(t, centre, width):
    return np.exp(-0.5 * ((t - centre) / width) ** 2)


def stellar_sed(teff, logg, mh, wave_angstrom) -> np.ndarray:
    """Surface flux F_lambda [erg/s/cm²/Å] of stars with (Teff [K], log g [cgs], [M/H] [dex]) at
    rest-frame vacuum wavelengths `wave_angstrom`.

    Scalars give a 1-d spectrum; arrays of n stars give (n, len(wave)). The flux a telescope
    receives is this times (R/d)² (and the Doppler shift and dust applied by the caller). A
    blackbody with absorption lines and bands whose strengths follow Teff, log g and [M/H]
    (module docstring). There is no back-warming: the absorption removes 5-25% of sigma Teff^4
    (most in A stars, whose Balmer jump takes out the ultraviolet).
    """
    scalar = np.ndim(teff) == 0
    t = np.atleast_1d(np.asarray(teff, float))[:, None]
    g = np.atleast_1d(np.asarray(logg, float))[:, None]
    m = np.atleast_1d(np.asarray(mh, float))[:, None]
    w = np.asarray(wave_angstrom, float)
    w2 = w[None, :] if w.ndim == 1 else w
    metal = 10 ** np.clip(m, -3.0, 1.0)
    cool = 1.0 / (1.0 + np.exp((t - 6800.0) / 500.0))  # metal lines fade in hot stars
    tau = np.zeros(np.broadcast_shapes(t.shape, w2.shape))

    # Balmer lines: peak near 9,500 K; pressure broadening grows with gravity
    ew_h = 14.0 * np.where(t < 9500.0, _bump(t, 9500.0, 2300.0), _bump(t, 9500.0, 7000.0))
    ew_h = ew_h * (1.0 + 0.15 * (g - 4.0))
    sig_h = (1.5 + 9.0 * ew_h / 14.0) * np.clip(0.55 + 0.1 * g, 0.5, 1.2)
    for _, lam, rel in BALMER:
        tau += _absorb(w2, lam, rel * ew_h, sig_h)
    # metal lines
    ew_k = 16.0 * metal**0.5 * cool * (0.4 + 0.6 * _bump(t, 4800.0, 1500.0))
    for lam, rel in zip(CA_HK, (1.0, 0.8)):
        tau += _absorb(w2, lam, rel * ew_k, 4.0 + 0 * t)
    tau += _absorb(w2, G_BAND, 8.0 * metal**0.6 * cool * _bump(t, 5000.0, 1200.0), 12.0 + 0 * t)
    ew_mg = 1.4 * metal**0.6 * cool * np.exp(np.clip((5800.0 - t) / 2500.0, -3, 1.2)) * (1.0 + 0.2 * (g - 4.0))
    for lam, rel in zip(MG_B, (0.8, 1.0, 1.1)):
        tau += _absorb(w2, lam, rel * np.clip(ew_mg, 0, None), 1.0 + 0 * t)
    ew_na = (0.9 * metal**0.5 * cool * np.exp(np.clip((5800.0 - t) / 1100.0, -3, 2.2))
             * np.clip(1.0 + 0.4 * (g - 4.0), 0.2, 2))
    for lam, rel in zip(NA_D, (1.1, 0.9)):
        tau += _absorb(w2, lam, rel * ew_na, 0.9 + 0 * t)
    ew_ca = 2.4 * metal**0.35 * cool * np.clip(1.0 + 0.25 * (4.4 - g), 0.6, 2.2)
    for lam, rel in zip(CA_TRIPLET, (0.4, 1.0, 0.8)):
        tau += _absorb(w2, lam, rel * ew_ca, 1.5 + 0 * t)
    flux = sed.blackbody_flambda(w2, t) * np.exp(-tau)

    # TiO bands below 4,000 K: a sharp blue edge, recovering over ~120 A to the red
    tio = np.clip((4000.0 - t) / 900.0, 0.0, 1.0) * np.clip(0.6 + 0.3 * m, 0.2, 1.0)
    if np.any(tio > 0):
        for k, head in enumerate(TIO_BANDS):
            depth = tio * (0.55 if k in (3, 4, 5) else 0.35)
            x = w2 - head
            band = np.where((x >= 0) & (x < 400.0), np.exp(-np.clip(x, 0, None) / 120.0), 0.0)
            flux = flux * (1.0 - depth * band)
    # Balmer jump (strongest in A stars, larger at low gravity) and metal blanketing in the blue
    jump = 1.1 * _bump(t, 9000.0, 3500.0) * np.clip(1.0 + 0.15 * (4.0 - g), 0.6, 1.5)
    edge = expit((BALMER_LIMIT - w2) / 15.0)
    flux = flux * 10 ** (-0.4 * jump * edge)
    blanket = 0.35 * metal**0.5 * np.clip((7500.0 - t) / 2500.0, 0.0, 1.6) * (4000.0 / np.clip(w2, 1000, None)) ** 4
    flux = flux * np.exp(-np.clip(blanket, 0, 20.0))
    return flux[0] if scalar else flux


def radius_rsun(logg, mass_msun) -> np.ndarray:
    g = 10 ** np.asarray(logg, float)
    return np.sqrt(G_CGS * np.asarray(mass_msun, float) * MSUN_G / g) / RSUN_CM


def density_per_deg2(b_deg, cfg: SimConfig) -> np.ndarray:
    """Stars per square degree to `star_r_max` at Galactic latitude b: `stars_per_deg2` at
    |b| = 30 deg, rising toward the plane as (sin 30 / sin|b|)^star_latitude_power."""
    s = np.sin(np.radians(np.clip(np.abs(np.asarray(b_deg, float)), 5.0, 90.0)))
    return cfg.stars_per_deg2 * (0.5 / s) ** cfg.star_latitude_power


def draw_parameters(rng, r_mag: np.ndarray, halo_hb_fraction: float = 0.03) -> dict:
    """(population, Teff, log g, [M/H], mass, radial velocity) for stars of apparent r magnitude.

    `halo_hb_fraction`: the share of halo stars on the horizontal branch (the strip and the blue
    HB, module docstring); disk stars keep 3% A dwarfs. The random stream is drawn as in 1.2 (same
    calls, same order): only the halo HB stars' Teff and log g differ at the default."""
    if not 0.0 <= halo_hb_fraction <= 0.9:
        raise ValueError(f"star_halo_hb_fraction {halo_hb_fraction}: expected a share of halo stars in [0, 0.9]")
    n = r_mag.size
    u = rng.random(n)
    p_halo = np.clip(0.15 + 0.08 * (r_mag - 15.0), 0.15, 0.7)
    p_giant = np.clip(0.10 - 0.015 * (r_mag - 16.0), 0.01, 0.10)  # giants reach the outer halo only when faint
    halo = rng.random(n) < p_halo
    hb_share = np.where(halo, halo_hb_fraction, 0.03)
    pop = np.where(u < p_giant, "giant", np.where(u < p_giant + hb_share, "bhb_a", "dwarf"))
    teff = np.empty(n)
    logg = np.empty(n)
    mass = np.empty(n)
    # dwarfs: thin-disk K/M-dominated; halo dwarfs near the metal-poor turn-off
    d = pop == "dwarf"
    t_disk = 3100.0 + 3900.0 * rng.random(n) ** 1.4
    t_halo = np.clip(rng.normal(5900.0, 450.0, n), 4300.0, 6800.0)
    teff[d] = np.where(halo, t_halo, t_disk)[d]
    cool_side = np.clip((5800.0 - teff) / 2600.0, 0.0, 1.0)
    hot_side = np.clip((teff - 5800.0) / 1500.0, 0.0, 1.0)
    logg[d] = (4.35 + 0.55 * cool_side - 0.3 * hot_side + rng.normal(0, 0.08, n))[d]
    mass[d] = np.clip((teff[d] / 5800.0) ** 1.9, 0.12, 1.6)
    gi = pop == "giant"
    teff[gi] = rng.uniform(3700.0, 5200.0, n)[gi]
    logg[gi] = (0.9 + 2.3 * (teff - 3700.0) / 1500.0 + rng.normal(0, 0.25, n))[gi]
    mass[gi] = rng.uniform(0.8, 1.6, n)[gi]
    # disk A dwarfs: 7,500-10,500 K; halo HB: the instability strip, then the blue HB (module docstring)
    a = pop == "bhb_a"
    ut = rng.uniform(0.0, 1.0, n)  # uniform(lo, hi) is lo + (hi - lo) * u: the disk draws are 1.2's
    (s0, s1), share = INSTABILITY_STRIP_K, HB_STRIP_SHARE
    in_strip = halo & (ut < share)
    t_hb = np.where(in_strip, s0 + (s1 - s0) * ut / share, s1 + (BHB_MAX_K - s1) * (ut - share) / (1.0 - share))
    teff[a] = np.where(halo, t_hb, 7500.0 + 3000.0 * ut)[a]
    ug = rng.uniform(0.0, 1.0, n)
    g_hb = np.where(in_strip, 2.4 + 0.6 * ug, 2.8 + 0.7 * ug)
    logg[a] = np.where(halo, g_hb, rng.uniform(3.9, 4.3, n))[a]
    mass[a] = np.where(halo, 0.6, 2.0)[a]
    mh = np.clip(np.where(halo, rng.normal(-1.5, 0.45, n), rng.normal(-0.1, 0.22, n)), -2.8, 0.5)
    rv = np.where(halo, rng.normal(0.0, 110.0, n), rng.normal(-10.0, 35.0, n))
    return {"population": np.where(halo, "halo_", "disk_") + pop, "teff": teff, "logg": np.clip(logg, 0.0, 5.3),
            "mh": mh, "mass_msun": mass, "rv_kms": rv}


#: the rest-frame grid on which star photometry is integrated
PHOT_WAVE = np.arange(2900.0, 11600.0, 1.0)


def draw_tile(seed: int, tile: int, box: tuple, gal_b: float, ebv: float, cfg: SimConfig) -> pd.DataFrame:
    """Stars in one tile's box (ra_lo, ra_hi, dec_lo, dec_hi) with parameters and photometry."""
    rng = rng_for(seed, "stars", int(tile))
    ra_lo, ra_hi, dec_lo, dec_hi = box
    area = max((ra_hi - ra_lo) * np.cos(np.radians(0.5 * (dec_lo + dec_hi))) * (dec_hi - dec_lo), 1e-5)
    lo, hi = cfg.star_r_range
    n_faint = rng.poisson(float(density_per_deg2(gal_b, cfg)) * area)
    u = rng.random(n_faint)
    a = 0.2 * np.log(10)
    r_faint = np.log(np.exp(a * lo) + u * (np.exp(a * hi) - np.exp(a * lo))) / a
    r_bright = rng.uniform(11.5, lo, rng.poisson(cfg.bright_stars_per_tile))
    r = np.concatenate([r_faint, r_bright])
    n = r.size
    pars = draw_parameters(rng, r, cfg.star_halo_hb_fraction)
    df = pd.DataFrame({
        "tile": np.full(n, int(tile), np.int64), "ra": np.mod(ra_lo + rng.random(n) * (ra_hi - ra_lo), 360.0),
        "dec": dec_lo + rng.random(n) * (dec_hi - dec_lo), "r_mag": r, **pars,
        "ebv_mw": np.full(n, float(ebv)) * 10 ** rng.normal(0, 0.03, n),
    })
    df["z"] = df["rv_kms"] / C_KMS
    # tangential velocities (km/s, east and north): proper motions follow once the distance is known
    sigma_t = np.where(df["population"].str.startswith("halo"), 150.0, 40.0)
    df["v_ra_kms"] = rng.normal(0.0, 1.0, n) * sigma_t
    df["v_dec_kms"] = rng.normal(0.0, 1.0, n) * sigma_t
    return df


def photometry(stars: pd.DataFrame) -> pd.DataFrame:
    """Scale each star's SED to its r magnitude (MW dust applied: r is what is seen) and add
    true fluxes (before MW dust, nanomaggies) in the DECam, SDSS and LSST bands, MW transmissions,
    radius, distance (pc), parallax and proper motions (mas, mas/yr) and `sed_scale` = (R/d)², so
    flux = stellar_sed(...) × sed_scale."""
    out = stars.copy()
    n = len(out)
    if n == 0:
        return out
    teff, logg, mh = (out[c].to_numpy(float) for c in ("teff", "logg", "mh"))
    zs = out["z"].to_numpy(float)
    ebv = out["ebv_mw"].to_numpy(float)
    cols: dict = {}
    for start in range(0, n, 256):
        sl = slice(start, min(start + 256, n))
        surf = stellar_sed(teff[sl], logg[sl], mh[sl], PHOT_WAVE)
        wobs = PHOT_WAVE[None, :] * (1.0 + zs[sl, None])
        for survey, names in sed.FILTER_NAMES.items():
            m, m_mw = sed.ab_maggies(wobs, surf, names, ebv_mw=ebv[sl])
            for j, nm in enumerate(names):
                b = nm.split("-")[-1]
                cols.setdefault(f"surf_{survey}_{b}", []).append(m[:, j])
                cols.setdefault(f"mwt_{survey}_{b}", []).append(m_mw[:, j] / m[:, j])
    surf_r = np.concatenate(cols["surf_decam_r"])
    mwt_r = np.concatenate(cols["mwt_decam_r"])
    scale = 10 ** (-0.4 * (out["r_mag"].to_numpy(float) - 22.5)) * 1e-9 / (surf_r * mwt_r)
    radius = radius_rsun(logg, out["mass_msun"].to_numpy(float))
    out["radius_rsun"] = radius
    out["distance_pc"] = radius * RSUN_CM / np.sqrt(scale) / PC_CM
    out["sed_scale"] = scale
    out["parallax_mas"] = 1000.0 / out["distance_pc"]
    if "v_ra_kms" in out:  # mu [mas/yr] = v_t [km/s] / (4.74047 d [kpc])
        out["pmra_masyr"] = out["v_ra_kms"] / (4.74047 * out["distance_pc"] / 1000.0)
        out["pmdec_masyr"] = out["v_dec_kms"] / (4.74047 * out["distance_pc"] / 1000.0)
    for survey, names in sed.FILTER_NAMES.items():
        for nm in names:
            b = nm.split("-")[-1]
            out[f"flux_{survey}_{b}"] = np.concatenate(cols[f"surf_{survey}_{b}"]) * scale * 1e9
            if survey != "lsst":
                out[f"mw_transmission_{survey}_{b}"] = np.concatenate(cols[f"mwt_{survey}_{b}"])
    return out


def observed_flambda(rows: pd.DataFrame, wave_obs: np.ndarray) -> np.ndarray:
    """Observed f_lambda [erg/s/cm²/Å] (n, len(wave_obs)) of truth rows: SED × (R/d)², Doppler
    shifted by the radial velocity, Milky Way dust applied."""
    z = rows["z"].to_numpy(float)
    rest = np.asarray(wave_obs, float)[None, :] / (1.0 + z[:, None])
    surf = stellar_sed(rows["teff"].to_numpy(float), rows["logg"].to_numpy(float), rows["mh"].to_numpy(float), rest)
    # f_lambda per observed Angstrom: the Doppler factor (1+z)^-1 is < 1e-3 here, kept for form
    flux = surf * rows["sed_scale"].to_numpy(float)[:, None] / (1.0 + z[:, None])
    a_lambda = sed._ccm_interp(np.asarray(wave_obs, float))[None, :]
    ext = 10 ** (-0.4 * 3.1 * rows["ebv_mw"].to_numpy(float)[:, None] * a_lambda)
    return flux * ext
