"""The sim_truth builder: the mock observatory's truth tables as catalog datasets, every value
carried, transients joinable to plasticc_2018 by object_id, and unknown columns reported."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mmu.engine.builder import InputRejected, get_builder
from test_builder_helpers import assert_opens, hub_table, link_tree, read_all


@pytest.fixture(scope="module")
def built(sim_raw, tmp_path_factory, dask_client):
    from mmu.engine.build import build

    tmp = tmp_path_factory.mktemp("sim_truth")
    raw = link_tree(sim_raw, tmp / "raw", "sim_truth")
    hub = tmp / "hub"
    kw = dict(client=dask_client)
    return raw, {t: build(f"sim_truth{s}_v1", raw, hub, **kw) for t, s in
                 (("galaxies", ""), ("transients", "_transients"), ("stars", "_stars"), ("qsos", "_qsos"))}


@pytest.mark.parametrize("which", ["galaxies", "transients", "stars", "qsos"])
def test_truth_rows_equal_the_parquet(built, which):
    raw, results = built
    res = results[which]
    id_col = {"galaxies": "galaxy_id", "transients": "object_id", "stars": "star_id", "qsos": "qso_id"}[which]
    truth = pq.read_table(raw / "sim_truth" / f"{which}.parquet").to_pandas().set_index(id_col)
    hub = hub_table(res.path).to_pandas().set_index("object_id")
    assert res.manifest.rejected_rows == [] and res.manifest.rows.total == len(truth)
    assert sorted(hub.index) == sorted(str(i) for i in truth.index)
    hub.index = hub.index.astype(np.int64)
    hub = hub.loc[truth.index]
    np.testing.assert_array_equal(hub["ra"], truth["ra"])
    for col in truth.columns:
        if col in ("ra", "dec"):
            continue
        a, b = hub[col], truth[col]
        if b.dtype.kind == "f" and a.dtype.kind != "f":  # float ids with NaN -> nullable int
            np.testing.assert_array_equal(a.isna(), b.isna())
            np.testing.assert_array_equal(a[b.notna()].astype(np.int64), b[b.notna()].astype(np.int64))
        else:
            pd.testing.assert_series_equal(a, b, check_names=False, check_dtype=False)


def test_transients_join_plasticc_ids(built):
    raw, results = built
    trans = results["transients"]
    hub = hub_table(trans.path)
    assert hub.column("object_id").to_pylist() == [str(i) for i in hub.column("plasticc_object_id").to_pylist()]


def test_undeclared_column_reported_missing_id_rejected(tmp_path):
    b = get_builder("sim_truth").from_options({"table": "transients"})
    (tmp_path / "sim_truth").mkdir()
    t = pa.table({"object_id": [1, 2], "ra": [1.0, 2.0], "dec": [0.0, 0.5], "class": ["SNIa", "AGN"],
                  "brand_new": [1, 2]})
    pq.write_table(t, tmp_path / "sim_truth" / "transients.parquet")
    table, rej = read_all(b, b.list_inputs(tmp_path)[0])
    assert table.num_rows == 2 and table.column("z").null_count == 2
    [r] = rej
    assert "brand_new" in r.reason and "transients.parquet" in r.reason
    pq.write_table(t.drop(["ra"]), tmp_path / "sim_truth" / "transients.parquet")
    with pytest.raises(InputRejected, match="transients.parquet: column\\(s\\) \\['ra'\\] missing"):
        list(b.read(b.list_inputs(tmp_path)[0]))


def test_hubs_open_with_datasets_and_lsdb(built):
    _, results = built
    for res in results.values():
        assert_opens(res.path, res.manifest.rows.total)
