"""Gaia DR3 mock: the archive's bulk files for a table of stars, in the CDN layout the `gaia`
builder reads (builders/gaia.py):

    gaia/gdr3/Spectroscopy/xp_continuous_mean_spectrum/XpContinuousMeanSpectrum_LLLLLL-HHHHHH.csv.gz
    gaia/gdr3/gaia_source/GaiaSource_LLLLLL-HHHHHH.csv.gz
    gaia/gdr3/Astrophysical_parameters/astrophysical_parameters/AstrophysicalParameters_LLLLLL-HHHHHH.csv.gz

Gzipped ECSV (a ``#`` YAML header, then CSV; arrays as JSON strings, nulls as ``null``), one file
per range of HEALPix level-8 pixels (``source_id >> 43``). Each star's SED (`mmu.sim.stars`: the
observed flux of a star table from `stars.photometry`, or `sed_fn(teff, logg, mh, wave_angstrom)`,
`stars.stellar_sed` by default, scaled to its G or r magnitude) is converted to W m^-2 nm^-1 and
projected onto the DR3 XP bases (least squares against GaiaXPy's sampled design matrices, arm by
arm); the published coefficients are those plus noise drawn from a covariance diag(err) C
diag(err) with a random correlation matrix C, whose packed off-diagonal vector goes into the file
as the archive stores it. G/BP/RP are synthetic
photometry of the SED through speclite's Gaia DR3 passbands (AB, shifted to Vega with the DR3
zero points). As the archive: XP spectra for G < 17.65, GSP-Phot for G < 19, gaia_source rows
for all stars down to G = 21.
"""
from __future__ import annotations

import functools
import io
from pathlib import Path

import numpy as np
import pandas as pd

from mmu.sim import sed as sedlib
from mmu.sim.fitsio_util import write_gzip_text

XP_G_LIMIT, GSPPHOT_G_LIMIT, SOURCE_G_LIMIT = 17.65, 19.0, 21.0
RANGE_WIDTH = 3112  # HEALPix-8 pixels per mock file (the archive's first file is 000000-003111)
# Vega - AB magnitude offsets of the DR3 passbands (Riello et al. 2021 zero points: Vega G 25.6874,
# BP 25.3385, RP 24.7479; AB 25.8010, 25.3540, 25.1040)
VEGA_MINUS_AB = {"G": 25.6874 - 25.8010, "BP": 25.3385 - 25.3540, "RP": 24.7479 - 25.1040}
SOLUTION_ID = 375316653866487564  # the DR3 solution identifier printed in the archive's files
XP_SOLUTION_ID = 4097  # mock; real XP files carry their own
N_COEFF = 55
# the archive's folders below https://cdn.gea.esa.int/Gaia/gdr3/ (as builders/gaia.py reads them)
TABLE_DIRS = {"XpContinuousMeanSpectrum": "Spectroscopy/xp_continuous_mean_spectrum/",
              "GaiaSource": "gaia_source/",
              "AstrophysicalParameters": "Astrophysical_parameters/astrophysical_parameters/"}
SED_WAVE = np.geomspace(3000.0, 11500.0, 3000)  # Angstrom, for the synthetic photometry


def blackbody_sed(teff, logg, mh, wave_angstrom):
    """The fallback SED: a blackbody of `teff` (logg and [M/H] ignored), erg/s/cm2/Angstrom."""
    return sedlib.blackbody_flambda(np.asarray(wave_angstrom)[None, :], np.asarray(teff, float)[:, None])


def source_ids(ra, dec, rng) -> np.ndarray:
    """Gaia-style source_ids: HEALPix level-12 nested index * 2**35 + a per-pixel running number."""
    from mmu.sim.footprint import healpix_nest

    ipix = healpix_nest(ra, dec, 12)
    order = np.argsort(ipix, kind="stable")
    running = np.empty(len(ipix), np.int64)
    counts: dict[int, int] = {}
    start = rng.integers(1, 1000, len(ipix))  # real ids are sparse within a pixel
    for i in order:
        counts[ipix[i]] = counts.get(ipix[i], 0) + int(start[i])
        running[i] = counts[ipix[i]]
    return ipix * (2 ** 35) + running


