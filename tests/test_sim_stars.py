"""Stars and quasars in the mock universe: their spectra, how each survey sees and labels them
(Legacy Survey TYPE PSF, DESI redrock SPECTYPE, SDSS CLASS), and the truth tables.

The physics checks use independent references: the Stefan-Boltzmann law, rest-frame line
wavelengths times (1 + z), desitarget's own target masks, and aperture photometry on the coadds.
"""
from __future__ import annotations

import glob

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits

SEED = 21
#: dense point sources and generous spectroscopic selections, so that a tiny sky holds all classes
CONFIG = {"stars_per_deg2": 12000.0, "qso_per_deg2": 3000.0, "sdss_field_fraction": 1.0, "sdss_r_limit": 19.0,
          "boss_field_fraction": 1.0, "boss_r_limit": 20.0, "sdss_star_fraction": 1.0, "sdss_qso_i_limit": 20.0,
          "desi_completeness": 1.0}


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    from mmu.sim import simulate

    out = tmp_path_factory.mktemp("simstars") / "raw"
    simulate(out, galaxies=80, transients=0, seed=SEED, footprint="fields:2", workers=1, progress=False,
             config=CONFIG)
    return out


@pytest.fixture(scope="module")
def truth(raw):
    return {name: pd.read_parquet(raw / "sim_truth" / f"{name}.parquet") for name in ("galaxies", "stars", "qsos")}


def _native(a):
    return np.asarray(a).astype(np.asarray(a).dtype.newbyteorder("="))


def _redrock(raw) -> pd.DataFrame:
    parts = []
    for path in sorted(glob.glob(str(raw / "desi/**/redrock-*.fits"), recursive=True)):
        with fits.open(path) as h:
            z, fm = h["REDSHIFTS"].data, h["FIBERMAP"].data
            prefix = "SV3_" if "-sv3-" in path else ""
            parts.append(pd.DataFrame({
                "TARGETID": _native(z["TARGETID"]), "Z": _native(z["Z"]), "ZERR": _native(z["ZERR"]),
                "ZWARN": _native(z["ZWARN"]), "SPECTYPE": np.char.strip(z["SPECTYPE"].astype(str)),
                "SUBTYPE": np.char.strip(z["SUBTYPE"].astype(str)),
                "MORPHTYPE": np.char.strip(fm["MORPHTYPE"].astype(str)),
                "DESI_TARGET": _native(fm[f"{prefix}DESI_TARGET"]), "MWS_TARGET": _native(fm[f"{prefix}MWS_TARGET"]),
                "path": path}))
    return pd.concat(parts, ignore_index=True)


def _band_mag(wave, flux, band):
    from mmu.sim import sed

    return -2.5 * np.log10(sed.ab_maggies_on_grid(wave, flux, (band,))[:, 0])


# --- the stellar SED ------------------------------------------------------------------------

