"""The `tess` builder (dataset tess_spoc) against SPOC light-curve files written by the mock
(mmu/sim/tess.py): lightkurve opens them; every cadence with a TIME is in the row, in time
order, across sectors, with the mask exactly where QUALITY & the default bitmask != 0 or the
flux is NaN; gaps; a fully flagged sector kept; corrupt, mislabelled and duplicate files rejected
by name; the injected variability recoverable; `mmu fetch` through the sector download scripts;
the `binned_lightcurve` column equal to the files binned independently here (bin means of the
unmasked cadences, propagated errors, masked empty bins, gaps left gaps).
"""
from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits

import mmu.builders.tess as tess_mod
from mmu.engine.builder import RawInput, get_builder
from mmu.sim import tess as sim_tess
from test_builder_helpers import hub_table, read_all

STARS = pd.DataFrame({
    "tic_id": [261136679, 8195886, 31415926, 27182818, 14142135],
    "ra": [90.0, 20.0, 40.0, 0.0, 30.0], "dec": [-66.56, -60.0, -60.0, -50.0, 10.0],
    "tmag": [9.0, 11.0, 10.5, 12.0, 10.0], "teff": [5200.0, 6800.0, 6000.0, 5800.0, 5000.0],
    "var_class": ["rotator", "rrlyrae", "eclipsing_binary", "constant", "constant"],
    "period": [3.2, 0.55, 2.7, np.nan, np.nan], "amplitude": [0.01, 0.5, 0.2, 0.0, 0.0]})
SECTORS = {261136679: [1, 2, 3], 8195886: [1, 2], 31415926: [2, 3], 27182818: [2], 14142135: []}
BITMASK = 17087


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tess") / "raw"
    sim_tess.write_tess(STARS, out, np.random.default_rng(3), sectors=(1, 2, 3))
    return out


def builder(**config):
    return get_builder("tess")(tess_mod.TessConfig(**config))


def files_of(raw: Path, tic: int) -> list[Path]:
    return sorted(raw.rglob(f"*-{tic:016d}-*-s_lc.fits"))


def expected(paths: list[Path]) -> dict:
    """What the row must hold, read from the files with astropy alone (cadences with a TIME,
    sorted by time; mask = QUALITY & default bitmask or NaN flux)."""
    parts = []
    for p in paths:
        with fits.open(p) as h:
            d = h["LIGHTCURVE"].data
            t = np.asarray(d["TIME"], float)
            ok = np.isfinite(t)
            parts.append({"time": t[ok] + (2457000.0 - 2400000.5), "flux": np.asarray(d["PDCSAP_FLUX"], np.float32)[ok],
                          "err": np.asarray(d["PDCSAP_FLUX_ERR"], np.float32)[ok],
                          "quality": np.asarray(d["QUALITY"], np.int64)[ok],
                          "cadenceno": np.asarray(d["CADENCENO"], np.int64)[ok], "no_time": int((~ok).sum()),
                          "sector": h[0].header["SECTOR"], "camera": h[0].header["CAMERA"], "ccd": h[0].header["CCD"]})
    cat = {k: np.concatenate([p[k] for p in parts]) for k in ("time", "flux", "err", "quality", "cadenceno")}
    order = np.argsort(cat["time"], kind="stable")
    cat = {k: v[order] for k, v in cat.items()}
    cat["mask"] = ((cat["quality"] & BITMASK) != 0) | np.isnan(cat["flux"])
    cat.update(sectors=[p["sector"] for p in parts], cameras=[p["camera"] for p in parts],
               ccds=[p["ccd"] for p in parts], no_time=[p["no_time"] for p in parts])
    return cat


def read_rows(raw: Path, **config):
    b = builder(**config)
    tables, rejections = [], []
    for item in b.list_inputs(raw):
        t, r = read_all(b, item)
        rejections += r
        if t is not None:
            tables.append(t)
    import pyarrow as pa
    table = pa.concat_tables(tables) if tables else None
    return {int(r["tic_id"]): r for r in table.to_pylist()} if table is not None else {}, rejections