def synthetic_mags(wave_angstrom, flam) -> dict[str, np.ndarray]:
    """Vega G, BP, RP of SEDs [n, nwave] (erg/s/cm2/Angstrom) through speclite's gaiadr3 curves."""
    import speclite.filters

    filt = speclite.filters.load_filters("gaiadr3-G", "gaiadr3-BP", "gaiadr3-RP")
    ab = filt.get_ab_magnitudes(flam * 1e0, wave_angstrom)  # units: erg/(s cm2 Angstrom) and Angstrom
    return {b: np.asarray(ab[f"gaiadr3-{b}"], float) + VEGA_MINUS_AB[b] for b in ("G", "BP", "RP")}


@functools.lru_cache(maxsize=1)
def xp_sampling() -> tuple[np.ndarray, dict, dict]:
    """GaiaXPy's default absolute grid (nm, 336-1020 every 2 nm), its design matrices {bp, rp}
    [55, 343] and BP/RP merge weights {bp, rp} [343] (the tables `gaiaxpy.calibrate` uses)."""
    from mmu.extras import import_keeping_matplotlib_rc

    import_keeping_matplotlib_rc("gaiaxpy")  # GaiaXPy sets matplotlib's text.usetex on import
    from gaiaxpy.core.config import load_xpmerge_from_xml, load_xpsampling_from_xml

    grid, merge = load_xpmerge_from_xml()
    return np.asarray(grid, float), load_xpsampling_from_xml(), merge


def project_xp(flux_wm2nm: np.ndarray) -> dict[str, np.ndarray]:
    """Coefficients [n, 55] per arm whose sampled spectrum best matches `flux_wm2nm` [n, 343]
    (W m^-2 nm^-1 on GaiaXPy's default grid) where that arm's merge weight is > 0 (truncated-SVD
    least squares: the sampled bases are nearly degenerate, condition number ~2e7)."""
    _, design, merge = xp_sampling()
    out = {}
    for band in ("bp", "rp"):
        w = np.asarray(merge[band]) > 0
        a = np.asarray(design[band])[:, w].T  # [npix, 55]
        pinv = np.linalg.pinv(a, rcond=1e-4)  # residuals < 1% of the peak for 3,500-10,000 K
        out[band] = flux_wm2nm[:, w] @ pinv.T
    return out


def random_correlation(n: int, rng, factors: int = 4) -> np.ndarray:
    """A positive-definite correlation matrix: a few random factors plus unit noise."""
    b = rng.normal(0.0, 0.35, (n, factors))
    s = b @ b.T + np.eye(n)
    d = np.sqrt(np.diag(s))
    return s / np.outer(d, d)


def pack_correlations(corr: np.ndarray) -> np.ndarray:
    """The archive's vector of a correlation matrix: the lower triangle row by row, no diagonal."""
    i, j = np.tril_indices(corr.shape[0], k=-1)
    return corr[i, j]


def _fmt_array(a) -> str:
    return "[" + ",".join(map(repr, np.asarray(a, np.float64).tolist())) + "]"


