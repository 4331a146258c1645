"""The mock observatory: file formats per survey, the truth links, and the physics checks.

One small universe is simulated per module (3 fields, ~150 galaxies) and opened with the surveys'
own readers (desispec, specutils) and with plain astropy/fitsio.
"""
from __future__ import annotations

import glob
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits

SEED = 3
# enough SDSS and BOSS spectra in a tiny sky
TEST_CONFIG = {"sdss_r_limit": 19.0, "sdss_field_fraction": 1.0, "boss_r_limit": 20.0, "boss_field_fraction": 0.7,
               "no_i_band_brick_fraction": 0.5}  # and bricks without i-band images


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    from mmu.sim import simulate

    out = tmp_path_factory.mktemp("sim") / "raw"
    simulate(out, galaxies=150, transients=15, seed=SEED, footprint="fields:3", workers=1, progress=False,
             config=TEST_CONFIG)
    return out


def _files(raw, pattern):
    return sorted(glob.glob(str(raw / pattern), recursive=True))


# --- the manifest and the mock marker -----------------------------------------------------------

def test_manifest_marks_mock_and_counts(raw):
    m = json.loads((raw / "mmu-sim.json").read_text())
    assert m["mock"] is True and m["seed"] == SEED and m["simulator_version"].startswith("mmu-sim")
    assert m["parameters"]["galaxies"] == 150 and m["parameters"]["footprint"] == "fields:3"
    assert m["parameters"]["config"]["sdss_r_limit"] == 19.0
    assert m["files"]["legacysurvey_bricks"] == len(_files(raw, "legacysurvey/**/tractor-*.fits"))
    assert m["files"]["desi_coadd_files"] == len(_files(raw, "desi/**/coadd-*.fits")) > 0
    assert m["files"]["sdss_spec_files"] == len(_files(raw, "sdss/**/spec-*.fits")) > 0
    boss = _files(raw, "sdss/dr17/eboss/spectro/redux/v5_13_2/spectra/lite/*/spec-*.fits")
    assert m["files"]["sdss_boss_spec_files"] == len(boss) > 0
    assert m["files"]["legacysurvey_coadd_files"] == len(_files(raw, "legacysurvey/**/coadd/**/*.fits.fz"))
    no_i = [t for t in _files(raw, "legacysurvey/**/tractor-*.fits")
            if not _files(raw, f"legacysurvey/**/coadd/**/*{Path(t).name[8:16]}-image-i.fits.fz")]
    assert m["counts"]["legacysurvey_bricks_without_i"] == len(no_i) > 0
    assert m["counts"]["desi_targetids_in_several_coadds"] > 0
    assert m["counts"]["legacysurvey_galaxies_in_two_or_more_bricks"] > 0


def test_every_fits_primary_header_carries_the_mock_marker(raw):
    paths = _files(raw, "**/*.fits") + _files(raw, "**/*.fits.fz")
    assert len(paths) > 30
    for p in paths:
        h = fits.getheader(p, 0)
        assert h["MMUMOCK"] is True and h["MMUSEED"] == SEED and h["MMUSIMV"].startswith("mmu-sim"), p
        if "/tess/" not in str(p):  # SPOC files carry a (fixed) DATE and CHECKSUM, as the archive's
            assert "DATE" not in h and "CHECKSUM" not in h


# --- Legacy Survey ------------------------------------------------------------------------------

TRACTOR_REQUIRED = {  # DR10 catalogue column -> FITS TFORM
    "release": "I", "brickid": "J", "brickname": "8A", "objid": "J", "brick_primary": "L", "maskbits": "J",
    "fitbits": "I", "type": "3A", "ra": "D", "dec": "D", "ebv": "E", "sersic": "E", "shape_r": "E",
    "shape_e1": "E", "shape_e2": "E", "bx": "E", "by": "E",
    **{f"{c}_{b}": "E" for b in "griz" for c in ("flux", "flux_ivar", "fiberflux", "fibertotflux",
                                                  "mw_transmission", "psfsize", "psfdepth", "galdepth")},
    **{f"nobs_{b}": "I" for b in "griz"},
}


