"""Cross-matching against an independent astropy computation (partition borders, the pole,
RA = 0/360), the paired catalog as a hub dataset, host association, and WebDataset export."""
from __future__ import annotations

import glob
import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord, match_coordinates_sky

from mmu.engine.build import build
from mmu.model.schema import modalities_of
from mmu.model.splits import SplitDefinition
from mmu.model.validate import validate_rows
from mmu.pairing.crossmatch import CrossmatchError, crossmatch, directional_light_radius
from mmu.shards.export import ExportError, export_wds
from mmu_testbuilder import write_spectra_file

SPLIT = SplitDefinition()
QUIET: dict = {}  # progress and log go through mmu.logs (no per-call switches)


def _border_points(rng, n, ra0, dec0, width):
    """Points within a fraction of an arcsec of an order-4 HEALPix border (by bisection)."""
    out = []
    while len(out) < n:
        p = np.array([ra0 + rng.uniform(-width, width), dec0 + rng.uniform(-width, width)])
        q = p + rng.normal(0, 2.0, 2)
        if SPLIT.pixels([p[0]], [p[1]])[0] == SPLIT.pixels([q[0]], [q[1]])[0]:
            continue
        a, b = p, q
        for _ in range(40):
            mid = (a + b) / 2
            same = SPLIT.pixels([mid[0]], [mid[1]])[0] == SPLIT.pixels([a[0]], [a[1]])[0]
            a, b = (mid, b) if same else (a, mid)
        out.append(a + rng.normal(0, 0.2 / 3600, 2))
    return np.array(out)


def make_pair_raw(root: Path, seed=11):
    rng = np.random.default_rng(seed)
    wrap = np.c_[rng.uniform(-0.8, 0.8, 50) % 360, rng.uniform(9, 11, 50)]
    wrap[:12, 0] = rng.uniform(-0.3, 0.3, 12) / 3600 % 360  # pairs straddling RA = 0/360
    pole = np.c_[rng.uniform(0, 360, 40), rng.uniform(88.8, 89.95, 40)]
    border = _border_points(rng, 60, 60.0, 20.0, 3.0)
    left = np.vstack([wrap, pole, border])
    # a many-to-one case: a second left object 0.4" from the first one
    twin = left[:1] + [0.4 / 3600 / np.cos(np.radians(left[0, 1])), 0]
    twin[:, 0] %= 360
    left = np.vstack([left, twin])
    lid = np.arange(len(left))
    has = rng.random(len(left)) < 0.85
    has[-1], has[0] = False, True
    off = rng.normal(0, 0.35, (len(left), 2)) / 3600
    off[0] = (0.1 / 3600, 0.0)
    right = np.c_[(left[:, 0] + off[:, 0] / np.cos(np.radians(left[:, 1]))) % 360,
                  np.clip(left[:, 1] + off[:, 1], -90, 90)][has]
    noise = np.c_[rng.uniform(-0.8, 0.8, 30) % 360, rng.uniform(9, 11, 30)]
    right = np.vstack([right, noise])
    rid = np.arange(len(right)) + 100000
    write_spectra_file(root / "left" / "spectra-l.fits", lid, left[:, 0], left[:, 1], seed=1)
    write_spectra_file(root / "right" / "other-r.fits", rid, right[:, 0], right[:, 1], seed=2)
    return left, lid, right, rid


def astropy_pairs(left, lid, right, rid, radius=1.0):
    L = SkyCoord(left[:, 0] * u.deg, left[:, 1] * u.deg)
    R = SkyCoord(right[:, 0] * u.deg, right[:, 1] * u.deg)
    idx, d2d, _ = match_coordinates_sky(L, R)
    d = d2d.to_value(u.arcsec)
    cand = sorted((rid[idx[i]], d[i], str(lid[i])) for i in range(len(lid)) if d[i] < radius)
    best = {}
    for r, dist, left in cand:
        best.setdefault(r, (left, dist))
    return {(left, str(r)): dist for r, (left, dist) in best.items()}


