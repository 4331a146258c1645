"""The plasticc builder: one row per object with its light curve, streamed across CSV blocks,
metadata joined, and bad CSVs / rows rejected with the file and line.

CSVs are written here with the column names of the unblinded Zenodo release (and Kaggle's),
independently of the mock observatory.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mmu.engine.builder import InputRejected, get_builder
from test_builder_helpers import assert_opens, hub_table, link_tree, read_all


def write_csvs(root: Path, n_obj=6, epochs=40, gz=True, drop_lc=None, drop_meta=None, seed=0, start_id=100,
               kaggle=False):
    rng = np.random.default_rng(seed)
    rows = []
    for k in range(n_obj):
        mjd = np.sort(rng.uniform(59580, 60600, epochs))
        for t in mjd:
            rows.append({"object_id": start_id + k, "mjd": round(t, 4), "passband": int(rng.integers(0, 6)),
                         "flux": round(float(rng.normal(10, 5)), 6), "flux_err": round(float(rng.uniform(1, 3)), 6),
                         "detected_bool": int(rng.random() < 0.3)})
    lc = pd.DataFrame(rows)
    meta = pd.DataFrame({"object_id": start_id + np.arange(n_obj), "ra": rng.uniform(0, 360, n_obj),
                         "decl": rng.uniform(-60, 0, n_obj), "ddf_bool": rng.integers(0, 2, n_obj),
                         "hostgal_photoz": rng.uniform(0, 1, n_obj), "true_target": rng.choice([42, 90], n_obj),
                         "true_z": rng.uniform(0, 1, n_obj), "true_peakmjd": rng.uniform(59600, 60500, n_obj)})
    if kaggle:
        lc = lc.rename(columns={"detected_bool": "detected"})
        meta = meta.rename(columns={"ddf_bool": "ddf"}).drop(columns=["true_target", "true_z", "true_peakmjd"])
    if drop_lc:
        lc = lc.drop(columns=[drop_lc])
    if drop_meta:
        meta = meta.drop(columns=[drop_meta])
    root.mkdir(parents=True, exist_ok=True)
    ext = ".csv.gz" if gz else ".csv"
    names = ("training_set", "training_set_metadata") if kaggle else ("plasticc_train_lightcurves",
                                                                        "plasticc_train_metadata")
    lc_path, meta_path = root / f"{names[0]}{ext}", root / f"{names[1]}{ext}"
    for df, path in ((lc, lc_path), (meta, meta_path)):
        df.to_csv(path, index=False, compression="gzip" if gz else None)
    return lc_path, meta_path, lc, meta


def small_blocks():
    # 4 KB CSV blocks and 2-object chunks: light curves straddle block and chunk boundaries
    return get_builder("plasticc").from_options({"block_bytes": 4096, "chunk_objects": 2})


def test_light_curves_exact_across_blocks(tmp_path):
    lc_path, meta_path, lc, meta = write_csvs(tmp_path / "plasticc")
    b = small_blocks()
    [item] = b.list_inputs(tmp_path)
    assert item.key == "plasticc/plasticc_train_lightcurves.csv.gz" and item.paths[1] == str(meta_path)
    table, rej = read_all(b, item)
    assert rej == [] and table.num_rows == 6
    for row in table.to_pylist():
        o = int(row["object_id"])
        want = lc[lc.object_id == o]
        c = row["lightcurve"]
        np.testing.assert_array_equal(c["time"], want.mjd.to_numpy())
        np.testing.assert_array_equal(np.array(c["flux"], np.float32), want.flux.to_numpy(np.float32))
        np.testing.assert_array_equal(np.array(c["flux_err"], np.float32), want.flux_err.to_numpy(np.float32))
        assert c["band"] == [f"lsst-{'ugrizy'[p]}" for p in want.passband]
        assert c["mask"] == [False] * len(want)
        assert row["detected_bool"] == [bool(d) for d in want.detected_bool]
        m = meta[meta.object_id == o].iloc[0]
        assert row["ra"] == m.ra and row["dec"] == m.decl and row["true_target"] == m.true_target
        assert row["ddf_bool"] == bool(m.ddf_bool) and row["hostgal_specz"] is None  # absent column: null


def test_kaggle_names_and_plain_csv(tmp_path):
    write_csvs(tmp_path, kaggle=True, gz=False)
    b = small_blocks()
    [item] = b.list_inputs(tmp_path)
    table, rej = read_all(b, item)
    assert table.num_rows == 6 and rej == []
    assert table.column("ddf_bool").null_count == 0 and table.column("detected_bool").null_count == 0


@pytest.mark.parametrize("which, column", [("lc", "flux_err"), ("meta", "decl")])
def test_csv_missing_column_rejected(tmp_path, which, column):
    lc_path, meta_path, _, _ = write_csvs(tmp_path, **{f"drop_{which}": column})
    b = small_blocks()
    with pytest.raises(InputRejected) as e:
        list(b.read(b.list_inputs(tmp_path)[0]))
    assert (lc_path if which == "lc" else meta_path).name in str(e.value) and column in str(e.value)


def test_missing_metadata_file_rejected(tmp_path):
    lc_path, meta_path, _, _ = write_csvs(tmp_path)
    meta_path.unlink()
    b = small_blocks()
    with pytest.raises(InputRejected, match="plasticc_train_lightcurves.csv.gz: its metadata CSV"):
        list(b.read(b.list_inputs(tmp_path)[0]))


def test_duplicate_orphan_and_bad_passband_rows(tmp_path):
    lc_path, meta_path, lc, meta = write_csvs(tmp_path, gz=False)
    first = lc[lc.object_id == 100].iloc[:3]
    bad_band = lc[lc.object_id == 101].copy()
    bad_band.iloc[5, bad_band.columns.get_loc("passband")] = 7
    orphan = lc[lc.object_id == 102].assign(object_id=999)
    rest = lc[lc.object_id > 102]
    # object 100 appears again after 103..105: a true duplicate within the file
    pd.concat([lc[lc.object_id == 100], bad_band, orphan, rest, first]).to_csv(lc_path, index=False)
    b = small_blocks()
    table, rej = read_all(b, b.list_inputs(tmp_path)[0])
    assert sorted(table.column("object_id").to_pylist()) == ["100", "103", "104", "105"]
    reasons = {r.object_id: r for r in rej}
    assert set(reasons) == {"100", "101", "999"}
    assert reasons["101"].row == 40 + 5 + 2 and "passband 7" in reasons["101"].reason
    assert "no row in the metadata" in reasons["999"].reason and reasons["999"].row == 82
    assert "reappears" in reasons["100"].reason and reasons["100"].row == 6 * 40 + 2
    assert all(lc_path.name in r.reason for r in rej)


@pytest.fixture(scope="module")
def built(sim_raw, tmp_path_factory, dask_client):
    """One engine build: the mock observatory's PLAsTiCC CSVs plus hand-written bad ones."""
    from mmu.engine.build import build

    tmp = tmp_path_factory.mktemp("plasticc")
    raw = link_tree(sim_raw, tmp / "raw", "plasticc")
    lc_path, meta_path, lc, meta = write_csvs(raw / "bad", n_obj=5, start_id=900_000)
    lc.loc[lc.object_id == 900_001, "flux"] = np.nan  # NaN flux
    lc.loc[lc.object_id == 900_002, "flux_err"] = 0.0  # non-positive error
    lc.to_csv(lc_path, index=False, compression="gzip")
    meta.loc[meta.object_id == 900_003, "decl"] = -95.0  # out of range
    meta["ra"], meta["decl"] = 150.0 + 0.01 * np.arange(5), meta["decl"].where(meta.decl < -90, 2.0)
    meta.to_csv(meta_path, index=False, compression="gzip")
    write_csvs(raw / "bad2", n_obj=3, start_id=950_000, drop_lc="mjd")  # a CSV missing a column
    res = build("plasticc_2018", raw, tmp / "hub", client=dask_client)
    return raw, res