def test_the_default_bitmask_is_lightkurves():
    lightkurve = pytest.importorskip("lightkurve")  # a [test] dependency: the survey's own reader

    assert tess_mod.DEFAULT_BITMASK == lightkurve.utils.TessQualityFlags.DEFAULT_BITMASK == BITMASK


def test_lightkurve_reads_the_mock_files(raw):
    lightkurve = pytest.importorskip("lightkurve")

    for tic, sectors in SECTORS.items():
        paths = files_of(raw, tic)
        assert [int(p.name.split("-")[1][1:]) for p in paths] == sectors
        for p in paths:
            lc = lightkurve.read(str(p))  # quality_bitmask="default"
            with fits.open(p) as h:
                d = h["LIGHTCURVE"].data
                keep = np.isfinite(d["TIME"]) & ((d["QUALITY"] & BITMASK) == 0)
                assert lc.meta["TICID"] == tic and lc.meta["SECTOR"] == h[0].header["SECTOR"]
                np.testing.assert_array_equal(lc.time.btjd, d["TIME"][keep])
                np.testing.assert_array_equal(lc.flux.value, d["PDCSAP_FLUX"][keep])
                assert str(lc.flux.unit) == "electron / s"


def binned_by_hand(paths: list[Path], bin_minutes: float) -> dict:
    """The binned series computed cadence by cadence from the files (astropy alone), a Python
    loop over bins [k w, (k + 1) w) of BTJD: each bin holding a time-stamped cadence, with the mean
    of its unmasked fluxes and sqrt(sum err^2) / n."""
    w = bin_minutes / 1440.0
    bins: dict[int, list] = {}
    for p in paths:
        with fits.open(p) as h:
            d = h["LIGHTCURVE"].data
            for t, f, e, q in zip(d["TIME"], d["PDCSAP_FLUX"], d["PDCSAP_FLUX_ERR"], d["QUALITY"], strict=True):
                if not math.isfinite(t):
                    continue
                b = bins.setdefault(math.floor(float(t) / w), [])
                if (int(q) & BITMASK) == 0 and math.isfinite(f) and math.isfinite(e) and e > 0:
                    b.append((float(f), float(e)))
    out = {"time": [], "flux": [], "flux_err": [], "mask": [], "n": []}
    for k in sorted(bins):
        good = bins[k]
        out["time"].append((k + 0.5) * w + 2457000.0 - 2400000.5)
        out["n"].append(len(good))
        out["mask"].append(not good)
        out["flux"].append(sum(f for f, _ in good) / len(good) if good else math.nan)
        out["flux_err"].append(math.sqrt(sum(e * e for _, e in good)) / len(good) if good else math.nan)
    return {k: np.array(v) for k, v in out.items()}


def test_bin_lightcurve_exact_values():
    # bins of 0.1 d: [0, 0.1) holds four cadences, one masked; [0.3, 0.4) only a masked one; none between
    got = tess_mod.bin_lightcurve(np.array([0.01, 0.02, 0.05, 0.09, 0.31]),
                                  np.array([10.0, np.nan, 20.0, 30.0, 7.0], np.float32),
                                  np.array([3.0, 1.0, 4.0, 12.0, 1.0], np.float32),
                                  np.array([False, True, False, False, True]), 0.1)
    np.testing.assert_allclose(got["btjd"], [0.05, 0.35])
    assert got["flux"][0] == 20.0 and np.isnan(got["flux"][1])
    assert got["flux_err"][0] == np.float32(13.0 / 3.0) and np.isnan(got["flux_err"][1])  # sqrt(9 + 16 + 144) / 3
    assert got["mask"].tolist() == [False, True] and got["n_good"].tolist() == [3, 0]
    assert got["flux"].dtype == np.float32 and got["n_good"].dtype == np.int32
    with pytest.raises(ValueError, match="must be positive"):
        tess_mod.bin_lightcurve(np.zeros(1), np.zeros(1), np.ones(1), np.zeros(1, bool), 0.0)
    for bad in (-5.0, float("nan"), 1e9):
        with pytest.raises(ValueError, match="bin_minutes"):
            tess_mod.TessConfig(bin_minutes=bad)