def test_stellar_sed_is_physical_and_its_lines_follow_teff_logg_mh():
    from mmu.sim.stars import stellar_sed

    w = np.arange(900.0, 80000.0, 0.5)
    for teff in (3400.0, 5800.0, 9500.0):  # Stefan-Boltzmann: absorption removes a bounded fraction
        ratio = np.trapezoid(stellar_sed(teff, 4.4, 0.0, w), w) / (5.670374e-5 * teff**4)
        assert 0.7 < ratio < 1.0, (teff, ratio)

    def ew(f, lam, half):
        sel = np.abs(w - lam) < half
        side = (np.abs(w - lam) > half) & (np.abs(w - lam) < half + 20)
        return np.trapezoid(1 - f[sel] / np.median(f[side]), w[sel])

    a_star, k_star = stellar_sed(9500.0, 4.2, 0.0, w), stellar_sed(4500.0, 4.6, 0.0, w)
    assert ew(a_star, 4862.68, 30) > 8.0 and ew(a_star, 4862.68, 30) > 5 * ew(k_star, 4862.68, 30)  # Balmer in A
    assert ew(a_star, 4102.89, 30) > 8.0
    # the A star's strongest absorption near H-beta sits at its rest wavelength
    near = np.abs(w - 4862.68) < 20
    assert abs(w[near][np.argmin(a_star[near])] - 4862.68) < 0.6
    metal_rich, metal_poor = stellar_sed(5500.0, 4.5, 0.2, w), stellar_sed(5500.0, 4.5, -2.0, w)
    assert ew(metal_rich, 3934.78, 12) > 3 * ew(metal_poor, 3934.78, 12)  # Ca II K
    assert ew(metal_rich, 5175.0, 15) > 3 * ew(metal_poor, 5175.0, 15)  # Mg b
    dwarf, giant = stellar_sed(4300.0, 4.7, 0.0, w), stellar_sed(4300.0, 1.8, 0.0, w)
    assert ew(dwarf, 5894.6, 8) > 1.5 * ew(giant, 5894.6, 8)  # Na D: gravity sensitive
    assert ew(giant, 8544.44, 8) > 1.2 * ew(dwarf, 8544.44, 8)  # Ca triplet: stronger in giants
    # colours: cooler is redder, monotonically
    g_r = [(_band_mag(w, stellar_sed(t, 4.5, 0.0, w), "decam2014-g")
            - _band_mag(w, stellar_sed(t, 4.5, 0.0, w), "decam2014-r"))[0] for t in (3400, 4500, 5800, 7500, 10000)]
    assert np.all(np.diff(g_r) < 0) and g_r[0] > 1.2 and g_r[-1] < 0.1, g_r
    # vectorised call = per-star calls
    many = stellar_sed(np.array([4000.0, 7000.0]), np.array([4.5, 4.0]), np.array([0.0, -1.0]), w[:2000])
    np.testing.assert_allclose(many[1], stellar_sed(7000.0, 4.0, -1.0, w[:2000]))


def test_star_counts_rise_toward_the_galactic_plane():
    from mmu.sim.config import SimConfig
    from mmu.sim.stars import density_per_deg2, draw_tile

    cfg = SimConfig()
    assert density_per_deg2(30.0, cfg) == pytest.approx(cfg.stars_per_deg2)
    assert density_per_deg2(20.0, cfg) / density_per_deg2(70.0, cfg) == pytest.approx(
        np.sin(np.radians(70)) / np.sin(np.radians(20)))
    box = (10.0, 10.3, -5.0, -4.7)
    low, high = draw_tile(1, 0, box, 20.0, 0.03, cfg), draw_tile(1, 0, box, 75.0, 0.03, cfg)
    assert len(low) > 1.8 * len(high)
    r = low["r_mag"].to_numpy()
    assert (r < cfg.star_r_range[1]).all() and np.mean(r > 21) > 0.5  # counts rise to the limit