def test_legacysurvey_layout_wcs_and_units(raw):
    import fitsio
    from astropy.wcs import WCS
    from astropy.wcs.utils import proj_plane_pixel_scales

    tractors = _files(raw, "legacysurvey/dr10/south/tractor/*/tractor-*.fits")
    assert tractors
    missing_i = 0
    for tpath in tractors:
        brick = Path(tpath).name[len("tractor-"):-len(".fits")]
        assert len(brick) == 8 and brick[4] in "pm" and brick[:4].isdigit() and brick[5:].isdigit()
        assert Path(tpath).parent.name == brick[:3]
        coadd = raw / "legacysurvey/dr10/south/coadd" / brick[:3] / brick
        cat = fitsio.read(tpath, ext=1)
        for band in "griz":
            if not (coadd / f"legacysurvey-{brick}-image-{band}.fits.fz").exists():
                # no coverage (DR10 south's i-band over part of its footprint): no invvar either,
                # and the catalogue's columns of that band are zero, as Tractor writes them
                assert band == "i" and not (coadd / f"legacysurvey-{brick}-invvar-{band}.fits.fz").exists()
                for col in ("nobs", "psfsize", "psfdepth", "flux_ivar", "flux"):
                    assert (cat[f"{col}_{band}"] == 0).all(), (brick, col)
                missing_i += 1
                continue
            assert cat[f"nobs_{band}"].min() > 0 and cat[f"psfsize_{band}"].min() > 0
            with fits.open(coadd / f"legacysurvey-{brick}-image-{band}.fits.fz") as hdul:
                assert isinstance(hdul[1], fits.CompImageHDU)
                img, hdr = hdul[1].data, hdul[1].header
                assert img.dtype.kind == "f" and hdr["BUNIT"] == "nanomaggy" and hdr["BAND"] == band
                wcs = WCS(hdr)
                assert wcs.wcs.ctype[0] == "RA---TAN" and wcs.wcs.ctype[1] == "DEC--TAN"
                np.testing.assert_allclose(proj_plane_pixel_scales(wcs) * 3600, 0.262, rtol=1e-6)
            with fits.open(coadd / f"legacysurvey-{brick}-invvar-{band}.fits.fz") as hdul:
                iv = hdul[1].data
                assert iv.shape == img.shape and np.all(iv >= 0) and np.median(iv) > 0
                assert "nanomaggy" in hdul[1].header["BUNIT"]
        with fits.open(coadd / f"legacysurvey-{brick}-maskbits.fits.fz") as hdul:
            assert hdul[1].data.dtype.kind == "i" and hdul[1].data.shape == img.shape
        cat = fits.getdata(tpath, 1)
        for name, tform in TRACTOR_REQUIRED.items():
            assert name in cat.columns.names, (tpath, name)
            assert cat.columns[name].format == tform, (tpath, name, cat.columns[name].format)
        assert set(np.char.strip(cat["brickname"])) == {brick}
        assert np.all(cat["objid"] == np.arange(len(cat)))
        assert set(np.char.strip(cat["type"])) <= {"PSF", "REX", "EXP", "DEV", "SER"}
        # tractor bx/by are 0-indexed positions in this brick's coadd
        x, y = wcs.all_world2pix(cat["ra"], cat["dec"], 0)
        assert np.max(np.hypot(x - cat["bx"], y - cat["by"])) < 0.5
    assert 0 < missing_i < len(tractors)  # some bricks without i-band, as DR10 south


def test_brick_overlap_sources_are_primary_exactly_once(raw):
    from scipy.spatial import cKDTree

    cats = [fits.getdata(p, 1) for p in _files(raw, "legacysurvey/**/tractor-*.fits")]
    ra = np.concatenate([c["ra"] for c in cats])
    dec = np.concatenate([c["dec"] for c in cats])
    prim = np.concatenate([c["brick_primary"] for c in cats])
    brick = np.concatenate([np.char.strip(c["brickname"]) for c in cats])
    xy = np.column_stack([ra * np.cos(np.radians(dec)), dec]) * 3600
    pairs = cKDTree(xy).query_pairs(0.3, output_type="ndarray")
    pairs = pairs[brick[pairs[:, 0]] != brick[pairs[:, 1]]]
    assert len(pairs) > 0, "no source in two bricks"
    # each duplicated source: primary in exactly one of its bricks
    assert np.all(prim[pairs[:, 0]] ^ prim[pairs[:, 1]])
    # the truth names each galaxy's primary (brick, objid), and that row is flagged primary
    truth = pd.read_parquet(raw / "sim_truth/galaxies.parquet")
    assert truth["ls_brickname"].notna().all()
    primary_rows = {(b, int(o)) for c in cats for b, o, p in
                    zip(np.char.strip(c["brickname"]), c["objid"], c["brick_primary"]) if p}
    truth_rows = set(zip(truth["ls_brickname"], truth["ls_objid"].astype(int)))
    assert truth_rows <= primary_rows and len(truth_rows) == len(truth)


