"""Transients and variables with LSST-like light curves, written as PLAsTiCC CSV files.

Every class is a blackbody photosphere with a class-dependent luminosity L(t) and temperature T(t)
in the rest frame; band fluxes come from the LSST filter curves at T/(1+z) with (1+z)^4 (R/D_L)^2,
so time dilation, K-corrections and distance follow from the host's redshift. Supernovae sit in
their host's disk, AGN at its centre; RR Lyrae are Milky Way stars seen in the same fields.
Fluxes are PLAsTiCC FLUXCAL (AB zero point 27.5), difference fluxes against a reference epoch,
Milky Way extinction corrected (as PLAsTiCC's), with sky-limited errors per visit.
"""
from __future__ import annotations

import functools
import io

import numpy as np
import pandas as pd

from mmu.sim import sed
from mmu.sim.config import LSST_BANDS, SimConfig, cosmology, rng_for

TARGET_CODES = {"SNIa": 90, "SNII": 42, "SNIbc": 62, "AGN": 88, "RRL": 92}
SIGMA_SB = 5.670374419e-5
MPC_CM = 3.0856775814913673e24
ZP_FLUXCAL = 27.5
#: single-visit 5-sigma depths (LSST, ~30 s) and band weights of the cadence
M5 = np.array([23.7, 24.8, 24.3, 23.8, 23.2, 22.3])
BAND_WEIGHTS = np.array([0.07, 0.10, 0.22, 0.22, 0.20, 0.19])
#: host redshift scale of the detectability weight (exp(-(z/z_c)^2)) per class
Z_DETECT = {"SNIa": 0.6, "SNII": 0.25, "SNIbc": 0.3, "AGN": 1.0}


@functools.lru_cache(maxsize=1)
def _bb_table():
    """log10 T grid and AB maggies of a unit-radius, unit-distance blackbody per LSST band."""
    log_t = np.linspace(np.log10(1500.0), np.log10(60000.0), 300)
    wave = np.geomspace(2800.0, 11500.0, 6000)
    flam = sed.blackbody_flambda(wave[None, :], 10 ** log_t[:, None])
    maggies = sed.ab_maggies_on_grid(wave, flam, sed.FILTER_NAMES["lsst"])
    return log_t, maggies


def band_maggies(temperature_obs, radius_over_distance_sq):
    """(n, 6) AB maggies of photospheres with observed-frame temperature and (R/D)^2."""
    log_t, table = _bb_table()
    lt = np.clip(np.log10(np.asarray(temperature_obs, float)), log_t[0], log_t[-1])
    out = np.column_stack([np.interp(lt, log_t, table[:, b]) for b in range(6)])
    return out * np.asarray(radius_over_distance_sq, float)[:, None]


def choose_hosts(seed: int, galaxies: pd.DataFrame, n: int, cfg: SimConfig) -> pd.DataFrame:
    """Class, host and peak time of each transient (hosts weighted by rate x detectability)."""
    rng = rng_for(seed, "transient-hosts")
    classes = [c for c, _ in cfg.transient_class_fractions]
    frac = np.array([f for _, f in cfg.transient_class_fractions], float)
    cls = np.asarray(classes)[rng.choice(len(classes), size=n, p=frac / frac.sum())]
    mass = 10 ** galaxies["logmass"].to_numpy(float)
    sfr = galaxies["ssfr"].to_numpy(float) * mass
    z = galaxies["z"].to_numpy(float)
    weights = {"SNIa": 3e-3 * mass / 1e10 + sfr, "SNII": sfr, "SNIbc": 0.3 * sfr, "AGN": mass**1.5}
    host = np.full(n, -1, dtype=np.int64)
    for c, w in weights.items():
        sel = np.flatnonzero(cls == c)
        if sel.size == 0 or len(galaxies) == 0:
            continue
        p = w * np.exp(-((z / Z_DETECT[c]) ** 2))
        host[sel] = rng.choice(len(galaxies), size=sel.size, p=p / p.sum())
    span = 365.25 * cfg.survey_years
    return pd.DataFrame({
        "transient_id": np.arange(n, dtype=np.int64), "class": cls, "host_index": host,
        "peak_mjd": cfg.survey_mjd_start - 30.0 + rng.random(n) * (span + 30.0),
    })


