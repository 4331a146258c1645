"""TESS mock: SPOC 2-minute light-curve files for a table of stars, in the MAST layout the
`tess_spoc` builder reads (builders/tess.py):

    tess/tid/s{sector:04d}/{tic[0:4]}/{tic[4:8]}/{tic[8:12]}/{tic[12:16]}/
        tess{date}-s{sector:04d}-{tic:016d}-{scid:04d}-s_lc.fits
    tess/download_scripts/sector/tesscurl_sector_{sector}_lc.sh

Each file is what the SPOC pipeline ships (Jenkins et al. 2016; the TESS Science Data Products
Description Document, EXP-TESS-ARC-ICD-0014): a primary header (TICID, SECTOR, CAMERA, CCD,
RA_OBJ, DEC_OBJ, TESSMAG, TEFF, ...), the binary table ``LIGHTCURVE`` (TIME in BTJD = BJD_TDB -
2457000, TIMECORR, CADENCENO, SAP_FLUX, SAP_BKG, PDCSAP_FLUX (e-/s) and errors, QUALITY,
centroids, POS_CORR) and the ``APERTURE`` image.

What is simulated:
- the sky: a star is observed in a sector when it falls on one of the four 24x24 deg cameras
  (boresights at ecliptic latitude 18, 42, 66 and 90 deg, sectors 1-13 south and 14-26 north,
  each 27.7 deg further in ecliptic longitude), so stars near the ecliptic poles get many sectors
  and stars within 6 deg of the ecliptic none. The CCD is the camera quadrant.
- timing: 27.4-day sectors of two orbits, 2-minute cadences, a one-day downlink gap mid-sector
  (rows present with TIME and fluxes NaN, as in SPOC files), Earth-pointing flags (bit 8, flux NaN)
  for 0.3 d around each gap, a momentum dump (bit 32, desaturation) every ~3.1 days plus the
  cadence after it flagged as attitude tweak (bit 1), random impulsive outliers (bit 512), and
  cosmic rays in collateral data (bit 1024) and scattered light (bit 2048), which lightkurve's
  default bitmask does not exclude.
- the flux: 15,000 e-/s at Tmag 10 (TESS Instrument Handbook), photon noise on 96 s of effective
  exposure per cadence, 10 pixels of background (20 e-/s each) and read noise, and a 60 ppm/hr
  systematic floor. Tmag comes from a ``tmag`` column, else Gaia G - 0.43, else r - 0.55
  (for a solar-type colour; Stassun et al. 2019, AJ 158, 138).
- variability (column ``var_class``, `assign_classes`): ``rrlyrae`` (horizontal-branch stars in
  the instability strip, which mmu-sim 1.3's halo HB populates; sawtooth-like, P 0.4-0.8 d, 0.3-0.8 mag),
  ``eclipsing_binary`` (primary and secondary eclipses, P 1-10 d), ``rotator`` (two spots'
  sinusoids with evolving amplitudes, P 1-30 d, 0.1-2 %), ``constant``. Periods and amplitudes
  come from columns ``period``, ``amplitude`` when given (`draw_variability` draws them).
"""
from __future__ import annotations

import datetime as _dt
from pathlib import Path

import numpy as np
import pandas as pd

from mmu.sim.stars import INSTABILITY_STRIP_K

BTJD0 = 2457000.0  # BJDREFI of the TESS light-curve files
SECTOR1_START = 1325.29  # BTJD of the first cadence of sector 1 (2018-07-25)
SECTOR_DAYS = 27.4
SECTOR_STEP = SECTOR_DAYS + 1.0  # sector starts: a ~1-day downlink between sectors too
CADENCE_DAYS = 2.0 / 1440.0
GAP_DAYS = 1.0  # the mid-sector downlink
EARTH_POINT_DAYS = 0.3  # flagged (bit 8) before and after each downlink
DUMP_EVERY_DAYS = 3.125  # momentum dumps
ZP_TMAG10 = 15000.0  # e-/s at Tmag = 10
EXPOSURE_S = 96.0  # effective exposure per 2-minute cadence (0.8 duty cycle of 2-s frames)
N_PIX, BKG_PER_PIX, READ_NOISE, N_FRAMES = 10, 20.0, 10.0, 48
FLOOR_PPM_HR = 60.0
OBLIQUITY = np.deg2rad(23.4392911)
CAMERA_LAT = (18.0, 42.0, 66.0, 90.0)
CAMERA_HALF = np.tan(np.deg2rad(12.0))
VAR_CLASSES = ("constant", "rrlyrae", "eclipsing_binary", "rotator")
Q_ATTITUDE_TWEAK, Q_EARTH_POINT, Q_DESAT, Q_IMPULSIVE, Q_COLLATERAL_CR, Q_STRAYLIGHT = 1, 8, 32, 512, 1024, 2048


