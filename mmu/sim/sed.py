"""Galaxy spectral energy distributions and photometry.

Rest-frame spectra are combinations of the five kcorrect NMF templates shipped by skypy (per unit
formed stellar mass, at 10 pc), split here into continuum and emission lines so that line strength
can scatter; Calzetti attenuation, a smooth SED tilt, redshift, luminosity distance and Milky Way
extinction turn them into observed f_lambda. Photometry integrates observed spectra through the
speclite filter curves (AB maggies), on the spectrum's own wavelength grid.
"""
from __future__ import annotations

import functools

import numpy as np

C_ANGSTROM_PER_S = 2.99792458e18
AB_FNU = 3631e-23  # erg/s/cm2/Hz
TEN_PC_CM = 3.0856775814913673e19
FILTER_NAMES = {
    "decam": ("decam2014-g", "decam2014-r", "decam2014-i", "decam2014-z"),
    "sdss": ("sdss2010-u", "sdss2010-g", "sdss2010-r", "sdss2010-i", "sdss2010-z"),
    "lsst": ("lsst2016-u", "lsst2016-g", "lsst2016-r", "lsst2016-i", "lsst2016-z", "lsst2016-y"),
}
#: rest wavelengths (Angstrom) around which template flux above the running median is a line
EMISSION_LINES = (1215.7, 2798.0, 3727.1, 3869.8, 4102.9, 4341.7, 4862.7, 4960.3, 5008.2,
                  6302.0, 6549.9, 6564.6, 6585.3, 6718.3, 6732.7)
LINE_HALF_WIDTH_PIX = 5
#: rest-frame range kept from the templates: covers u..y and the spectrographs for 0 < z < 1.5
REST_RANGE = (900.0, 25000.0)


@functools.lru_cache(maxsize=1)
def templates():
    """(wavelength [A], continuum (5, n), lines (5, n), mremain, mets, mass300, mass1000)."""
    import warnings

    from astropy.utils.exceptions import AstropyDeprecationWarning
    from scipy.ndimage import median_filter

    with warnings.catch_warnings():  # skypy's package init builds astropy's deprecated TestRunner
        warnings.filterwarnings("ignore", r"The TestRunner(Base)? class is deprecated",
                                AstropyDeprecationWarning)
        from skypy.galaxies.spectrum import kcorrect

    keep = (kcorrect.wavelength.value >= REST_RANGE[0]) & (kcorrect.wavelength.value <= REST_RANGE[1])
    wave = np.asarray(kcorrect.wavelength.value[keep], dtype=np.float64)
    full = np.asarray(kcorrect.templates.value[:, keep], dtype=np.float64)
    cont = np.empty_like(full)
    lines = np.zeros_like(full)
    window = np.zeros(wave.size, dtype=bool)
    for lam in EMISSION_LINES:
        i = np.searchsorted(wave, lam)
        window[max(i - LINE_HALF_WIDTH_PIX, 0): i + LINE_HALF_WIDTH_PIX + 1] = True
    for t in range(full.shape[0]):
        smooth = median_filter(full[t], size=41, mode="nearest")
        excess = np.where(window, np.clip(full[t] - smooth, 0.0, None), 0.0)
        lines[t] = excess
        cont[t] = full[t] - excess
    return (wave, cont, lines, np.asarray(kcorrect.mremain, float), np.asarray(kcorrect.mets, float),
            np.asarray(kcorrect.mass300, float), np.asarray(kcorrect.mass1000, float))


def calzetti_k(wave_rest_angstrom: np.ndarray) -> np.ndarray:
    """Calzetti et al. (2000) k(lambda); A(lambda) = A_V k / 4.05. Extrapolated as the formula."""
    x = np.asarray(wave_rest_angstrom, float) / 1e4
    x = np.clip(x, 0.09, 5.0)
    inv = 1.0 / x
    k_blue = 2.659 * (-2.156 + 1.509 * inv - 0.198 * inv**2 + 0.011 * inv**3) + 4.05
    k_red = 2.659 * (-1.857 + 1.040 * inv) + 4.05
    return np.clip(np.where(x < 0.63, k_blue, k_red), 0.0, None)