@pytest.mark.parametrize("bin_minutes", [120.0, 30.0])
def test_binned_lightcurve_equals_the_files_binned_by_hand(raw, bin_minutes):
    rows, rejections = read_rows(raw, bin_minutes=bin_minutes)
    assert not rejections
    for tic, row in rows.items():
        want = binned_by_hand(files_of(raw, tic), bin_minutes)
        b = row["binned_lightcurve"]
        np.testing.assert_allclose(b["time"], want["time"], rtol=0, atol=1e-9)
        np.testing.assert_array_equal(b["mask"], want["mask"])
        np.testing.assert_array_equal(row["binned_n_good"], want["n"])
        f, e = np.array(b["flux"], float), np.array(b["flux_err"], float)
        np.testing.assert_allclose(f, want["flux"], rtol=1e-6)  # NaN where masked, on both sides
        np.testing.assert_allclose(e, want["flux_err"], rtol=1e-6)
        assert set(b["band"]) == {"tess-t"}
        # every unmasked cadence is in exactly one bin; each full 2-minute bin of 120 min holds 60
        assert sum(row["binned_n_good"]) == int((~np.array(row["lightcurve"]["mask"])).sum())
        assert max(row["binned_n_good"]) == bin_minutes / 2


def test_binned_lightcurve_agrees_with_lightkurves_bin(raw):
    """lightkurve (the survey's own tool) bins the files on the same grid: the same bin centres
    and mean fluxes; its flux_err is the root-mean-square of the cadence errors (lightkurve 2.x),
    ours the error of the mean, sqrt(sum err^2) / n = lightkurve's / sqrt(n)."""
    lightkurve = pytest.importorskip("lightkurve")
    import astropy.units as u
    from astropy.time import Time

    rows, _ = read_rows(raw)
    w = 2 / 24
    for tic in (261136679, 8195886):
        lcs = [lightkurve.read(str(p)).remove_nans() for p in files_of(raw, tic)]  # default bitmask
        lc = lightkurve.LightCurveCollection(lcs).stitch(corrector_func=lambda x: x)
        t0, t1 = math.floor(lc.time.btjd.min() / w) * w, math.ceil(lc.time.btjd.max() / w) * w
        b = lc.bin(time_bin_size=w * u.day, time_bin_start=Time(t0, format="btjd", scale="tdb"),
                   n_bins=int(round((t1 - t0) / w)))
        flux = np.ma.filled(b.flux.value, np.nan)
        keep = np.isfinite(flux)  # lightkurve's bins with a good cadence
        row = rows[tic]
        ours = row["binned_lightcurve"]
        good = ~np.array(ours["mask"])
        assert keep.sum() == good.sum() > 600
        np.testing.assert_allclose(b.time.btjd[keep], np.array(ours["time"])[good] - (2457000.0 - 2400000.5),
                                   rtol=0, atol=1e-8)
        np.testing.assert_allclose(flux[keep], np.array(ours["flux"])[good], rtol=1e-6)
        n = np.array(row["binned_n_good"])[good]
        np.testing.assert_allclose(np.ma.filled(b.flux_err.value, np.nan)[keep] / np.sqrt(n),
                                   np.array(ours["flux_err"])[good], rtol=1e-5)