def test_halo_horizontal_branch_makes_rr_lyrae_whose_tess_light_curves_have_their_period_and_amplitude(tmp_path):
    """mmu-sim 1.3: the halo HB spans the instability strip and the blue HB; the HB stars in the
    strip are RR Lyrae, with 0.4-0.8 d periods and 0.3-0.8 mag amplitudes that the written SPOC
    files show (Lomb-Scargle period, folded peak-to-peak in magnitudes). 1.2 drew none."""
    from astropy.io import fits
    from astropy.timeseries import LombScargle

    from mmu.sim import tess as sim_tess
    from mmu.sim.config import SimConfig
    from mmu.sim.stars import INSTABILITY_STRIP_K, draw_tile

    # a bright, dense sky at the south ecliptic pole (camera 4 in every southern sector), default HB share
    cfg = SimConfig(stars_per_deg2=6000.0, star_r_range=(12.0, 16.5))
    assert cfg.star_halo_hb_fraction == 0.03
    stars = draw_tile(3, 0, (88.0, 92.0, -67.5, -65.5), 30.0, 0.03, cfg)
    stars = sim_tess.draw_variability(sim_tess.assign_classes(stars, np.random.default_rng(1)),
                                      np.random.default_rng(2))
    halo = stars["population"].str.startswith("halo").to_numpy()
    hb = (stars["population"] == "halo_bhb_a").to_numpy()
    assert hb.sum() == pytest.approx(0.03 * halo.sum(), abs=4 * np.sqrt(0.03 * halo.sum()))
    lo, hi = INSTABILITY_STRIP_K
    t_hb = stars.loc[hb, "teff"]
    strip = hb & stars["teff"].between(lo, hi).to_numpy()
    assert strip.sum() / hb.sum() == pytest.approx(0.5, abs=0.15) and t_hb.max() > 9500  # strip and blue HB
    assert (stars.loc[strip, "logg"] < 3.5).all()
    disk_a = stars[stars["population"] == "disk_bhb_a"]  # disk A dwarfs as in 1.2
    assert disk_a["teff"].between(7500, 10500).all() and disk_a["logg"].between(3.9, 4.3).all()

    rr = stars[stars["var_class"] == "rrlyrae"]
    assert len(rr) >= 20
    assert (rr["population"] == "halo_bhb_a").all() and rr["teff"].between(lo, hi).all()
    assert len(rr) / strip.sum() == pytest.approx(0.9, abs=0.12)  # essentially every HB star in the strip
    assert rr["period"].between(0.2, 1.0).all() and rr["amplitude"].between(0.2, 1.0).all()

    # their TESS light curves: the period and amplitude are in the files
    few = rr.sort_values("r_mag").iloc[:3].reset_index(drop=True)
    camera, _ = sim_tess.on_silicon(few["ra"], few["dec"], 1)
    assert (camera > 0).all()
    sim_tess.write_tess(few.assign(tic_id=[101, 202, 303]), tmp_path, np.random.default_rng(3), sectors=(1,))
    for tic, star in zip((101, 202, 303), few.itertuples(), strict=True):
        [path] = tmp_path.rglob(f"*-{tic:016d}-*_lc.fits")
        with fits.open(path) as h:
            d = h["LIGHTCURVE"].data
            t, f, q = (np.asarray(d[c], float) for c in ("TIME", "PDCSAP_FLUX", "QUALITY"))
        ok = np.isfinite(t) & np.isfinite(f) & (q == 0)
        t, f = t[ok], f[ok]
        freq, power = LombScargle(t, f).autopower(minimum_frequency=0.5, maximum_frequency=6.0, samples_per_peak=20)
        period = 1 / freq[np.argmax(power)]
        assert 0.2 < period < 1.0 and period == pytest.approx(star.period, rel=0.01)
        phase = ((t - star.phase0) / star.period) % 1.0
        mag = -2.5 * np.log10(f / np.median(f))
        binned = [np.median(mag[(phase >= k / 50) & (phase < (k + 1) / 50)]) for k in range(50)]
        assert 0.2 < np.ptp(binned) < 1.0 and np.ptp(binned) == pytest.approx(star.amplitude, abs=0.08)


def test_the_halo_hb_share_is_a_knob_and_a_bad_share_is_refused():
    from mmu.sim.stars import draw_parameters

    r = np.random.default_rng(0).uniform(12.0, 16.5, 20000)
    few = draw_parameters(np.random.default_rng(1), r)
    many = draw_parameters(np.random.default_rng(1), r, halo_hb_fraction=0.6)
    halo = np.char.startswith(few["population"].astype(str), "halo")
    assert np.mean(few["population"][halo] == "halo_bhb_a") == pytest.approx(0.03, abs=0.01)
    assert np.mean(many["population"][halo] == "halo_bhb_a") == pytest.approx(0.6, abs=0.03)
    disk = ~halo  # the same stream: halo membership and every disk star are the same
    assert np.array_equal(halo, np.char.startswith(many["population"].astype(str), "halo"))
    assert np.array_equal(few["teff"][disk], many["teff"][disk])
    with pytest.raises(ValueError, match=r"star_halo_hb_fraction 1.5: expected a share of halo stars in \[0, 0.9\]"):
        draw_parameters(np.random.default_rng(1), r, halo_hb_fraction=1.5)

# --- quasars ------------------------------------------------------------------------------------

def _qso_row(z, **kw):
    from mmu.sim.qso import LINES

    row = {"z": z, "alpha_blue": -0.45, "alpha_red": -1.5, "fwhm_scale": 1.0, "sed_scale": 1e-16, "ebv_mw": 0.0,
           "forest_seed": 7, **{f"line_scale_{k}": 1.0 for k in range(len(LINES))}}
    row.update(kw)
    return pd.DataFrame([row])