def ccm_a_over_av(wave_angstrom: np.ndarray, r_v: float = 3.1) -> np.ndarray:
    """Cardelli, Clayton & Mathis (1989) A(lambda)/A_V, infrared to far-UV."""
    x = 1e4 / np.asarray(wave_angstrom, float)
    a = np.zeros_like(x)
    b = np.zeros_like(x)
    ir = x < 1.1
    a[ir] = 0.574 * x[ir] ** 1.61
    b[ir] = -0.527 * x[ir] ** 1.61
    opt = (x >= 1.1) & (x < 3.3)
    y = x[opt] - 1.82
    a[opt] = (1 + 0.17699 * y - 0.50447 * y**2 - 0.02427 * y**3 + 0.72085 * y**4
              + 0.01979 * y**5 - 0.77530 * y**6 + 0.32999 * y**7)
    b[opt] = (1.41338 * y + 2.28305 * y**2 + 1.07233 * y**3 - 5.38434 * y**4
              - 0.62251 * y**5 + 5.30260 * y**6 - 2.09002 * y**7)
    uv = x >= 3.3
    xu = np.minimum(x[uv], 8.0)
    fa = np.where(xu >= 5.9, -0.04473 * (xu - 5.9) ** 2 - 0.009779 * (xu - 5.9) ** 3, 0.0)
    fb = np.where(xu >= 5.9, 0.2130 * (xu - 5.9) ** 2 + 0.1207 * (xu - 5.9) ** 3, 0.0)
    a[uv] = 1.752 - 0.316 * xu - 0.104 / ((xu - 4.67) ** 2 + 0.341) + fa
    b[uv] = -3.090 + 1.825 * xu + 1.206 / ((xu - 4.62) ** 2 + 0.263) + fb
    return np.clip(a + b / r_v, 0.0, None)


@functools.lru_cache(maxsize=1)
def _ccm_table():
    w = np.geomspace(800.0, 60000.0, 40000)
    return w, ccm_a_over_av(w)


def _ccm_interp(wave):
    w, a = _ccm_table()
    return np.interp(wave, w, a)


def rest_spectra(coeffs, line_scale=None, av=None, tilt=None) -> np.ndarray:
    """Rest-frame f_lambda at 10 pc per unit formed mass, (ng, nwave), on `templates()[0]`.

    coeffs (ng, 5) template weights; line_scale (ng,) multiplies the lines; av (ng,) Calzetti A_V
    of the stars (lines see A_V / 0.44, Calzetti's gas-to-star ratio); tilt (ng, 2) linear and
    quadratic SED tilt in magnitudes over x = log10(lambda / 5500 A) / log10(2).
    """
    wave, cont, lines, *_ = templates()
    coeffs = np.atleast_2d(np.asarray(coeffs, float))
    ng = coeffs.shape[0]
    line_scale = np.ones(ng) if line_scale is None else np.asarray(line_scale, float)
    spec_c = coeffs @ cont
    spec_l = (coeffs @ lines) * line_scale[:, None]
    if av is not None:
        k = calzetti_k(wave) / 4.05
        av = np.asarray(av, float)[:, None]
        spec_c *= 10 ** (-0.4 * av * k)
        spec_l *= 10 ** (-0.4 * (av / 0.44) * k)
    spec = spec_c + spec_l
    if tilt is not None:
        x = np.clip(np.log10(wave / 5500.0) / np.log10(2.0), -1.5, 1.5)
        tilt = np.asarray(tilt, float)
        spec *= 10 ** (-0.4 * (tilt[:, :1] * x + tilt[:, 1:2] * (x**2 - 1.0 / 3.0)))
    return spec


