"""The desi builder: arm merge on the 7,781-pixel grid, LSF from the resolution matrix, the
REDSHIFTS join, primary flags across survey/program coadds, and bad inputs rejected by name.

Coadd and redrock files are written here from the desidatamodel pages (iron), independently of
the mock observatory; desispec (the DESI team's reader) checks the LSF convention.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from mmu.engine.builder import InputRejected, get_builder
from test_builder_helpers import assert_opens, hub_table, link_tree, read_all

ARMS = {"B": (3600.0, 5800.0), "R": (5760.0, 7620.0), "Z": (7520.0, 9824.0)}
NDIAG = 11


def arm_wave(arm):
    lo, hi = ARMS[arm]
    return lo + 0.8 * np.arange(int(round((hi - lo) / 0.8)) + 1)


def resolution(sigma_pix: np.ndarray) -> np.ndarray:
    """Diagonals [NDIAG, nwave] whose row i is a normalised Gaussian of width sigma_pix[i]
    (desispec convention: offsets NDIAG//2 .. -NDIAG//2, R[i, i+d] = data[k, i+d])."""
    nwave = len(sigma_pix)
    data = np.zeros((NDIAG, nwave))
    d = NDIAG // 2 - np.arange(NDIAG)
    kern = np.exp(-0.5 * (d[:, None] / sigma_pix[None, :]) ** 2)
    kern /= kern.sum(0)
    for k in range(NDIAG):
        j = np.arange(nwave) + d[k]  # column of row i's element on diagonal k
        ok = (j >= 0) & (j < nwave)
        data[k, j[ok]] = kern[k, ok]
    return data.astype(np.float32)


def write_pair(root: Path, survey="main", program="dark", hpix=1000, targetids=(11, 12, 13), seed=0,
               zwarn=None, tsnr=None, drop_hdu=None, drop_zcol=None, nan_flux_target=None, zero_ivar_target=None,
               dec=None, redshift_ids=None, wave_unit="Angstrom", ivar_per_arm=None):
    rng = np.random.default_rng(seed)
    n = len(targetids)
    d = root / "spectro/redux/iron/healpix" / survey / program / str(hpix // 100) / str(hpix)
    d.mkdir(parents=True, exist_ok=True)
    fm = fits.BinTableHDU.from_columns([
        fits.Column("TARGETID", "K", array=np.array(targetids)),
        fits.Column("TARGET_RA", "D", array=150 + 0.01 * np.arange(n)),
        fits.Column("TARGET_DEC", "D", array=np.array(dec if dec is not None else [2.0] * n)),
        fits.Column("COADD_FIBERSTATUS", "J", array=np.zeros(n, np.int32)),
        fits.Column("OBJTYPE", "3A", array=["TGT"] * n),
        fits.Column("FLUX_R", "E", array=rng.uniform(1, 10, n))], name="FIBERMAP")
    primary = fits.PrimaryHDU()
    primary.header["HPXPIXEL"] = hpix
    hdus = [primary, fm]
    for arm in ARMS:
        wave = arm_wave(arm)
        flux = rng.normal(3, 1, (n, wave.size)).astype(np.float32)
        ivar = rng.uniform(0.5, 4, (n, wave.size)).astype(np.float32)
        if ivar_per_arm:  # one inverse variance per arm (a line profile keeps its shape in the merge)
            ivar[:] = ivar_per_arm[arm]
        mask = np.zeros((n, wave.size), np.uint32)
        mask[:, 100:103] = 1 << 1
        if nan_flux_target is not None:
            flux[targetids.index(nan_flux_target), 200] = np.nan
        if zero_ivar_target is not None:
            ivar[targetids.index(zero_ivar_target)] = 0
        sig = np.linspace(1.0, 1.3, wave.size) + (0.2 if arm == "R" else 0.0)
        res = np.repeat(resolution(sig)[None], n, axis=0)
        w = fits.ImageHDU(wave, name=f"{arm}_WAVELENGTH")
        w.header["BUNIT"] = wave_unit
        hdus += [w, fits.ImageHDU(flux, name=f"{arm}_FLUX"), fits.ImageHDU(ivar, name=f"{arm}_IVAR"),
                 fits.ImageHDU(mask, name=f"{arm}_MASK", uint=True), fits.ImageHDU(res, name=f"{arm}_RESOLUTION")]
    hdus.append(fits.BinTableHDU.from_columns([
        fits.Column("TARGETID", "K", array=np.array(targetids)),
        fits.Column("TSNR2_LRG", "E", array=np.array(tsnr if tsnr is not None else [10.0] * n))], name="SCORES"))
    if drop_hdu:
        hdus = [h for h in hdus if h.name != drop_hdu]
    coadd = d / f"coadd-{survey}-{program}-{hpix}.fits"
    fits.HDUList(hdus).writeto(coadd, overwrite=True)
    rid = list(redshift_ids if redshift_ids is not None else targetids)[::-1]  # join, not row order
    m = len(rid)
    zw = dict(zip(targetids, zwarn if zwarn is not None else [0] * n))
    zcols = {"TARGETID": ("K", rid), "Z": ("D", [0.1 * (t % 7) for t in rid]), "ZERR": ("D", [1e-4] * m),
             "ZWARN": ("K", [zw.get(t, 0) for t in rid]), "SPECTYPE": ("6A", ["GALAXY"] * m),
             "SUBTYPE": ("20A", [""] * m), "DELTACHI2": ("D", [100.0] * m), "CHI2": ("D", [7000.0] * m)}
    red = fits.BinTableHDU.from_columns([fits.Column(k, f, array=np.array(a)) for k, (f, a) in zcols.items()
                                         if k != drop_zcol], name="REDSHIFTS")
    redrock = d / f"redrock-{survey}-{program}-{hpix}.fits"
    fits.HDUList([fits.PrimaryHDU(), red]).writeto(redrock, overwrite=True)
    return coadd, redrock


@pytest.fixture
def builder():
    return get_builder("desi")()


def test_arms_merged_exactly_on_the_grid(tmp_path, builder):
    coadd, _ = write_pair(tmp_path)
    [item] = builder.list_inputs(tmp_path)
    assert item.key == "healpix-1000" and len(item.paths) == 2
    table, rej = read_all(builder, item)
    assert rej == [] and table.num_rows == 3
    rows = {r["targetid"]: r for r in table.to_pylist()}
    grid = 3600 + 0.8 * np.arange(7781)
    with fits.open(coadd) as hd:
        fm_row = list(hd["FIBERMAP"].data["TARGETID"]).index(12)
        s = rows[12]["spectrum"]
        lam = np.array(s["lambda"], np.float32)
        assert lam.size == 7781 and lam[0] == 3600 and lam[-1] == np.float32(9824.0)
        np.testing.assert_array_equal(lam, grid.astype(np.float32))
        flux, ivar, mask = (np.array(s[k]) for k in ("flux", "ivar", "mask"))
        arm = {a: {k: hd[f"{a}_{k}"].data[fm_row].astype(np.float64) for k in ("FLUX", "IVAR", "MASK")}
               for a in ARMS}
        idx = {a: np.rint((hd[f"{a}_WAVELENGTH"].data - 3600) / 0.8).astype(int) for a in ARMS}
        b_only = idx["B"][idx["B"] < idx["R"][0]]
        np.testing.assert_array_equal(flux[b_only], arm["B"]["FLUX"][: b_only.size].astype(np.float32))
        z_only = idx["Z"][idx["Z"] > idx["R"][-1]]
        np.testing.assert_array_equal(flux[z_only], arm["Z"]["FLUX"][-z_only.size:].astype(np.float32))
        np.testing.assert_array_equal(ivar[b_only][100:103], 0)  # MASK set: no weight, bad
        assert mask[b_only][100:103].all() and not mask[b_only][:100].any()
        # B/R overlap (5760-5800 Å): inverse-variance weighted mean
        ov = np.intersect1d(idx["B"], idx["R"])
        ib, ir = ov - idx["B"][0], ov - idx["R"][0]
        wb, wr = arm["B"]["IVAR"][ib], arm["R"]["IVAR"][ir]
        expect = (wb * arm["B"]["FLUX"][ib] + wr * arm["R"]["FLUX"][ir]) / (wb + wr)
        np.testing.assert_allclose(flux[ov], expect, rtol=1e-6)
        np.testing.assert_allclose(ivar[ov], wb + wr, rtol=1e-6)
    assert rows[12]["object_id"] == "main-dark-12" and rows[12]["z"] == pytest.approx(0.5)
    assert rows[12]["primary"] is True and rows[12]["zcat_nspec"] == 1 and rows[12]["healpix"] == 1000


def test_lsf_sigma_matches_desispec_resolution(tmp_path, builder):
    from desispec.resolution import Resolution

    coadd, _ = write_pair(tmp_path)
    [item] = builder.list_inputs(tmp_path)
    table, _ = read_all(builder, item)
    lsf = np.array(table.column("spectrum").combine_chunks().field("lsf_sigma")[0].values)
    with fits.open(coadd) as hd:
        row = list(hd["FIBERMAP"].data["TARGETID"]).index(table.column("targetid")[0].as_py())
        R = Resolution(hd["Z_RESOLUTION"].data[row].astype(np.float64)).toarray()
    i = np.arange(R.shape[0])
    w = R / R.sum(1, keepdims=True)
    mean = (w * i[None, :]).sum(1)
    sigma_pix = np.sqrt((w * (i[None, :] - mean[:, None]) ** 2).sum(1))
    zi = np.rint((arm_wave("Z") - 3600) / 0.8).astype(int)
    z_only = zi > np.rint((ARMS["R"][1] - 3600) / 0.8)
    inner = z_only & (np.arange(zi.size) > 6) & (np.arange(zi.size) < zi.size - 6)  # full kernels
    np.testing.assert_allclose(lsf[zi[inner]], 0.8 * sigma_pix[inner], rtol=1e-4)
    assert 0.8 < lsf[zi[inner]].min() and lsf[zi[inner]].max() < 1.1  # 1.0-1.3 px x 0.8 Å


def _line_width(profile: np.ndarray) -> float:
    """Sigma (pixels) of a line profile on a pixel grid: the square root of its second moment."""
    x = np.arange(profile.size)
    w = profile / profile.sum()
    return float(np.sqrt((w * (x - (w * x).sum()) ** 2).sum()))


def test_lsf_at_the_arm_joins_matches_desispec_line_widths(tmp_path, builder):
    """A line in each overlap, observed through desispec's own resolution matrices (desispec.io
    read_spectra, Resolution.dot) and camera coadd (coadd_cameras): lsf_sigma is the line's width.
    The first/last NDIAG//2 rows of an arm are cut off at its edge; they must not enter."""
    from desispec.coaddition import coadd_cameras
    from desispec.io import read_spectra

    from mmu.builders.desi import lsf_sigma_pixels

    weights = {"B": 1.0, "R": 3.0, "Z": 2.0}
    coadd, _ = write_pair(tmp_path, ivar_per_arm=weights)
    [item] = builder.list_inputs(tmp_path)
    table, _ = read_all(builder, item)
    tid = table.column("targetid")[0].as_py()
    lsf = np.array(table.column("spectrum").combine_chunks().field("lsf_sigma")[0].values, np.float64)
    spectra = read_spectra(str(coadd))
    i = list(spectra.fibermap["TARGETID"]).index(tid)
    idx = {a: np.rint((spectra.wave[a.lower()] - 3600) / 0.8).astype(int) for a in ARMS}
    half = NDIAG // 2

    def observed_width(arm, p):  # a line at grid pixel p seen by one arm: desispec's R . delta
        delta = np.zeros(idx[arm].size)
        delta[p - idx[arm][0]] = 1.0
        return _line_width(spectra.R[arm.lower()][i].dot(delta))

    checked = 0
    for a, b in (("B", "R"), ("R", "Z")):
        ov = np.intersect1d(idx[a], idx[b])
        # 1. lines at the overlap's ends, where one arm's rows are cut off: the arms that see the
        # whole line give its width (ivar-weighted variances, as the coadd), the cut arm does not enter
        for p in np.r_[ov[:half + 2], ov[-half - 2:]]:
            whole = [arm for arm in (a, b) if half <= p - idx[arm][0] < idx[arm].size - half]
            assert whole
            ref = 0.8 * np.sqrt(np.average([observed_width(arm, p) ** 2 for arm in whole],
                                           weights=[weights[x] for x in whole]))
            assert lsf[p] == pytest.approx(ref, rel=2e-3), (a, b, p)
            checked += 1
        # the arm's last row, cut off, is >30% narrower than its whole neighbours; averaged in with
        # the other arm's (the old merge), it leaves the join 2-8% too narrow here
        end = idx[a][-1]
        with fits.open(coadd) as hd:
            row = list(hd["FIBERMAP"].data["TARGETID"]).index(tid)
            cut = {x: 0.8 * lsf_sigma_pixels(hd[f"{x}_RESOLUTION"].data[row:row + 1].astype(np.float64))[0]
                   for x in (a, b)}
        old = np.average([cut[a][-1], cut[b][end - idx[b][0]]], weights=[weights[a], weights[b]])
        assert cut[a][-1] < 0.7 * cut[a][-half - 1] and cut[b][0] < 0.7 * cut[b][half]
        assert old < 0.98 * lsf[end]
        # 2. a line in the middle of the overlap through desispec's camera coadd
        pc = int(ov[ov.size // 2])
        for arm in ARMS:
            spectra.flux[arm.lower()][i] = 0.0
        for arm in (a, b):
            delta = np.zeros(idx[arm].size)
            delta[pc - idx[arm][0]] = 1.0
            spectra.flux[arm.lower()][i] = spectra.R[arm.lower()][i].dot(delta)
        merged = coadd_cameras(spectra).flux["brz"][i]
        assert merged[pc] > 0 and np.isclose(merged[pc - 8:pc + 9].sum(), 1.0, rtol=1e-3)
        assert lsf[pc] == pytest.approx(0.8 * _line_width(merged[pc - 8:pc + 9]), rel=2e-3)
    assert checked == 2 * 2 * (half + 2)
    # the grid's ends (3600 Å, 9824 Å) have no other arm: a cut row takes its arm's nearest whole row
    assert lsf[:half].tolist() == [lsf[half]] * half and lsf[-half:].tolist() == [lsf[-half - 1]] * half


def test_primary_across_survey_program_coadds(tmp_path, builder):
    # TARGETID 12 in main/dark (ZWARN != 0) and sv3/dark (ZWARN 0): sv3 wins despite lower TSNR2;
    # TARGETID 13 in both with ZWARN 0: the higher TSNR2_LRG wins (main)
    write_pair(tmp_path, "main", "dark", targetids=(11, 12, 13), zwarn=[0, 4, 0], tsnr=[5, 50, 90])
    write_pair(tmp_path, "sv3", "dark", targetids=(12, 13), zwarn=[0, 0], tsnr=[10, 20], seed=1)
    write_pair(tmp_path, "sv3", "bright", hpix=2000, targetids=(12,), seed=2)  # another pixel
    items = builder.list_inputs(tmp_path)
    assert [i.key for i in items] == ["healpix-1000", "healpix-2000"] and len(items[0].paths) == 4
    table, rej = read_all(builder, items[0])
    assert rej == []
    flags = dict(zip(table.column("object_id").to_pylist(), table.column("primary").to_pylist()))
    assert flags == {"main-dark-11": True, "main-dark-12": False, "main-dark-13": True,
                     "sv3-dark-12": True, "sv3-dark-13": False}
    nspec = dict(zip(table.column("object_id").to_pylist(), table.column("zcat_nspec").to_pylist()))
    assert nspec["main-dark-11"] == 1 and nspec["sv3-dark-13"] == 2


@pytest.mark.parametrize("kwargs, words", [
    ({"drop_hdu": "R_RESOLUTION"}, ["R_RESOLUTION", "missing"]),
    ({"drop_hdu": "FIBERMAP"}, ["FIBERMAP", "missing"]),
    ({"drop_zcol": "ZWARN"}, ["REDSHIFTS", "ZWARN"]),
    ({"wave_unit": "nm"}, ["BUNIT", "Angstrom"]),
])
def test_bad_coadd_rejected_by_name(tmp_path, builder, kwargs, words):
    coadd, redrock = write_pair(tmp_path, **kwargs)
    [item] = builder.list_inputs(tmp_path)
    with pytest.raises(InputRejected) as e:
        list(builder.read(item))
    assert any(p.name in str(e.value) for p in (coadd, redrock))
    assert all(w in str(e.value) for w in words), str(e.value)


def test_one_bad_coadd_of_a_pixel_keeps_the_others(tmp_path, builder):
    write_pair(tmp_path, "main", "dark", targetids=(11, 12))
    coadd, _ = write_pair(tmp_path, "sv3", "dark", targetids=(12,))
    data = coadd.read_bytes()
    coadd.write_bytes(data[: len(data) // 2])
    [item] = builder.list_inputs(tmp_path)
    table, rej = read_all(builder, item)
    assert table.column("object_id").to_pylist() == ["main-dark-11", "main-dark-12"]
    [r] = rej
    assert "coadd-sv3-dark-1000.fits" in r.reason and "truncated" in r.reason
    assert table.column("primary").to_pylist() == [True, True]


def test_target_without_redshift_is_rejected(tmp_path, builder):
    write_pair(tmp_path, targetids=(11, 12, 13), redshift_ids=(11, 13))
    [item] = builder.list_inputs(tmp_path)
    table, rej = read_all(builder, item)
    assert table.column("targetid").to_pylist() == [11, 13]
    [r] = rej
    assert r.object_id == "main-dark-12" and r.row == 1 and "redrock-main-dark-1000.fits" in r.reason


@pytest.fixture(scope="module")
def built(sim_raw, tmp_path_factory, dask_client):
    """One engine build: the mock observatory's DESI coadds plus hand-written bad ones."""
    from mmu.engine.build import build

    tmp = tmp_path_factory.mktemp("desi")
    raw = link_tree(sim_raw, tmp / "raw", "desi")
    bad = raw / "bad"
    # 21: NaN flux, 22: all-zero ivar, 23: dec out of range, 24 twice: a true duplicate
    write_pair(bad, "main", "dark", hpix=1, targetids=[20, 21, 22, 23, 24, 24], nan_flux_target=21,
               zero_ivar_target=22, dec=[2, 2, 2, 95, 2, 2])
    corrupt, _ = write_pair(bad, "sv3", "dark", hpix=2, targetids=[40], seed=4)
    corrupt.write_bytes(b"garbage".ljust(2880))
    res = build("desi_dr1", raw, tmp / "hub", client=dask_client)
    return raw, res


def test_build_rejects_bad_inputs_and_rows_by_name(built):
    raw, res = built
    m = res.manifest
    [rej_input] = m.rejected_inputs
    assert rej_input.input == "healpix-2" and "coadd-sv3-dark-2.fits" in rej_input.reason
    by_id = {r.object_id: r for r in m.rejected_rows}
    assert set(by_id) == {"main-dark-21", "main-dark-22", "main-dark-23", "main-dark-24"}
    assert all(r.input == "healpix-1" for r in by_id.values())
    assert "non-finite flux" in by_id["main-dark-21"].reason
    assert "all-zero ivar" in by_id["main-dark-22"].reason
    assert "dec outside" in by_id["main-dark-23"].reason and "duplicate" in by_id["main-dark-24"].reason
    n_sim = 0
    for f in (raw / "desi").rglob("coadd-*.fits"):
        with fits.open(f) as hd:
            n_sim += len(hd["FIBERMAP"].data)
    assert m.rows.total == n_sim + 2  # TARGETIDs 20 and 24 of the hand-written file


def test_mock_coadds_in_the_hub_equal_desispec_camera_coadd(built):
    """Every hub spectrum equals the DESI team's reader + camera coadd of the raw file."""
    from desispec.coaddition import coadd_cameras
    from desispec.io import read_spectra

    raw, res = built
    table = hub_table(res.path)
    rows = dict(zip(table.column("object_id").to_pylist(), range(table.num_rows)))
    spec = table.column("spectrum").combine_chunks()
    grid = (3600 + 0.8 * np.arange(7781)).astype(np.float32)
    files = sorted((raw / "desi").rglob("coadd-*.fits"))
    assert files
    for f in files:
        survey, program = f.name.split("-")[1:3]
        c = coadd_cameras(read_spectra(str(f)))
        for i, tid in enumerate(c.fibermap["TARGETID"]):
            k = rows[f"{survey}-{program}-{tid}"]
            s = spec[k].as_py()
            np.testing.assert_array_equal(np.array(s["lambda"], np.float32), grid)
            np.testing.assert_allclose(c.wave["brz"], s["lambda"], rtol=2 ** -23)
            good = c.ivar["brz"][i] > 0
            np.testing.assert_allclose(np.array(s["flux"])[good], c.flux["brz"][i][good], rtol=1e-6, atol=1e-6)
            np.testing.assert_allclose(s["ivar"], c.ivar["brz"][i], rtol=1e-6)
            np.testing.assert_array_equal(s["mask"], (c.mask["brz"][i] != 0) | ~good)


def test_mock_redshifts_joined_and_primary_flags(built):
    raw, res = built
    t = hub_table(res.path).select(["object_id", "targetid", "z", "zwarn", "spectype", "primary", "zcat_nspec",
                                    "desi_survey", "program"]).to_pylist()
    by_id = {r["object_id"]: r for r in t}
    for f in (raw / "desi").rglob("redrock-*.fits"):
        survey, program = f.name.split("-")[1:3]
        with fits.open(f) as hd:
            for z in hd["REDSHIFTS"].data:
                r = by_id[f"{survey}-{program}-{z['TARGETID']}"]
                assert r["z"] == z["Z"] and r["zwarn"] == z["ZWARN"] and r["spectype"] == z["SPECTYPE"].strip()
    sim = [r for r in t if r["targetid"] not in (20, 24)]
    per_target = {}
    for r in sim:
        per_target.setdefault(r["targetid"], []).append(r)
    assert any(len(v) > 1 for v in per_target.values())  # the mock has repeated TARGETIDs
    for reps in per_target.values():
        assert sum(r["primary"] for r in reps) == 1 and all(r["zcat_nspec"] == len(reps) for r in reps)
        best = min(reps, key=lambda r: (r["zwarn"] != 0, r["desi_survey"], r["program"]))
        assert best["primary"]  # no TSNR2 in the mock files: ZWARN, then (survey, program) order


def test_hub_opens_with_datasets_and_lsdb(built):
    _, res = built
    assert_opens(res.path, res.manifest.rows.total)


# --- stage 2 at survey density: fixed-size spectrum rows partitioned by a row threshold ------------


@pytest.fixture(scope="module")
def standardized(tmp_path_factory):
    """Three healpix inputs of 20 spectra each on three parallel diagonals (0.2 x 1 deg),
    standardized by the engine."""
    from mmu.engine.build import standardize_input
    from mmu.registry.catalog import load_catalog

    tmp = tmp_path_factory.mktemp("desi-std")
    for f in range(3):
        write_pair(tmp / "raw", "main", "dark", hpix=100 + f, targetids=list(range(100 * f, 100 * f + 20)), seed=f,
                   dec=list(2.0 + 0.07 * f + 0.05 * np.arange(20)))
    builder = get_builder("desi")()
    split = load_catalog().split_definition
    out = tmp / "std"
    out.mkdir()
    markers = [standardize_input("desi", builder.options(), item, str(out), split.as_dict())
               for item in builder.list_inputs(tmp / "raw")]
    return [str(out / m["parquet"]) for m in markers], sum(m["rows"] for m in markers), split, tmp


def _pixels(catalog_dir) -> dict:
    import hats

    cat = hats.read_hats(catalog_dir)
    return {(p.order, p.pixel): n for p, n in zip(cat.get_healpix_pixels(), cat.partition_info.as_dataframe()
                                                  .get("num_rows", [None] * len(cat.get_healpix_pixels())))}


def test_fixed_size_rows_are_sized_as_hats_import_sizes_them(standardized):
    """Every DESI row has the same in-memory size (fixed-size lists), so the engine sizes rows once
    from a sample; the figure is hats' own estimator over every row of every file."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from hats.io.size_estimates import get_mem_size_per_row

    from mmu.engine.partition import fixed_row_bytes

    files, rows, _, tmp = standardized
    sizes = np.concatenate([get_mem_size_per_row(pq.read_table(f)) for f in files])
    assert len(sizes) == rows == 60
    assert sizes.max() - sizes.min() < 16  # only the text columns (ids) differ
    assert sizes.min() > 7781 * 16  # lambda, flux, ivar, lsf_sigma (float32) + mask (bits)
    got = fixed_row_bytes(files)
    assert sizes.max() - 16 <= got <= sizes.max()
    variable = tmp / "variable.parquet"  # a spectrum of per-row length: no fixed size
    pq.write_table(pa.table({"ra": [1.0, 2.0], "dec": [0.0, 0.0], "flux": pa.array([[1.0], [1.0, 2.0]])}), variable)
    assert fixed_row_bytes([str(variable)]) is None
    # names (a list of band names, as Legacy Survey rows carry) next to a big fixed-size array: sized
    # on the sample; text that makes rows differ by more than 1%: sized row by row (None)
    flux = pa.array([np.zeros(1000, np.float32)] * 2, pa.list_(pa.float32(), 1000))
    names = tmp / "names.parquet"
    pq.write_table(pa.table({"ra": [1.0, 2.0], "dec": [0.0, 0.0], "flux": flux,
                             "bands": pa.array([["ls-g", "ls-r"], ["ls-g", "ls-r", "ls-z"]])}), names)
    assert fixed_row_bytes([str(names)]) == get_mem_size_per_row(pq.read_table(names)).max()
    wordy = tmp / "wordy.parquet"
    pq.write_table(pa.table({"ra": [1.0, 2.0], "dec": [0.0, 0.0], "flux": flux, "note": ["", "x" * 400]}), wordy)
    assert fixed_row_bytes([str(wordy)]) is None


@pytest.mark.parametrize("writer", ["mmu", "hats-import"])
@pytest.mark.parametrize("rows_per_partition", [9, 30])
def test_row_threshold_partitions_equal_hats_import_byte_threshold(standardized, dask_client, tmp_path,
                                                                  rows_per_partition, writer):
    """The engine partitions fixed-size rows with a row threshold (ra/dec only are read to plan)
    at the coarsest order that fits, with either writer: the partitions and their rows are exactly
    those of hats-import's byte-threshold mode at the deepest order, which reads every spectrum to
    map."""
    from hats_import.catalog.arguments import ImportArguments
    from hats_import.pipeline import pipeline_with_client

    from mmu.engine.build import PartitionSettings
    from mmu.engine.partition import fixed_row_bytes, partition

    files, rows, split, _ = standardized
    threshold = int(rows_per_partition * fixed_row_bytes(files)) + 1
    settings = PartitionSettings(partition_bytes=threshold, writer=writer)
    got = partition("desi_dr1", files, tmp_path / "new", dask_client, split, settings, rows)
    highest = min(settings.highest_order, settings.margin_order - 1)
    ref = ImportArguments(output_path=str(tmp_path / "ref"), output_artifact_name="ref", input_file_list=files,
                          file_reader="parquet", ra_column="ra", dec_column="dec",
                          lowest_healpix_order=split.order, highest_healpix_order=highest,
                          byte_pixel_threshold=threshold, expected_total_rows=rows, progress_bar=False,
                          tmp_dir=str(tmp_path / "tmp"))
    pipeline_with_client(ref, dask_client)
    new_pixels = _pixels(tmp_path / "new" / "desi_dr1" / "desi_dr1")
    ref_pixels = _pixels(tmp_path / "ref" / "ref")
    assert new_pixels == ref_pixels and len(ref_pixels) > 1
    assert got["partition_bytes"] == threshold and got["highest_order"] == highest
    assert got["deepest_order"] == max(o for o, _ in ref_pixels)
    # hats-import mapped at the coarsest order (>= split order + 1) whose pixels all hold at most the
    # threshold's rows, as its own planning would choose, instead of the deepest allowed order
    import hats.pixel_math.healpix_shim as hp
    import pyarrow.parquet as pq

    ra = np.concatenate([pq.read_table(f, columns=["ra"]).column("ra").to_numpy() for f in files])
    dec = np.concatenate([pq.read_table(f, columns=["dec"]).column("dec").to_numpy() for f in files])
    fits_at = [k for k in range(split.order + 1, highest + 1)
               if np.unique(hp.radec2pix(k, ra, dec), return_counts=True)[1].max() <= rows_per_partition]
    from mmu.engine.hats_writer import SKYMAP_MAX_ORDER

    props = (tmp_path / "new" / "desi_dr1" / "desi_dr1" / "hats.properties").read_text()
    # the skymap is written at that order (at most SKYMAP_MAX_ORDER: a dense map of 12 * 4^order pixels)
    want = min(fits_at[0], SKYMAP_MAX_ORDER) if writer == "mmu" else fits_at[0]
    assert int(props.split("hats_skymap_order=")[1].split()[0]) == want
    if rows_per_partition == 30:
        assert fits_at[0] < highest  # the case that saves hats-import's dense order-9 planning