def cadence(seed: int, tile: int, ra: float, ddf: bool, cfg: SimConfig):
    """(mjd, band index, m5) of the visits of one tile: yearly seasons, weather gaps, DDF nights."""
    rng = rng_for(seed, "cadence", int(tile))
    mjd, band, m5 = [], [], []
    centre_offset = (ra / 360.0 * 365.25 + 180.0) % 365.25
    for year in range(cfg.survey_years):
        start = cfg.survey_mjd_start + year * 365.25 + centre_offset - 90.0
        t = start
        while t < start + 180.0:
            t += rng.exponential(1.0 if ddf else 3.0) + 0.5
            bands = np.arange(6) if ddf else rng.choice(6, size=rng.integers(1, 3), replace=False,
                                                        p=BAND_WEIGHTS)
            for k, b in enumerate(np.sort(bands)):
                mjd.append(np.floor(t) + 0.05 + 0.02 * k + 0.3 * rng.random())
                band.append(b)
                m5.append(M5[b] + rng.normal(0, 0.3) + (0.8 if ddf else 0.0))
    order = np.argsort(mjd, kind="stable")
    return np.asarray(mjd)[order], np.asarray(band)[order], np.asarray(m5)[order]


def _sn_curves(cls: str, rng, t_rest: np.ndarray):
    """Bolometric luminosity [erg/s] and temperature [K] at rest-frame days from peak."""
    if cls == "SNIa":
        s = rng.normal(1.0, 0.1)
        lpk = 1.3e43 * s**1.5 * 10 ** (0.4 * rng.normal(0, 0.12))
        shape = np.exp(-t_rest / (22 * s)) / (1 + np.exp(-t_rest / (3.5 * s)))
        temp = np.clip(12500 - 160 * t_rest, 4200, 14000)
        params = {"stretch": s}
    elif cls == "SNII":
        tp = rng.normal(100, 15)
        lpk = 1.2e42 * 10 ** rng.normal(0, 0.25)
        shape = (1 / (1 + np.exp(-(t_rest + 8) / 2.0))) * (1 / (1 + np.exp((t_rest - tp) / 6.0))) \
            + 0.05 * np.exp(-np.clip(t_rest - tp, 0, None) / 111.0) * (t_rest > tp)
        temp = np.clip(5800 + 14000 * np.exp(-(t_rest + 10) / 12.0), 5200, 25000)
        params = {"plateau_days": tp}
    else:  # SNIbc
        lpk = 3.5e42 * 10 ** rng.normal(0, 0.2)
        shape = np.exp(-t_rest / 16.0) / (1 + np.exp(-t_rest / 4.5))
        temp = np.clip(9000 - 110 * t_rest, 3800, 11000)
        params = {}
    grid = np.linspace(-30, 30, 601)
    if cls == "SNIa":
        peak = np.max(np.exp(-grid / (22 * params["stretch"])) / (1 + np.exp(-grid / (3.5 * params["stretch"]))))
    elif cls == "SNIbc":
        peak = np.max(np.exp(-grid / 16.0) / (1 + np.exp(-grid / 4.5)))
    else:
        peak = 1.0
    lum = lpk * np.clip(shape, 0, None) / peak * (t_rest > -40)
    return lum, temp, {"peak_luminosity": lpk, **params}