def observed_spectra(rest, redshift, mass_scale, lum_dist_mpc, ebv_mw=None):
    """Observed-frame (wave_obs (ng, n) [A], f_lambda (ng, n) [erg/s/cm2/A]).

    mass_scale: formed stellar mass in solar masses (template units); Milky Way extinction with
    E(B-V) = ebv_mw (CCM, R_V = 3.1) applied in the observed frame when given.
    """
    wave = templates()[0]
    z = np.asarray(redshift, float)[:, None]
    wave_obs = wave[None, :] * (1.0 + z)
    d_ratio = (TEN_PC_CM / (np.asarray(lum_dist_mpc, float) * 1e6 * TEN_PC_CM / 10.0)) ** 2
    flux = rest * (np.asarray(mass_scale, float) * d_ratio)[:, None] / (1.0 + z)
    if ebv_mw is not None:
        flux = flux * 10 ** (-0.4 * 3.1 * np.asarray(ebv_mw, float)[:, None] * _ccm_interp(wave_obs))
    return wave_obs, flux


@functools.cache
def _filter(name: str):
    import speclite.filters

    f = speclite.filters.load_filter(name)
    w, r = np.asarray(f.wavelength, float), np.asarray(f.response, float)
    nz = np.flatnonzero(r > 0)
    keep = slice(max(nz[0] - 1, 0), min(nz[-1] + 2, r.size))
    return w[keep], r[keep]


def ab_maggies(wave_obs, flux, filter_names, ebv_mw=None):
    """AB maggies (ng, nf) of observed f_lambda spectra through named speclite filters.

    The filter response is interpolated onto each spectrum's grid (the spectrum carries the
    narrow emission lines; the response is smooth), trapezoid integration of f R lambda dlambda
    over c/lambda^2 * 3631 Jy * R lambda dlambda. With `ebv_mw`, also returns the maggies after
    Milky Way extinction (CCM, R_V = 3.1) applied per wavelength: (maggies, maggies_extincted).
    """
    wave_obs = np.atleast_2d(wave_obs)
    flux = np.atleast_2d(flux)
    out = np.empty((flux.shape[0], len(filter_names)))
    out_mw = np.empty_like(out) if ebv_mw is not None else None
    for j, name in enumerate(filter_names):
        fw, fr = _filter(name)
        # the columns any spectrum needs for this filter (grids are sorted along axis 1)
        lo = max(int(np.min(np.sum(wave_obs < fw[0], axis=1))) - 1, 0)
        hi = min(int(np.max(np.sum(wave_obs <= fw[-1], axis=1))) + 1, wave_obs.shape[1])
        ww = wave_obs[:, lo:hi]
        r = np.interp(ww, fw, fr, left=0.0, right=0.0)
        den = np.trapezoid(AB_FNU * C_ANGSTROM_PER_S / ww * r, ww, axis=1)
        weighted = flux[:, lo:hi] * r * ww
        out[:, j] = np.trapezoid(weighted, ww, axis=1) / den
        if ebv_mw is not None:
            ext = 10 ** (-0.4 * 3.1 * np.asarray(ebv_mw, float)[:, None] * _ccm_interp(ww))
            out_mw[:, j] = np.trapezoid(weighted * ext, ww, axis=1) / den
    return out if ebv_mw is None else (out, out_mw)


def ab_maggies_on_grid(wave, flux, filter_names) -> np.ndarray:
    """Like `ab_maggies` for spectra sharing one wavelength grid (e.g. an instrument's)."""
    wave = np.asarray(wave, float)
    flux = np.atleast_2d(flux)
    out = np.empty((flux.shape[0], len(filter_names)))
    for j, name in enumerate(filter_names):
        fw, fr = _filter(name)
        r = np.interp(wave, fw, fr, left=0.0, right=0.0)
        den = np.trapezoid(AB_FNU * C_ANGSTROM_PER_S / wave**2 * r * wave, wave)
        out[:, j] = np.trapezoid(flux * (r * wave)[None, :], wave, axis=1) / den
    return out


def blackbody_flambda(wave_angstrom, temperature_k):
    """pi * B_lambda(T) [erg/s/cm2/A] (surface flux), broadcasting."""
    h, c, k = 6.62607015e-27, 2.99792458e10, 1.380649e-16
    lam_cm = np.asarray(wave_angstrom, float) * 1e-8
    t = np.asarray(temperature_k, float)
    x = np.clip(h * c / (lam_cm * k * t), None, 700.0)
    b = 2 * h * c**2 / lam_cm**5 / np.expm1(x)
    return np.pi * b * 1e-8