def ecliptic(ra, dec) -> tuple[np.ndarray, np.ndarray]:
    """Ecliptic longitude and latitude (deg) of ICRS ra, dec (deg), mean obliquity J2000."""
    a, d = np.deg2rad(np.asarray(ra, float)), np.deg2rad(np.asarray(dec, float))
    sb = np.sin(d) * np.cos(OBLIQUITY) - np.cos(d) * np.sin(OBLIQUITY) * np.sin(a)
    lam = np.arctan2(np.sin(a) * np.cos(OBLIQUITY) + np.tan(d) * np.sin(OBLIQUITY), np.cos(a))
    return np.rad2deg(lam) % 360.0, np.rad2deg(np.arcsin(np.clip(sb, -1, 1)))


def sector_pointing(sector: int) -> tuple[float, float]:
    """(ecliptic longitude of the camera boresights, hemisphere sign) of a year-1/2 sector."""
    k = (sector - 1) % 13
    south = ((sector - 1) // 13) % 2 == 0
    return (315.8 + 27.69 * k + (180.0 if not south else 0.0)) % 360.0, (-1.0 if south else 1.0)


def on_silicon(ra, dec, sector: int) -> tuple[np.ndarray, np.ndarray]:
    """(camera, ccd) of each star in `sector` (0, 0 where it falls on no camera)."""
    lam, beta = ecliptic(ra, dec)
    lam, beta = np.deg2rad(lam), np.deg2rad(beta)
    lc, sign = sector_pointing(sector)
    lc = np.deg2rad(lc)
    camera = np.zeros(len(lam), np.int16)
    ccd = np.zeros(len(lam), np.int16)
    for cam, blat in enumerate(CAMERA_LAT, start=1):
        bc = np.deg2rad(sign * blat)
        cosc = np.sin(bc) * np.sin(beta) + np.cos(bc) * np.cos(beta) * np.cos(lam - lc)
        with np.errstate(divide="ignore", invalid="ignore"):
            xi = np.cos(beta) * np.sin(lam - lc) / cosc
            eta = (np.cos(bc) * np.sin(beta) - np.sin(bc) * np.cos(beta) * np.cos(lam - lc)) / cosc
        hit = (cosc > 0) & (np.abs(xi) < CAMERA_HALF) & (np.abs(eta) < CAMERA_HALF) & (camera == 0)
        camera[hit] = cam
        ccd[hit] = 1 + (xi[hit] > 0) + 2 * (eta[hit] > 0)
    return camera, ccd


def tess_mag(stars: pd.DataFrame) -> np.ndarray:
    """Tmag: the ``tmag`` column, else Gaia ``gmag`` - 0.43, else ``r_mag``/``rmag`` - 0.55."""
    for col, off in (("tmag", 0.0), ("gmag", -0.43), ("phot_g_mean_mag", -0.43), ("r_mag", -0.55),
                     ("rmag", -0.55), ("mag_r", -0.55)):
        if col in stars.columns:
            return stars[col].to_numpy(float) + off
    raise ValueError(f"write_tess: the star table needs a magnitude column (tmag, gmag or r_mag); it has "
                     f"{list(stars.columns)}")


def noise_ppm(tmag) -> np.ndarray:
    """1-sigma relative noise of one 2-minute cadence, in ppm."""
    e = ZP_TMAG10 * 10 ** (-0.4 * (np.asarray(tmag, float) - 10.0)) * EXPOSURE_S
    var = e + N_PIX * (BKG_PER_PIX * EXPOSURE_S + READ_NOISE ** 2 * N_FRAMES)
    floor = FLOOR_PPM_HR * np.sqrt(60.0 / 2.0) * 1e-6
    return 1e6 * np.sqrt(var / e ** 2 + floor ** 2)


def assign_classes(stars: pd.DataFrame, rng: np.random.Generator, rr_fraction: float = 0.9,
                   eb_fraction: float = 0.05, rotator_fraction: float = 0.4) -> pd.DataFrame:
    """The table with a ``var_class`` drawn from each star's physics: RR Lyrae among horizontal-
    branch stars inside the instability strip (`mmu.sim.stars.INSTABILITY_STRIP_K`, 6,100 <= Teff
    <= 7,400 K, log g < 3.5; `rr_fraction` of them: essentially every HB star in the strip
    pulsates), spotted rotators among cool dwarfs (Teff < 6,000 K, log g >= 4), eclipsing binaries
    among any of the rest; the others constant."""
    out = stars.copy()
    n = len(out)
    teff, logg = out["teff"].to_numpy(float), out["logg"].to_numpy(float)
    u = rng.uniform(0, 1, n)
    cls = np.full(n, "constant", dtype=object)
    t0, t1 = INSTABILITY_STRIP_K
    rr = (teff >= t0) & (teff <= t1) & (logg < 3.5) & (u < rr_fraction)
    rot = (teff < 6000) & (logg >= 4.0) & (u < rotator_fraction)
    cls[rr], cls[rot] = "rrlyrae", "rotator"
    eb = (cls == "constant") & (rng.uniform(0, 1, n) < eb_fraction)
    cls[eb] = "eclipsing_binary"
    out["var_class"] = cls.astype(str)
    return out


def draw_variability(stars: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """The table with ``var_class`` (default constant), ``period`` (d), ``amplitude`` and
    ``phase0`` (BTJD of phase 0) filled where missing, each class in its range."""
    out = stars.copy()
    n = len(out)
    cls = out["var_class"].fillna("constant").astype(str).to_numpy() if "var_class" in out else np.full(n, "constant")
    bad = sorted(set(cls) - set(VAR_CLASSES))
    if bad:
        raise ValueError(f"write_tess: var_class {bad} unknown; expected one of {list(VAR_CLASSES)}")
    period = out["period"].to_numpy(float, copy=True) if "period" in out else np.full(n, np.nan)
    amp = out["amplitude"].to_numpy(float, copy=True) if "amplitude" in out else np.full(n, np.nan)
    lo_hi = {"rrlyrae": ((0.4, 0.8), (0.3, 0.8)), "eclipsing_binary": ((1.0, 10.0), (0.05, 0.5)),
             "rotator": ((1.0, 30.0), (0.001, 0.02)), "constant": ((np.nan, np.nan), (0.0, 0.0))}
    for c, ((p0, p1), (a0, a1)) in lo_hi.items():
        sel = cls == c
        need_p = sel & ~np.isfinite(period)
        if c == "constant":
            period[sel] = np.nan
        elif c == "rrlyrae":
            period[need_p] = rng.uniform(p0, p1, need_p.sum())
        else:  # log-uniform periods
            period[need_p] = np.exp(rng.uniform(np.log(p0), np.log(p1), need_p.sum()))
        need_a = sel & ~np.isfinite(amp)
        amp[need_a] = rng.uniform(a0, a1, need_a.sum())
    out["var_class"] = cls
    out["period"] = period
    out["amplitude"] = amp
    if "phase0" not in out:
        out["phase0"] = SECTOR1_START + rng.uniform(0, 1, n) * np.nan_to_num(period, nan=1.0)
    return out


def signal(t_btjd: np.ndarray, star) -> np.ndarray:
    """Relative flux (1 = mean) of one star at times `t_btjd` (finite)."""
    cls, p, a = star["var_class"], float(star["period"]), float(star["amplitude"])
    if cls == "constant":
        return np.ones_like(t_btjd)
    ph = ((t_btjd - float(star["phase0"])) / p) % 1.0
    if cls == "rrlyrae":  # steep rise over 15 % of the cycle, slow decline (in magnitudes)
        rise = 0.15
        dm = np.where(ph < rise, a * (0.5 - ph / rise), a * (-0.5 + (ph - rise) / (1 - rise)))
        return 10 ** (-0.4 * dm)
    if cls == "eclipsing_binary":
        seed = int(abs(hash((round(p, 9), round(a, 9)))) % 2**32)
        r = np.random.default_rng(seed)  # the system's geometry, fixed across sectors
        width, ratio = r.uniform(0.03, 0.08), r.uniform(0.2, 0.9)
        d1 = np.minimum(ph, 1 - ph)
        d2 = np.abs(ph - 0.5)
        prof = lambda d: np.sqrt(np.clip(1 - (d / (width / 2)) ** 2, 0, 1))  # noqa: E731
        return 1 - a * prof(d1) - a * ratio * prof(d2)
    # rotator: two spots, amplitudes evolving over ~2 periods or 20 days
    tau = max(2 * p, 20.0)
    a1 = a * (1 + 0.3 * np.sin(2 * np.pi * t_btjd / (3 * tau)))
    a2 = 0.4 * a * (1 + 0.3 * np.cos(2 * np.pi * t_btjd / (2 * tau)))
    return 1 + a1 * np.sin(2 * np.pi * ph) + a2 * np.sin(4 * np.pi * ph + 1.0)


def sector_times(sector: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(TIME in BTJD with NaN in the downlink gap, CADENCENO, the gap's rows) of a sector."""
    n = int(round(SECTOR_DAYS / CADENCE_DAYS))
    start = SECTOR1_START + (sector - 1) * SECTOR_STEP
    t = start + np.arange(n) * CADENCE_DAYS
    mid = start + SECTOR_DAYS / 2
    gap = np.abs(t - mid) < GAP_DAYS / 2
    cad0 = 70444 + (sector - 1) * (n + 180)
    time = np.where(gap, np.nan, t)
    return time, cad0 + np.arange(n, dtype=np.int32), gap


def quality_flags(t_all: np.ndarray, gap: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """QUALITY of each cadence (`t_all`: the nominal times, finite everywhere)."""
    q = np.zeros(len(t_all), np.int32)
    start, end = t_all[0], t_all[-1]
    g = np.flatnonzero(gap)
    if len(g):
        g0, g1 = t_all[g[0]], t_all[g[-1]]
        q[((t_all < g0) & (t_all > g0 - EARTH_POINT_DAYS)) | ((t_all > g1) & (t_all < g1 + EARTH_POINT_DAYS))] |= \
            Q_EARTH_POINT
        q[:int(EARTH_POINT_DAYS / CADENCE_DAYS)] |= Q_STRAYLIGHT  # orbit starts: scattered light
    dumps = np.arange(start + rng.uniform(0.5, DUMP_EVERY_DAYS), end, DUMP_EVERY_DAYS)
    for d in dumps:
        i = int(np.argmin(np.abs(t_all - d)))
        if gap[i]:
            continue
        q[i] |= Q_DESAT
        if i + 1 < len(q):
            q[i + 1] |= Q_ATTITUDE_TWEAK
    n = len(q)
    q[rng.choice(n, max(1, n // 2000), replace=False)] |= Q_IMPULSIVE
    q[rng.choice(n, max(1, n // 500), replace=False)] |= Q_COLLATERAL_CR
    q[gap] = 0  # no data at all in the downlink: SPOC leaves these rows unflagged with NaN time
    return q


def file_name(tic: int, sector: int) -> str:
    """The SPOC name: the sector's processing date stamp, sector, TIC id and spacecraft config."""
    start = _dt.datetime(2014, 12, 8, 12) + _dt.timedelta(days=SECTOR1_START + (sector - 1) * SECTOR_STEP)
    stamp = start.strftime("%Y%j%H%M%S")  # BTJD 0 = 2014-12-08 12:00; sector 1: 2018206...
    return f"tess{stamp}-s{sector:04d}-{int(tic):016d}-{119 + sector:04d}-s_lc.fits"


def tid_dir(tic: int, sector: int) -> str:
    s = f"{int(tic):016d}"
    return f"tess/tid/s{sector:04d}/{s[0:4]}/{s[4:8]}/{s[8:12]}/{s[12:16]}"


def _primary(star, tic: int, sector: int, camera: int, ccd: int, tmag: float, seed: int = 0):
    from astropy.io import fits

    from mmu.sim.fitsio_util import mock_cards

    h = fits.Header()
    for k, v, c in mock_cards(seed):
        h[k] = (v, c)
    cards = [
        ("ORIGIN", "NASA/Ames", "institution responsible for creating this file"),
        ("DATE", _dt.date(2019, 1, 1).isoformat(), "file creation date."),
        ("TSTART", 0.0, "observation start time in TJD"),  # updated below
        ("TSTOP", 0.0, "observation stop time in TJD"),
        ("DATE-OBS", "", "TSTART as UTC calendar date"),
        ("DATE-END", "", "TSTOP as UTC calendar date"),
        ("CREATOR", "5371 LightCurveExporterPipelineModule", "pipeline job and program"),
        ("PROCVER", "spoc-3.3.37-20181004", "SW version"),
        ("FILEVER", "1.0", "file format version"),
        ("TIMVERSN", "OGIP/93-003", "OGIP memo number for file format"),
        ("TELESCOP", "TESS", "telescope"),
        ("INSTRUME", "TESS Photometer", "detector type"),
        ("DATA_REL", int(sector), "data release version number"),
        ("OBJECT", f"TIC {tic}", "string version of TICID"),
        ("TICID", int(tic), "unique tess target identifier"),
        ("SECTOR", int(sector), "Observing sector"),
        ("CAMERA", int(camera), "Camera number"),
        ("CCD", int(ccd), "CCD chip number"),
        ("PXTABLE", 129, "pixel table id"),
        ("RADESYS", "ICRS", "reference frame of celestial coordinates"),
        ("RA_OBJ", float(star["ra"]), "[deg] right ascension"),
        ("DEC_OBJ", float(star["dec"]), "[deg] declination"),
        ("EQUINOX", 2000.0, "equinox of celestial coordinate system"),
        ("PMRA", float(star.get("pmra", 0.0) or 0.0), "[mas/yr] RA proper motion"),
        ("PMDEC", float(star.get("pmdec", 0.0) or 0.0), "[mas/yr] Dec proper motion"),
        ("PMTOTAL", 0.0, "[mas/yr] total proper motion"),
        ("TESSMAG", round(float(tmag), 3), "[mag] TESS magnitude"),
        ("TEFF", float(star["teff"]) if "teff" in star and np.isfinite(star["teff"]) else None,
         "[K] Effective temperature"),
        ("LOGG", float(star["logg"]) if "logg" in star and np.isfinite(star["logg"]) else None,
         "[cm/s2] log10 surface gravity"),
        ("MH", float(star["mh"]) if "mh" in star and np.isfinite(star["mh"]) else None, "[log10([M/H])] metallicity"),
        ("RADIUS", None, "[solar radii] stellar radius"),
        ("TICVER", 7, "TICVER"),
        ("CRMITEN", True, "spacecraft cosmic ray mitigation enabled"),
        ("CRBLKSZ", 10, "[exposures] s/c cosmic ray mitigation block siz"),
        ("CRSPOC", False, "SPOC cosmic ray cleaning enabled"),
    ]
    for k, v, c in cards:
        h[k] = (v, c)
    return h


def write_star_sector(star, tic: int, sector: int, camera: int, ccd: int, tmag: float, out_dir: Path,
                      rng: np.random.Generator, seed: int = 0) -> Path:
    """One SPOC light-curve file of one star in one sector."""
    from astropy.io import fits

    time, cadenceno, gap = sector_times(sector)
    n = len(time)
    t_nom = SECTOR1_START + (sector - 1) * SECTOR_STEP + np.arange(n) * CADENCE_DAYS
    quality = quality_flags(t_nom, gap, rng)
    flux0 = ZP_TMAG10 * 10 ** (-0.4 * (tmag - 10.0))
    sigma = noise_ppm(tmag) * 1e-6 * flux0
    model = flux0 * signal(t_nom, star)
    pdc = (model + rng.normal(0, sigma, n)).astype(np.float32)
    pdc_err = np.full(n, sigma, np.float32)
    trend = 1 + 0.002 * np.exp(-((t_nom - t_nom[0]) % (SECTOR_DAYS / 2)) / 1.5)  # scattered light ramp
    sap = (0.92 * pdc * trend).astype(np.float32)
    sap_err = (0.92 * pdc_err).astype(np.float32)
    bkg = (N_PIX * BKG_PER_PIX * trend + rng.normal(0, 2.0, n)).astype(np.float32)
    nodata = gap | ((quality & Q_EARTH_POINT) != 0)
    for a in (pdc, pdc_err, sap, sap_err, bkg):
        a[nodata] = np.nan
    timecorr = (0.0058 * np.cos(2 * np.pi * (t_nom - 1300.0) / 365.25)).astype(np.float32)
    timecorr[gap] = np.nan
    jitter = rng.normal(0, 0.01, n)
    cx, cy = 1000.0 + rng.uniform(0, 1000), 1000.0 + rng.uniform(0, 1000)
    D, E, J = "D", "E", "J"
    cols = [
        ("TIME", D, "BJD - 2457000, days", time),
        ("TIMECORR", E, "d", timecorr),
        ("CADENCENO", J, "", cadenceno),
        ("SAP_FLUX", E, "e-/s", sap),
        ("SAP_FLUX_ERR", E, "e-/s", sap_err),
        ("SAP_BKG", E, "e-/s", bkg),
        ("SAP_BKG_ERR", E, "e-/s", np.where(nodata, np.nan, 2.0).astype(np.float32)),
        ("PDCSAP_FLUX", E, "e-/s", pdc),
        ("PDCSAP_FLUX_ERR", E, "e-/s", pdc_err),
        ("QUALITY", J, "", quality),
        ("PSF_CENTR1", D, "pixel", np.full(n, np.nan)),
        ("PSF_CENTR1_ERR", E, "pixel", np.full(n, np.nan, np.float32)),
        ("PSF_CENTR2", D, "pixel", np.full(n, np.nan)),
        ("PSF_CENTR2_ERR", E, "pixel", np.full(n, np.nan, np.float32)),
        ("MOM_CENTR1", D, "pixel", np.where(nodata, np.nan, cx + jitter)),
        ("MOM_CENTR1_ERR", E, "pixel", np.where(nodata, np.nan, 0.001).astype(np.float32)),
        ("MOM_CENTR2", D, "pixel", np.where(nodata, np.nan, cy - jitter)),
        ("MOM_CENTR2_ERR", E, "pixel", np.where(nodata, np.nan, 0.001).astype(np.float32)),
        ("POS_CORR1", E, "pixel", np.where(nodata, np.nan, jitter).astype(np.float32)),
        ("POS_CORR2", E, "pixel", np.where(nodata, np.nan, -jitter).astype(np.float32)),
    ]
    table = fits.BinTableHDU.from_columns(
        [fits.Column(name=nm, format=f, unit=u or None, array=a) for nm, f, u, a in cols], name="LIGHTCURVE")
    th = table.header
    ok = np.isfinite(time)
    t0, t1 = float(time[ok][0]), float(time[ok][-1])
    for k, v, c in [("TIMEREF", "SOLARSYSTEM", "barycentric correction applied to times"),
                    ("TASSIGN", "SPACECRAFT", "where time is assigned"),
                    ("TIMESYS", "TDB", "time system is Barycentric Dynamical Time (TDB)"),
                    ("BJDREFI", int(BTJD0), "integer part of BTJD reference date"),
                    ("BJDREFF", 0.0, "fraction of the day in BTJD reference date"),
                    ("TIMEUNIT", "d", "time unit for TIME, TSTART and TSTOP"),
                    ("TELAPSE", t1 - t0, "[d] TSTOP - TSTART"),
                    ("LIVETIME", (t1 - t0) * 0.792, "[d] TELAPSE multiplied by DEADC"),
                    ("TSTART", t0, "observation start time in BTJD"),
                    ("TSTOP", t1, "observation stop time in BTJD"),
                    ("DEADC", 0.792, "deadtime correction"),
                    ("TIMEPIXR", 0.5, "bin time beginning=0 middle=0.5 end=1"),
                    ("TIERRELA", 1.16e-05, "[d] relative time error"),
                    ("INT_TIME", 1.98, "[s] photon accumulation time per frame"),
                    ("FRAMETIM", 2.0, "[s] frame time (INT_TIME + READTIME)"),
                    ("NUM_FRM", 60, "number of frames per time stamp"),
                    ("TIMEDEL", CADENCE_DAYS, "[d] time resolution of data"),
                    ("BACKAPP", True, "background is subtracted"),
                    ("DEADAPP", True, "deadtime applied"),
                    ("VIGNAPP", True, "vignetting or collimator correction applied"),
                    ("CDPP0_5", float(noise_ppm(tmag) / np.sqrt(15)), "RMS CDPP on 0.5-hr time scales"),
                    ("CDPP1_0", float(noise_ppm(tmag) / np.sqrt(30)), "RMS CDPP on 1.0-hr time scales"),
                    ("CDPP2_0", float(noise_ppm(tmag) / np.sqrt(60)), "RMS CDPP on 2.0-hr time scales"),
                    ("PDCMETHD", "msMAP", "PDC algorithm used for target"),
                    ("CROWDSAP", 0.99, "Ratio of target flux to total flux in op. ap."),
                    ("FLFRCSAP", 0.92, "Frac. of target flux w/in the op. aperture")]:
        th[k] = (v, c)
    prim = _primary(star, tic, sector, camera, ccd, tmag, seed)
    prim["TSTART"], prim["TSTOP"] = t0, t1
    aperture = np.full((11, 11), 1, np.int32)  # bit 1: collected; 2: optimal aperture; 4: background
    aperture[3:8, 3:8] |= 2 | 8
    aperture[0, :] |= 4
    ap = fits.ImageHDU(aperture, name="APERTURE")
    path = out_dir / tid_dir(tic, sector) / file_name(tic, sector)
    path.parent.mkdir(parents=True, exist_ok=True)
    hdus = fits.HDUList([fits.PrimaryHDU(header=prim), table, ap])
    for h in hdus:  # SPOC files carry CHECKSUM/DATASUM; a fixed "updated" time keeps the bytes reproducible
        h.add_checksum(when=prim["DATE"])
    hdus.writeto(path, overwrite=True)
    return path


def tic_ids(n: int, rng: np.random.Generator) -> np.ndarray:
    """Distinct TIC-like ids (TIC v8 ids run to ~2e9; bright stars are mostly below 5e8)."""
    ids: set[int] = set()
    while len(ids) < n:
        ids.update(int(x) for x in rng.integers(1_000_000, 500_000_000, n - len(ids)))
    return np.array(sorted(ids, key=lambda _: rng.random()), np.int64)


def write_tess(stars: pd.DataFrame, out_dir, rng: np.random.Generator, sectors=tuple(range(1, 14)),
               base_url: str = "https://archive.stsci.edu/missions/tess/", seed: int = 0) -> list[Path]:
    """SPOC light-curve files of every star in every sector of `sectors` that puts it on silicon.

    Args:
        stars: one row per star: ``ra``, ``dec`` (deg), a magnitude (``tmag``, ``gmag`` or
            ``r_mag``), and optionally ``var_class`` (constant, rrlyrae, eclipsing_binary,
            rotator), ``period`` (d), ``amplitude``, ``phase0`` (BTJD), ``tic_id``, ``teff``,
            ``logg``, ``mh`` (see `draw_variability` for what is drawn when absent).
        out_dir: the raw root; files go to ``tess/tid/...`` below it.
        rng: the random stream (noise, flags, ids, periods when not given).
        sectors: the sectors observed (1-13 south, 14-26 north; later ones repeat the pattern).
        base_url: the archive root written into the sector download scripts.
        seed: the mock seed written in every primary header (MMUSEED, with MMUMOCK and MMUSIMV).

    Returns:
        The paths written: the light-curve files, then one ``tesscurl_sector_N_lc.sh`` per sector
        that observed a star.
    """
    out_dir = Path(out_dir)
    stars = draw_variability(stars.reset_index(drop=True), rng)
    tmag = tess_mag(stars)
    tics = stars["tic_id"].to_numpy(np.int64) if "tic_id" in stars else tic_ids(len(stars), rng)
    if len(np.unique(tics)) != len(tics):
        raise ValueError("write_tess: tic_id values repeat")
    written: list[Path] = []
    scripts: dict[int, list[str]] = {}
    for sector in sectors:
        camera, ccd = on_silicon(stars["ra"].to_numpy(float), stars["dec"].to_numpy(float), int(sector))
        for i in np.flatnonzero(camera > 0):
            p = write_star_sector(stars.iloc[i], int(tics[i]), int(sector), int(camera[i]), int(ccd[i]),
                                  float(tmag[i]), out_dir, rng, seed=seed)
            written.append(p)
            scripts.setdefault(int(sector), []).append(
                f"curl -C - -L -o {p.name} {base_url}{p.relative_to(out_dir / 'tess').as_posix()}")
    for sector, lines in scripts.items():
        sh = out_dir / "tess/download_scripts/sector" / f"tesscurl_sector_{sector}_lc.sh"
        sh.parent.mkdir(parents=True, exist_ok=True)
        sh.write_text("#!/bin/sh\n" + "\n".join(lines) + "\n")
        written.append(sh)
    return written
