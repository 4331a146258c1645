"""Parameters of the mock universe and its observations, and the seeding scheme.

Every number that shapes the output lives in `SimConfig`, is written to `mmu-sim.json`, and is
described in docs/sim.md. Random streams are keyed by (seed, purpose, unit) so that a file's
content never depends on how many workers made it or in which order.
"""
from __future__ import annotations

import dataclasses
import zlib
from dataclasses import dataclass

import numpy as np

# 1.1: BOSS spec-lite plates (SPALL), bricks without i-band images, pixel-integrated LSFs.
# The released mock-v1 tasks pin "mmu-sim 1.0" and its revisions (benchmarks/mock-v1.lock): a hub
# simulated by 1.1 gets other revisions, so its results are marked not comparable with them.
# 1.2: Milky Way stars (Teff, log g, [M/H], mmu/sim/stars.py) and quasars (mmu/sim/qso.py) seen by
# every survey: tractor TYPE PSF, DESI MWS/QSO targets with redrock SPECTYPE STAR/QSO, SDSS CLASS
# STAR/QSO, truth in stars.parquet / qsos.parquet. Galaxy draws are unchanged (own streams). Gaia DR3
# XP + astrometry of every star, TESS SPOC light curves of the bright ones (variability classes),
# HSC PDR3 Wide patches of a fraction of the fields.
# 1.3: the halo horizontal branch spans the RR Lyrae instability strip (6,100-7,400 K) and the blue
# HB (mmu/sim/stars.py), so the mock has RR Lyrae (tess.assign_classes: 90% of the HB stars in the
# strip); SimConfig.star_halo_hb_fraction (default 0.03, as 1.2). Only halo HB stars' Teff, log g
# (and so their spectra, photometry and distances) and the variability classes differ from 1.2.
SIMULATOR_VERSION = "mmu-sim 1.3"

DECAM_BANDS = ("g", "r", "i", "z")
LSST_BANDS = ("u", "g", "r", "i", "z", "y")


