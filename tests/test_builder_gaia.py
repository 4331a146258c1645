"""The Gaia DR3 builder on the archive's bulk-file format, written by the mock (`mmu.sim.gaia`)
and edited by hand for the cases a real archive throws at it. The reference is GaiaXPy itself:
`gaiaxpy.calibrate` reads the mock XP file and samples the same spectra as the builder; the
correlation unpacking is checked against GaiaXPy's and against numbers worked by hand."""
from __future__ import annotations

import gzip
import io
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import mmu.builders.gaia as gaia
import mmu.sim.gaia as sim_gaia
from mmu.engine.builder import InputRejected, RawInput, get_builder
from mmu.registry.catalog import load_catalog
from test_builder_helpers import assert_opens, hub_table, read_all

# the reference implementation and the source of the XP design matrices (the [build] and [sim] extras)
gaiaxpy = pytest.importorskip("gaiaxpy")

N_XP = 8  # stars with G < 17.65 (XP spectra); two fainter ones have gaia_source rows only


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    rng = np.random.default_rng(20)
    n = N_XP + 2
    stars = pd.DataFrame({"ra": rng.uniform(150.0, 150.3, n), "dec": rng.uniform(2.0, 2.3, n),
                          "teff": np.linspace(3600, 9500, n), "logg": rng.uniform(1.5, 5.0, n),
                          "mh": rng.uniform(-1.5, 0.3, n),
                          "gmag": np.r_[np.linspace(11.0, 17.4, N_XP), 18.5, 20.2]})
    stars["source_id"] = sim_gaia.source_ids(stars["ra"], stars["dec"], rng)
    root = tmp_path_factory.mktemp("gaia")
    paths = sim_gaia.write_gaia(stars, root / "pristine", rng)
    return root, paths, stars


def fresh(raw, tmp_path) -> Path:
    """A copy of the mock raw tree that a test may edit."""
    shutil.copytree(raw[0] / "pristine", tmp_path / "raw")
    return tmp_path / "raw"


def xp_file(root: Path) -> Path:
    return next(root.rglob("XpContinuousMeanSpectrum_*.csv.gz"))


def edit_table(path: Path, fn) -> None:
    """Rewrite a gzipped ECSV file: keep its header, apply `fn` to the cells (all text)."""
    text = gzip.open(path, "rt").read()
    header = "".join(line + "\n" for line in text.splitlines() if line.startswith("#"))
    df = pd.read_csv(io.StringIO(text), comment="#", dtype=str, keep_default_na=False)
    df = fn(df)
    with gzip.open(path, "wt") as f:
        f.write(header + df.to_csv(index=False, lineterminator="\n"))


def gaiaxpy_calibrate(path: Path, tmp_path: Path) -> pd.DataFrame:
    """GaiaXPy's sampled spectra of an XP file (it reads .csv/.ecsv, not .gz: unzipped first)."""
    plain = tmp_path / (path.name.removesuffix(".gz"))
    with gzip.open(path, "rb") as src, open(plain, "wb") as dst:
        shutil.copyfileobj(src, dst)
    df, grid = gaiaxpy.calibrate(str(plain), save_file=False)
    assert np.array_equal(grid, np.arange(336.0, 1021.0, 2.0))
    return df.set_index("source_id")


def build(root: Path):
    builder = get_builder("gaia")()
    inputs = builder.list_inputs(root)
    assert len(inputs) == 1
    return read_all(builder, inputs[0])


def arrays(table, field):
    return np.array(table["spectrum"].combine_chunks().field(field).flatten()).reshape(table.num_rows, -1)


# ---------------------------------------------------------------------------------------------


def test_gaiaxpy_reads_the_mock_and_samples_the_same_spectra(raw, tmp_path):
    root = raw[0] / "pristine"
    table, rejections = build(root)
    assert rejections == [] and table.num_rows == N_XP  # the two faint stars have no XP spectrum
    ref = gaiaxpy_calibrate(xp_file(root), tmp_path)
    ids = table["source_id"].to_numpy()
    assert sorted(ids) == sorted(ref.index)
    flux, ivar, mask = arrays(table, "flux"), arrays(table, "ivar"), arrays(table, "mask")
    ref_flux = np.stack(ref.loc[ids, "flux"].to_numpy()) * 1e19  # W m-2 nm-1 -> 1e-17 erg s-1 cm-2 A-1
    ref_err = np.stack(ref.loc[ids, "flux_error"].to_numpy()) * 1e19
    assert not mask.any()
    np.testing.assert_allclose(flux, ref_flux, rtol=1e-6)  # float32 storage
    np.testing.assert_allclose(1 / np.sqrt(ivar), ref_err, rtol=1e-6)
    np.testing.assert_array_equal(arrays(table, "lambda")[0], np.arange(3360.0, 10201.0, 20.0))
    assert table["object_id"].to_pylist() == [str(i) for i in ids]
    assert set(table["survey"].to_pylist()) == {"gaia"} and set(table["release"].to_pylist()) == {"dr3"}


