"""The legacysurvey builder: WCS cutouts equal the brick pixels, per-band masks from maskbits,
edge policy, selection cuts, brick_primary, a band without images masked (rows kept), and bad
inputs rejected by name.

Bricks are written here from the DR10 file descriptions (fpack-compressed image / invvar /
maskbits with a TAN WCS, a tractor catalogue), independently of the mock observatory, and read
back with fitsio (an independent FITS reader) where the test needs the pixels.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from mmu.engine.builder import InputRejected, get_builder
from test_builder_helpers import assert_opens, hub_table, link_tree, read_all

BANDS = ("g", "r", "i", "z")
SIZE = 300  # pixels of the mock brick image (real bricks: 3600)


def brick_wcs(ra0=150.125, dec0=2.125) -> WCS:
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [ra0, dec0]
    w.wcs.crpix = [SIZE / 2 + 0.5, SIZE / 2 + 0.5]
    w.wcs.cd = [[-0.262 / 3600, 0], [0, 0.262 / 3600]]
    return w


def write_brick(root: Path, brick="1501p021", sources=None, drop_file=None, drop_column=None, nan_at=None,
                zero_ivar=False, dup_objid=False, region="south", bad_dec_row=None, drop_bands=(),
                no_tractor=False, crpix_shift=None):
    """Sources: list of (x, y, type, r_flux, brick_primary) in 0-indexed pixel coordinates.
    `drop_bands`: bands without image/invvar files (no coverage, as DR10 south's i-band).
    `crpix_shift`: {band: (dx, dy)} moves that band's WCS reference pixel (its own pixel grid)."""
    rng = np.random.default_rng(0)
    wcs = brick_wcs()
    sources = sources or [(150.2, 149.7, "SER", 10.0, True), (60.0, 200.0, "PSF", 2.0, True),
                          (230.4, 80.6, "EXP", 0.5, True), (20.0, 150.0, "REX", 5.0, False)]
    coadd = root / region / "coadd" / brick[:3] / brick
    coadd.mkdir(parents=True, exist_ok=True)
    header = wcs.to_header()
    maskbits = np.zeros((SIZE, SIZE), np.int16)
    maskbits[140:145, 140:145] |= 1 << 2  # SATUR_G: g bad only
    maskbits[150:152, :] |= np.int16(-(1 << 15))  # ALLMASK_I (bit 15 = int16 sign bit)
    maskbits[100:110, 100:110] |= 1 << 1  # BRIGHT: a flag, not a bad pixel
    for b in BANDS:
        img = rng.normal(0, 0.01, (SIZE, SIZE)).astype(np.float32)
        iv = np.full((SIZE, SIZE), 1e4, np.float32)
        iv[155:158, 148:151] = 0
        if nan_at is not None:
            img[nan_at[1], nan_at[0]] = np.nan
        if zero_ivar:
            iv[:] = 0
        band_header = header
        if crpix_shift and b in crpix_shift:
            band_header = header.copy()
            band_header["CRPIX1"] += crpix_shift[b][0]
            band_header["CRPIX2"] += crpix_shift[b][1]
        for kind, data in (("image", img), ("invvar", iv)):
            name = f"legacysurvey-{brick}-{kind}-{b}.fits.fz"
            if name == drop_file or b in drop_bands:
                continue
            h = fits.CompImageHDU(data, header=band_header, compression_type="RICE_1", quantize_level=-0.0001)
            if kind == "image":
                h.header["BUNIT"] = "nanomaggy"
            fits.HDUList([fits.PrimaryHDU(), h]).writeto(coadd / name, overwrite=True)
    if drop_file != f"legacysurvey-{brick}-maskbits.fits.fz":
        fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(maskbits, header=header, compression_type="RICE_1")]) \
            .writeto(coadd / f"legacysurvey-{brick}-maskbits.fits.fz", overwrite=True)
    x, y = np.array([s[0] for s in sources]), np.array([s[1] for s in sources])
    ra, dec = wcs.all_pix2world(x, y, 0)
    if bad_dec_row is not None:
        dec[bad_dec_row] = 95.0
    n = len(sources)
    objid = np.arange(n) if not dup_objid else np.r_[np.arange(n - 1), n - 2]
    cols = {"release": ("I", np.full(n, 10000)), "brickid": ("J", np.full(n, 123456)),
            "brickname": ("8A", [brick] * n), "objid": ("J", objid),
            "brick_primary": ("L", [s[4] for s in sources]), "type": ("3A", [s[2] for s in sources]),
            "ra": ("D", ra), "dec": ("D", dec), "maskbits": ("J", np.zeros(n)),
            "bx": ("E", x), "by": ("E", y), "shape_r": ("E", np.ones(n)), "flux_r": ("E", [s[3] for s in sources])}
    for b in BANDS:
        cols[f"psfsize_{b}"] = ("E", np.full(n, 1.2 + 0.1 * BANDS.index(b)))
        cols.setdefault(f"flux_{b}", ("E", np.ones(n)))
    cat = fits.BinTableHDU.from_columns([fits.Column(k, f, array=np.asarray(a)) for k, (f, a) in cols.items()
                                         if k != drop_column])
    tdir = root / region / "tractor" / brick[:3]
    if no_tractor:
        return coadd, tdir / f"tractor-{brick}.fits"
    tdir.mkdir(parents=True, exist_ok=True)
    fits.HDUList([fits.PrimaryHDU(), cat]).writeto(tdir / f"tractor-{brick}.fits", overwrite=True)
    return coadd, tdir / f"tractor-{brick}.fits"


