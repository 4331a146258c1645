"""The hsc builder (HSC-SSP PDR3 Wide calexp patches): cutouts equal the patch pixels converted to
nanomaggies, ivar from VARIANCE, masks from the MP_* planes named in the MASK header, the patch
that holds the whole cutout chosen in an overlap, a cutout at a patch edge padded and masked, a
band without a file masked, a corrupt file rejected by name, WCS centring; the mock writer
(mmu/sim/hsc.py) builds, and an HSC build pairs with a Legacy Survey build of the same universe.

Patches are written here from the PDR3 file description (empty HDU 0 with FLUXMAG0; IMAGE, MASK
with MP_* cards, VARIANCE; a tract TAN WCS shifted per patch) with astropy, independently of the
mock writer, and the expected cutouts are sliced from the arrays written at the pixel each object
was placed on (not through the builder's WCS code).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from mmu.engine.builder import InputRejected, RawInput, get_builder
from test_builder_helpers import read_all

BANDS = ("g", "r", "i", "z", "y")
FILT = {"g": "HSC-G", "r": "HSC-R2", "i": "HSC-I2", "z": "HSC-Z", "y": "HSC-Y"}
TRACT = 9813
S = 40  # cutout size in these tests (the dataset's default is 160)
H = 260  # patch height and width
PATCHES = {"0,0": (0, 0), "1,0": (200, 0)}  # patch origin (x0, y0) on the tract grid: 60 px overlap
# planes on deliberately non-standard bits: the builder must read them from the MP_* cards
PLANES = {"SAT": 0, "DETECTED": 1, "BAD": 3, "EDGE": 4, "NO_DATA": 7, "BRIGHT_OBJECT": 9, "INTRP": 11, "CR": 12}
ZP = {"g": 27.0, "r": 27.0, "i": 27.0, "z": 28.0, "y": None}  # None: no FLUXMAG0 card (27.0 applies)
SIGMA_PSF = {"g": 0.33, "r": 0.31, "i": 0.26, "z": 0.29, "y": 0.30}  # arcsec
# objects on the tract grid (x, y): A inside 0,0; B in the overlap, wholly inside 1,0 only;
# C at the corner of 0,0 (padded); D off every patch
OBJECTS = {"A": (100.3, 120.6), "B": (245.2, 130.4), "C": (5.2, 10.1), "D": (700.0, 100.0)}


def tract_wcs() -> WCS:
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.1, 2.2]
    w.wcs.crpix = [230.5, 130.5]
    w.wcs.cd = [[-0.168 / 3600, 0], [0, 0.168 / 3600]]
    return w


def patch_wcs(patch: str) -> WCS:
    w = tract_wcs().deepcopy()
    x0, y0 = PATCHES[patch]
    w.wcs.crpix = [w.wcs.crpix[0] - x0, w.wcs.crpix[1] - y0]
    return w


def planes(patch: str, band: str):
    """The (image, mask, variance) arrays of one patch file (deterministic per patch and band)."""
    rng = np.random.default_rng([BANDS.index(band), int(patch[0])])
    image = rng.normal(0, 5.0, (H, H)).astype(np.float32)
    variance = rng.uniform(10, 40, (H, H)).astype(np.float32)
    mask = np.zeros((H, H), np.int32)
    mask[rng.random((H, H)) < 0.3] |= 1 << PLANES["DETECTED"]  # a flag, not a bad pixel
    mask[rng.random((H, H)) < 0.05] |= 1 << PLANES["BAD"]
    mask[rng.random((H, H)) < 0.05] |= 1 << PLANES["SAT"]
    mask[rng.random((H, H)) < 0.05] |= 1 << PLANES["BRIGHT_OBJECT"]  # not masked by default
    mask[:, :3] |= 1 << PLANES["EDGE"]
    variance[rng.random((H, H)) < 0.02] = 0.0
    variance[rng.random((H, H)) < 0.02] = -1.0
    variance[rng.random((H, H)) < 0.02] = np.nan
    image[rng.random((H, H)) < 0.01] = np.nan
    return image, mask, variance


def calexp(root: Path, band: str, patch: str) -> Path:
    f = FILT[band]
    return root / "deepCoadd-results" / f / str(TRACT) / patch / f"calexp-{f}-{TRACT}-{patch}.fits"


def write_raw(root: Path, drop=(), catalog=True, psf_columns=True, bad_dec_row=None) -> Path:
    """A tract of two overlapping patches in five bands and its catalogue; `drop`: (band, patch)
    files not written."""
    root = root / "hsc" / "pdr3_wide"
    for patch in PATCHES:
        hdr = patch_wcs(patch).to_header()
        for b in BANDS:
            if (b, patch) in drop:
                continue
            image, mask, variance = planes(patch, b)
            primary = fits.PrimaryHDU()
            if ZP[b] is not None:
                primary.header["FLUXMAG0"] = 10 ** (0.4 * ZP[b])
            mhdr = hdr.copy()
            for name, bit in PLANES.items():
                mhdr[f"HIERARCH MP_{name}"] = bit  # as the pipeline writes them
            path = calexp(root, b, patch)
            path.parent.mkdir(parents=True, exist_ok=True)
            fits.HDUList([primary, fits.ImageHDU(image, hdr, name="IMAGE"), fits.ImageHDU(mask, mhdr, name="MASK"),
                          fits.ImageHDU(variance, hdr, name="VARIANCE")]).writeto(path, overwrite=True)
    if catalog:
        xy = np.array(list(OBJECTS.values()))
        ra, dec = tract_wcs().all_pix2world(xy[:, 0], xy[:, 1], 0)
        if bad_dec_row is not None:
            dec[bad_dec_row] = 95.0
        n = len(xy)
        cols = [fits.Column("object_id", "K", array=np.arange(n) + 10**15), fits.Column("ra", "D", array=ra),
                fits.Column("dec", "D", array=dec), fits.Column("tract", "J", array=np.full(n, TRACT)),
                fits.Column("i_cmodel_mag", "E", array=np.array([20.0, 21.0, 22.0, 23.0]))]
        if psf_columns:
            for b in BANDS:
                for k in ("11", "22"):
                    cols.append(fits.Column(f"{b}_sdssshape_psf_shape{k}", "E", array=np.full(n, SIGMA_PSF[b] ** 2)))
        path = root / "catalog" / "query.fits"
        path.parent.mkdir(parents=True, exist_ok=True)
        fits.BinTableHDU.from_columns(cols).writeto(path, overwrite=True)
    return root


def builder(**cfg):
    return get_builder("hsc").from_options({"cutout_size": S, **cfg})


def the_input(b, raw) -> RawInput:
    items = b.list_inputs(raw)
    assert [i.key for i in items] == [f"pdr3_wide/tract-{TRACT}"]
    return items[0]


def expected(patch: str, band: str, x: float, y: float, bad_planes=("BAD", "SAT", "EDGE", "NO_DATA", "INTRP", "CR")):
    """The cutout (flux, ivar, mask) of an object at tract pixel (x, y) sliced by hand."""
    image, mask, variance = planes(patch, band)
    to_nmgy = 10 ** (-0.4 * ((ZP[band] or 27.0) - 22.5))
    cx, cy = int(round(x)) - PATCHES[patch][0], int(round(y)) - PATCHES[patch][1]
    flux, ivar, bad = np.zeros((S, S)), np.zeros((S, S)), np.ones((S, S), bool)
    bits = sum(1 << PLANES[p] for p in bad_planes)
    for r in range(S):
        for c in range(S):
            yy, xx = cy - S // 2 + r, cx - S // 2 + c
            if not (0 <= yy < H and 0 <= xx < H):
                continue
            v, f = float(variance[yy, xx]), float(image[yy, xx])
            good = np.isfinite(v) and v > 0 and np.isfinite(f)
            flux[r, c] = f * to_nmgy if np.isfinite(f) else 0.0
            ivar[r, c] = 1.0 / (v * to_nmgy**2) if good else 0.0
            bad[r, c] = bool(mask[yy, xx] & bits) or not good
    return flux, ivar, bad


def rows_by_id(table):
    return {int(o) - 10**15: i for i, o in enumerate(table["object_id"].to_pylist())}


def test_cutouts_equal_patch_pixels_in_nanomaggies_with_ivar_and_mask(tmp_path):
    raw = write_raw(tmp_path)
    b = builder()
    t, rej = read_all(b, the_input(b, raw))
    ids = rows_by_id(t)
    assert sorted(ids) == [0, 1, 2]  # A, B, C; D rejected
    img = t["image"].to_pylist()
    for k, name, patch in ((0, "A", "0,0"), (1, "B", "1,0"), (2, "C", "0,0")):
        row = img[ids[k]]
        assert t["cutout_patch"][ids[k]].as_py() == patch
        assert row["band"] == [f"hsc-{x}" for x in BANDS]
        for j, band in enumerate(BANDS):
            flux, ivar, bad = expected(patch, band, *OBJECTS[name])
            np.testing.assert_allclose(np.array(row["flux"][j]), flux, rtol=1e-6, atol=1e-9)
            np.testing.assert_allclose(np.array(row["ivar"][j]), ivar, rtol=1e-6)
            np.testing.assert_array_equal(np.array(row["mask"][j]), bad)
        np.testing.assert_allclose(row["psf_fwhm"], [2.35482 * SIGMA_PSF[x] for x in BANDS], rtol=1e-5)
        assert row["scale"] == pytest.approx(0.168, rel=1e-6)
    assert t["bands_observed"][0].as_py() == [f"hsc-{x}" for x in BANDS]
    assert t["filters"][0].as_py() == ["HSC-G", "HSC-R2", "HSC-I2", "HSC-Z", "HSC-Y"]
    assert t["survey"][0].as_py() == "hsc" and t["release"][0].as_py() == "pdr3"
    assert t["hsc_object_id"][ids[1]].as_py() == 10**15 + 1 and t["tract"][0].as_py() == TRACT
    assert t["i_cmodel_mag"][ids[2]].as_py() == pytest.approx(22.0)
    assert t["g_cmodel_mag"][0].as_py() is None  # not in the query: null
    assert len(rej) == 1 and "object_id 1000000000000003" in rej[0].reason and "no readable patch" in rej[0].reason


def test_unit_conversion_and_mask_planes_by_hand(tmp_path):
    """One pixel, worked out: z has FLUXMAG0 = 10^(0.4 x 28) -> x 10^-2.2; y has none -> 27.0."""
    raw = write_raw(tmp_path)
    b = builder()
    t, _ = read_all(b, the_input(b, raw))
    row = t["image"].to_pylist()[rows_by_id(t)[0]]
    image, mask, variance = planes("0,0", "z")
    cx, cy = 100, 121  # A at (100.3, 120.6)
    for r, c in ((S // 2, S // 2), (3, 7)):
        yy, xx = cy - S // 2 + r, cx - S // 2 + c
        f, v = image[yy, xx], variance[yy, xx]
        if np.isfinite(f) and np.isfinite(v) and v > 0:
            assert row["flux"][3][r][c] == pytest.approx(f * 10**-2.2, rel=1e-6)
            assert row["ivar"][3][r][c] == pytest.approx(10**4.4 / v, rel=1e-6)
    # a DETECTED-only or BRIGHT_OBJECT-only pixel is good; a SAT one is bad (bit 0 in this header)
    image, mask, variance = planes("0,0", "g")
    win = (slice(cy - S // 2, cy + S // 2), slice(cx - S // 2, cx + S // 2))
    m, v, f = mask[win], variance[win], image[win]
    good = np.isfinite(v) & (v > 0) & np.isfinite(f)
    got = np.array(row["mask"][0])
    flag_only = good & ((m & ~((1 << PLANES["DETECTED"]) | (1 << PLANES["BRIGHT_OBJECT"]))) == 0) & (m != 0)
    assert flag_only.any() and not got[flag_only].any()
    sat = (m & 1) != 0
    assert sat.any() and got[sat].all()
    # the mask planes are a config choice: BRIGHT_OBJECT added masks those pixels too
    b2 = builder(mask_planes=["BAD", "SAT", "EDGE", "NO_DATA", "INTRP", "CR", "BRIGHT_OBJECT"])
    t2, _ = read_all(b2, the_input(b2, raw))
    got2 = np.array(t2["image"].to_pylist()[rows_by_id(t2)[0]]["mask"][0])
    bright = good & ((m & (1 << PLANES["BRIGHT_OBJECT"])) != 0)
    assert bright.any() and got2[bright].all() and not got[bright & (m == (1 << PLANES["BRIGHT_OBJECT"]))].any()


def test_objects_are_centred_by_the_wcs(tmp_path):
    """The object's sky position falls within 0.5 px of the cutout's centre pixel (S//2, S//2)."""
    raw = write_raw(tmp_path)
    b = builder()
    t, _ = read_all(b, the_input(b, raw))
    for i in range(t.num_rows):
        patch = t["cutout_patch"][i].as_py()
        w = patch_wcs(patch)
        x, y = w.all_world2pix(t["ra"][i].as_py(), t["dec"][i].as_py(), 0)
        cx, cy = np.floor(x + 0.5), np.floor(y + 0.5)
        cut = w.deepcopy()  # the cutout's WCS: the patch WCS shifted to the cutout origin
        cut.wcs.crpix = [w.wcs.crpix[0] - (cx - S // 2), w.wcs.crpix[1] - (cy - S // 2)]
        u, v = cut.all_world2pix(t["ra"][i].as_py(), t["dec"][i].as_py(), 0)
        assert abs(u - S // 2) <= 0.5 and abs(v - S // 2) <= 0.5


def test_overlap_takes_the_patch_holding_the_whole_cutout_and_edge_policy(tmp_path):
    raw = write_raw(tmp_path)
    # B (tract x 245) lies in both patches; 0,0 ends at x 260, so only 1,0 holds its 40 px cutout
    b = builder()
    t, _ = read_all(b, the_input(b, raw))
    assert t["cutout_patch"][rows_by_id(t)[1]].as_py() == "1,0"
    # C at the corner: kept padded (pixels off the patch: flux 0, ivar 0, masked)
    row = t["image"].to_pylist()[rows_by_id(t)[2]]
    mask, ivar = np.array(row["mask"][2]), np.array(row["ivar"][2])
    assert mask[:S // 2 - 10].all() and mask[:, :S // 2 - 5].all() and (ivar[:S // 2 - 10] == 0).all()
    # skip: C rejected with its reason
    b = builder(edge_policy="skip")
    t, rej = read_all(b, the_input(b, raw))
    assert sorted(rows_by_id(t)) == [0, 1]
    assert any("reaches past the edge" in r.reason and r.object_id == str(10**15 + 2) for r in rej)


def test_bad_coordinates_rejected_with_the_row(tmp_path):
    raw = write_raw(tmp_path, bad_dec_row=0)
    b = builder()
    t, rej = read_all(b, the_input(b, raw))
    assert sorted(rows_by_id(t)) == [1, 2]
    r = next(r for r in rej if r.object_id == str(10**15))
    assert "out of range" in r.reason and r.column == "dec" and r.row == 0 and r.file == "query.fits"


def test_a_band_without_a_file_is_masked_and_recorded(tmp_path):
    raw = write_raw(tmp_path, drop={("z", "1,0")})
    b = builder()
    t, rej = read_all(b, the_input(b, raw))
    assert len(rej) == 1  # only D
    ids = rows_by_id(t)
    row = t["image"].to_pylist()[ids[1]]
    assert not np.array(row["flux"][3]).any() and not np.array(row["ivar"][3]).any()
    assert np.array(row["mask"][3]).all() and row["psf_fwhm"][3] == 0
    assert t["bands_observed"][ids[1]].as_py() == ["hsc-g", "hsc-r", "hsc-i", "hsc-y"]
    assert t["bands_observed"][ids[0]].as_py() == [f"hsc-{x}" for x in BANDS]
    assert np.array(t["image"].to_pylist()[ids[0]]["ivar"][3]).any()  # A (patch 0,0) has its z
    assert b.manifest_extra() == {"input_notes": {"patches_missing_bands": {str(TRACT): {"z": ["1,0"]}}}}


def test_a_corrupt_file_rejects_its_objects_by_name(tmp_path):
    raw = write_raw(tmp_path)
    bad = calexp(raw, "i", "1,0")
    bad.write_bytes(bad.read_bytes()[:5000])  # truncated mid-file
    b = builder()
    t, rej = read_all(b, the_input(b, raw))
    assert sorted(rows_by_id(t)) == [0, 2]  # B's patch has the corrupt file
    mine = [r for r in rej if r.object_id == str(10**15 + 1)]
    assert len(mine) == 1 and mine[0].file == bad.name and "truncated" in mine[0].reason
    assert bad.name in mine[0].reason


@pytest.mark.parametrize("kwargs, words", [
    ({"catalog": False}, "no catalogue rows with tract = 9813"),
    ({"psf_columns": False}, "missing column(s) ['g_sdssshape_psf_shape11'"),
])
def test_bad_tract_rejected_by_name(tmp_path, kwargs, words):
    raw = write_raw(tmp_path, **kwargs)
    b = builder()
    with pytest.raises(InputRejected, match=None) as e:
        read_all(b, the_input(b, raw))
    assert words in str(e.value)


def test_catalogue_without_patches_and_unreadable_catalogue(tmp_path):
    raw = write_raw(tmp_path)
    for p in (raw / "deepCoadd-results").rglob("*.fits"):
        p.unlink()
    (raw / "catalog" / "broken.fits").write_bytes(b"SIMPLE  = T" + b" " * 100)
    b = builder()
    items = b.list_inputs(raw)
    assert [i.key for i in items] == ["pdr3_wide/catalog/broken.fits", f"pdr3_wide/tract-{TRACT}"]
    for item, words in zip(items, ("broken.fits: file is truncated", "no calexp files")):
        with pytest.raises(InputRejected) as e:
            read_all(b, item)
        assert words in str(e.value)


def test_config_is_checked():
    with pytest.raises(ValueError, match="not HSC broad bands"):
        get_builder("hsc").from_options({"bands": ["u"]})
    with pytest.raises(ValueError, match="edge_policy"):
        get_builder("hsc").from_options({"edge_policy": "crop"})


def test_fetch_needs_patches_and_an_account(tmp_path, monkeypatch):
    from mmu.builders import hsc as hsc_mod

    b = get_builder("hsc")()
    with pytest.raises(ValueError, match="tract/x,y"):
        b.fetch(tmp_path)
    with pytest.raises(ValueError, match="not 'tract/x,y'"):
        b.fetch(tmp_path, patches=["9813-4-4"])
    monkeypatch.delenv(hsc_mod.USER_ENV, raising=False)
    monkeypatch.delenv(hsc_mod.PASSWORD_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    with pytest.raises(ValueError, match="HSC_SSP_CAS_USER"):
        b.fetch(tmp_path, patches=["9813/4,4"])
    (tmp_path / ".netrc").write_text(f"machine {hsc_mod.ARCHIVE_HOST} login alice password s3cret\n")
    (tmp_path / ".netrc").chmod(0o600)
    assert hsc_mod.credentials() == ("alice", "s3cret")
    monkeypatch.setenv(hsc_mod.USER_ENV, "bob")
    monkeypatch.setenv(hsc_mod.PASSWORD_ENV, "pw")
    assert hsc_mod.credentials() == ("bob", "pw")


def test_fetch_downloads_with_basic_auth_and_falls_back_to_r_and_i(tmp_path, monkeypatch):
    """A local archive that asks for HTTP basic auth, has HSC-R (not R2) and no y file."""
    import base64
    import functools
    import http.server
    import threading

    from mmu.builders import hsc as hsc_mod

    served = write_raw(tmp_path / "archive", drop={("y", "0,0")})
    rdir = served / "deepCoadd-results"
    (rdir / "HSC-R2").rename(rdir / "HSC-R")
    for p in list((rdir / "HSC-R").rglob("*.fits")):
        p.rename(p.with_name(p.name.replace("HSC-R2", "HSC-R")))
    want = "Basic " + base64.b64encode(b"alice:s3cret").decode()
    seen = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            seen.append(self.path)
            if self.headers.get("Authorization") != want:
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="HSC"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            super().do_GET()

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(served)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        monkeypatch.setattr(hsc_mod, "ARCHIVE", f"http://127.0.0.1:{srv.server_port}/")
        monkeypatch.setenv(hsc_mod.USER_ENV, "alice")
        monkeypatch.setenv(hsc_mod.PASSWORD_ENV, "s3cret")
        raw = tmp_path / "raw"
        got = get_builder("hsc")().fetch(raw, patches=[f"{TRACT}/0,0", f"{TRACT}/1,0"], limit=1)
        names = sorted(Path(p).name for p in got)
        assert names == [f"calexp-{f}-{TRACT}-0,0.fits" for f in ("HSC-G", "HSC-I2", "HSC-R", "HSC-Z")]
        assert (raw / "hsc/pdr3_wide/deepCoadd-results/HSC-R" / str(TRACT) / "0,0").is_dir()
        monkeypatch.setenv(hsc_mod.PASSWORD_ENV, "wrong")
        from mmu.builders._common import FetchError
        with pytest.raises(FetchError, match="account was refused"):
            get_builder("hsc")().fetch(tmp_path / "raw2", patches=[f"{TRACT}/1,0"])
    finally:
        srv.shutdown()
    import urllib.request
    assert urllib.request._opener is None or not any(
        isinstance(h, urllib.request.HTTPBasicAuthHandler) for h in urllib.request._opener.handlers)


# --- the mock writer (mmu/sim/hsc.py) ------------------------------------------------------------

def mock_galaxies():
    import pandas as pd

    ra0, dec0 = 35.0, -4.5
    # tract pixel offsets (arcsec) of three pure-disk galaxies, one in a patch overlap
    off = np.array([[0.0, 0.0], [40.0, 25.0], [-30.0, -50.0]])
    rows = {"ra": ra0 + off[:, 0] / 3600 / np.cos(np.radians(dec0)), "dec": dec0 + off[:, 1] / 3600,
            "tile": [0, 0, 0], "bulge_frac": [0.0, 0.0, 0.0], "disk_hlr_arcsec": [0.6, 0.4, 0.8],
            "bulge_hlr_arcsec": [0.3, 0.3, 0.3], "disk_q": [0.8, 0.5, 0.9], "bulge_q": [0.8, 0.8, 0.8],
            "pa_deg": [10.0, 80.0, 150.0], "hlr_arcsec": [0.6, 0.4, 0.8]}
    for j, b in enumerate(BANDS):
        rows[f"flux_hsc_{b}"] = [20.0 + 5 * j, 8.0 + j, 40.0 - 3 * j]  # nanomaggies
    return pd.DataFrame(rows)


def test_mock_patches_build_with_the_galaxies_flux_and_centred(tmp_path):
    from mmu.sim import hsc as sim_hsc

    gal = mock_galaxies()
    m = sim_hsc.write_hsc(gal, tmp_path, np.random.default_rng(1), seed=5, patch_size=300, overlap=100,
                          missing={(sim_hsc.TRACT_OFFSET, "4,4"): ["y"]})
    assert m["objects"] == 3
    # the format: empty HDU 0 with FLUXMAG0, IMAGE / MASK (HIERARCH MP_* cards) / VARIANCE
    path = Path(m["files"][0])
    with fits.open(path) as hd:
        assert [h.name for h in hd] == ["PRIMARY", "IMAGE", "MASK", "VARIANCE"] and hd[0].data is None
        assert hd[0].header["FLUXMAG0"] == pytest.approx(10 ** 10.8)
        assert hd["MASK"].header["MP_NO_DATA"] == 8 and hd["MASK"].data.dtype.kind == "i"
        assert WCS(hd["IMAGE"].header).proj_plane_pixel_scales()[0].to_value("arcsec") == pytest.approx(0.168)
    b = get_builder("hsc")()  # the dataset's 160 px cutouts
    items = b.list_inputs(tmp_path)
    t, rej = read_all(b, items[0])
    assert rej == [] and t.num_rows == 3
    truth = gal.set_index(np.round(gal["ra"], 8))
    for i, row in enumerate(t["image"].to_pylist()):
        g = truth.loc[round(t["ra"][i].as_py(), 8)]
        observed = t["bands_observed"][i].as_py()
        for j, band in enumerate(BANDS):
            flux, ivar = np.array(row["flux"][j]), np.array(row["ivar"][j])
            if f"hsc-{band}" not in observed:
                assert t["cutout_patch"][i].as_py() == "4,4" and not ivar.any()
                continue
            noise = np.sqrt(np.sum(1.0 / ivar[ivar > 0]))  # 1-sigma of the cutout sum
            assert abs(flux[ivar > 0].sum() - g[f"flux_hsc_{band}"]) < 5 * noise + 0.01 * g[f"flux_hsc_{band}"]
            peak = np.unravel_index(np.argmax(np.where(np.array(row["mask"][j]), -np.inf, flux)), flux.shape)
            assert abs(peak[0] - 80) <= 1 and abs(peak[1] - 80) <= 1
            assert row["psf_fwhm"][j] == pytest.approx(sim_hsc.SEEING[band], rel=1e-4)
    # tile-compressed planes (compress=True) read back as the same cutouts within the quantisation
    small = sim_hsc.write_hsc(gal, tmp_path / "rice", np.random.default_rng(1), seed=5, patch_size=300,
                              overlap=100, missing={(sim_hsc.TRACT_OFFSET, "4,4"): ["y"]}, compress=True)
    assert sum(Path(f).stat().st_size for f in small["files"]) < 0.5 * sum(Path(f).stat().st_size
                                                                         for f in m["files"])
    t2, rej2 = read_all(b, b.list_inputs(tmp_path / "rice")[0])
    assert rej2 == [] and t2["object_id"].to_pylist() == t["object_id"].to_pylist()
    for r1, r2 in zip(t["image"].to_pylist(), t2["image"].to_pylist()):
        f1, f2, iv = (np.array(r[k]) for r, k in ((r1, "flux"), (r2, "flux"), (r1, "ivar")))
        assert np.all(np.abs(f1 - f2)[iv > 0] * np.sqrt(iv[iv > 0]) < 0.5)
        np.testing.assert_array_equal(np.array(r1["mask"]), np.array(r2["mask"]))
    # same arguments -> same bytes
    again = sim_hsc.write_hsc(gal, tmp_path / "again", np.random.default_rng(1), seed=5, patch_size=300,
                              overlap=100, missing={(sim_hsc.TRACT_OFFSET, "4,4"): ["y"]})
    for a, c in zip(m["files"] + [m["catalog"]], again["files"] + [again["catalog"]]):
        assert Path(a).read_bytes() == Path(c).read_bytes()


@pytest.mark.slow  # the shared mock universe, then an HSC build, a Legacy Survey build and the match: ~40 s
def test_hsc_pairs_with_legacy_survey_of_the_same_universe(sim_raw, tmp_path, dask_client):
    import pandas as pd
    import pyarrow.parquet as pq

    from mmu.engine.build import build
    from mmu.pairing.crossmatch import crossmatch
    from mmu.sim.hsc import write_hsc

    gal = pd.read_parquet(sim_raw / "sim_truth" / "galaxies.parquet")
    g0 = gal[gal["tile"] == gal["tile"].min()]
    ra0, dec0 = np.median(g0["ra"]), np.median(g0["dec"])
    box = g0[(abs(g0["ra"] - ra0) < 0.01) & (abs(g0["dec"] - dec0) < 0.01)]
    assert len(box) >= 5
    write_hsc(box, tmp_path / "raw", np.random.default_rng(3), seed=7, patch_size=400, overlap=100)
    hub = tmp_path / "hub"
    build("hsc_pdr3_wide", tmp_path / "raw", hub, client=dask_client)
    build("legacysurvey_dr10_south", sim_raw, hub, client=dask_client)
    res = crossmatch(["hsc_pdr3_wide", "legacysurvey_dr10_south"], hub, "hsc_x_ls", client=dask_client)
    t = pq.read_table(hub / "hsc_x_ls" / "hsc_x_ls" / "dataset").to_pandas()
    assert res.manifest.rows.total == len(t) >= len(box) - 1  # a blended LS source may be lost
    # each pair is the same truth galaxy: both positions within 0.3" of one galaxy of the box
    for _, r in t.iterrows():
        d_hsc = np.hypot((box["ra"] - r["hsc_ra"]) * np.cos(np.radians(dec0)), box["dec"] - r["hsc_dec"]) * 3600
        k = int(np.argmin(d_hsc.to_numpy()))
        d_ls = np.hypot((box["ra"].iloc[k] - r["legacysurvey_ra"]) * np.cos(np.radians(dec0)),
                        box["dec"].iloc[k] - r["legacysurvey_dec"]) * 3600
        assert d_hsc.iloc[k] < 0.01 and d_ls < 0.3
    assert {c for c in t.columns if c.endswith("image")} == {"hsc_image", "legacysurvey_image"}