def test_binned_gaps_stay_gaps_and_flagged_bins_stay_masked(raw, tmp_path):
    root = _copy(raw, tmp_path / "raw", [261136679])
    s2 = [p for p in files_of(root, 261136679) if "-s0002-" in p.name][0]
    with fits.open(s2, mode="update") as h:
        h["LIGHTCURVE"].data["QUALITY"][:] |= 128  # sector 2 manually excluded, everywhere
        t2 = np.asarray(h["LIGHTCURVE"].data["TIME"], float)
    rows, _ = read_rows(root)
    b = rows[261136679]["binned_lightcurve"]
    t, m = np.array(b["time"]), np.array(b["mask"])
    w = 120 / 1440
    steps = np.round(np.diff(t) / w)
    assert np.all(np.abs(np.diff(t) / w - steps) < 1e-6) and steps.min() == 1  # one fixed grid
    # five gaps, as in the cadences: the three downlinks and the two sector changes have no bins
    assert int((steps > 6).sum()) == 5
    in_s2 = (t - (2457000.0 - 2400000.5) >= np.nanmin(t2) - w) & (t - (2457000.0 - 2400000.5) <= np.nanmax(t2) + w)
    assert in_s2.sum() > 300 and m[in_s2].all() and not m[~in_s2].all()
    assert np.isnan(np.array(b["flux"], float)[in_s2]).all()
    assert rows[261136679]["sector_n_good"][1] == 0


def test_bin_minutes_zero_leaves_out_the_binned_column(raw):
    b = builder(bin_minutes=0)
    assert list(b.modalities()) == ["lightcurve"] and "binned_n_good" not in b.schema().names
    rows, _ = read_rows(raw, bin_minutes=0)
    assert "binned_lightcurve" not in next(iter(rows.values()))
    assert list(builder().modalities()) == ["lightcurve", "binned_lightcurve"]


def test_rows_equal_the_files_cadence_by_cadence(raw):
    rows, rejections = read_rows(raw)
    assert not rejections
    assert sorted(rows) == sorted(t for t, s in SECTORS.items() if s)  # the ecliptic star has no files
    for tic, row in rows.items():
        want = expected(files_of(raw, tic))
        lc = row["lightcurve"]
        np.testing.assert_array_equal(lc["time"], want["time"])
        np.testing.assert_array_equal(np.array(lc["flux"], np.float32), want["flux"])
        np.testing.assert_array_equal(np.array(lc["flux_err"], np.float32), want["err"])
        np.testing.assert_array_equal(lc["mask"], want["mask"])
        np.testing.assert_array_equal(row["quality"], want["quality"])
        np.testing.assert_array_equal(row["cadenceno"], want["cadenceno"])
        assert set(lc["band"]) == {"tess-t"}
        assert row["sectors"] == SECTORS[tic] == want["sectors"]
        assert row["cameras"] == want["cameras"] and row["ccds"] == want["ccds"]
        assert row["sector_n_no_time"] == want["no_time"] and all(n > 0 for n in want["no_time"])
        assert sum(row["sector_n_cadences"]) == len(want["time"])
        star = STARS.set_index("tic_id").loc[tic]
        assert (row["ra"], row["dec"], row["tmag"], row["teff"]) == (star.ra, star.dec, star.tmag, star.teff)
        assert row["object_id"] == str(tic) and row["survey"] == "tess" and row["release"] == "spoc"
        assert row["radius"] is None  # the header's RADIUS is undefined (as for many TIC stars)


def test_gaps_and_flags(raw):
    rows, _ = read_rows(raw)
    row = rows[261136679]
    t = np.array(row["lightcurve"]["time"])
    m = np.array(row["lightcurve"]["mask"])
    q = np.array(row["quality"])
    assert np.all(np.diff(t) > 0)  # three sectors, one time-ordered series
    steps = np.diff(t)
    big = np.flatnonzero(steps > 0.5)
    assert len(big) == 5  # a downlink in each of the three sectors, and two between sectors
    assert np.all(steps[np.setdiff1d(np.arange(len(steps)), big)] == pytest.approx(2 / 1440, abs=1e-6))
    # masked exactly by the default bits: momentum dumps (32) and Earth pointing (8) masked; cosmic
    # rays in collateral data (1024) and scattered light (2048) alone are not
    assert np.all(m[(q & 32) != 0]) and np.all(m[(q & 8) != 0])
    alone = (q & BITMASK) == 0
    for bit in (1024, 2048):
        sel = alone & ((q & bit) != 0)
        assert sel.sum() > 0 and not m[sel].any()
    # a momentum dump every ~3.1 days
    dumps = t[(q & 32) != 0]
    assert 3.0 < np.median(np.diff(dumps)) < 3.3
    assert row["sector_n_good"] == [int((~expected([p])["mask"]).sum()) for p in files_of(raw, 261136679)]