def make(**config):
    cls = get_builder("legacysurvey")
    return cls.from_options({"bands": list(BANDS), "cutout_size": 64, **config})


def test_cutouts_equal_brick_pixels(tmp_path):
    coadd, tractor = write_brick(tmp_path)
    b = make()
    [item] = b.list_inputs(tmp_path)
    assert item.key == "south/1501p021" and len(item.paths) == 10
    table, rej = read_all(b, item)
    assert table.num_rows == 4 and rej == []
    row = table.to_pylist()[0]
    assert row["object_id"] == "1501p021-0" and row["type"] == "SER" and row["brick_primary"] is True
    assert row["ls_id"] == (10000 << 40) | (123456 << 16) | 0
    img = row["image"]
    assert img["band"] == ["legacysurvey-g", "legacysurvey-r", "legacysurvey-i", "legacysurvey-z"]
    assert img["scale"] == pytest.approx(0.262, rel=1e-5)
    np.testing.assert_allclose(img["psf_fwhm"], [1.2, 1.3, 1.4, 1.5], rtol=1e-6)
    flux = np.array(img["flux"], np.float32)
    with fits.open(tractor) as t:
        ra, dec = t[1].data["ra"][0], t[1].data["dec"][0]
    for j, band in enumerate(BANDS):
        with fits.open(coadd / f"legacysurvey-1501p021-image-{band}.fits.fz") as hd:
            x, y = WCS(hd[1].header).all_world2pix(ra, dec, 0)
            x0, y0 = int(np.floor(x + 0.5)) - 32, int(np.floor(y + 0.5)) - 32
            np.testing.assert_array_equal(flux[j], hd[1].data[y0:y0 + 64, x0:x0 + 64])
    assert (x0, y0) == (118, 118)  # pixel (150.2, 149.7) rounds to (150, 150), at index (32, 32)
    mask = np.array(img["mask"])
    sat = np.zeros((64, 64), bool)
    sat[140 - y0:145 - y0, 140 - x0:145 - x0] = True
    zero_iv = np.zeros((64, 64), bool)
    zero_iv[155 - y0:158 - y0, 148 - x0:151 - x0] = True
    allmask_i = np.zeros((64, 64), bool)
    allmask_i[150 - y0:152 - y0, :] = True
    np.testing.assert_array_equal(mask[0], sat | zero_iv)  # SATUR_G masks g only
    np.testing.assert_array_equal(mask[1], zero_iv)  # BRIGHT (bit 1) is not a bad pixel
    np.testing.assert_array_equal(mask[2], allmask_i | zero_iv)
    np.testing.assert_array_equal(mask[3], zero_iv)
    assert np.array(img["ivar"])[1][~zero_iv].min() > 0


def test_edge_policy_pad_and_skip(tmp_path):
    # source 3 (x=20) is 12 px from the left edge: a 64 px cutout reaches 12 px past it
    coadd, _ = write_brick(tmp_path)
    table, rej = read_all(make(), make().list_inputs(tmp_path)[0])
    row = table.to_pylist()[3]
    assert row["brick_primary"] is False
    mask, ivar, flux = (np.array(row["image"][k]) for k in ("mask", "ivar", "flux"))
    assert mask[:, :, :12].all() and (ivar[:, :, :12] == 0).all() and (flux[:, :, :12] == 0).all()
    assert not mask[1, :, 12:].all()
    table, rej = read_all(make(edge_policy="skip"), make().list_inputs(tmp_path)[0])
    assert table.num_rows == 3
    [r] = rej
    assert r.row == 3 and "tractor-1501p021.fits row 3" in r.reason and "edge" in r.reason