def simulate_chunk(seed: int, rows: pd.DataFrame, cfg: SimConfig):
    """(light-curve CSV text without header, metadata DataFrame, truth DataFrame) for some transients."""
    cosmo = cosmology(cfg.cosmology)
    buf = io.StringIO()
    truth = []
    for r in rows.itertuples(index=False):
        rng = rng_for(seed, "transient", int(r.transient_id))
        mjd, band, m5 = cadence(seed, int(r.tile), float(r.ra), bool(r.ddf), cfg)
        z = float(r.z)
        extra = {}
        if r.cls == "RRL":
            d_cm = 10 ** rng.uniform(np.log10(5.0), np.log10(60.0)) * 1e3 * 3.0857e18
            period = float(np.clip(rng.normal(0.55, 0.08), 0.3, 0.9))
            phase0 = rng.random()
            phase = np.mod((mjd - r.peak_mjd) / period + phase0, 1.0)
            saw = np.where(phase < 0.12, phase / 0.12, 1 - (phase - 0.12) / 0.88)
            temp = 6000.0 + 1500.0 * saw
            radius = 5.5 * 6.957e10 * (1 + 0.08 * saw)
            flux = band_maggies(temp, (radius / d_cm) ** 2)
            mean = band_maggies(np.full(1, 6600.0), np.full(1, (5.7 * 6.957e10 / d_cm) ** 2))[0]
            ref = mean
            extra = {"period_days": period, "distance_kpc": d_cm / 3.0857e21}
        elif r.cls == "AGN":
            dl = cosmo.luminosity_distance(max(z, 1e-4)).value * MPC_CM
            l_mean = 10 ** rng.normal(43.3, 0.4)
            tau = 200.0 * (1 + z)
            sf = 0.25
            dm = _drw(rng, mjd, tau, sf)
            temp = np.full(mjd.size, 30000.0)
            r2 = l_mean / (4 * np.pi * SIGMA_SB * temp**4) / dl**2 * (1 + z) ** 4
            flux = band_maggies(temp / (1 + z), r2 * 10 ** (-0.4 * dm))
            ref = band_maggies(np.full(1, 30000.0 / (1 + z)), r2[:1])[0]
            extra = {"agn_luminosity": l_mean, "drw_tau_days": tau}
        else:
            dl = cosmo.luminosity_distance(max(z, 1e-4)).value * MPC_CM
            t_rest = (mjd - r.peak_mjd) / (1 + z)
            lum, temp, extra = _sn_curves(r.cls, rng, t_rest)
            r2 = lum / (4 * np.pi * SIGMA_SB * temp**4) / dl**2 * (1 + z) ** 4
            flux = band_maggies(temp / (1 + z), r2)
            ref = np.zeros(6)
        model = (flux[np.arange(mjd.size), band] - ref[band]) * 10 ** (0.4 * ZP_FLUXCAL)
        total = flux[np.arange(mjd.size), band] * 10 ** (0.4 * ZP_FLUXCAL)
        err = np.sqrt((10 ** (-0.4 * (m5 - ZP_FLUXCAL)) / 5.0) ** 2 + np.clip(total, 0, None) * 0.02)
        obs = model + rng.normal(0, 1, mjd.size) * err
        det = np.abs(obs) / err > 5.0
        oid = int(r.object_id)
        for k in range(mjd.size):
            buf.write(f"{oid},{mjd[k]:.4f},{band[k]},{obs[k]:.6g},{err[k]:.6g},{int(det[k])}\n")
        truth.append({"object_id": oid, "n_obs": int(mjd.size), "n_detected": int(det.sum()),
                      "peak_flux_model_r": float(np.max(model[band == 2])) if np.any(band == 2) else 0.0,
                      **{f"tflux_{b}": float(ref[j] * 10 ** (0.4 * ZP_FLUXCAL)) for j, b in enumerate(LSST_BANDS)},
                      **{f"param_{k}": float(v) for k, v in extra.items()}})
    return buf.getvalue(), pd.DataFrame(truth)


def _drw(rng, t, tau, sf):
    """Damped random walk (Ornstein-Uhlenbeck) in magnitudes at sorted times t."""
    out = np.empty(t.size)
    sigma = sf / np.sqrt(2.0)
    x = rng.normal(0, sigma)
    last = t[0] if t.size else 0.0
    for k in range(t.size):
        a = np.exp(-(t[k] - last) / tau)
        x = a * x + rng.normal(0, sigma * np.sqrt(1 - a * a))
        out[k] = x
        last = t[k]
    return out