@pytest.mark.parametrize("z, line, rest", [(1.2, "MgII", 2799.12), (2.4, "CIV", 1549.06), (0.6, "H_beta", 4862.68)])
def test_qso_broad_lines_peak_at_one_plus_z_times_rest(z, line, rest):
    from mmu.sim.qso import observed_flambda

    obs = rest * (1 + z)
    w = np.arange(obs - 400, obs + 400, 0.5)
    f = observed_flambda(_qso_row(z), w)[0]
    cont = np.interp(obs, w[[0, -1]], f[[0, -1]])
    near = np.abs(w - obs) < 150
    assert abs(w[near][np.argmax(f[near])] - obs) < 6.0
    assert f[near].max() > 1.5 * cont


def test_qso_lyman_alpha_forest_absorbs_blueward_of_lyman_alpha():
    from mmu.sim.qso import LYA, observed_flambda, tau_eff

    z = 3.0
    w = np.arange(3700.0, 6500.0, 0.5)
    with_f = observed_flambda(_qso_row(z), w)[0]
    without = observed_flambda(_qso_row(z), w, with_forest=False)[0]
    forest = (w > 1040 * (1 + z)) & (w < 1190 * (1 + z))
    red = (w > 1260 * (1 + z)) & (w < 1500 * (1 + z))
    mean_t = np.mean(with_f[forest] / without[forest])
    expected = np.mean(np.exp(-tau_eff(w[forest] / LYA - 1)))
    assert abs(mean_t - expected) < 0.08, (mean_t, expected)
    np.testing.assert_allclose(with_f[red], without[red])
    assert np.min(with_f[forest] / without[forest]) < 0.2  # individual absorbers are saturated


# --- the surveys ----------------------------------------------------------------------------------

def test_tractor_types_point_sources_psf_and_the_coadd_holds_their_flux(raw, truth):
    import fitsio

    for name in ("stars", "qsos"):
        t = truth[name]
        seen = t[t["ls_type"].notna()]
        assert len(seen) > 3, name
        assert set(seen["ls_type"]) == {"PSF"}, name
    # aperture photometry of the brightest unsaturated star on its brick's r image
    st = truth["stars"]
    st = st[st["ls_type"].notna() & (st["r_mag"] > 16.5) & (st["r_mag"] < 19.5)].sort_values("r_mag")
    assert len(st)
    checked = 0
    for _, s in st.iterrows():
        brick = s["ls_brickname"]
        img_path = glob.glob(str(raw / f"legacysurvey/**/legacysurvey-{brick}-image-r.fits.fz"), recursive=True)
        cat = fitsio.read(glob.glob(str(raw / f"legacysurvey/**/tractor-{brick}.fits"), recursive=True)[0])
        row = cat[cat["objid"] == s["ls_objid"]][0]
        img = fitsio.read(img_path[0])
        x, y = int(round(row["bx"])), int(round(row["by"]))
        if not (20 <= x < img.shape[1] - 20 and 20 <= y < img.shape[0] - 20):
            continue
        yy, xx = np.mgrid[-19:20, -19:20]
        aper = (xx**2 + yy**2) <= 19**2  # 5" radius: > 99% of a Moffat PSF
        total = img[y - 19:y + 20, x - 19:x + 20][aper].sum()
        expected = s["flux_decam_r"] * s["mw_transmission_decam_r"]
        assert total == pytest.approx(expected, rel=0.12), (brick, total, expected)
        checked += 1
        if checked == 2:
            break
    assert checked