def test_source_off_the_image_and_bad_coordinates_rejected(tmp_path):
    write_brick(tmp_path, sources=[(150, 150, "SER", 1, True), (-80, 150, "SER", 1, True),
                                   (150, 100, "SER", 1, True)], bad_dec_row=2)
    table, rej = read_all(make(), make().list_inputs(tmp_path)[0])
    assert table.num_rows == 1
    r1, r2 = sorted(rej, key=lambda r: r.row)
    assert "outside the 300x300" in r1.reason and r1.object_id == "1501p021-1"
    assert "row 2" in r2.reason and "dec" in r2.reason and "out of range" in r2.reason


@pytest.mark.parametrize("policy", ["pad", "skip"])
def test_band_with_its_own_wcs_and_edges(tmp_path, policy):
    """A band whose WCS differs (z shifted by (+7, -5) px) is cut around its own projection of each
    source, and the edge checks use every band's pixel: many sources near the four edges and
    corners, each compared with fitsio's decompression of the planes (read independently)."""
    import fitsio

    rng = np.random.default_rng(5)
    xy = np.r_[rng.uniform(-10, 310, (40, 2)), [[1, 1], [298, 298], [0, 299], [299, 0], [150, 150], [36, 150],
                                                [150, 36], [263, 150], [150, 262]]]
    sources = [(float(x), float(y), "SER", 1.0, True) for x, y in xy]
    coadd, tractor = write_brick(tmp_path, sources=sources, crpix_shift={"z": (7, -5)})
    b = make(edge_policy=policy)
    table, rej = read_all(b, b.list_inputs(tmp_path)[0])
    cat = fitsio.read(str(tractor), ext=1)
    maskbits = fitsio.read(str(coadd / "legacysurvey-1501p021-maskbits.fits.fz"), ext=1).astype(np.int64)
    planes = {}
    for band in BANDS:
        img = fitsio.read(str(coadd / f"legacysurvey-1501p021-image-{band}.fits.fz"), ext=1)
        iv = np.maximum(fitsio.read(str(coadd / f"legacysurvey-1501p021-invvar-{band}.fits.fz"), ext=1), 0)
        hdr = fitsio.read_header(str(coadd / f"legacysurvey-1501p021-image-{band}.fits.fz"), ext=1)
        w = WCS({k: hdr[k] for k in hdr.keys()
                 if k.startswith(("CTYPE", "CRVAL", "CRPIX", "CDELT", "CUNIT", "PC", "CD", "RADESYS", "LONPOLE",
                                  "LATPOLE"))})
        x, y = w.all_world2pix(cat["ra"], cat["dec"], 0)
        planes[band] = (img, iv, np.floor(x + 0.5).astype(int), np.floor(y + 0.5).astype(int))
    expect_kept, expect_rej = [], {}
    for i in range(len(cat)):
        cx = {band: (planes[band][2][i], planes[band][3][i]) for band in BANDS}
        off = [band for band in BANDS if not (0 <= cx[band][0] < SIZE and 0 <= cx[band][1] < SIZE)]
        edge = [band for band in BANDS if not (32 <= cx[band][0] <= SIZE - 32 and 32 <= cx[band][1] <= SIZE - 32)]
        first = next((band for band in BANDS if band in off or (policy == "skip" and band in edge)), None)
        if first is None:
            expect_kept.append(i)
        else:
            expect_rej[i] = "outside" if first in off else "edge"
    assert planes["z"][2][0] - planes["g"][2][0] == 7 and planes["z"][3][0] - planes["g"][3][0] == -5
    assert {r.row: ("outside" if "outside" in r.reason else "edge") for r in rej} == expect_rej
    assert [r.row for r in rej] == sorted(expect_rej)  # rejections come in row order
    assert table.column("objid").to_pylist() == expect_kept
    assert any(v == "outside" for v in expect_rej.values()) and len(expect_kept) >= 10
    padded = 0
    for k, i in enumerate(expect_kept):
        image = table.column("image")[k].as_py()
        for j, band in enumerate(BANDS):
            img, iv, px, py = planes[band]
            x0, y0 = px[i] - 32, py[i] - 32
            flux, ivar, mask = (np.zeros((64, 64), np.float32), np.zeros((64, 64), np.float32),
                                np.ones((64, 64), bool))
            ya, yb, xa, xb = max(y0, 0), min(y0 + 64, SIZE), max(x0, 0), min(x0 + 64, SIZE)
            st, sl = np.s_[ya - y0:yb - y0, xa - x0:xb - x0], np.s_[ya:yb, xa:xb]
            flux[st], ivar[st] = img[sl], iv[sl]
            bits = (1 << {"g": 2, "r": 3, "i": 14, "z": 4}[band]) | (1 << {"g": 5, "r": 6, "i": 15, "z": 7}[band])
            mask[st] = ((maskbits[sl] & bits) != 0) | (iv[sl] <= 0)
            padded += (yb - ya, xb - xa) != (64, 64)
            np.testing.assert_array_equal(np.array(image["flux"], np.float32)[j], flux)
            np.testing.assert_array_equal(np.array(image["ivar"], np.float32)[j], ivar)
            np.testing.assert_array_equal(np.array(image["mask"])[j], mask)
    assert (padded > 0) == (policy == "pad")