def test_the_mock_spectrum_follows_its_sed_and_the_catalogue_columns_join(raw):
    root = raw[0] / "pristine"
    stars = raw[2]
    table, _ = build(root)
    src = pd.read_csv(next(root.rglob("GaiaSource_*.csv.gz")), comment="#", na_values=["null"]).set_index("source_id")
    ap = pd.read_csv(next(root.rglob("AstrophysicalParameters_*.csv.gz")), comment="#",
                     na_values=["null"]).set_index("source_id")
    ids = table["source_id"].to_numpy()
    for col in ("ra", "dec", "parallax", "pmra", "pmdec_error", "phot_g_mean_mag", "phot_rp_mean_mag"):
        np.testing.assert_allclose(table[col].to_numpy(), src.loc[ids, col].to_numpy(), rtol=1e-6, err_msg=col)
    for col in ("teff_gspphot", "logg_gspphot", "mh_gspphot"):
        np.testing.assert_allclose(table[col].to_numpy(), ap.loc[ids, col].to_numpy(), rtol=1e-6, err_msg=col)
    assert np.all(src.loc[stars["source_id"], "ra"].to_numpy() == stars["ra"].to_numpy())
    truth = stars.set_index("source_id").loc[ids]
    # the spectrum is the star's SED (mmu.sim.stars, scaled to its G) projected on the XP bases,
    # plus noise drawn from the published covariance: chi = (flux - projection) / error ~ N(0, 1)
    from mmu.sim.stars import stellar_sed

    sed = stellar_sed(truth["teff"].to_numpy(), truth["logg"].to_numpy(), truth["mh"].to_numpy(), sim_gaia.SED_WAVE)
    shift = truth["gmag"].to_numpy() - sim_gaia.synthetic_mags(sim_gaia.SED_WAVE, sed)["G"]
    grid, design, merge = sim_gaia.xp_sampling()
    on_grid = np.stack([np.interp(grid * 10, sim_gaia.SED_WAVE, f) for f in sed]) * 10 ** (-0.4 * shift)[:, None]
    coeff = sim_gaia.project_xp(on_grid * 1e-2)  # erg s-1 cm-2 A-1 -> W m-2 nm-1
    projected = sum((coeff[b] @ design[b]) * merge[b] for b in ("bp", "rp")) * 1e19
    inner = (grid > 400) & (grid < 950)  # the arm ends carry the projection's ripple
    assert np.median(np.abs(projected[:, inner] / (on_grid[:, inner] * 1e17) - 1)) < 0.02
    flux, ivar = arrays(table, "flux"), arrays(table, "ivar")
    chi = (flux - projected) * np.sqrt(ivar)
    assert 0.5 < np.mean(chi ** 2) < 1.6 and np.abs(np.median(chi)) < 0.3
    order = np.argsort(truth["gmag"].to_numpy())
    # the fainter star's spectrum is the noisier one
    snr = np.median(flux * np.sqrt(ivar), axis=1)
    assert snr[order[0]] > 5 * snr[order[-1]]


def test_packed_correlations_give_the_covariance_by_hand_and_as_gaiaxpy():
    from gaiaxpy.core.generic_functions import array_to_symmetric_matrix
    from gaiaxpy.spectrum.utils import _correlation_to_covariance_dr3int5

    packed = np.array([0.5, 0.1, -0.2])  # C10, C20, C21: the lower triangle row by row
    errors = np.array([1.0, 2.0, 3.0])
    expected_corr = np.array([[1.0, 0.5, 0.1], [0.5, 1.0, -0.2], [0.1, -0.2, 1.0]])
    np.testing.assert_array_equal(gaia.unpack_correlations(packed, 3), expected_corr)
    np.testing.assert_array_equal(array_to_symmetric_matrix(packed, 3), expected_corr)  # GaiaXPy's reading
    cov = gaia.coefficient_covariance(errors, packed)
    np.testing.assert_allclose(cov, [[1.0, 1.0, 0.3], [1.0, 4.0, -1.2], [0.3, -1.2, 9.0]], rtol=1e-15)
    # GaiaXPy scales by the LSQ standard deviation and multiplies the sampled error back: same result
    stdev = 1.7
    np.testing.assert_allclose(_correlation_to_covariance_dr3int5(expected_corr, errors, stdev) * stdev ** 2, cov,
                               rtol=1e-14)
    # the sampled error is sqrt(diag(D^T Cov D)); a 55-coefficient arm against the explicit product
    rng = np.random.default_rng(3)
    n = 55
    design = rng.normal(size=(n, 7))
    corr = sim_gaia.random_correlation(n, rng)
    err = rng.uniform(0.5, 2.0, n)
    c = rng.normal(size=n)
    flux, sigma = gaia.sample_arm(c[None], err[None], sim_gaia.pack_correlations(corr)[None], design)
    full = np.diag(err) @ corr @ np.diag(err)
    np.testing.assert_allclose(flux[0], c @ design, rtol=1e-12)
    np.testing.assert_allclose(sigma[0], np.sqrt(np.diag(design.T @ full @ design)), rtol=1e-12)