@pytest.fixture(scope="module")
def paired(tmp_path_factory, test_overlay, dask_client):
    os.environ["MMU_CATALOG"] = str(test_overlay)
    tmp = tmp_path_factory.mktemp("xmatch")
    truth = make_pair_raw(tmp / "raw")
    hub = tmp / "hub"
    for name in ("testsurvey_v1", "othersurvey_v1"):
        build(name, tmp / "raw", hub, client=dask_client, **QUIET)
    result = crossmatch(["testsurvey_v1", "othersurvey_v1"], hub, "test_x_other", client=dask_client, **QUIET)
    yield tmp, hub, truth, result
    os.environ.pop("MMU_CATALOG", None)


def _table(hub, name):
    return pq.read_table(hub / name / name / "dataset")


def test_pairs_equal_astropy_across_borders_pole_and_ra_wrap(paired):
    tmp, hub, (left, lid, right, rid), result = paired
    expected = astropy_pairs(left, lid, right, rid)
    t = _table(hub, "test_x_other")
    got = dict(zip(zip(t.column("object_id").to_pylist(), t.column("othersurvey_object_id").to_pylist()),
                   t.column("othersurvey_match_dist_arcsec").to_pylist()))
    assert set(got) == set(expected), (set(got) ^ set(expected))
    for k, dist in expected.items():
        assert got[k] == pytest.approx(dist, abs=1e-3)
    # the data really exercises the hard cases
    lpos = {str(i): p for i, p in zip(lid, left)}
    rpos = {str(i): p for i, p in zip(rid, right)}
    lp = np.array([lpos[a] for a, _ in expected])
    rp = np.array([rpos[b] for _, b in expected])
    assert (SPLIT.pixels(lp[:, 0], lp[:, 1]) != SPLIT.pixels(rp[:, 0], rp[:, 1])).sum() >= 5
    assert (((lp[:, 0] > 359) & (rp[:, 0] < 1)) | ((lp[:, 0] < 1) & (rp[:, 0] > 359))).sum() >= 1
    assert (lp[:, 1] > 88.8).sum() >= 25
    assert result.manifest.match["many_to_one_dropped"]["othersurvey"] >= 1


def test_paired_catalog_is_a_valid_hub_dataset(paired):
    tmp, hub, truth, result = paired
    m = result.manifest
    t = _table(hub, "test_x_other")
    mods = modalities_of(t.schema)
    assert set(mods) == {"testsurvey_spectrum", "othersurvey_spectrum"}
    assert validate_rows(t, mods) == []
    assert {"testsurvey_mag", "othersurvey_mag", "othersurvey_ra", "testsurvey_split"} <= set(t.column_names)
    assert m.inputs_datasets == ["testsurvey_v1", "othersurvey_v1"]
    assert len(m.inputs_revisions) == 2 and m.content_revision and m.paired
    assert min(int(f.split("Norder=")[1].split("/")[0]) for fs in m.data_files.values() for f in fs) >= SPLIT.order
    # values joined exactly from the inputs
    other = _table(hub, "othersurvey_v1")
    pos = {o: i for i, o in enumerate(other.column("object_id").to_pylist())}
    for row in t.slice(0, 5).to_pylist():
        src = other.slice(pos[row["othersurvey_object_id"]], 1).to_pylist()[0]
        assert row["othersurvey_spectrum"]["flux"] == src["spectrum"]["flux"]
        assert row["othersurvey_mag"] == src["mag"]
    # split: the most restrictive of the members'
    rank = {"train": 0, "val": 1, "test": 2}
    for row in t.to_pylist():
        assert rank[row["split"]] == max(rank[row["testsurvey_split"]], rank[row["othersurvey_split"]])
    datasets = pytest.importorskip("datasets")
    ds = datasets.load_dataset(str(hub / "test_x_other"), split="train", streaming=True)
    assert next(iter(ds))["othersurvey_spectrum"]["flux"]


def test_keep_unmatched_keeps_left_rows_with_null_modality(paired, dask_client):
    tmp, hub, (left, lid, right, rid), result = paired
    crossmatch(["testsurvey_v1", "othersurvey_v1"], hub, "test_x_other_all", keep_unmatched=True,
                   client=dask_client, **QUIET)
    t = _table(hub, "test_x_other_all")
    assert t.num_rows == len(lid)
    nulls = t.column("othersurvey_spectrum").null_count
    assert nulls == len(lid) - result.manifest.rows.total