def test_selection_cuts(tmp_path):
    write_brick(tmp_path)
    item = make().list_inputs(tmp_path)[0]
    t, _ = read_all(make(exclude_types=["PSF"]), item)
    assert "PSF" not in t.column("type").to_pylist() and t.num_rows == 3
    t, _ = read_all(make(mag_limit=21.0), item)  # r flux 10, 2, 0.5, 5 -> mags 20.0, 21.7, 23.3, 20.8
    assert t.column("objid").to_pylist() == [0, 3]
    t, _ = read_all(make(only_brick_primary=True), item)
    assert t.column("brick_primary").to_pylist() == [True] * 3


@pytest.mark.parametrize("kwargs, words", [
    ({"drop_file": "legacysurvey-1501p021-invvar-z.fits.fz"},
     ["legacysurvey-1501p021-image-z.fits.fz present", "invvar-z.fits.fz missing"]),
    ({"drop_file": "legacysurvey-1501p021-image-r.fits.fz"},
     ["legacysurvey-1501p021-invvar-r.fits.fz present", "image-r.fits.fz missing"]),
    ({"drop_file": "legacysurvey-1501p021-maskbits.fits.fz"}, ["maskbits.fits.fz missing"]),
    ({"drop_bands": BANDS}, ["no image files for any of bands ['g', 'r', 'i', 'z']"]),
    ({"no_tractor": True}, ["brick 1501p021", "no catalogue tractor-1501p021.fits"]),
    ({"drop_column": "psfsize_i"}, ["psfsize_i"]),
])
def test_bad_brick_rejected_by_name(tmp_path, kwargs, words):
    write_brick(tmp_path, **kwargs)
    b = make()
    [item] = b.list_inputs(tmp_path)
    assert item.key == "south/1501p021"
    with pytest.raises(InputRejected) as e:
        list(b.read(item))
    assert all(w in str(e.value) for w in words), str(e.value)
    assert b.manifest_extra() == {}  # a rejected brick is not a brick with masked bands