def test_injected_variability_is_recoverable(raw):
    from astropy.timeseries import LombScargle

    rows, _ = read_rows(raw)
    for tic, period in ((261136679, 3.2), (8195886, 0.55)):
        lc = rows[tic]["lightcurve"]
        good = ~np.array(lc["mask"])
        t, f = np.array(lc["time"])[good], np.array(lc["flux"], float)[good]
        freq, power = LombScargle(t, f).autopower(minimum_frequency=1 / 20, maximum_frequency=5,
                                                  samples_per_peak=20)
        assert 1 / freq[np.argmax(power)] == pytest.approx(period, rel=0.01)
    # the eclipsing binary dips by about its depth; the constant star does not vary beyond noise
    f = np.array(rows[31415926]["lightcurve"]["flux"], float)[~np.array(rows[31415926]["lightcurve"]["mask"])]
    assert 1 - np.percentile(f, 0.5) / np.median(f) == pytest.approx(0.2, abs=0.04)
    c = rows[27182818]["lightcurve"]
    f = np.array(c["flux"], float)[~np.array(c["mask"])]
    assert np.std(f) / np.median(f) == pytest.approx(sim_tess.noise_ppm(12.0) * 1e-6, rel=0.05)


def _copy(raw: Path, dst: Path, tics) -> Path:
    for tic in tics:
        for p in files_of(raw, tic):
            q = dst / p.relative_to(raw)
            q.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(p, q)
    return dst