def test_build_rejects_bad_inputs_and_rows_by_name(built):
    raw, res = built
    m = res.manifest
    [bad] = m.rejected_inputs
    assert bad.input == "bad2/plasticc_train_lightcurves.csv.gz" and "mjd" in bad.reason
    by_id = {r.object_id: r for r in m.rejected_rows}
    assert set(by_id) == {"900001", "900002", "900003"}
    assert "flux" in by_id["900001"].reason and "flux_err" in by_id["900002"].reason
    assert "dec outside" in by_id["900003"].reason
    n_sim = len(pd.read_csv(raw / "plasticc" / "plasticc_train_metadata.csv.gz"))
    assert m.rows.total == n_sim + 2


def test_mock_light_curves_in_the_hub_equal_the_csv(built):
    raw, res = built
    lc = pd.read_csv(raw / "plasticc" / "plasticc_train_lightcurves.csv.gz")
    meta = pd.read_csv(raw / "plasticc" / "plasticc_train_metadata.csv.gz").set_index("object_id")
    rows = {int(r["object_id"]): r for r in hub_table(res.path).to_pylist()}
    for o, want in lc.groupby("object_id", sort=False):
        row = rows[int(o)]
        c = row["lightcurve"]
        np.testing.assert_array_equal(c["time"], want.mjd.to_numpy())
        np.testing.assert_array_equal(np.array(c["flux"], np.float32), want.flux.to_numpy(np.float32))
        np.testing.assert_array_equal(np.array(c["flux_err"], np.float32), want.flux_err.to_numpy(np.float32))
        assert c["band"] == [f"lsst-{'ugrizy'[p]}" for p in want.passband]
        assert row["detected_bool"] == [bool(d) for d in want.detected_bool]
        assert row["ra"] == meta.ra[o] and row["dec"] == meta.decl[o] and row["true_target"] == meta.true_target[o]


def test_hub_opens_with_datasets_and_lsdb(built):
    _, res = built
    assert_opens(res.path, res.manifest.rows.total)