def test_desi_redrock_labels_stars_and_quasars(raw, truth):
    from desitarget.targetmask import desi_mask, mws_mask

    rr = _redrock(raw)
    assert {"GALAXY", "QSO", "STAR"} <= set(rr["SPECTYPE"])
    st = truth["stars"].dropna(subset=["desi_targetid"])
    qs = truth["qsos"].dropna(subset=["desi_targetid"])
    stars = rr.merge(st[["desi_targetid", "teff", "rv_kms"]].astype({"desi_targetid": np.int64}),
                     left_on="TARGETID", right_on="desi_targetid")
    good = stars[stars["ZWARN"] == 0]
    assert len(good) > 3 and (good["SPECTYPE"] == "STAR").all()
    # Z = radial velocity / c, within the errors
    np.testing.assert_allclose(good["Z"], good["rv_kms"] / 299792.458, atol=float(6 * good["ZERR"].max()))
    from mmu.sim.stars import spectral_class

    assert (good["SUBTYPE"].to_numpy() == spectral_class(good["teff"].to_numpy())).all()
    assert (stars["MORPHTYPE"] == "PSF").all()
    mws = stars[(stars["DESI_TARGET"] & desi_mask.MWS_ANY) != 0]
    assert len(mws) and ((mws["MWS_TARGET"] & (mws_mask.MWS_MAIN_BLUE | mws_mask.MWS_MAIN_RED)) != 0).all()
    q = rr.merge(qs[["desi_targetid", "z"]].astype({"desi_targetid": np.int64}), left_on="TARGETID",
                 right_on="desi_targetid")
    qgood = q[q["ZWARN"] == 0]
    assert len(qgood) > 2 and (qgood["SPECTYPE"] == "QSO").all()
    assert ((qgood["DESI_TARGET"] & desi_mask.QSO) != 0).all()
    np.testing.assert_allclose(qgood["Z"], qgood["z"], atol=float(6 * qgood["ZERR"].max()))
    # realistic failures: flagged, and never more than a modest fraction
    assert (rr["ZWARN"] != 0).mean() < 0.3


def test_desi_qso_spectrum_read_with_desispec_shows_its_lines(raw, truth):
    pytest.importorskip("desispec")
    from desispec.io import read_spectra

    from mmu.sim.qso import LINES

    q = truth["qsos"].dropna(subset=["desi_targetid"]).sort_values("r_mag")
    assert len(q)
    row = q.iloc[0]
    tid = int(row["desi_targetid"])
    path = [p for p in glob.glob(str(raw / "desi/**/coadd-*.fits"), recursive=True)
            if tid in fits.getdata(p, "FIBERMAP")["TARGETID"]][0]
    sp = read_spectra(path)
    i = int(np.flatnonzero(sp.fibermap["TARGETID"] == tid)[0])
    z = float(row["z"])
    found = 0
    for name, rest, ew, _ in LINES:
        obs = rest * (1 + z)
        for band in sp.bands:
            wave = sp.wave[band]
            if ew < 20 or not (wave[0] + 150 < obs < wave[-1] - 150):
                continue
            flux, ivar = sp.flux[band][i], sp.ivar[band][i]
            near = (np.abs(wave - obs) < 25) & (ivar > 0)
            side = (np.abs(wave - obs) > 120) & (np.abs(wave - obs) < 160) & (ivar > 0)
            assert np.median(flux[near]) > np.median(flux[side]), (name, obs)
            found += 1
    assert found >= 1


def test_sdss_spec_files_classify_stars_and_quasars(raw, truth):
    classes = {}
    for path in glob.glob(str(raw / "sdss/**/spec-*.fits"), recursive=True):
        with fits.open(path) as h:
            obj = h[2].data[0]
            classes.setdefault(obj["CLASS"].strip(), []).append((path, obj))
    assert {"GALAXY", "STAR", "QSO"} <= set(classes)
    st = truth["stars"].dropna(subset=["sdss_plate"])
    qs = truth["qsos"].dropna(subset=["sdss_plate"])
    assert (st["sdss_class"] == "STAR").all() and (qs["sdss_class"] == "QSO").all()
    for _, s in st.iterrows():  # SUBCLASS is the Harvard class of the truth Teff
        from mmu.sim.stars import spectral_class

        assert s["sdss_subclass"][0] == spectral_class(s["teff"])
        if s["sdss_zwarning"] == 0:
            assert abs(s["sdss_z"] - s["rv_kms"] / 299792.458) < 3e-4
    # a quasar's spectrum through specutils: excess flux at (1+z) x rest of its strong broad lines
    specutils = pytest.importorskip("specutils")
    from mmu.sim.qso import LINES

    checked = 0
    for path, obj in classes["QSO"]:
        if obj["ZWARNING"] != 0 or obj["SN_MEDIAN_ALL"] < 3:  # lines visible above the noise
            continue
        spec = specutils.Spectrum.read(path, format="SDSS-III/IV spec")
        wave = spec.spectral_axis.to_value("Angstrom")
        flux = np.asarray(spec.flux.value, dtype=np.float64)
        z = float(obj["Z"])
        for name, rest, ew, _ in LINES:
            obs = rest * (1 + z)
            if ew < 20 or not (wave[0] + 200 < obs < min(wave[-1], 8500.0) - 200):
                continue
            near = np.abs(wave - obs) < 20
            side = (np.abs(wave - obs) > 120) & (np.abs(wave - obs) < 180)
            assert np.median(flux[near]) > np.median(flux[side]), (path, name, obs)
            checked += 1
    assert checked >= 1


