"""Draw the galaxies of one sky cell: redshift, mass, population, SED, dust, shape, photometry.

(z, log M*, population) come from two Schechter stellar mass functions times the comoving
volume, selected at the `r_limit` flux limit (estimated with each population's mean SED, so the
real cut is soft). SED weights follow the Herbel et al. (2017) Dirichlet model on the kcorrect
templates. A fraction of galaxies is moved into groups that share a redshift and cluster on the
sky: those are the blended neighbours.
"""
from __future__ import annotations

import functools

import numpy as np

from mmu.sim import sed
from mmu.sim.config import SimConfig, cosmology

POP_STAR_FORMING, POP_QUIESCENT = 0, 1
POPULATIONS = ("star_forming", "quiescent")
#: Herbel et al. (2017) Dirichlet parameters for blue / red galaxies, as in skypy's examples
DIRICHLET = {
    POP_STAR_FORMING: ((2.079, 3.524, 1.917, 1.992, 2.536), (2.265, 3.862, 1.921, 1.685, 2.480),
                       (3.47e9, 3.31e6, 2.13e9, 1.64e10, 1.01e9)),
    POP_QUIESCENT: ((2.461, 2.358, 2.568, 2.268, 2.402), (2.410, 2.340, 2.200, 2.540, 2.464),
                    (3.84e9, 1.57e6, 3.91e8, 4.66e10, 3.03e7)),
}
GRID_Z = 160
GRID_M = 80


def dirichlet_coefficients(rng, redshift, pop):
    """skypy.galaxies.spectrum.dirichlet_coefficients, drawn from our own generator.

    skypy's function draws from numpy's global state, which is neither reproducible per sky
    cell nor safe under threads; the model (alpha(z) = alpha0^(1-z) alpha1^z, weighted) is the same.
    """
    redshift = np.asarray(redshift, float)
    coeff = np.empty((redshift.size, 5))
    for p, (a0, a1, w) in DIRICHLET.items():
        sel = np.asarray(pop) == p
        if not sel.any():
            continue
        z = redshift[sel, None]
        alpha = np.power(a0, 1 - z) * np.power(a1, z)
        c = rng.gamma(alpha) * np.asarray(w)
        coeff[sel] = c / c.sum(axis=1, keepdims=True)
    return coeff


def mean_av(logm, pop, cfg: SimConfig):
    sf = np.clip(cfg.av_sf_at_1e10 + cfg.av_sf_slope * (np.asarray(logm) - 10.0), 0.05, 2.5)
    return np.where(np.asarray(pop) == POP_STAR_FORMING, sf, 0.8 * cfg.av_q_scatter)


@functools.lru_cache(maxsize=8)
def _selection_grid(cfg: SimConfig):
    """p(pop, z, logM) on a grid: volume x SMF x P(r < r_limit | mean SED)."""
    from scipy.special import erfc

    cosmo = cosmology(cfg.cosmology)
    z_edges = np.linspace(cfg.z_min, cfg.z_max, GRID_Z + 1)
    m_edges = np.linspace(cfg.logm_min, cfg.logm_max, GRID_M + 1)
    zc = 0.5 * (z_edges[1:] + z_edges[:-1])
    mc = 0.5 * (m_edges[1:] + m_edges[:-1])
    dvdz = cosmo.differential_comoving_volume(zc).value  # Mpc^3 / sr
    _, _, _, mremain, *_ = sed.templates()
    zk = np.linspace(cfg.z_min, cfg.z_max, 24)
    avk = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 2.5])
    prob = np.zeros((2, GRID_Z, GRID_M))
    for pop, smf in ((POP_STAR_FORMING, cfg.smf_star_forming), (POP_QUIESCENT, cfg.smf_quiescent)):
        a0, a1, w = (np.asarray(v) for v in DIRICHLET[pop])
        alpha = np.power(a0, 1 - zk[:, None]) * np.power(a1, zk[:, None])
        mean_c = alpha * w
        mean_c /= mean_c.sum(axis=1, keepdims=True)
        # r magnitude per unit *current* stellar mass on (zk, avk)
        r_unit = np.empty((zk.size, avk.size))
        for j, av in enumerate(avk):
            rest = sed.rest_spectra(mean_c, av=np.full(zk.size, av))
            wo, fl = sed.observed_spectra(rest, zk, 1.0 / (mean_c @ mremain), cosmo.luminosity_distance(zk).value)
            r_unit[:, j] = -2.5 * np.log10(sed.ab_maggies(wo, fl, ("decam2014-r",))[:, 0])
        logms, alpha_s, phi, evo = smf
        x = 10 ** (mc - logms)
        phi_m = np.log(10) * phi * x ** (alpha_s + 1) * np.exp(-x)  # per dex
        for iz, z in enumerate(zc):
            ru = np.array([np.interp(z, zk, r_unit[:, j]) for j in range(avk.size)])
            av = mean_av(mc, np.full(mc.size, pop), cfg)
            r = np.interp(av, avk, ru) - 2.5 * mc
            p_sel = 0.5 * erfc((r - cfg.r_limit) / (np.sqrt(2) * 0.35))
            prob[pop, iz] = dvdz[iz] * phi * (1 + z) ** evo * (phi_m / phi) * p_sel
    prob /= prob.sum()
    return z_edges, m_edges, prob