def test_brick_without_i_band_keeps_its_rows_with_i_masked(tmp_path):
    """DR10 south: no i-band images in a brick. Every row is kept; the i plane is flux 0, ivar 0,
    masked, psf_fwhm 0; g, r, z equal the pixels fitsio reads; build.json counts the brick."""
    import fitsio

    full_root, part_root = tmp_path / "full", tmp_path / "part"
    write_brick(full_root)
    coadd, tractor = write_brick(part_root, drop_bands=("i",))
    assert sorted(f.name for f in coadd.iterdir() if "-i." in f.name) == []
    b = make()
    [item] = b.list_inputs(part_root)
    assert len(item.paths) == 8  # tractor, maskbits, image + invvar of g, r, z
    table, rej = read_all(b, item)
    full, _ = read_all(make(), make().list_inputs(full_root)[0])
    assert rej == [] and table.num_rows == full.num_rows == 4  # no row lost
    assert table.column("object_id").to_pylist() == full.column("object_id").to_pylist()
    assert b.manifest_extra() == {"input_notes": {"bricks_missing_bands": {
        "count": 1, "by_band": {"i": 1}, "bricks": {"south/1501p021": ["i"]}}}}
    assert make().list_inputs(full_root) and make().manifest_extra() == {}
    cat = fitsio.read(str(tractor), ext=1)
    for k, row in enumerate(table.to_pylist()):
        img, ref = row["image"], full.to_pylist()[k]["image"]
        assert img["band"] == ["legacysurvey-g", "legacysurvey-r", "legacysurvey-i", "legacysurvey-z"]
        assert row["bands_observed"] == ["legacysurvey-g", "legacysurvey-r", "legacysurvey-z"]
        flux, ivar, mask = (np.array(img[n]) for n in ("flux", "ivar", "mask"))
        assert (flux[2] == 0).all() and (ivar[2] == 0).all() and mask[2].all()
        np.testing.assert_array_equal(img["psf_fwhm"], np.array([cat["psfsize_g"][k], cat["psfsize_r"][k], 0.0,
                                                                 cat["psfsize_z"][k]], np.float32))
        for j in (0, 1, 3):  # the observed bands: exactly what the full brick gives
            for n in ("flux", "ivar", "mask"):
                np.testing.assert_array_equal(np.array(img[n])[j], np.array(ref[n])[j])
        assert not mask[[0, 1, 3]].all()
    # the observed planes against fitsio's own decompression of the brick
    row = table.to_pylist()[0]
    x0, y0 = 118, 118  # pixel (150.2, 149.7) -> (150, 150) at index (32, 32) of a 64 px cutout
    for j, band in ((0, "g"), (1, "r"), (3, "z")):
        pix = fitsio.read(str(coadd / f"legacysurvey-1501p021-image-{band}.fits.fz"), ext=1)
        np.testing.assert_array_equal(np.array(row["image"]["flux"], np.float32)[j], pix[y0:y0 + 64, x0:x0 + 64])


@pytest.fixture(scope="module")
def built(sim_raw, tmp_path_factory, dask_client):
    """One engine build (catalog config: g,r,i,z, 96 px): the mock observatory's bricks plus
    hand-written bad ones."""
    from mmu.engine.build import build

    tmp = tmp_path_factory.mktemp("legacysurvey")
    raw = link_tree(sim_raw, tmp / "raw", "legacysurvey")
    bad = raw / "bad"
    write_brick(bad, "1501p021", sources=[(150, 150, "SER", 1, True), (150, 100, "SER", 1, True),
                                          (100, 200, "SER", 1, True), (200, 200, "SER", 1, True)],
                nan_at=(150, 150), dup_objid=True)  # row 0: NaN pixel; row 3 repeats objid 2
    write_brick(bad, "1503p021", zero_ivar=True)  # every source: ivar 0 in every band
    coadd, _ = write_brick(bad, "1505p021")
    f = coadd / "legacysurvey-1505p021-image-g.fits.fz"
    f.write_bytes(f.read_bytes()[:5000])  # truncated
    write_brick(bad, "1507p021", drop_file="legacysurvey-1507p021-maskbits.fits.fz")
    write_brick(bad, "1509p021", region="north")  # another region: not listed
    write_brick(bad, "1511p021", no_tractor=True)  # coadds without a catalogue: rejected by name
    res = build("legacysurvey_dr10_south", raw, tmp / "hub", client=dask_client)
    return raw, res


def test_build_rejects_bad_inputs_and_rows_by_name(built):
    raw, res = built
    m = res.manifest
    keys = [i.key for i in m.inputs]
    assert "south/1509p021" not in keys and "south/1501p021" in keys
    bad = {r.input: r.reason for r in m.rejected_inputs}
    assert set(bad) == {"south/1505p021", "south/1507p021", "south/1511p021"}
    assert "no catalogue tractor-1511p021.fits" in bad["south/1511p021"]
    assert "image-g.fits.fz" in bad["south/1505p021"] and "truncated" in bad["south/1505p021"]
    assert "maskbits.fits.fz" in bad["south/1507p021"] and "missing" in bad["south/1507p021"]
    rows = {(r.input, r.object_id): r.reason for r in m.rejected_rows}
    assert "non-finite flux" in rows[("south/1501p021", "1501p021-0")]
    assert "duplicate" in rows[("south/1501p021", "1501p021-2")]
    zero = [r for k, r in rows.items() if k[0] == "south/1503p021"]
    assert len(zero) == 4 and all("all-zero ivar" in r for r in zero)
    assert len(rows) == 6
    n_sim = 0
    for t in (raw / "legacysurvey").rglob("tractor-*.fits"):
        with fits.open(t) as hd:
            n_sim += len(hd[1].data)
    assert m.rows.total == n_sim + 2