def _ecsv(df: pd.DataFrame, types: dict[str, str], path: Path) -> Path:
    """Write `df` as gzipped ECSV (astropy's header form; arrays already JSON text, nulls `null`)."""
    lines = ["# %ECSV 1.0", "# ---", "# delimiter: ','", "# datatype:"]
    for c in df.columns:
        t = types[c]
        if t.endswith("]"):
            lines.append(f"# - {{name: {c}, datatype: string, subtype: '{t}'}}")
        else:
            lines.append(f"# - {{name: {c}, datatype: {t}}}")
    lines.append("# schema: astropy-2.0")
    buf = io.StringIO()
    df.to_csv(buf, index=False, na_rep="null", float_format=None, lineterminator="\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_gzip_text(path, "\n".join(lines) + "\n" + buf.getvalue())  # mtime 0: same seed, same bytes
    return path


def write_gaia(stars: pd.DataFrame, out_dir, rng: np.random.Generator, sed_fn=None) -> list[Path]:
    """Write the Gaia DR3 bulk files of `stars` under `out_dir`/gaia/gdr3/.

    Args:
        stars: one row per star: ra, dec (deg), teff (K), logg, mh (dex), and either the
            columns of `mmu.sim.stars.photometry` (`sed_scale`, `z`, `ebv_mw`: the observed SED
            is `mmu.sim.stars.observed_flambda`) or the apparent G magnitude `gmag` (Vega) or
            `r_mag` (DECam r, AB) that `sed_fn`'s SED is scaled to; optional `distance_pc`
            (else drawn) and `source_id` (else made from the position).
        out_dir: the raw root (files go below out_dir/gaia/gdr3/).
        rng: the random stream (noise, distances, proper motions, ids).
        sed_fn: ``sed_fn(teff, logg, mh, wave_angstrom) -> [n, nwave]`` flux density (any
            normalisation); default `mmu.sim.stars.stellar_sed` (`blackbody_sed` is the plain one).

    Returns:
        The files written (XP, GaiaSource, AstrophysicalParameters per HEALPix-8 range).
    """
    n = len(stars)
    if n == 0:
        return []
    out = Path(out_dir) / "gaia" / "gdr3"
    teff = stars["teff"].to_numpy(float)
    logg = stars["logg"].to_numpy(float) if "logg" in stars else np.full(n, 4.4)
    mh = stars["mh"].to_numpy(float) if "mh" in stars else np.zeros(n)
    if sed_fn is None and "sed_scale" in stars:
        # rows of mmu.sim.stars (after `photometry`): the flux they already have, dust and Doppler applied
        from mmu.sim.stars import observed_flambda

        flam = observed_flambda(stars, SED_WAVE)
        mags = synthetic_mags(SED_WAVE, flam)
    else:
        if sed_fn is None:
            from mmu.sim.stars import stellar_sed as sed_fn
        flam = np.asarray(sed_fn(teff, logg, mh, SED_WAVE), float).reshape(n, -1)
        mags = synthetic_mags(SED_WAVE, flam)
        if "gmag" in stars:
            shift = stars["gmag"].to_numpy(float) - mags["G"]
        else:
            import speclite.filters

            r = speclite.filters.load_filters("decam2014-r").get_ab_magnitudes(flam, SED_WAVE)["decam2014-r"]
            shift = stars["r_mag"].to_numpy(float) - np.asarray(r, float)
        flam = flam * 10 ** (-0.4 * shift)[:, None]
        mags = {b: v + shift for b, v in mags.items()}
    g = mags["G"]
    sid = stars["source_id"].to_numpy(np.int64) if "source_id" in stars else \
        source_ids(stars["ra"].to_numpy(float), stars["dec"].to_numpy(float), rng)

    # astrometry: distances, tangential velocities, errors growing with G (Lindegren+2021-like)
    dist = stars["distance_pc"].to_numpy(float) if "distance_pc" in stars else rng.uniform(200.0, 5000.0, n)
    plx_err = 0.015 + 0.5 * 10 ** (0.4 * (g - 20.0))
    pm_err = 0.02 + 0.6 * 10 ** (0.4 * (g - 20.0))
    vt = rng.normal(0.0, 35.0, (n, 2))  # km/s
    pm_true = vt / (4.74047 * dist[:, None] / 1000.0)
    src = pd.DataFrame({
        "solution_id": SOLUTION_ID, "designation": [f"Gaia DR3 {s}" for s in sid], "source_id": sid,
        "random_index": rng.permutation(n), "ref_epoch": 2016.0,
        "ra": stars["ra"].to_numpy(float), "ra_error": plx_err * 0.8,
        "dec": stars["dec"].to_numpy(float), "dec_error": plx_err * 0.7,
        "parallax": 1000.0 / dist + rng.normal(0, 1, n) * plx_err, "parallax_error": plx_err,
        "pmra": pm_true[:, 0] + rng.normal(0, 1, n) * pm_err, "pmra_error": pm_err,
        "pmdec": pm_true[:, 1] + rng.normal(0, 1, n) * pm_err, "pmdec_error": pm_err,
        "phot_g_mean_mag": g + rng.normal(0, 1, n) * (0.0003 + 0.003 * 10 ** (0.4 * (g - 20.0))),
        "phot_bp_mean_mag": mags["BP"] + rng.normal(0, 1, n) * (0.001 + 0.02 * 10 ** (0.4 * (g - 20.0))),
        "phot_rp_mean_mag": mags["RP"] + rng.normal(0, 1, n) * (0.001 + 0.02 * 10 ** (0.4 * (g - 20.0))),
        "has_xp_continuous": g < XP_G_LIMIT,
    })
    src_types = {"solution_id": "int64", "designation": "string", "source_id": "int64", "random_index": "int64",
                 "ref_epoch": "float64", "has_xp_continuous": "bool"}
    src_types.update({c: "float64" for c in src.columns if c not in src_types})

    # GSP-Phot: the truth plus scatter (the archive's values are model inferences, not truth)
    ap = pd.DataFrame({
        "solution_id": SOLUTION_ID, "source_id": sid,
        "teff_gspphot": teff + rng.normal(0, 1, n) * (0.02 * teff),
        "logg_gspphot": logg + rng.normal(0, 0.2, n),
        "mh_gspphot": mh + rng.normal(0, 0.2, n),
    })
    ap_types = {"solution_id": "int64", "source_id": "int64", "teff_gspphot": "float32",
                "logg_gspphot": "float32", "mh_gspphot": "float32"}

    # XP: the SED on GaiaXPy's grid in W m^-2 nm^-1, projected, plus correlated noise
    grid = xp_sampling()[0]
    on_grid = np.stack([np.interp(grid * 10.0, SED_WAVE, f) for f in flam]) * 1e-2  # -> W m^-2 nm^-1
    true = project_xp(on_grid)
    # coefficient errors: equal for all bases of an arm, set so the sampled flux error is about `frac`
    # of the arm's median flux (0.5% at G = 14, 3% at G = 17.6); correlated through C
    frac = 0.002 * 10 ** (0.2 * (g - 12.0))
    _, design, merge = xp_sampling()
    xp_rows = {"solution_id": XP_SOLUTION_ID, "source_id": sid}
    for band in ("bp", "rp"):
        c = true[band]
        w = np.asarray(merge[band]) > 0
        col_norm = np.median(np.linalg.norm(np.asarray(design[band])[:, w], axis=0))
        level = np.median(np.abs(on_grid[:, w]), axis=1) / col_norm
        err = (frac * level)[:, None] * rng.uniform(0.8, 1.25, (n, N_COEFF))
        coeffs, packed = [], []
        for i in range(n):
            corr = random_correlation(N_COEFF, rng)
            chol = np.linalg.cholesky(err[i][:, None] * corr * err[i][None, :])
            coeffs.append(c[i] + chol @ rng.normal(0, 1, N_COEFF))
            packed.append(pack_correlations(corr))
        xp_rows.update({
            f"{band}_basis_function_id": 56 if band == "bp" else 57,
            f"{band}_degrees_of_freedom": rng.integers(200, 4000, n),
            f"{band}_n_parameters": N_COEFF,
            f"{band}_n_measurements": rng.integers(15, 80, n),
            f"{band}_n_rejected_measurements": rng.integers(0, 3, n),
            f"{band}_standard_deviation": rng.uniform(0.8, 1.6, n),
            f"{band}_chi_squared": rng.uniform(200.0, 6000.0, n),
            f"{band}_coefficients": [_fmt_array(a) for a in coeffs],
            f"{band}_coefficient_errors": [_fmt_array(e) for e in err],
            f"{band}_coefficient_correlations": [_fmt_array(p) for p in packed],
            f"{band}_n_relevant_bases": rng.integers(20, N_COEFF + 1, n),
            f"{band}_relative_shrinking": rng.uniform(0.0, 0.3, n),
        })
    xp = pd.DataFrame(xp_rows)
    xp_types = {c: ("int64" if c.endswith(("_id", "_freedom", "_parameters", "_measurements", "_bases"))
                    else "float64") for c in xp.columns}
    for band in ("bp", "rp"):
        xp_types[f"{band}_coefficients"] = xp_types[f"{band}_coefficient_errors"] = f"float64[{N_COEFF}]"
        xp_types[f"{band}_coefficient_correlations"] = f"float64[{N_COEFF * (N_COEFF - 1) // 2}]"

    hpx8 = sid >> 43
    lo = (hpx8 // RANGE_WIDTH) * RANGE_WIDTH
    written = []
    for start in np.unique(lo):
        stem = f"{int(start):06d}-{int(start) + RANGE_WIDTH - 1:06d}"
        here = (lo == start)
        order = np.argsort(sid[here], kind="stable")
        for table, df, types, keep in (
                ("GaiaSource", src, src_types, g < SOURCE_G_LIMIT),
                ("AstrophysicalParameters", ap, ap_types, g < GSPPHOT_G_LIMIT),
                ("XpContinuousMeanSpectrum", xp, xp_types, g < XP_G_LIMIT)):
            rows = df[here].iloc[order]
            rows = rows[keep[here][order]]
            if len(rows) or table == "GaiaSource":
                path = out / TABLE_DIRS[table] / f"{table}_{stem}.csv.gz"
                written.append(_ecsv(rows, types, path))
    return written