@dataclass(frozen=True)
class SimConfig:
    # --- the universe -------------------------------------------------------------------
    z_min: float = 0.02
    z_max: float = 0.8
    logm_min: float = 8.0
    logm_max: float = 12.0
    #: the drawn population is flux limited at this DECam r magnitude (mean-SED estimate)
    r_limit: float = 23.0
    #: Schechter stellar mass functions: (log M*, alpha, phi* [Mpc^-3 dex^-1], phi* evolution
    #: exponent in (1+z)); star-forming and quiescent populations
    smf_star_forming: tuple = (10.65, -1.40, 1.0e-3, -0.3)
    smf_quiescent: tuple = (10.85, -0.50, 2.8e-3, -1.6)
    #: surface density of the drawn galaxies inside a field [deg^-2] (sets field size, blends)
    density_per_deg2: float = 20000.0
    #: fraction of galaxies that live in groups (shared redshift, clustered on the sky)
    group_fraction: float = 0.3
    group_mean_members: float = 5.0
    group_sigma_kpc: float = 150.0
    # --- the realism that makes photometric redshifts hard -----------------------------
    #: Calzetti attenuation: star-forming A_V = clip(N(av_sf_at_1e10 + av_sf_slope*(logM-10),
    #: av_sf_scatter)); quiescent A_V = |N(0, av_q_scatter)|
    av_sf_at_1e10: float = 0.6
    av_sf_slope: float = 0.35
    av_sf_scatter: float = 0.45
    av_q_scatter: float = 0.2
    #: emission-line strength scatter (lognormal, dex) around the template lines
    line_scatter_dex: float = 0.3
    #: smooth per-galaxy SED deviation beyond the five templates (rms mag of a linear +
    #: quadratic tilt in log wavelength over the optical range)
    sed_tilt_mag: float = 0.12
    #: per brick and band photometric zero-point error (rms, mag)
    zeropoint_rms_mag: float = 0.03
    #: fraction of a neighbour's flux leaking into a blended source's catalogue flux at zero
    #: separation (falls off as a Gaussian in separation / blend scale)
    blend_leak: float = 0.5
    # --- Legacy Survey imaging ----------------------------------------------------------
    pixscale_arcsec: float = 0.262
    brick_deg: float = 0.25
    #: 5-sigma point-source depth per band (AB) and per-brick rms
    psfdepth_mag: tuple = (24.9, 24.4, 23.9, 23.3)
    psfdepth_rms_mag: float = 0.25
    #: fraction of bricks without i-band images (DR10 south has i over part of its footprint):
    #: their i image/invvar files are not written and the catalogue's i columns are 0
    no_i_band_brick_fraction: float = 0.3
    #: median PSF FWHM per band [arcsec] and lognormal scatter (dex)
    psf_fwhm_arcsec: tuple = (1.45, 1.30, 1.20, 1.15)
    psf_fwhm_scatter_dex: float = 0.07
    moffat_beta: float = 3.5
    #: image crop around the sources of a brick, in pixels beyond the outermost source
    crop_pad_pix: int = 64
    #: Milky Way stars per deg² with star_r_range[0] <= r < star_r_range[1] at |b| = 30 deg; the
    #: density scales as (sin 30 / sin|b|)^star_latitude_power (mmu/sim/stars.py). 0 turns stars off
    stars_per_deg2: float = 3000.0
    star_latitude_power: float = 1.0
    #: share of the halo stars on the horizontal branch (half in the RR Lyrae instability strip,
    #: half on the blue HB; mmu/sim/stars.py); disk stars keep 3% A dwarfs. At most 0.9
    star_halo_hb_fraction: float = 0.03
    star_r_range: tuple = (14.0, 23.5)
    #: saturated stars (11.5 < r < star_r_range[0]) per field: Poisson mean
    bright_stars_per_tile: float = 0.5
    #: quasars per deg² with qso_r_range[0] <= r < qso_r_range[1], redshifts in qso_z_range
    #: (mmu/sim/qso.py). 0 turns quasars off
    qso_per_deg2: float = 250.0
    qso_r_range: tuple = (17.0, 23.0)
    qso_z_range: tuple = (0.5, 3.5)
    bad_column_prob: float = 0.3
    # --- DESI spectroscopy --------------------------------------------------------------
    bgs_r_limit: float = 19.5
    bgs_faint_r_limit: float = 20.175
    #: BGS faint also needs an r-band fibre magnitude brighter than this
    bgs_faint_rfib_limit: float = 21.5
    desi_completeness: float = 0.85
    #: effective exposure time relative to the survey's nominal one (bright 180 s, dark 1000 s);
    #: noise per pixel scales as its -1/2 power, COADD_EXPTIME in proportion
    desi_efftime_factor: float = 1.0
    #: fraction of fields that also have SV3 coverage; there, targets are observed in sv3 with
    #: this probability (and still in main with desi_completeness) -> repeated TARGETIDs
    sv3_field_fraction: float = 0.35
    sv3_completeness: float = 0.8
    redrock_failure_rate: float = 0.02
    #: DESI targets of point sources (tractor TYPE PSF, primary): MWS (bright program,
    #: mws_r_range in r, MWS_MAIN_BLUE for g-r < 0.7 else MWS_MAIN_RED) and QSO (dark program,
    #: desi_qso_r_range in r and a colour box off the stellar locus, see docs/sim.md)
    desi_mws_r_range: tuple = (16.0, 19.0)
    desi_qso_r_range: tuple = (17.5, 22.7)
    #: redrock's extra failure rate on quasar spectra (ZWARN set)
    redrock_qso_failure_rate: float = 0.03
    # --- SDSS spectroscopy --------------------------------------------------------------
    sdss_r_limit: float = 17.77
    sdss_field_fraction: float = 0.6
    sdss_completeness: float = 0.9
    #: BOSS/eBOSS (run2d v5_13_2, BOSS spectrograph, SPALL HDU): on this fraction of fields,
    #: galaxies fainter than sdss_r_limit and brighter than boss_r_limit get BOSS plates
    boss_field_fraction: float = 0.3
    boss_r_limit: float = 19.2
    boss_completeness: float = 0.85
    #: point sources on SDSS/BOSS plates: quasars with i < sdss_qso_i_limit (SDSS) or
    #: sdss_qso_i_limit <= i and g < boss_qso_g_limit (BOSS); stars in [sdss_star_r_min, sdss_r_limit)
    #: (SDSS) or [sdss_r_limit, boss_r_limit) (BOSS) with probability sdss_star_fraction
    sdss_qso_i_limit: float = 19.1
    boss_qso_g_limit: float = 22.0
    sdss_star_r_min: float = 14.0
    sdss_star_fraction: float = 0.15
    # --- transients (PLAsTiCC-like) -----------------------------------------------------
    transient_class_fractions: tuple = (("SNIa", 0.35), ("SNII", 0.25), ("SNIbc", 0.12),
                                        ("AGN", 0.14), ("RRL", 0.14))
    #: TESS SPOC 2-minute light curves (mmu/sim/tess.py) of the stars brighter than tess_r_limit, in
    #: every sector of tess_sectors that puts them on silicon; variability classes from
    #: tess.assign_classes. Gaia DR3 (mmu/sim/gaia.py) observes every star (XP to G < 17.65)
    tess_r_limit: float = 15.0
    tess_sectors: tuple = tuple(range(1, 27))
    #: fraction of the fields also observed by HSC PDR3 Wide (one tract per field, RICE-compressed
    #: patches of ~20 MB per field in five bands; mmu/sim/hsc.py)
    hsc_field_fraction: float = 0.1
    survey_mjd_start: float = 59580.0
    survey_years: int = 3
    ddf_field_fraction: float = 0.1
    cosmology: str = "Planck18"

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["transient_class_fractions"] = dict(self.transient_class_fractions)
        return out

    @classmethod
    def from_overrides(cls, overrides: dict | None) -> SimConfig:
        if not overrides:
            return cls()
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise ValueError(f"unknown simulation parameter(s) {unknown}; known: {sorted(names)}")
        fixed = dict(overrides)
        if isinstance(fixed.get("transient_class_fractions"), dict):
            fixed["transient_class_fractions"] = tuple(fixed["transient_class_fractions"].items())
        for k, v in list(fixed.items()):
            if isinstance(v, list):
                fixed[k] = tuple(v)
        return dataclasses.replace(cls(), **fixed)


def _key(part) -> int:
    if isinstance(part, (int, np.integer)):
        return int(part) & 0xFFFFFFFF
    return zlib.crc32(str(part).encode())


def rng_for(seed: int, *keys) -> np.random.Generator:
    """An independent random stream for (seed, *keys), e.g. rng_for(7, "brick", "1126p222")."""
    ss = np.random.SeedSequence(entropy=int(seed), spawn_key=tuple(_key(k) for k in keys))
    return np.random.Generator(np.random.PCG64(ss))


def cosmology(name: str = "Planck18"):
    from astropy import cosmology as _cosmo

    return getattr(_cosmo, name)