@pytest.mark.parametrize("kwargs, message", [
    (dict(names=["testsurvey_v1", "nope_v1"]), "is not built"),
    (dict(radius_arcsec=0), "must be > 0"),
    (dict(radius_arcsec=-1), "must be > 0"),
    (dict(radius_arcsec=1e4), "exceeds the margin cache"),
    (dict(out="test_x_other"), "exists; pass --overwrite"),
    (dict(out="Bad-Name"), "lower case"),
    (dict(names=["testsurvey_v1"]), "at least two"),
    (dict(method="host"), "lacks"),
])
def test_bad_requests_are_refused_and_write_nothing(paired, dask_client, kwargs, message):
    tmp, hub, truth, result = paired
    args = dict(names=["testsurvey_v1", "othersurvey_v1"], out="x_refused")
    args.update(kwargs)
    before = sorted(p.name for p in hub.iterdir())
    with pytest.raises(CrossmatchError, match=message):
        crossmatch(args.pop("names"), hub, args.pop("out"), client=dask_client, **args, **QUIET)
    assert sorted(p.name for p in hub.iterdir()) == before


def test_mismatched_schema_versions_are_refused(paired, dask_client, tmp_path):
    import json
    import shutil
    tmp, hub, truth, result = paired
    hub2 = tmp_path / "hub"
    for n in ("testsurvey_v1", "othersurvey_v1"):
        shutil.copytree(hub / n, hub2 / n)
    m = json.loads((hub2 / "othersurvey_v1" / "build.json").read_text())
    m["schema_version"] = "0.9"
    (hub2 / "othersurvey_v1" / "build.json").write_text(json.dumps(m))
    with pytest.raises(CrossmatchError, match="schema versions differ"):
        crossmatch(["testsurvey_v1", "othersurvey_v1"], hub2, "x", client=dask_client, **QUIET)


def test_directional_light_radius_by_hand():
    # circular: the radius in every direction
    assert directional_light_radius(3.0, 4.0, 2.0, 0.0, 0.0) == pytest.approx(2.0)
    # e = 0.6 -> b/a = 0.25; phi = 0 (major axis north): a towards north, b towards east
    assert directional_light_radius(0.0, 1.0, 2.0, 0.6, 0.0) == pytest.approx(2.0)
    assert directional_light_radius(1.0, 0.0, 2.0, 0.6, 0.0) == pytest.approx(0.5)
    # e1 < 0 rotates the major axis to east-west
    assert directional_light_radius(1.0, 0.0, 2.0, -0.6, 0.0) == pytest.approx(2.0)
    # 45 degrees from a north major axis: ab / sqrt((a sin)^2 + (b cos)^2)
    a, b = 2.0, 0.5
    assert directional_light_radius(1.0, 1.0, 2.0, 0.6, 0.0) == pytest.approx(a * b / np.sqrt((a * a + b * b) / 2))


def test_host_association_prefers_the_smallest_directional_light_radius(with_overlay, tmp_path, dask_client):
    rng = np.random.default_rng(5)
    n = 12
    sn = np.c_[rng.uniform(30, 32, n), rng.uniform(-31, -29, n)]
    cosd = np.cos(np.radians(sn[:, 1]))
    gals, shapes, true_host = [], [], []
    for i, (ra, dec) in enumerate(sn):
        if i % 2 == 0:   # a big galaxy 2.5" east beats a compact one 1.5" west (nearer)
            gals += [(ra + 2.5 / 3600 / cosd[i], dec), (ra - 1.5 / 3600 / cosd[i], dec)]
            shapes += [(3.0, 0.0, 0.0), (0.3, 0.0, 0.0)]
        else:            # a galaxy elongated north-south, 2" south, beats a round one 1.5" east
            gals += [(ra, dec - 2.0 / 3600), (ra + 1.5 / 3600 / cosd[i], dec)]
            shapes += [(2.0, 0.6, 0.0), (1.0, 0.0, 0.0)]
        true_host.append(str(1000 + 2 * i))
    gals = np.array(gals)
    shapes = np.array(shapes).T
    # a second transient in the first big galaxy: host association is many-to-one
    sn = np.vstack([sn, gals[0] + [0.0, 1.0 / 3600]])
    true_host.append(true_host[0])
    n += 1
    write_spectra_file(tmp_path / "raw" / "spectra-sn.fits", np.arange(n), sn[:, 0], sn[:, 1])
    write_spectra_file(tmp_path / "raw" / "gal-g.fits", np.arange(len(gals)) + 1000, gals[:, 0], gals[:, 1],
                       shape=shapes)
    hub = tmp_path / "hub"
    for name in ("testsurvey_v1", "galsurvey_v1"):
        build(name, tmp_path / "raw", hub, client=dask_client, **QUIET)
    near = crossmatch(["testsurvey_v1", "galsurvey_v1"], hub, "sn_nearest", radius_arcsec=5.0,
                      client=dask_client, **QUIET)
    host = crossmatch(["testsurvey_v1", "galsurvey_v1"], hub, "sn_host", method="host", radius_arcsec=10.0,
                      client=dask_client, **QUIET)
    t = _table(hub, "sn_host")
    got = dict(zip(t.column("object_id").to_pylist(), t.column("galsurvey_object_id").to_pylist()))
    assert got == {str(i): true_host[i] for i in range(n)}
    assert all(d < 4 for d in t.column("galsurvey_host_dlr").to_pylist())
    tn = _table(hub, "sn_nearest")
    nearest = dict(zip(tn.column("object_id").to_pylist(), tn.column("galsurvey_object_id").to_pylist()))
    shared = str(n - 1)  # the second transient in galaxy 1000
    assert sum(nearest.get(k) != v for k, v in got.items() if k != shared) == n - 1  # nearest is never the host
    assert host.manifest.match["many_to_one_dropped"]["galsurvey"] == 0
    assert host.manifest.method == "host" and near.manifest.method == "nearest"