def test_truth_tables_keep_galaxies_apart(truth):
    from mmu.builders.sim_truth import GALAXIES

    gal, st, qs = truth["galaxies"], truth["stars"], truth["qsos"]
    # galaxies.parquet keeps exactly the schema the sim_truth builder declares: no star rows, no new columns
    assert set(gal.columns) - {"ra", "dec"} <= set(GALAXIES)
    assert gal["logmass"].notna().all() and gal["z"].between(0.0, 1.0).all()
    assert (st["class"] == "STAR").all() and (qs["class"] == "QSO").all()
    for c in ("teff", "logg", "mh", "rv_kms", "distance_pc", "radius_rsun"):
        assert st[c].notna().all() and np.isfinite(st[c]).all(), c
    assert st["teff"].between(2500, 12000).all() and st["logg"].between(0, 5.5).all()
    assert st["mh"].between(-3, 0.6).all()
    assert {"disk_dwarf", "halo_dwarf"} <= set(st["population"])
    assert qs["z"].between(0.5, 3.5).all()
    assert not {"logmass", "ssfr", "morphology"} & (set(st.columns) | set(qs.columns))
    # the star's flux is its SED times (R/d)^2
    from mmu.sim.stars import PC_CM, RSUN_CM

    np.testing.assert_allclose(st["sed_scale"], (st["radius_rsun"] * RSUN_CM / (st["distance_pc"] * PC_CM)) ** 2,
                               rtol=1e-10)
    np.testing.assert_allclose(st["parallax_mas"] * st["distance_pc"], 1000.0, rtol=1e-12)
    # and the r magnitude is what that SED gives through DECam r after Milky Way dust
    r = 22.5 - 2.5 * np.log10(st["flux_decam_r"] * st["mw_transmission_decam_r"])
    np.testing.assert_allclose(r, st["r_mag"], atol=1e-6)


def test_point_sources_leave_the_galaxies_alone(tmp_path):
    """Stars and quasars draw from their own random streams: turning them off changes no galaxy."""
    from mmu.sim import simulate

    kw = dict(galaxies=30, transients=0, seed=4, footprint="fields:1", workers=1, progress=False)
    simulate(tmp_path / "on", **kw)
    simulate(tmp_path / "off", config={"stars_per_deg2": 0.0, "bright_stars_per_tile": 0.0, "qso_per_deg2": 0.0},
             **kw)
    on = pd.read_parquet(tmp_path / "on" / "sim_truth" / "galaxies.parquet")
    off = pd.read_parquet(tmp_path / "off" / "sim_truth" / "galaxies.parquet")
    intrinsic = ["galaxy_id", "ra", "dec", "z", "logmass", "ssfr", "morphology", "population", "hlr_arcsec",
                 "flux_decam_r", "flux_sdss_r", "fiber_frac_desi"]
    pd.testing.assert_frame_equal(on[intrinsic], off[intrinsic])
    assert len(pd.read_parquet(tmp_path / "on" / "sim_truth" / "stars.parquet")) > 0
    assert len(pd.read_parquet(tmp_path / "off" / "sim_truth" / "stars.parquet")) == 0
    assert len(pd.read_parquet(tmp_path / "off" / "sim_truth" / "qsos.parquet")) == 0