def test_a_missing_arm_keeps_the_row_with_that_arm_masked_where_gaiaxpy_has_nan(raw, tmp_path):
    root = fresh(raw, tmp_path)
    path = xp_file(root)
    arm_cols = lambda b: [c for c in pd.read_csv(path, comment="#", nrows=0).columns  # noqa: E731
                          if c.startswith(f"{b}_")]

    def drop(df):
        df.loc[1, arm_cols("bp")] = "null"  # RP only (as DR3's source 5405570973190252288)
        df.loc[2, arm_cols("rp")] = "null"  # BP only
        df.loc[3, arm_cols("bp") + arm_cols("rp")] = "null"  # nothing: rejected, named
        return df

    edit_table(path, drop)
    ids = pd.read_csv(path, comment="#", usecols=["source_id"])["source_id"].to_numpy()
    table, rejections = build(root)
    assert [(r.object_id, r.column, r.file) for r in rejections] == [(str(ids[3]), "bp_coefficients", path.name)]
    assert "no XP spectrum" in rejections[0].reason and rejections[0].row == 3
    assert table.num_rows == N_XP - 1  # every other row kept
    by_id = {s: i for i, s in enumerate(table["source_id"].to_pylist())}
    flux, ivar, mask = arrays(table, "flux"), arrays(table, "ivar"), arrays(table, "mask")
    lam_nm = arrays(table, "lambda")[0] / 10
    # GaiaXPy on the same file (without the row that has no arm: GaiaXPy cannot sample it)
    edit_table(path, lambda df: df.drop(index=3))
    ref = gaiaxpy_calibrate(path, tmp_path)
    for row, arm, kept in ((1, "bp", lam_nm > 635), (2, "rp", lam_nm < 643)):
        i = by_id[int(ids[row])]
        ref_flux = ref.loc[ids[row], "flux"] * 1e19
        np.testing.assert_array_equal(mask[i], np.isnan(ref_flux))
        np.testing.assert_array_equal(mask[i], ~kept)
        np.testing.assert_allclose(flux[i][kept], ref_flux[kept], rtol=1e-6)
        np.testing.assert_allclose(1 / np.sqrt(ivar[i][kept]), ref.loc[ids[row], "flux_error"][kept] * 1e19, rtol=1e-6)
        assert np.all(ivar[i][~kept] == 0) and np.all(flux[i][~kept] == 0)
        assert table[f"has_{arm}"][i].as_py() is False
        assert table[f"{arm}_coefficients"][i].as_py() is None and table[f"{arm}_n_parameters"][i].as_py() is None
    other = by_id[int(ids[0])]
    assert table["has_bp"][other].as_py() and table["has_rp"][other].as_py() and not mask[other].any()


