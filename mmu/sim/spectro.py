"""What the spectrographs see: a galaxy's fibre spectrum on an instrument grid, with noise.

Shared by the DESI and SDSS writers: the model spectrum (SED x fibre fraction, Milky Way dust
applied) is interpolated onto the instrument's wavelengths and convolved with a Gaussian line
spread function given as DESI-style resolution-matrix diagonals.
"""
from __future__ import annotations

import numpy as np

from mmu.sim import sed
from mmu.sim.config import cosmology

NDIAG = 11


def galaxy_fibre_model(rows, wave_out, fibre_col: str, cosmo_name: str) -> np.ndarray:
    """Noiseless fibre spectra (n, len(wave_out)) in 1e-17 erg/s/cm2/A for truth rows."""
    coeffs = np.column_stack([rows[f"coeff{k}"].to_numpy(float) for k in range(5)])
    rest = sed.rest_spectra(coeffs, rows["line_scale"].to_numpy(float), rows["av"].to_numpy(float),
                            np.column_stack([rows["sed_tilt1"].to_numpy(float), rows["sed_tilt2"].to_numpy(float)]))
    z = rows["z"].to_numpy(float)
    dl = cosmology(cosmo_name).luminosity_distance(z).value
    wave_obs, flux = sed.observed_spectra(rest, z, rows["mass_formed"].to_numpy(float), dl,
                                          ebv_mw=rows["ebv_mw"].to_numpy(float))
    out = np.empty((len(rows), wave_out.size))
    frac = rows[fibre_col].to_numpy(float)
    for i in range(len(rows)):
        out[i] = np.interp(wave_out, wave_obs[i], flux[i]) * frac[i] * 1e17
    return out


def fibre_model(rows, wave_out, fibre_col: str, cosmo_name: str) -> np.ndarray:
    """Noiseless fibre spectra (n, len(wave_out)) in 1e-17 erg/s/cm2/A of truth rows of any kind:
    `kind` galaxy (kcorrect templates), star (mmu.sim.stars) or qso (mmu.sim.qso)."""
    kind = rows["kind"].to_numpy() if "kind" in rows else np.full(len(rows), "galaxy")
    out = np.empty((len(rows), np.size(wave_out)))
    gal = kind == "galaxy"
    if gal.any():
        out[gal] = galaxy_fibre_model(rows[gal], wave_out, fibre_col, cosmo_name)
    for name in ("star", "qso"):
        sel = kind == name
        if sel.any():
            if name == "star":
                from mmu.sim.stars import observed_flambda
            else:
                from mmu.sim.qso import observed_flambda
            sub = rows[sel]
            frac = sub[fibre_col].to_numpy(float)[:, None]
            out[sel] = observed_flambda(sub, np.asarray(wave_out, float)) * frac * 1e17
    unknown = ~np.isin(kind, ("galaxy", "star", "qso"))
    if unknown.any():
        raise ValueError(f"truth rows of unknown kind {sorted(set(kind[unknown]))}; expected galaxy, star or qso")
    return out


def gaussian_resolution(sigma_pix: np.ndarray, ndiag: int = NDIAG) -> np.ndarray:
    """Resolution-matrix diagonals (ndiag, nwave), desispec's layout: offsets ndiag//2 - arange(ndiag),
    element (i, j = i + offset) stored at [d, j]; each column sums to one (flux conserving)."""
    offsets = ndiag // 2 - np.arange(ndiag)
    kern = np.exp(-0.5 * (offsets[:, None] / np.asarray(sigma_pix)[None, :]) ** 2)
    return (kern / kern.sum(axis=0, keepdims=True)).astype(np.float32)


def apply_resolution(diags: np.ndarray, model: np.ndarray) -> np.ndarray:
    """R @ model for every row of `model` (n, nwave), R given by `gaussian_resolution` diagonals."""
    ndiag, nwave = diags.shape
    offsets = ndiag // 2 - np.arange(ndiag)
    out = np.zeros_like(model)
    for d, off in enumerate(offsets):
        # row i collects column j = i + off
        if off >= 0:
            out[:, : nwave - off] += diags[d, off:] * model[:, off:]
        else:
            out[:, -off:] += diags[d, : nwave + off] * model[:, : nwave + off]
    return out


def sky_lines(rng, lo: float, hi: float, per_1000a: float) -> tuple[np.ndarray, np.ndarray]:
    """Positions and strengths of synthetic OH-like sky lines (an instrument property)."""
    n = rng.poisson(per_1000a * (hi - lo) / 1000.0)
    return np.sort(rng.uniform(lo, hi, n)), 10 ** rng.uniform(-0.5, 1.3, n)


def sky_spectrum(wave: np.ndarray, lines, line_sigma_a: float) -> np.ndarray:
    """Relative sky brightness: a red-rising continuum plus lines (1 = continuum at 5000 A)."""
    sky = (wave / 5000.0) ** 1.5
    pos, amp = lines
    for p, a in zip(pos, amp):
        near = np.abs(wave - p) < 5 * line_sigma_a
        sky[near] += a * np.exp(-0.5 * ((wave[near] - p) / line_sigma_a) ** 2)
    return sky