class _Lines(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def test_a_fully_flagged_sector_is_kept_masked_and_noted(raw, tmp_path):
    root = _copy(raw, tmp_path / "raw", [261136679])
    s2 = [p for p in files_of(root, 261136679) if "-s0002-" in p.name][0]
    with fits.open(s2, mode="update") as h:
        h["LIGHTCURVE"].data["QUALITY"][:] |= 128  # manual exclude, everywhere
    lines = _Lines()
    logging.getLogger("mmu.builders.tess").addHandler(lines)
    try:
        rows, rejections = read_rows(root)
    finally:
        logging.getLogger("mmu.builders.tess").removeHandler(lines)
    assert not rejections
    row = rows[261136679]
    assert row["sectors"] == [1, 2, 3] and row["sector_n_good"][1] == 0 and min(row["sector_n_good"][::2]) > 15000
    want = expected(files_of(root, 261136679))
    np.testing.assert_array_equal(row["lightcurve"]["mask"], want["mask"])
    assert any(s2.name in m and "kept, fully masked" in m for m in lines.lines)


def test_corrupt_mislabelled_and_duplicate_files_are_rejected_by_name(raw, tmp_path):
    root = _copy(raw, tmp_path / "raw", [261136679, 8195886])
    rot = files_of(root, 261136679)
    rr = files_of(root, 8195886)
    # a download cut short: not whole 2880-byte blocks
    rot[0].write_bytes(rot[0].read_bytes()[:100_000])
    # garbage of a plausible size
    rr[1].write_bytes(b"\x00garbage" * 360 * 2)
    # a file whose header names another star
    with fits.open(rot[2], mode="update") as h:
        h[0].header["TICID"] = 1
    # an older reprocessing of sector 1 of the RR Lyrae star, next to the newer one
    older = rr[0].with_name("tess2018100000000" + rr[0].name[len("tess2018100000000"):])
    shutil.copy(rr[0], older)
    rows, rejections = read_rows(root)
    by_file = {r.file: r for r in rejections if r.file}
    assert set(by_file) == {rot[0].name, rr[1].name, rot[2].name, older.name}
    assert "truncated" in by_file[rot[0].name].reason and rot[0].name in by_file[rot[0].name].reason
    assert "not a readable FITS file" in by_file[rr[1].name].reason
    assert "TICID = 1" in by_file[rot[2].name].reason
    assert "second light curve" in by_file[older.name].reason and rr[0].name in by_file[older.name].reason
    assert all(by_file[f].object_id == str(t) for f, t in ((rot[0].name, 261136679), (older.name, 8195886)))
    # each star keeps what is left: the rotator sector 2 only, the RR Lyrae sector 1 (the newer file)
    assert rows[261136679]["sectors"] == [2] and rows[261136679]["files"] == [rot[1].name]
    assert rows[8195886]["sectors"] == [1] and rows[8195886]["files"] == [rr[0].name]
    np.testing.assert_array_equal(rows[8195886]["lightcurve"]["time"], expected([rr[0]])["time"])


def test_a_star_with_no_readable_file_is_named(tmp_path):
    p = tmp_path / "tess2018206045859-s0001-0000000000000042-0120-s_lc.fits"
    fits.HDUList([fits.PrimaryHDU()]).writeto(p)
    rows, rejections = read_rows(tmp_path)
    assert rows == {}
    reasons = [r.reason for r in rejections]
    assert any(p.name in r and "TICID" in r for r in reasons) and any("TIC 42: none of its 1" in r for r in reasons)


def test_missing_hdu_and_columns(raw, tmp_path):
    src = files_of(raw, 27182818)[0]
    a, b = tmp_path / src.name, tmp_path / src.name.replace("-0000000027182818-", "-0000000027182819-")
    with fits.open(src) as h:
        h[1].name = "FLUX"
        h.writeto(a)
    with fits.open(src) as h:
        h[0].header["TICID"] = 27182819
        cols = [c for c in h[1].columns if c.name != "QUALITY"]
        fits.HDUList([h[0], fits.BinTableHDU.from_columns(cols, header=h[1].header, name="LIGHTCURVE")]).writeto(b)
    b_ = builder(n_groups=1)
    [item] = b_.list_inputs(tmp_path)
    table, rejections = read_all(b_, RawInput(item.key, item.paths))
    assert table is None
    reasons = {r.file: r.reason for r in rejections if r.file}
    assert "HDU 'LIGHTCURVE' missing" in reasons[a.name]
    assert "missing column(s) ['QUALITY']" in reasons[b.name]


def test_inputs_group_stars_by_tic_modulo(raw):
    inputs = builder(n_groups=4).list_inputs(raw)
    assert [i.key for i in inputs] == [f"tic_mod4_{g}" for g in sorted({t % 4 for t, s in SECTORS.items() if s})]
    for i in inputs:
        g = int(i.key.rsplit("_", 1)[1])
        assert all(tess_mod.parse_name(Path(p).name)[0] % 4 == g for p in i.paths)
    assert sum(len(i.paths) for i in inputs) == sum(len(s) for s in SECTORS.values())


def test_sim_sky_coverage():
    # the ecliptic poles are seen in every sector of their hemisphere's year, the ecliptic never
    for s in range(1, 14):
        cam, _ = sim_tess.on_silicon(np.array([90.0, 270.0, 30.0]), np.array([-66.56, 66.56, 10.0]), s)
        assert list(cam) == [4, 0, 0]
    for s in range(14, 27):
        cam, _ = sim_tess.on_silicon(np.array([90.0, 270.0]), np.array([-66.56, 66.56]), s)
        assert list(cam) == [0, 4]
    with pytest.raises(ValueError, match="var_class"):
        sim_tess.draw_variability(pd.DataFrame({"ra": [0.0], "var_class": ["cepheid"]}), np.random.default_rng(0))


def test_download_script_lines_parse():
    line = ("curl -C - -L -o tess2018206045859-s0001-0000000008195886-0120-s_lc.fits https://mast.stsci.edu/api/"
            "v0.1/Download/file/?uri=mast:TESS/product/tess2018206045859-s0001-0000000008195886-0120-s_lc.fits")
    [(name, url)] = tess_mod.SCRIPT_RE.findall("#!/bin/sh\n" + line + "\n")
    assert tess_mod.parse_name(name) == (8195886, 1) and url.endswith(name)


def test_build_records_rejections(raw, tmp_path, dask_client):
    from mmu.engine.build import build

    root = _copy(raw, tmp_path / "raw", [261136679, 8195886, 31415926])
    bad = files_of(root, 31415926)[0]
    bad.write_bytes(bad.read_bytes()[:5000])
    res = build("tess_spoc", root, tmp_path / "hub", client=dask_client)
    m = res.manifest
    assert m.rows.total == 3 and not m.rejected_inputs
    [rej] = m.rejected_rows
    assert rej.file == bad.name and "truncated" in rej.reason and rej.object_id == "31415926"
    hub = {r["object_id"]: r for r in hub_table(res.path).to_pylist()}
    assert hub["31415926"]["sectors"] == [3]
    np.testing.assert_array_equal(hub["261136679"]["lightcurve"]["time"],
                                  expected(files_of(root, 261136679))["time"])
    # the binned series is a modality of the hub too (its spec in the schema), next to the cadences
    from mmu.model.schema import modalities_of

    mods = modalities_of(hub_table(res.path).schema)
    assert mods["binned_lightcurve"].kind == "lightcurve" and mods["lightcurve"].kind == "lightcurve"
    np.testing.assert_array_equal(hub["261136679"]["binned_n_good"],
                                  binned_by_hand(files_of(root, 261136679), 120.0)["n"])


def test_fetch_takes_limit_stars_across_the_sectors_scripts(tmp_path, monkeypatch, capsys):
    import functools
    import http.server
    import threading

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    root = tmp_path / "archive"
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/tess/"
        stars = STARS.iloc[[1, 0]]  # in sector 1's script the RR Lyrae star comes first
        written = sim_tess.write_tess(stars, root, np.random.default_rng(1), sectors=(1, 2, 3), base_url=url)
        monkeypatch.setattr(tess_mod, "ARCHIVE", url)
        from mmu.cli import main

        dest = tmp_path / "raw"
        assert main(["fetch", "tess_spoc", "--raw", str(dest), "--limit", "1", "--no-progress"]) == 0
        got = sorted(p.name for p in dest.rglob("*_lc.fits"))
        assert got == sorted(p.name for p in written if "-0000000008195886-" in p.name)  # sectors 1 and 2
        for p in dest.rglob("*_lc.fits"):  # the archive layout, byte for byte
            assert p.read_bytes() == (root / p.relative_to(dest)).read_bytes()
        rows, rejections = read_rows(dest)
        assert not rejections and list(rows) == [8195886] and rows[8195886]["sectors"] == [1, 2]
        assert main(["fetch", "tess_spoc", "--raw", str(dest), "--no-progress"]) == 0
        assert len(list(dest.rglob("*_lc.fits"))) == 5
        assert "2 already here" in capsys.readouterr().out
    finally:
        server.shutdown()
        server.server_close()


def test_mmu_sim_help_names_every_survey_it_writes():
    """`mmu sim --help` lists the star surveys too, and every dataset it names is in the catalog."""
    import re

    from mmu.registry.catalog import load_catalog
    from mmu.sim.cli import HELP

    text = " ".join(HELP.split())
    for survey in ("Legacy Survey", "DESI", "SDSS", "PLAsTiCC", "Gaia DR3", "TESS SPOC", "HSC PDR3 Wide"):
        assert survey in text, survey
    listed = re.search(r"\(the datasets: (.*?)\)", text).group(1)
    names = {n.strip() for n in re.split(r",|\band the truth\b", listed) if n.strip()}
    assert {"gaia_dr3", "tess_spoc", "hsc_pdr3_wide", "sim_truth_stars_v1"} <= names
    assert names <= {d.name for d in load_catalog().datasets}