def test_malformed_arrays_are_rejected_naming_file_column_and_source_id(raw, tmp_path):
    root = fresh(raw, tmp_path)
    path = xp_file(root)

    def corrupt(df):
        df.loc[0, "rp_coefficient_errors"] = df.loc[0, "rp_coefficient_errors"].replace(",", ",abc,", 1)
        df.loc[2, "bp_coefficients"] = df.loc[2, "bp_coefficients"].rsplit(",", 1)[0] + "]"  # 54 elements
        df.loc[4, "bp_coefficient_correlations"] = df.loc[4, "bp_coefficient_correlations"].lstrip("[")
        df.loc[5, "rp_coefficient_correlations"] = "null"  # coefficients without their correlations
        return df

    edit_table(path, corrupt)
    ids = pd.read_csv(path, comment="#", usecols=["source_id"])["source_id"].to_numpy()
    table, rejections = build(root)
    got = {r.row: r for r in rejections}
    assert sorted(got) == [0, 2, 4, 5]
    expect = {0: ("rp_coefficient_errors", "element 'abc' is not a number"),
              2: ("bp_coefficients", "has 54 elements"),
              4: ("bp_coefficient_correlations", "not an array"),
              5: ("rp_coefficient_correlations", "is null while rp_coefficients is not")}
    for row, (column, words) in expect.items():
        r = got[row]
        assert r.column == column and r.object_id == str(ids[row]) and r.file == path.name
        assert words in r.reason and path.name in r.reason and f"source_id {ids[row]}" in r.reason, r.reason
    assert table.num_rows + len(rejections) == N_XP  # nothing lost silently
    assert set(table["source_id"].to_pylist()) == {int(ids[i]) for i in (1, 3, 6, 7)}
    # read in chunks of 3 sources: the same rejections, with rows counted from the file's start
    small = gaia.Gaia(gaia.GaiaConfig(chunk_rows=3))
    chunked, again = read_all(small, small.list_inputs(root)[0])
    assert again == rejections and chunked.equals(table)


def test_plain_archive_csv_with_parenthesised_arrays_and_empty_nulls(raw, tmp_path):
    pristine, _ = build(raw[0] / "pristine")
    root = fresh(raw, tmp_path)
    path = xp_file(root)
    text = gzip.open(path, "rt").read()
    body = "".join(line + "\n" for line in text.splitlines() if not line.startswith("#"))
    body = body.replace("[", "(").replace("]", ")").replace("null", "")
    path.unlink()
    plain = path.with_name(path.name.removesuffix(".gz"))  # an archive query's CSV, not gzipped
    plain.write_text(body)
    table, rejections = build(root)
    assert rejections == [] and table.num_rows == N_XP
    for col in ("spectrum", "bp_coefficients", "rp_coefficient_correlations", "teff_gspphot"):
        assert table[col].equals(pristine[col]), col


def test_sources_without_gaia_source_or_ap_rows(raw, tmp_path):
    root = fresh(raw, tmp_path)
    src = next(root.rglob("GaiaSource_*.csv.gz"))
    ap = next(root.rglob("AstrophysicalParameters_*.csv.gz"))
    ids = pd.read_csv(xp_file(root), comment="#", usecols=["source_id"])["source_id"].to_numpy()
    edit_table(src, lambda df: df[df["source_id"] != str(ids[1])])
    edit_table(ap, lambda df: df[df["source_id"] != str(ids[2])])
    table, rejections = build(root)
    assert [(r.object_id, r.column) for r in rejections] == [(str(ids[1]), "source_id")]
    assert "no row in the GaiaSource files" in rejections[0].reason
    assert table.num_rows == N_XP - 1
    row = table["source_id"].to_pylist().index(int(ids[2]))
    assert table["teff_gspphot"][row].as_py() is None and table["parallax"][row].as_py() is not None
    # no GaiaSource file at all for the XP file's range: the whole input is rejected, saying what to fetch
    src.unlink()
    builder = get_builder("gaia")()
    with pytest.raises(InputRejected, match=r"no GaiaSource_\*\.csv\.gz file covers HEALPix-8 pixels"):
        list(builder.read(builder.list_inputs(root)[0]))


