"""Galaxy shapes: bulge/disk decomposition tied to the population, mass-size relations, galsim.

Sizes follow van der Wel et al. (2014) late- and early-type mass-size relations; disks are thin
oblate spheroids seen at random inclination, bulges rounder. Bulge and disk share the galaxy's SED
(the colour gradient is not modelled), so the fibre fractions are achromatic.
"""
from __future__ import annotations

import functools

import numpy as np

DESI_FIBER_DIAMETER, DESI_FIBER_SEEING = 1.5, 1.0  # arcsec, as the FIBERFLUX definition
SDSS_FIBER_DIAMETER, SDSS_FIBER_SEEING = 3.0, 1.5


def draw(rng, pop, logm, z, cosmo) -> dict:
    n = np.size(z)
    quiescent = np.asarray(pop) == 1
    bt = np.where(quiescent, rng.beta(5.0, 2.0, n), rng.beta(1.2, 5.0, n))
    label = np.where(bt > 0.6, "bulge", np.where(bt < 0.25, "disk", "mixed"))
    m = 10 ** (np.asarray(logm) - np.log10(5e10))
    r_late = 10**0.78 * (1 + z) ** -0.75 * m**0.22 * 10 ** rng.normal(0, 0.16, n)
    r_early = 10**0.60 * (1 + z) ** -1.48 * np.maximum(m, 0.05) ** 0.75 * 10 ** rng.normal(0, 0.12, n)
    kpc_per_arcsec = cosmo.kpc_proper_per_arcmin(z).value / 60.0
    disk_kpc = np.where(quiescent, 1.5 * r_early, r_late)
    bulge_kpc = np.where(quiescent, r_early, 0.25 * r_late)
    disk_hlr = np.clip(disk_kpc / kpc_per_arcsec, 0.05, 30.0)
    bulge_hlr = np.clip(bulge_kpc / kpc_per_arcsec, 0.03, 30.0)
    cos_i = rng.random(n)
    q0 = 0.2
    disk_q = np.sqrt(cos_i**2 * (1 - q0**2) + q0**2)
    bulge_q = np.clip(rng.normal(0.75, 0.15, n), 0.35, 1.0)
    pa = rng.uniform(0.0, 180.0, n)  # degrees east of north
    hlr = bt * bulge_hlr + (1 - bt) * disk_hlr
    q = bt * bulge_q + (1 - bt) * disk_q
    e = (1 - q) / (1 + q)
    return {
        "morphology": label, "bulge_frac": bt, "disk_hlr_arcsec": disk_hlr,
        "bulge_hlr_arcsec": bulge_hlr, "disk_q": disk_q, "bulge_q": bulge_q, "pa_deg": pa,
        "hlr_arcsec": hlr, "axis_ratio": q, "sersic_n": np.clip(1.0 + 3.0 * bt, 0.5, 6.0),
        # tractor's EllipseE.fromRAbPhi convention: e1 = e cos(-2 phi), e2 = e sin(-2 phi)
        "e1": e * np.cos(np.radians(-2 * pa)), "e2": e * np.sin(np.radians(-2 * pa)),
    }


def galsim_profile(row: dict, flux: float, pixel_arcsec: float = 1.0):
    """Bulge (de Vaucouleurs) + disk (exponential) profile in units of `pixel_arcsec` pixels.

    Image x grows to the west (RA decreases, CD1_1 < 0) and y to the north, so a position angle
    east of north is an angle of 90 deg + PA from the +x axis.
    """
    import galsim

    gsp = galsim.GSParams(folding_threshold=5e-3, maximum_fft_size=8192)
    beta = (90.0 + float(row["pa_deg"])) * galsim.degrees
    bt = float(row["bulge_frac"])
    comps = []
    if bt > 0:
        comps.append(galsim.DeVaucouleurs(half_light_radius=float(row["bulge_hlr_arcsec"]) / pixel_arcsec,
                                          flux=bt, gsparams=gsp)
                     .shear(q=float(row["bulge_q"]), beta=beta))
    if bt < 1:
        comps.append(galsim.Exponential(half_light_radius=float(row["disk_hlr_arcsec"]) / pixel_arcsec,
                                        flux=1.0 - bt, gsparams=gsp)
                     .shear(q=float(row["disk_q"]), beta=beta))
    return galsim.Add(comps).withFlux(float(flux)) if len(comps) > 1 else comps[0].withFlux(float(flux))