# --- DESI ------------------------------------------------------------------------------------------

def test_desi_coadd_and_redrock_follow_the_data_model(raw):
    import healpy

    coadds = _files(raw, "desi/dr1/spectro/redux/iron/healpix/*/*/*/*/coadd-*.fits")
    assert coadds
    expected = ["PRIMARY", "FIBERMAP"] + [f"{a}_{k}" for a in "BRZ"
                                          for k in ("WAVELENGTH", "FLUX", "IVAR", "MASK", "RESOLUTION")]
    npix = {"B": 2751, "R": 2326, "Z": 2881}
    start = {"B": 3600.0, "R": 5760.0, "Z": 7520.0}
    for path in coadds:
        p = Path(path)
        survey, program, hpix = p.parts[-5], p.parts[-4], int(p.parts[-2])
        assert p.parts[-3] == str(hpix // 100) and p.name == f"coadd-{survey}-{program}-{hpix}.fits"
        assert survey in ("main", "sv3") and program in ("bright", "dark")
        with fits.open(path) as h:
            assert [x.name for x in h] == expected
            assert h[0].header["HPXPIXEL"] == hpix and h[0].header["HPXNSIDE"] == 64 and h[0].header["HPXNEST"]
            fm = h["FIBERMAP"].data
            n = len(fm)
            pix = healpy.ang2pix(64, fm["TARGET_RA"], fm["TARGET_DEC"], lonlat=True, nest=True)
            assert np.all(pix == hpix)
            for arm in "BRZ":
                w = h[f"{arm}_WAVELENGTH"].data
                assert w.dtype.kind == "f" and w.dtype.itemsize == 8 and len(w) == npix[arm] and w[0] == start[arm]
                np.testing.assert_allclose(np.diff(w), 0.8, atol=1e-9)
                assert h[f"{arm}_WAVELENGTH"].header["BUNIT"] == "Angstrom"
                assert h[f"{arm}_FLUX"].header["BUNIT"] == "10**-17 erg/(s cm2 Angstrom)"
                assert h[f"{arm}_FLUX"].data.shape == (n, npix[arm])
                assert h[f"{arm}_MASK"].data.dtype.kind == "u" and h[f"{arm}_MASK"].data.dtype.itemsize == 4
                assert h[f"{arm}_RESOLUTION"].data.shape == (n, 11, npix[arm])
        rr = p.with_name(p.name.replace("coadd-", "redrock-"))
        with fits.open(rr) as h:
            assert [x.name for x in h] == ["PRIMARY", "REDSHIFTS", "FIBERMAP"]
            z = h["REDSHIFTS"].data
            for col in ("TARGETID", "Z", "ZERR", "ZWARN", "CHI2", "SPECTYPE", "SUBTYPE", "DELTACHI2", "COEFF",
                        "NPIXELS", "NCOEFF"):
                assert col in z.columns.names
            np.testing.assert_array_equal(z["TARGETID"], fm["TARGETID"])


def test_desi_reader_and_targetid_encoding(raw):
    from desispec.coaddition import coadd_cameras
    from desispec.io import read_spectra
    from desispec.resolution import Resolution
    from desitarget.targets import decode_targetid

    path = _files(raw, "desi/**/coadd-*.fits")[0]
    sp = read_spectra(path, return_redshifts=True)
    assert sp.bands == ["b", "r", "z"] and sp.redshifts is not None
    R = Resolution(sp.resolution_data["r"][0])
    # flux conserving away from the ends, where the band matrix is truncated
    np.testing.assert_allclose(np.asarray(R.sum(axis=0)).ravel()[5:-5], 1.0, atol=1e-5)
    merged = coadd_cameras(sp)
    assert merged.wave["brz"][0] == 3600.0 and merged.wave["brz"][-1] == pytest.approx(9824.0)
    objid, brickid, release, mock, sky, gaiadr = decode_targetid(np.asarray(sp.fibermap["TARGETID"]))
    np.testing.assert_array_equal(objid, sp.fibermap["BRICK_OBJID"])
    np.testing.assert_array_equal(brickid, sp.fibermap["BRICKID"])
    np.testing.assert_array_equal(release, sp.fibermap["RELEASE"])
    assert np.all(mock == 1) and np.all(sky == 0)


def test_desi_repeats_a_targetid_in_sv3_and_main(raw):
    ids = {}
    for path in _files(raw, "desi/**/redrock-*.fits"):
        survey = Path(path).parts[-5]
        for t in fits.getdata(path, "REDSHIFTS")["TARGETID"]:
            ids.setdefault(int(t), set()).add(survey)
    assert any(s == {"main", "sv3"} for s in ids.values())


# --- SDSS --------------------------------------------------------------------------------------

def test_sdss_spec_files_read_with_specutils(raw):
    from specutils import Spectrum

    paths = _files(raw, "sdss/dr17/spectra/*/spec-*.fits")
    boss = _files(raw, "sdss/dr17/eboss/spectro/redux/v5_13_2/spectra/lite/*/spec-*.fits")
    assert paths and boss
    truth = pd.read_parquet(raw / "sim_truth/galaxies.parquet").dropna(subset=["sdss_plate"])
    for path in paths[:5] + boss[:5]:
        name = Path(path).name
        plate, mjd, fiber = (int(v) for v in name[5:-5].split("-"))
        is_boss = path in boss
        assert Path(path).parent.name == f"{plate:04d}"
        sp = Spectrum.read(path, format="SDSS-III/IV spec")
        lam = sp.spectral_axis.to_value("Angstrom")
        assert sp.spectral_axis.unit.to_string() == "Angstrom"
        if is_boss:  # the BOSS spectrograph: 3,600-10,400 Å, 1,000 fibres, plates from 3586
            assert 3599 < lam[0] < 3601 and 10390 < lam[-1] < 10400 and 1 <= fiber <= 1000 and plate >= 3586
        else:
            assert 3790 < lam[0] < 3810 and 1 <= fiber <= 640 and plate < 3000
        meta = "SPALL" if is_boss else "SPECOBJ"
        with fits.open(path) as h:
            assert [x.name for x in h] == ["PRIMARY", "COADD", meta, "SPZLINE"]
            assert h["COADD"].columns.names == ["flux", "loglam", "ivar", "and_mask", "or_mask", "wdisp", "sky",
                                                "model"]
            # float32 loglam: its spacing is 4.8e-7 above log10(λ) = 4 (BOSS's red end)
            np.testing.assert_allclose(np.diff(h["COADD"].data["loglam"]), 1e-4, atol=2e-7 if not is_boss else 5e-7)
            np.testing.assert_array_equal(sp.flux.value, h["COADD"].data["flux"])
            so = h[meta].data[0]
            assert (so["PLATE"], so["MJD"], so["FIBERID"]) == (plate, mjd, fiber)
            assert so["RUN2D"].strip() == ("v5_13_2" if is_boss else "26") == h[0].header["RUN2D"]
            if is_boss:  # the spAll columns of the DR17 data model
                assert so["SPECBOSS"] == 1 and so["SPECPRIMARY"] == 1 and so["CLASS_NOQSO"].strip() == "GALAXY"
                assert so["Z_NOQSO"] == so["Z"] and so["ZWARNING_NOQSO"] == so["ZWARNING"]
                assert h[0].header["VERS2D"] == "v5_13_2"
            row = truth[(truth["sdss_plate"] == plate) & (truth["sdss_fiberid"] == fiber)].iloc[0]
            assert so["PLUG_RA"] == pytest.approx(row["ra"]) and so["PLUG_DEC"] == pytest.approx(row["dec"])
            assert so["CLASS"].strip() == "GALAXY"


# --- PLAsTiCC ------------------------------------------------------------------------------------

def test_plasticc_csvs(raw):
    lc = pd.read_csv(raw / "plasticc/plasticc_train_lightcurves.csv.gz")
    meta = pd.read_csv(raw / "plasticc/plasticc_train_metadata.csv.gz")
    assert list(lc.columns) == ["object_id", "mjd", "passband", "flux", "flux_err", "detected_bool"]
    for col in ("object_id", "ra", "decl", "gal_l", "gal_b", "ddf_bool", "hostgal_specz", "hostgal_photoz",
                "hostgal_photoz_err", "distmod", "mwebv", "target", "true_target", "true_z", "true_peakmjd"):
        assert col in meta.columns
    assert len(meta) == 15 and set(lc["object_id"]) <= set(meta["object_id"])
    assert set(lc["passband"]) <= set(range(6)) and set(lc["detected_bool"]) <= {0, 1}
    assert np.all(lc["flux_err"] > 0) and set(meta["target"]) <= {90, 42, 62, 88, 92}
    galactic = meta["target"] == 92
    assert np.all(meta.loc[galactic, "hostgal_photoz"] == 0) and meta.loc[galactic, "distmod"].isna().all()
    # each object is seen in yearly seasons: ~half-year gaps between them, days inside them
    for _, obj in lc.groupby("object_id"):
        gaps = np.diff(np.sort(obj["mjd"].to_numpy()))
        assert np.sum(gaps > 150) >= 2 and np.median(gaps) < 10


def test_truth_links_transients_to_hosts(raw):
    gal = pd.read_parquet(raw / "sim_truth/galaxies.parquet")
    tr = pd.read_parquet(raw / "sim_truth/transients.parquet")
    hosted = tr[tr["host_galaxy_id"] >= 0]
    host = gal.set_index("galaxy_id").loc[hosted["host_galaxy_id"]]
    assert np.all(hosted["z"].to_numpy() == host["z"].to_numpy())
    sep = np.hypot((hosted["ra"].to_numpy() - host["ra"].to_numpy()) * np.cos(np.radians(host["dec"].to_numpy())),
                   hosted["dec"].to_numpy() - host["dec"].to_numpy()) * 3600
    np.testing.assert_allclose(sep, hosted["offset_arcsec"], atol=1e-3)
    assert np.all(sep < 10 * host["disk_hlr_arcsec"].to_numpy() + 1e-6)
    assert np.all(tr.loc[tr["class"] == "RRL", "host_galaxy_id"] == -1)


# --- physics ---------------------------------------------------------------------------------------

def test_photometry_matches_skypy_and_dirichlet_model():
    from astropy.cosmology import Planck18
    from skypy.galaxies.spectrum import dirichlet_coefficients, kcorrect

    from mmu.sim import sed, universe

    rng = np.random.default_rng(0)
    c = rng.dirichlet(np.ones(5), size=8)
    z = rng.uniform(0.05, 0.8, 8)
    wave_obs, flux = sed.observed_spectra(sed.rest_spectra(c), z, np.ones(8),
                                          Planck18.luminosity_distance(z).value)
    names = sed.FILTER_NAMES["decam"] + sed.FILTER_NAMES["lsst"]
    mine = -2.5 * np.log10(sed.ab_maggies(wave_obs, flux, names))
    ref = kcorrect.apparent_magnitudes(c, z, list(names), Planck18)
    np.testing.assert_allclose(mine, ref, atol=0.01)
    # our generator-driven Dirichlet draws follow skypy's model (means over many draws)
    zz = np.full(20000, 0.3)
    np.random.seed(1)
    a0, a1, w = universe.DIRICHLET[universe.POP_STAR_FORMING]
    theirs = dirichlet_coefficients(zz, np.array(a0), np.array(a1), weight=np.array(w)).mean(axis=0)
    ours = universe.dirichlet_coefficients(np.random.default_rng(2), zz, np.zeros(zz.size, int)).mean(axis=0)
    np.testing.assert_allclose(ours, theirs, rtol=0.03, atol=2e-4)


def test_blackbody_light_curve_flux_scaling():
    """(1+z)^4 (R/D_L)^2 at T/(1+z) equals the redshifted spectrum integrated through the filters."""
    from mmu.sim import lightcurves, sed

    z, temp, r2 = 0.4, 9000.0, 1e-26
    wave = np.geomspace(2800.0, 11500.0, 8000)
    rest = wave / (1 + z)
    f_obs = sed.blackbody_flambda(rest, temp) * r2 / (1 + z)  # f_lambda = L(lambda/(1+z)) / (4 pi D_L^2 (1+z))
    direct = sed.ab_maggies_on_grid(wave, f_obs[None, :], sed.FILTER_NAMES["lsst"])[0]
    model = lightcurves.band_maggies(np.array([temp / (1 + z)]), np.array([r2 * (1 + z) ** 4]))[0]
    # the table samples T on a grid: agreement to a fraction of a percent
    np.testing.assert_allclose(model, direct, rtol=5e-3)


def test_spectrum_through_filters_matches_image_flux(raw):
    """DESI spectrum integrated through DECam g, r, i, divided by the fibre fraction
    (FIBERFLUX/FLUX), reproduces the galaxy's flux summed in the Legacy Survey image."""
    import speclite.filters
    from astropy.wcs import WCS
    from desispec.coaddition import coadd_cameras
    from desispec.io import read_spectra

    truth = pd.read_parquet(raw / "sim_truth/galaxies.parquet")
    points = pd.concat([pd.read_parquet(raw / f"sim_truth/{t}.parquet") for t in ("stars", "qsos")])
    allpos = np.concatenate([truth[["ra", "dec"]].to_numpy(), points[["ra", "dec"]].to_numpy()])
    allflux = np.concatenate([truth["flux_decam_r"].to_numpy(), points["flux_decam_r"].to_numpy()])
    filters = speclite.filters.load_filters("decam2014-g", "decam2014-r", "decam2014-i")
    checked = []
    for path in _files(raw, "desi/**/coadd-*.fits"):
        sp = coadd_cameras(read_spectra(path))
        wave, flux = sp.wave["brz"], sp.flux["brz"] * 1e-17
        ivar = sp.ivar["brz"]
        for k, row in enumerate(sp.fibermap):
            g = truth[truth["desi_targetid"] == row["TARGETID"]]
            if not len(g):  # a star or quasar: tests/test_sim_stars.py
                continue
            g = g.iloc[0]
            if g["hlr_arcsec"] > 1.5 or g["ls_flux_r"] < 3:  # compact enough for the box to hold its light
                continue
            d = np.hypot((allpos[:, 0] - g["ra"]) * np.cos(np.radians(g["dec"])), allpos[:, 1] - g["dec"]) * 3600
            near = (d < 11.0) & (allflux > 0.01 * g["flux_decam_r"])
            wing = (d < 40.0) & (allflux > 30 * g["flux_decam_r"])  # a bright star's PSF wings reach the box
            if np.sum(near | wing) > 1:  # no neighbour that matters
                continue
            brick = g["ls_brickname"]
            coadd = raw / "legacysurvey/dr10/south/coadd" / brick[:3] / brick
            padded_flux, padded_wave = filters.pad_spectrum(flux[k], wave, method="zero")
            spec_maggies = filters.get_ab_maggies(padded_flux, padded_wave).as_array()[0]
            for j, band in enumerate("gri"):
                if not (coadd / f"legacysurvey-{brick}-image-{band}.fits.fz").exists():
                    continue  # a brick without i-band images
                with fits.open(coadd / f"legacysurvey-{brick}-image-{band}.fits.fz") as h:
                    img, wcs = h[1].data, WCS(h[1].header)
                with fits.open(coadd / f"legacysurvey-{brick}-invvar-{band}.fits.fz") as h:
                    iv = h[1].data
                x, y = wcs.all_world2pix(g["ra"], g["dec"], 0)
                half = 30  # 7.9 arcsec
                x0, y0 = int(round(float(x))), int(round(float(y)))
                if x0 - half < 0 or y0 - half < 0 or x0 + half >= img.shape[1] or y0 + half >= img.shape[0]:
                    continue
                box = img[y0 - half:y0 + half + 1, x0 - half:x0 + half + 1]
                biv = iv[y0 - half:y0 + half + 1, x0 - half:x0 + half + 1]
                if np.any(biv == 0):
                    continue
                image_flux = box.sum()
                image_err = np.sqrt(np.sum(1.0 / biv))
                fib = row[f"FIBERFLUX_{band.upper()}"] / row[f"FLUX_{band.upper()}"] if band != "i" else \
                    row["FIBERFLUX_R"] / row["FLUX_R"]
                spec_flux = spec_maggies[j] * 1e9 / fib
                ok = ivar[k] > 0
                resp = np.interp(wave, filters[j].wavelength, filters[j].response, left=0, right=0)
                spec_err = spec_flux * np.sqrt(np.sum((resp * wave) ** 2 / np.where(ok, ivar[k], np.inf)))\
                    / max(np.sum(resp * wave * flux[k] * 1e17), 1e-30)
                # calibration budget: 3% zero point + 2% spectrophotometry + 3% light outside the box
                sigma = np.sqrt(image_err**2 + spec_err**2 + (0.05 * spec_flux) ** 2)
                checked.append((band, image_flux, spec_flux, sigma))
    assert len(checked) >= 3, "no isolated bright DESI galaxy to check"
    ratio = np.array([c[1] / c[2] for c in checked])
    pull = np.array([(c[1] - c[2]) / c[3] for c in checked])
    assert abs(np.median(ratio) - 1) < 0.06, ratio
    assert np.all(np.abs(pull) < 4), pull


def test_photoz_realism_small(raw):
    """Observed colours carry redshift information, but far from all of it."""
    from mmu.sim.realism import photoz_realism

    r = photoz_realism(raw)
    assert r["all_r_lt_23"]["n"] > 80
    assert 0.25 < r["all_r_lt_23"]["knn16_r2"] < 0.92
    assert 0.15 < r["all_r_lt_23"]["ridge_r2"] < 0.92
