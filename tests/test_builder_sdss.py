"""The sdss builder: exact values from spec files, bad inputs rejected by name, the hub opens.

Files are written here from the SDSS spec datamodel, independently of the mock observatory:
SDSS-I/II files (COADD + SPECOBJ) and BOSS/eBOSS files (COADD + SPALL, run2d v5_13_2, the spAll
columns); specutils' SDSS loader is the independent reader. The last tests build the mock
observatory's SDSS output, which has both kinds.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from mmu.engine.builder import InputRejected, RawInput, get_builder
from test_builder_helpers import assert_opens, hub_table, link_tree, read_all

NPIX = 500


def write_spec(path: Path, plate=266, mjd=51630, fiber=1, ra=150.0, dec=2.0, seed=0, drop_hdu=None,
               drop_column=None, flux_nan=False, zero_ivar=False, loglam0=3.58, boss=False):
    """An SDSS-I/II spec-lite file, or with `boss` a BOSS/eBOSS one (HDU SPALL with the spAll
    columns of DR17 v5_13_2: SPECBOSS, the *_NOQSO redshift, SPECOBJID as an integer)."""
    rng = np.random.default_rng(seed)
    loglam = (loglam0 + 1e-4 * np.arange(NPIX)).astype(np.float32)
    flux = rng.normal(5, 1, NPIX).astype(np.float32)
    if flux_nan:
        flux[10] = np.nan
    ivar = rng.uniform(0.5, 2, NPIX).astype(np.float32)
    ivar[20:25] = 0
    if zero_ivar:
        ivar[:] = 0
    and_mask = np.zeros(NPIX, np.int32)
    and_mask[30:33] = 1 << 16
    cols = {"flux": ("E", flux), "loglam": ("E", loglam), "ivar": ("E", ivar), "and_mask": ("J", and_mask),
            "or_mask": ("J", and_mask), "wdisp": ("E", rng.uniform(0.8, 1.2, NPIX).astype(np.float32)),
            "sky": ("E", np.zeros(NPIX, np.float32)), "model": ("E", flux)}
    coadd = fits.BinTableHDU.from_columns([fits.Column(k, f, array=a) for k, (f, a) in cols.items()
                                           if k != drop_column], name="COADD")
    so = {"PLATE": ("J", [plate]), "MJD": ("J", [mjd]), "FIBERID": ("J", [fiber]), "PLUG_RA": ("D", [ra]),
          "PLUG_DEC": ("D", [dec]), "Z": ("E", [0.1]), "Z_ERR": ("E", [1e-4]), "ZWARNING": ("J", [0]),
          "CLASS": ("6A", ["GALAXY"]), "SUBCLASS": ("21A", ["STARFORMING"]), "SPECPRIMARY": ("B", [1])}
    if boss:
        so.update({"RUN2D": ("7A", ["v5_13_2"]), "SPECBOSS": ("J", [1]), "SPECLEGACY": ("J", [0]),
                   "SPECOBJID": ("K", [(plate << 50) | (fiber << 38) | ((mjd - 50000) << 24) | (1302 << 10)]),
                   "Z_NOQSO": ("E", [0.52]), "Z_ERR_NOQSO": ("E", [2e-4]), "ZWARNING_NOQSO": ("J", [4]),
                   "CLASS_NOQSO": ("6A", ["GALAXY"]), "PROGRAMNAME": ("5A", ["eboss"])})
    specobj = fits.BinTableHDU.from_columns([fits.Column(k, f, array=np.array(a)) for k, (f, a) in so.items()],
                                            name="SPALL" if boss else "SPECOBJ")
    primary = fits.PrimaryHDU()
    primary.header.update({"TELESCOP": "SDSS 2.5-M", "PLATEID": plate, "MJD": mjd, "FIBERID": fiber,
                           "VERS2D": "v5_13_2" if boss else "v5_7_0", "BUNIT": "1E-17 erg/cm^2/s/Ang"})
    hdus = [primary, coadd, specobj]
    if drop_hdu:
        hdus = [h for h in hdus if h.name != drop_hdu]
    path.parent.mkdir(parents=True, exist_ok=True)
    fits.HDUList(hdus).writeto(path, overwrite=True)
    return path


def spec_name(plate, mjd, fiber):
    return f"spec-{plate:04d}-{mjd:05d}-{fiber:04d}.fits"


@pytest.fixture
def builder():
    return get_builder("sdss")()


def test_values_carried_exactly(tmp_path, builder):
    path = write_spec(tmp_path / "0266" / spec_name(266, 51630, 1))
    [item] = builder.list_inputs(tmp_path)
    table, rej = read_all(builder, item)
    assert rej == []
    row = table.to_pylist()[0]
    assert row["object_id"] == "0266-51630-0001" and row["ra"] == 150.0 and row["dec"] == 2.0
    assert row["class"] == "GALAXY" and row["specprimary"] == 1
    with fits.open(path) as hd:
        c = hd["COADD"].data
        lam = 10 ** c["loglam"].astype(np.float64)
        s = row["spectrum"]
        np.testing.assert_array_equal(np.array(s["flux"], np.float32), c["flux"])
        np.testing.assert_array_equal(np.array(s["ivar"], np.float32), c["ivar"])
        np.testing.assert_array_equal(np.array(s["lambda"], np.float32), lam.astype(np.float32))
        np.testing.assert_allclose(s["lambda"], lam, rtol=2 ** -23)
        mask = np.array(s["mask"])
        assert mask[20:25].all() and mask[30:33].all()  # ivar 0, and_mask set: bad = True
        assert not mask[:20].any() and mask.sum() == 8
        # wdisp is the LSF sigma in 1e-4 dex pixels, without the pixel's width; lsf_sigma includes
        # it (docs/schema.md): sigma_A = sqrt(wdisp^2 + 1/12) * 1e-4 * ln(10) * lambda
        wdisp = c["wdisp"].astype(np.float64)
        np.testing.assert_allclose(s["lsf_sigma"], np.sqrt(wdisp ** 2 + 1 / 12) * 1e-4 * np.log(10) * lam,
                                   rtol=1e-6)
        assert s["lsf_sigma"][0] == pytest.approx(np.hypot(wdisp[0], 12 ** -0.5) * 1e-4 * np.log(10) * lam[0],
                                                  rel=1e-6)
    assert row["spectrograph"] == "SDSS" and row["specboss"] is None and row["z_noqso"] is None
    assert row["lambda_min"] == pytest.approx(10 ** 3.58, rel=1e-6)
    assert row["lambda_max"] == pytest.approx(10 ** (3.58 + 1e-4 * (NPIX - 1)), rel=1e-6)


def test_boss_spall_file_read_with_its_columns(tmp_path, builder):
    """A BOSS/eBOSS file (HDU SPALL, fibre 996 of 1,000) read exactly, checked against specutils'
    SDSS-III/IV loader and the spAll columns of the DR17 data model."""
    from specutils import Spectrum

    path = write_spec(tmp_path / "7512" / spec_name(7512, 56777, 996), plate=7512, mjd=56777, fiber=996,
                      boss=True, loglam0=3.5563)
    [item] = builder.list_inputs(tmp_path)
    table, rej = read_all(builder, item)
    assert rej == [] and table.num_rows == 1
    row = table.to_pylist()[0]
    sp = Spectrum.read(path, format="SDSS-III/IV spec")
    s = row["spectrum"]
    np.testing.assert_allclose(s["lambda"], sp.spectral_axis.to_value("Angstrom"), rtol=2 ** -23)
    np.testing.assert_array_equal(np.array(s["flux"], np.float32), sp.flux.value.astype(np.float32))
    np.testing.assert_array_equal(np.array(s["ivar"], np.float32), sp.uncertainty.array.astype(np.float32))
    np.testing.assert_array_equal(np.array(s["mask"]), sp.mask | (sp.uncertainty.array <= 0))
    assert row["object_id"] == "7512-56777-0996" and row["spectrograph"] == "BOSS"
    assert (row["plate"], row["mjd"], row["fiberid"]) == (7512, 56777, 996)
    assert row["run2d"] == "v5_13_2" and row["specboss"] == 1 and row["specprimary"] == 1
    assert row["z"] == pytest.approx(0.1) and row["zwarning"] == 0 and row["class"] == "GALAXY"
    assert row["z_noqso"] == pytest.approx(0.52) and row["z_err_noqso"] == pytest.approx(2e-4)
    assert row["zwarning_noqso"] == 4 and row["class_noqso"] == "GALAXY" and row["programname"] == "eboss"
    assert row["specobjid"] == str((7512 << 50) | (996 << 38) | (6777 << 24) | (1302 << 10))
    assert row["lambda_min"] == pytest.approx(10 ** 3.5563, rel=1e-6)  # 3,600.3 Å
    wdisp = fits.getdata(path, "COADD")["wdisp"].astype(np.float64)
    np.testing.assert_allclose(s["lsf_sigma"], np.hypot(wdisp, 12 ** -0.5) * 1e-4 * np.log(10)
                               * np.array(s["lambda"], np.float64), rtol=1e-6)


def test_sdss_and_boss_plates_in_one_tree(tmp_path, builder):
    """SDSS-I/II under sdss/dr17/spectra/, BOSS under the SAS v5_13_2 path: both listed, no row lost."""
    write_spec(tmp_path / "sdss/dr17/spectra/0266" / spec_name(266, 51630, 1))
    boss = tmp_path / "sdss/dr17/eboss/spectro/redux/v5_13_2/spectra/lite/7512"
    for fiber in (1, 500, 1000):
        write_spec(boss / spec_name(7512, 56777, fiber), plate=7512, mjd=56777, fiber=fiber, boss=True,
                   loglam0=3.5563)
    items = builder.list_inputs(tmp_path)
    assert [i.key for i in items] == ["sdss/dr17/eboss/spectro/redux/v5_13_2/spectra/lite/7512",
                                      "sdss/dr17/spectra/0266"]
    rows = []
    for item in items:
        table, rej = read_all(builder, item)
        assert rej == []
        rows += table.select(["object_id", "spectrograph"]).to_pylist()
    assert sorted((r["object_id"], r["spectrograph"]) for r in rows) == [
        ("0266-51630-0001", "SDSS"), ("7512-56777-0001", "BOSS"), ("7512-56777-0500", "BOSS"),
        ("7512-56777-1000", "BOSS")]


@pytest.mark.parametrize("kwargs, words", [
    ({"drop_hdu": "SPECOBJ"}, ["neither HDU 'SPALL'", "'SPECOBJ'", "found ['PRIMARY', 'COADD']"]),
    ({"drop_hdu": "COADD"}, ["HDU 'COADD' missing", "'SPECOBJ'"]),
    ({"fiber": 700}, ["FIBERID 700", "1-640", "SDSS plate"]),  # the SDSS spectrograph has 640 fibres
    ({"fiber": 1001, "boss": True}, ["FIBERID 1001", "1-1000", "BOSS plate", "v5_13_2"]),
    ({"drop_column": "wdisp"}, ["COADD", "wdisp"]),
    ({"loglam0": 2.58}, ["loglam", "outside"]),  # wavelength unit error: nm written as if Å
])
def test_bad_file_rejected_rest_of_plate_kept(tmp_path, builder, kwargs, words):
    write_spec(tmp_path / "0266" / spec_name(266, 51630, 1))
    write_spec(tmp_path / "0266" / spec_name(266, 51630, 2), **{"fiber": 2, **kwargs})
    [item] = builder.list_inputs(tmp_path)
    tables, rej = read_all(builder, item)
    assert tables.num_rows == 1
    [r] = rej
    assert spec_name(266, 51630, 2) in r.reason and r.object_id == "0266-51630-0002"
    assert all(w in r.reason for w in words), r.reason


def test_fetch_takes_boss_reductions_and_names_a_bad_run2d(tmp_path, builder):
    with pytest.raises(ValueError, match="run2d 'v5_99' is not a DR17 optical reduction"):
        builder.fetch(tmp_path, limit=1, run2d="v5_99")


def test_truncated_and_corrupt_files(tmp_path, builder):
    good = write_spec(tmp_path / "0266" / spec_name(266, 51630, 1))
    data = good.read_bytes()
    (tmp_path / "0266" / spec_name(266, 51630, 2)).write_bytes(data[: len(data) - 3000])
    (tmp_path / "0266" / spec_name(266, 51630, 3)).write_bytes(b"not a fits file".ljust(2880))
    [item] = builder.list_inputs(tmp_path)
    tables, rej = read_all(builder, item)
    assert tables.num_rows == 1
    reasons = {r.object_id: r.reason for r in rej}
    assert "truncated" in reasons["0266-51630-0002"]
    assert "not a readable FITS" in reasons["0266-51630-0003"]
    # a plate whose every file is bad is a rejected input, with the names
    only_bad = RawInput("0266", (str(tmp_path / "0266" / spec_name(266, 51630, 3)),))
    with pytest.raises(InputRejected, match="spec-0266-51630-0003.fits"):
        list(builder.read(only_bad))


@pytest.fixture(scope="module")
def built(sim_raw, tmp_path_factory, dask_client):
    """One engine build: the mock observatory's SDSS plates plus hand-written bad spectra (NaN
    flux, all-zero ivar, dec out of range, a true duplicate, a corrupt file)."""
    from mmu.engine.build import build

    tmp = tmp_path_factory.mktemp("sdss")
    raw = link_tree(sim_raw, tmp / "raw", "sdss")
    bad = raw / "bad"
    write_spec(bad / "9000" / spec_name(9000, 51630, 1), plate=9000, fiber=1)
    write_spec(bad / "9000" / spec_name(9000, 51630, 10), plate=9000, fiber=10, flux_nan=True)
    write_spec(bad / "9000" / spec_name(9000, 51630, 11), plate=9000, fiber=11, zero_ivar=True)
    write_spec(bad / "9000" / spec_name(9000, 51630, 12), plate=9000, fiber=12, dec=95.0)
    # the same spectrum twice in one input (a copy under another file name): a true duplicate
    write_spec(bad / "9000" / spec_name(9000, 51630, 13), plate=9000, fiber=13)
    write_spec(bad / "9000" / spec_name(9000, 51630, 14), plate=9000, fiber=13)
    (bad / "9001").mkdir()
    (bad / "9001" / spec_name(9001, 51631, 1)).write_bytes(b"SIMPLE  =  T".ljust(2880))
    res = build("sdss_dr17", raw, tmp / "hub", client=dask_client)
    return raw, res


def test_build_rejects_bad_inputs_and_rows_by_name(built):
    raw, res = built
    m = res.manifest
    n_sim = len(list((raw / "sdss").rglob("spec-*.fits")))
    assert n_sim > 0 and m.rows.total == n_sim + 2
    [bad] = m.rejected_inputs
    assert bad.input == "bad/9001" and "spec-9001-51631-0001.fits" in bad.reason
    by_id = {r.object_id: r for r in m.rejected_rows}
    assert set(by_id) == {"9000-51630-0010", "9000-51630-0011", "9000-51630-0012", "9000-51630-0013"}
    assert "non-finite flux" in by_id["9000-51630-0010"].reason
    assert "all-zero ivar" in by_id["9000-51630-0011"].reason
    assert "dec outside" in by_id["9000-51630-0012"].reason
    assert "duplicate" in by_id["9000-51630-0013"].reason and by_id["9000-51630-0013"].input == "bad/9000"


def test_mock_spectra_in_the_hub_equal_the_raw_files(built):
    raw, res = built
    rows = {r["object_id"]: r for r in hub_table(res.path).to_pylist()}
    files = sorted((raw / "sdss").rglob("spec-*.fits"))
    kinds = set()
    for path in files:
        with fits.open(path) as hd:
            meta = "SPALL" if "SPALL" in hd else "SPECOBJ"
            c, so = hd["COADD"].data, hd[meta].data[0]
            row = rows[f"{so['PLATE']:04d}-{so['MJD']:05d}-{so['FIBERID']:04d}"]
            s = row["spectrum"]
            lam = 10 ** c["loglam"].astype(np.float64)
            np.testing.assert_array_equal(np.array(s["flux"], np.float32), c["flux"])
            np.testing.assert_array_equal(np.array(s["ivar"], np.float32), c["ivar"])
            np.testing.assert_allclose(s["lambda"], lam, rtol=2 ** -23)
            np.testing.assert_array_equal(s["mask"], (c["and_mask"] != 0) | (c["ivar"] <= 0))
            np.testing.assert_allclose(s["lsf_sigma"], np.hypot(c["wdisp"].astype(np.float64), 12 ** -0.5)
                                       * 1e-4 * np.log(10) * lam, rtol=1e-6)
            assert row["ra"] == so["PLUG_RA"] and row["dec"] == so["PLUG_DEC"]
            assert row["spectrograph"] == {"SPALL": "BOSS", "SPECOBJ": "SDSS"}[meta]
            assert row["lambda_min"] == pytest.approx(lam.min(), rel=1e-6)
            assert row["lambda_max"] == pytest.approx(lam.max(), rel=1e-6)
            if meta == "SPALL":  # the mock's BOSS files: 3,600-10,400 Å, SPECBOSS and Z_NOQSO
                assert 3599 < lam.min() < 3601 and 10390 < lam.max() < 10400 and row["specboss"] == 1
                assert row["z_noqso"] == pytest.approx(so["Z_NOQSO"]) and row["run2d"] == "v5_13_2"
            kinds.add(meta)
            assert row["z"] == pytest.approx(so["Z"]) and row["class"] == so["CLASS"].strip()
            assert row["survey"] == "sdss" and row["release"] == "dr17" and row["split"] in ("train", "val", "test")
    assert kinds == {"SPALL", "SPECOBJ"}  # the mock writes both kinds of file


def test_hub_opens_with_datasets_and_lsdb(built):
    _, res = built
    assert_opens(res.path, res.manifest.rows.total)