APERTURE_LOG_HLR = np.linspace(np.log10(0.03), 1.0, 20)
APERTURE_Q = np.array([0.2, 0.4667, 0.7333, 1.0])


@functools.lru_cache(maxsize=4)
def aperture_table(diameter: float, seeing_fwhm: float) -> np.ndarray:
    """Fraction of flux in a centred fibre for exponential / de Vaucouleurs profiles on a grid.

    Shape (2, n_hlr, n_q). Profiles are truncated at 4 arcsec radius with the untruncated
    normalisation, which leaves the flux inside a <= 3 arcsec fibre unchanged (checked to 1e-5)
    and keeps the FFTs small.
    """
    import galsim

    gsp = galsim.GSParams(folding_threshold=5e-3, maximum_fft_size=8192)
    scale = 0.1
    npix = int(np.ceil(diameter / scale)) + 4
    c = (npix - 1) / 2.0
    yy, xx = np.mgrid[0:npix, 0:npix]
    inside = (xx - c) ** 2 + (yy - c) ** 2 <= (diameter / 2 / scale) ** 2
    seeing = galsim.Gaussian(fwhm=seeing_fwhm, gsparams=gsp)
    table = np.empty((2, APERTURE_LOG_HLR.size, APERTURE_Q.size))
    for k, n in enumerate((1.0, 4.0)):
        for i, lh in enumerate(APERTURE_LOG_HLR):
            for j, q in enumerate(APERTURE_Q):
                prof = galsim.Sersic(n=n, half_light_radius=10**lh, trunc=4.0, flux_untruncated=True,
                                     gsparams=gsp).shear(q=q, beta=0 * galsim.degrees)
                img = galsim.Convolve(prof, seeing, gsparams=gsp).drawImage(nx=npix, ny=npix, scale=scale)
                table[k, i, j] = img.array[inside].sum()
    return table


def _interp_table(table2d, hlr, q):
    x = np.clip(np.log10(np.asarray(hlr, float)), APERTURE_LOG_HLR[0], APERTURE_LOG_HLR[-1])
    y = np.clip(np.asarray(q, float), APERTURE_Q[0], APERTURE_Q[-1])
    i = np.clip(np.searchsorted(APERTURE_LOG_HLR, x) - 1, 0, APERTURE_LOG_HLR.size - 2)
    j = np.clip(np.searchsorted(APERTURE_Q, y) - 1, 0, APERTURE_Q.size - 2)
    tx = (x - APERTURE_LOG_HLR[i]) / (APERTURE_LOG_HLR[i + 1] - APERTURE_LOG_HLR[i])
    ty = (y - APERTURE_Q[j]) / (APERTURE_Q[j + 1] - APERTURE_Q[j])
    return ((1 - tx) * (1 - ty) * table2d[i, j] + tx * (1 - ty) * table2d[i + 1, j]
            + (1 - tx) * ty * table2d[i, j + 1] + tx * ty * table2d[i + 1, j + 1])


def aperture_fraction(cat: dict, diameter: float, seeing_fwhm: float) -> np.ndarray:
    """Fraction of each galaxy's flux in a centred fibre (bulge and disk add linearly)."""
    table = aperture_table(float(diameter), float(seeing_fwhm))
    bt = np.asarray(cat["bulge_frac"], float)
    disk = _interp_table(table[0], cat["disk_hlr_arcsec"], cat["disk_q"])
    bulge = _interp_table(table[1], cat["bulge_hlr_arcsec"], cat["bulge_q"])
    return bt * bulge + (1 - bt) * disk


def fiber_fractions(cat: dict):
    return (aperture_fraction(cat, DESI_FIBER_DIAMETER, DESI_FIBER_SEEING),
            aperture_fraction(cat, SDSS_FIBER_DIAMETER, SDSS_FIBER_SEEING))