def test_list_inputs_joins_the_overlapping_ranges(tmp_path):
    for rel in ("Spectroscopy/xp_continuous_mean_spectrum/XpContinuousMeanSpectrum_000000-003111.csv.gz",
                "Spectroscopy/xp_continuous_mean_spectrum/XpContinuousMeanSpectrum_003112-005263.csv.gz",
                "gaia_source/GaiaSource_000000-003111.csv.gz", "gaia_source/GaiaSource_003112-004000.csv.gz",
                "gaia_source/GaiaSource_004001-005263.csv.gz",
                "Astrophysical_parameters/astrophysical_parameters/AstrophysicalParameters_000000-005263.csv.gz",
                "gaia_source/_MD5SUM.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    inputs = get_builder("gaia")().list_inputs(tmp_path)
    assert [(i.key, [Path(p).name for p in i.paths]) for i in inputs] == [
        ("XpContinuousMeanSpectrum_000000-003111",
         ["XpContinuousMeanSpectrum_000000-003111.csv.gz", "GaiaSource_000000-003111.csv.gz",
          "AstrophysicalParameters_000000-005263.csv.gz"]),
        ("XpContinuousMeanSpectrum_003112-005263",
         ["XpContinuousMeanSpectrum_003112-005263.csv.gz", "GaiaSource_003112-004000.csv.gz",
          "GaiaSource_004001-005263.csv.gz", "AstrophysicalParameters_000000-005263.csv.gz"])]


def test_an_unreadable_xp_file_is_rejected_with_its_name(tmp_path):
    path = tmp_path / "XpContinuousMeanSpectrum_000000-003111.csv.gz"
    path.write_bytes(b"\x1f\x8b\x08\x00 this is not gzip")
    src = tmp_path / "GaiaSource_000000-003111.csv.gz"
    src.write_bytes(b"")
    builder = get_builder("gaia")()
    with pytest.raises(InputRejected, match="XpContinuousMeanSpectrum_000000-003111.csv.gz: not a readable"):
        list(builder.read(RawInput("x", (str(path), str(src)))))


def test_catalog_entry_and_schema():
    entry = load_catalog().dataset("gaia_dr3")
    builder = get_builder(entry.builder).from_options(entry.builder_config)
    schema = builder.schema()
    assert schema.field("spectrum").type.field("flux").type.list_size == 343
    for col in ("source_id", "parallax_error", "pmra_error", "phot_bp_mean_mag", "teff_gspphot", "mh_gspphot",
                "rp_coefficient_correlations", "bp_standard_deviation"):
        assert col in schema.names, col
    assert entry.license.id == "CC-BY-SA-3.0-IGO" and len(entry.citation) >= 3


def test_mock_of_the_sim_star_table_uses_its_observed_flux_and_distance(tmp_path):
    from mmu.sim import stars as sim_stars

    rng = np.random.default_rng(8)
    r = np.array([12.0, 13.5, 15.0, 16.0])
    pars = sim_stars.draw_parameters(rng, r)
    table = pd.DataFrame({"ra": [45.0, 45.01, 45.02, 45.03], "dec": [10.0, 10.01, 10.02, 10.03], "r_mag": r, **pars,
                          "ebv_mw": 0.05})
    table["z"] = table["rv_kms"] / sim_stars.C_KMS
    table = sim_stars.photometry(table)
    sim_gaia.write_gaia(table, tmp_path, rng)
    built, rejections = build(tmp_path)
    assert rejections == [] and built.num_rows == 4
    expect = sim_gaia.synthetic_mags(sim_gaia.SED_WAVE, sim_stars.observed_flambda(table, sim_gaia.SED_WAVE))
    src = pd.read_csv(next(tmp_path.rglob("GaiaSource_*.csv.gz")), comment="#", na_values=["null"])
    order = np.argsort(src["ra"].to_numpy())  # the table's order (ra increases with it)
    np.testing.assert_allclose(src["phot_g_mean_mag"].to_numpy()[order], expect["G"], atol=0.005)
    plx = src["parallax"].to_numpy()[order]
    assert np.all(np.abs(plx - 1000 / table["distance_pc"].to_numpy()) < 5 * src["parallax_error"].to_numpy()[order])


def test_engine_build_keeps_good_rows_names_the_bad_and_opens(raw, tmp_path, dask_client):
    from mmu.engine.build import build

    root = fresh(raw, tmp_path)
    path = xp_file(root)
    ids = pd.read_csv(path, comment="#", usecols=["source_id"])["source_id"].to_numpy()

    def edit(df):
        df.loc[0, "bp_coefficients"] = "[1.0,2.0"  # malformed
        df.loc[1, [c for c in df.columns if c.startswith("bp_")]] = "null"  # RP only: kept, BP masked
        return df

    edit_table(path, edit)
    res = build("gaia_dr3", root, tmp_path / "hub", client=dask_client)
    m = res.manifest
    assert m.rows.total == N_XP - 1 and not m.rejected_inputs
    [bad] = m.rejected_rows
    assert bad.object_id == str(ids[0]) and bad.column == "bp_coefficients" and path.name in bad.reason
    rows = {r["source_id"]: r for r in hub_table(res.path).to_pylist()}
    rp_only = rows[int(ids[1])]
    assert rp_only["has_bp"] is False and rp_only["bp_coefficients"] is None
    assert sum(rp_only["spectrum"]["mask"]) == int(np.sum(np.arange(336.0, 1021.0, 2.0) <= 635))
    assert_opens(res.path, m.rows.total)


def test_loading_gaiaxpy_leaves_matplotlib_settings_alone():
    """GaiaXPy's plotter sets text.usetex on import; our figures must not depend on whether the Gaia
    builder or mock ran first in the process (checked in a fresh interpreter)."""
    import subprocess
    import sys

    code = ("import matplotlib; from mmu.builders.gaia import xp_model; from mmu.sim.gaia import xp_sampling; "
            "xp_model(); xp_sampling(); import gaiaxpy; print(matplotlib.rcParams['text.usetex'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