def test_export_streams_shuffled_batches_with_an_index(paired, tmp_path, dask_client):
    import webdataset as wds

    from mmu.shards.format import decode_sample, read_index
    tmp, hub, truth, result = paired
    out = tmp_path / "shards"
    idx = export_wds("test_x_other", hub, out, split="train", shard_size="4KB", seed=3, client=dask_client, **QUIET)
    n = result.manifest.rows.train
    assert idx.samples == n == sum(s.samples for s in idx.shards)
    assert len(idx.shards) % 8 == 0 or len(idx.shards) == n
    assert idx.content_revision == result.manifest.content_revision
    assert read_index(out) == idx  # index.json holds exactly what export_wds returned
    assert idx.constants["othersurvey_spectrum.lambda"][0] == pytest.approx(4000.0)
    assert idx.inputs_datasets == ["testsurvey_v1", "othersurvey_v1"] and idx.format_version == 1
    import hashlib
    for s in idx.shards:
        assert hashlib.sha256((out / s.name).read_bytes()).hexdigest() == s.sha256
    shards = sorted(glob.glob(str(out / "*.tar")))
    ds = wds.WebDataset(shards, shardshuffle=False, empty_check=False).map(decode_sample)
    samples = list(ds)
    assert len(samples) == n
    assert all(s["meta"]["split"] == "train" for s in samples)
    assert "lambda" not in samples[0]["othersurvey_spectrum"]
    assert samples[0]["othersurvey_spectrum"]["flux"].shape == (64,)
    assert samples[0]["testsurvey_spectrum"]["mask"].dtype == bool
    batched = wds.WebDataset(shards, shardshuffle=False, empty_check=False).map(decode_sample).map(
        lambda s: (s["testsurvey_spectrum"]["flux"], s["othersurvey_spectrum"]["flux"])).batched(4)
    a, b = next(iter(batched))
    assert np.asarray(a).shape == (4, 64) and np.asarray(b).shape == (4, 64)
    # globally shuffled: not in sky (HEALPix) order, and the order is a function of the seed
    index = pq.read_table(out / "index.parquet").to_pandas()
    pix = SPLIT.pixels(index["ra"], index["dec"])
    assert (np.diff(pix) != 0).sum() > len(set(pix))
    again = export_wds("test_x_other", hub, tmp_path / "again", split="train", shard_size="4KB", seed=3,
                       client=dask_client, **QUIET)
    assert [s.sha256 for s in again.shards] == [s.sha256 for s in idx.shards]
    other = export_wds("test_x_other", hub, tmp_path / "other", split="train", shard_size="4KB", seed=4,
                       client=dask_client, **QUIET)
    assert [s.sha256 for s in other.shards] != [s.sha256 for s in idx.shards]
    with pytest.raises(ExportError, match="--overwrite"):
        export_wds("test_x_other", hub, out, split="train", client=dask_client, **QUIET)