def test_mock_cutouts_in_the_hub_equal_the_brick_pixels(built):
    raw, res = built
    table = hub_table(res.path)
    ids = table.column("object_id").to_pylist()
    image = table.column("image").combine_chunks()
    checked = padded = masked_bands = 0
    for tractor in sorted((raw / "legacysurvey").rglob("tractor-*.fits")):
        brick = tractor.name[8:16]
        coadd = tractor.parents[2] / "coadd" / brick[:3] / brick
        with fits.open(tractor) as hd:
            cat = hd[1].data
        with fits.open(coadd / f"legacysurvey-{brick}-maskbits.fits.fz") as hd:
            maskbits = hd[1].data.astype(np.int64)
        planes = {}
        for b in BANDS:
            if not (coadd / f"legacysurvey-{brick}-image-{b}.fits.fz").exists():
                continue  # the mock leaves i-band out of some bricks, as DR10 south
            with fits.open(coadd / f"legacysurvey-{brick}-image-{b}.fits.fz") as hd:
                planes[b] = (hd[1].data, WCS(hd[1].header))
            with fits.open(coadd / f"legacysurvey-{brick}-invvar-{b}.fits.fz") as hd:
                planes[b] += (hd[1].data,)
        for i in range(0, len(cat), 3):
            k = ids.index(f"{brick}-{cat['objid'][i]}")
            row = image[k].as_py()
            flux, ivar, mask = (np.array(row[n]) for n in ("flux", "ivar", "mask"))
            assert flux.shape == (4, 96, 96) and row["scale"] == pytest.approx(0.262, rel=1e-4)
            np.testing.assert_allclose(row["psf_fwhm"], [cat[f"psfsize_{b}"][i] if b in planes else 0.0
                                                         for b in BANDS], rtol=1e-6)
            assert table.column("bands_observed")[k].as_py() == [f"legacysurvey-{b}" for b in BANDS if b in planes]
            for j, b in enumerate(BANDS):
                if b not in planes:  # a band without images: masked, zero flux and ivar; the row is kept
                    assert mask[j].all() and (flux[j] == 0).all() and (ivar[j] == 0).all()
                    masked_bands += 1
                    continue
                img, wcs, iv = planes[b]
                x, y = wcs.all_world2pix(cat["ra"][i], cat["dec"][i], 0)
                x0, y0 = int(np.floor(x + 0.5)) - 48, int(np.floor(y + 0.5)) - 48
                # edge policy "pad": the part of the stamp off the image is flux 0, ivar 0, masked
                ya, yb = max(y0, 0), min(y0 + 96, img.shape[0])
                xa, xb = max(x0, 0), min(x0 + 96, img.shape[1])
                sl, st = np.s_[ya:yb, xa:xb], np.s_[ya - y0:yb - y0, xa - x0:xb - x0]
                padded += (yb - ya, xb - xa) != (96, 96)
                off = np.ones((96, 96), bool)
                off[st] = False
                assert mask[j][off].all() and (flux[j][off] == 0).all() and (ivar[j][off] == 0).all()
                np.testing.assert_array_equal(flux[j][st], img[sl])
                np.testing.assert_array_equal(ivar[j][st], np.maximum(iv[sl], 0))
                bits = (1 << {"g": 2, "r": 3, "i": 14, "z": 4}[b]) | (1 << {"g": 5, "r": 6, "i": 15, "z": 7}[b])
                np.testing.assert_array_equal(mask[j][st], ((maskbits[sl] & bits) != 0) | (iv[sl] <= 0))
            assert table.column("brick_primary")[k].as_py() == bool(cat["brick_primary"][i])
            checked += 1
    assert checked >= 10 and masked_bands >= 1
    bricks_without_i = sorted(f"south/{t.name[8:16]}" for t in (raw / "legacysurvey").rglob("tractor-*.fits")
                              if not any(t.parents[2].joinpath("coadd").rglob(f"*{t.name[8:16]}-image-i.*")))
    notes = res.manifest.input_notes["bricks_missing_bands"]
    assert bricks_without_i and sorted(notes["bricks"]) == bricks_without_i
    assert notes["count"] == len(bricks_without_i) and notes["by_band"] == {"i": len(bricks_without_i)}


def test_hub_opens_with_datasets_and_lsdb(built):
    _, res = built
    assert_opens(res.path, res.manifest.rows.total)