def draw_population(rng, n: int, cfg: SimConfig, z_fixed=None):
    """(pop, z, logM) for n galaxies; with z_fixed, (pop, logM) conditional on those redshifts."""
    z_edges, m_edges, prob = _selection_grid(cfg)
    dz, dm = z_edges[1] - z_edges[0], m_edges[1] - m_edges[0]
    if z_fixed is None:
        flat = prob.ravel()
        idx = rng.choice(flat.size, size=n, p=flat)
        pop, iz, im = np.unravel_index(idx, prob.shape)
        z = z_edges[iz] + rng.random(n) * dz
    else:
        z = np.asarray(z_fixed, float)
        iz = np.clip(((z - z_edges[0]) / dz).astype(int), 0, prob.shape[1] - 1)
        pop = np.empty(n, dtype=np.int64)
        im = np.empty(n, dtype=np.int64)
        for k in range(n):
            cond = prob[:, iz[k], :].ravel()
            j = rng.choice(cond.size, p=cond / cond.sum())
            pop[k], im[k] = divmod(j, prob.shape[2])
    logm = m_edges[im] + rng.random(n) * dm
    return pop.astype(np.int8), z, logm


def draw_cell(seed: int, cell_key, ra, dec, tile, cfg: SimConfig) -> dict:
    """All intrinsic properties and true photometry of the galaxies at (ra, dec) in one cell."""
    from mmu.sim import morphology
    from mmu.sim.config import rng_for
    from mmu.sim.footprint import mw_ebv

    rng = rng_for(seed, "galaxies", cell_key)
    ra = np.array(ra, float)
    dec = np.array(dec, float)
    n = ra.size
    cosmo = cosmology(cfg.cosmology)
    pop, z, logm = draw_population(rng, n, cfg)

    # groups: a central keeps its draw, members move next to it and share its redshift
    group_id = np.full(n, -1, dtype=np.int64)
    n_groups = int(round(n * cfg.group_fraction / max(cfg.group_mean_members, 1.0)))
    if n_groups and n > 2:
        order = rng.permutation(n)
        centrals = order[:n_groups]
        others = order[n_groups:]
        n_members = min(others.size, int(round(n * cfg.group_fraction)) - n_groups)
        members = others[:max(n_members, 0)]
        host = centrals[rng.integers(0, n_groups, members.size)]
        group_id[centrals] = np.arange(n_groups)
        central_index = np.full(n, -1, dtype=np.int64)
        central_index[centrals] = np.arange(n_groups)
        group_id[members] = central_index[host]
        zg = z[host] + rng.normal(0, 0.001, members.size) * (1 + z[host])
        z[members] = np.clip(zg, cfg.z_min, cfg.z_max)
        pop[members], _, logm[members] = draw_population(rng, members.size, cfg, z_fixed=z[members])
        kpc_per_arcsec = cosmo.kpc_proper_per_arcmin(z[host]).value / 60.0
        sig_deg = cfg.group_sigma_kpc / kpc_per_arcsec / 3600.0
        dec[members] = dec[host] + rng.normal(0, 1, members.size) * sig_deg
        ra[members] = ra[host] + rng.normal(0, 1, members.size) * sig_deg / np.cos(np.radians(dec[host]))
        ra = np.mod(ra, 360.0)

    coeffs = dirichlet_coefficients(rng, z, pop)
    _, _, _, mremain, mets, mass300, mass1000 = sed.templates()
    av = np.where(pop == POP_STAR_FORMING,
                  np.clip(rng.normal(mean_av(logm, pop, cfg), cfg.av_sf_scatter), 0.0, 3.0),
                  np.abs(rng.normal(0.0, cfg.av_q_scatter, n)))
    line_scale = 10 ** rng.normal(0.0, cfg.line_scatter_dex, n)
    tilt = rng.normal(0.0, cfg.sed_tilt_mag, (n, 2))
    mass_formed = 10**logm / (coeffs @ mremain)
    frac300 = (coeffs @ mass300) / coeffs.sum(axis=1)
    ssfr = frac300 * mass_formed / 3e8 / 10**logm
    metallicity = (coeffs @ (mremain * mets)) / (coeffs @ mremain)
    frac1000 = (coeffs @ mass1000) / coeffs.sum(axis=1)
    ebv = mw_ebv(ra, dec, rng)
    shape = morphology.draw(rng, pop, logm, z, cosmo)

    dl = cosmo.luminosity_distance(z).value
    rest = sed.rest_spectra(coeffs, line_scale, av, tilt)
    wave_obs, flux = sed.observed_spectra(rest, z, mass_formed, dl)
    out = {
        "ra": ra, "dec": dec, "tile": np.full(n, tile, dtype=np.int64) if np.ndim(tile) == 0 else np.asarray(tile),
        "z": z, "logmass": logm, "population": np.asarray(POPULATIONS)[pop], "pop_code": pop,
        "ssfr": ssfr, "metallicity": metallicity, "young_mass_fraction_1gyr": frac1000,
        "group_id": group_id, "av": av, "line_scale": line_scale,
        "sed_tilt1": tilt[:, 0], "sed_tilt2": tilt[:, 1], "ebv_mw": ebv,
        "mass_formed": mass_formed,
    }
    for k in range(5):
        out[f"coeff{k}"] = coeffs[:, k]
    out.update(shape)
    for survey, names in sed.FILTER_NAMES.items():
        bands = [nm.split("-")[-1] for nm in names]
        if survey == "lsst":
            maggies = sed.ab_maggies(wave_obs, flux, names)
        else:
            maggies, maggies_mw = sed.ab_maggies(wave_obs, flux, names, ebv_mw=ebv)
            for j, b in enumerate(bands):
                out[f"mw_transmission_{survey}_{b}"] = maggies_mw[:, j] / maggies[:, j]
        for j, b in enumerate(bands):
            out[f"flux_{survey}_{b}"] = maggies[:, j] * 1e9  # nanomaggies, before MW dust
    out["fiber_frac_desi"], out["fiber_frac_sdss"] = morphology.fiber_fractions(out)
    return out
