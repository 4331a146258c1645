"""The build driver holds markers, rejections, counts and task graphs, never a value per row (issue 15).

Above `DRIVER_ROWS` standardized rows, the cross-input de-duplication, the split counts and the
content revision run on the workers (a Dask sort of the ids, then one worker task streaming the
sha256). The tests lower that threshold to 0 so that small builds take the workers' path, and check
that both paths give the same build.json, the same filtered files, and the content revision an
independent computation from the hub's rows gives.
"""
from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import mmu.engine.build as engine
from mmu.engine.build import PartitionSettings, build
from mmu.model.hashing import SortedRevision, content_revision, row_digests
from mmu_testbuilder import write_spectra_file

# four inputs in key order; ids 15..19 of f1 repeat f0's, f2 repeats f0 (18, 19) and f1 (20..24),
# and 18, 19 are in three inputs: f0 keeps them
LAYOUT = {"f0/spectra-0.fits": list(range(0, 20)), "f1/spectra-1.fits": list(range(15, 30)),
          "f2/spectra-2.fits": list(range(18, 25)) + list(range(40, 45)), "f3/spectra-3.fits": list(range(100, 110))}
CENTRES = {"f0": (10.0, 5.0), "f1": (40.0, -20.0), "f2": (200.0, 30.0), "f3": (300.0, 60.0)}


def make_dup_raw(root: Path) -> Path:
    rng = np.random.default_rng(3)
    for k, (key, ids) in enumerate(LAYOUT.items()):
        ra0, dec0 = CENTRES[key.split("/")[0]]
        n = len(ids)
        write_spectra_file(root / key, ids, ra0 + rng.normal(0, 0.3, n), dec0 + rng.normal(0, 0.3, n), seed=k)
    return root


def expected_rejections() -> list[dict]:
    """The repeats as the rule says (first input in key order keeps an id), computed here."""
    owner, out = {}, []
    for key, ids in LAYOUT.items():
        for i in ids:
            if i in owner:
                out.append({"input": key, "reason": f"object_id also produced by input {owner[i]!r}",
                            "object_id": str(i), "column": "object_id"})
            else:
                owner[i] = key
    return out


def hub_rows(hub: Path, name: str) -> pa.Table:
    files = sorted((hub / name / name / "dataset").rglob("*.parquet"))
    return pa.concat_tables([pq.read_table(f) for f in files], promote_options="default")


@pytest.mark.parametrize("driver_rows", [engine.DRIVER_ROWS, 0], ids=["driver", "workers"])
def test_cross_input_duplicates_first_input_keeps_the_id(with_overlay, tmp_path, dask_client, monkeypatch,
                                                         driver_rows):
    monkeypatch.setattr(engine, "DRIVER_ROWS", driver_rows)
    # several sorted partitions, and inputs read in several pieces of row groups, on the workers' path
    monkeypatch.setattr(engine, "SORT_PARTITION_ROWS", 13)
    monkeypatch.setattr(engine, "DIGEST_ROW_GROUP", 4)
    raw = make_dup_raw(tmp_path / "raw")
    calls = []
    real = engine._dedup_on_workers
    monkeypatch.setattr(engine, "_dedup_on_workers", lambda *a: calls.append(1) or real(*a))
    m = build("testsurvey_v1", raw, tmp_path / "hub", client=dask_client).manifest
    assert len(calls) == (1 if driver_rows == 0 else 0)  # the path under test really ran
    unique = sorted({i for ids in LAYOUT.values() for i in ids})
    assert m.rows.total == len(unique) == 45
    # rejections per input, in the standardized file's row order (rows are in sky order per chunk)
    got = [r.model_dump(exclude_none=True) for r in m.rejected_rows]
    assert [g["input"] for g in got] == [e["input"] for e in expected_rejections()]
    assert sorted(got, key=lambda r: (r["input"], int(r["object_id"]))) == expected_rejections()
    assert {i.key: i.rows for i in m.inputs} == {"f0/spectra-0.fits": 20, "f1/spectra-1.fits": 10,
                                                 "f2/spectra-2.fits": 5, "f3/spectra-3.fits": 10}
    rows = hub_rows(tmp_path / "hub", "testsurvey_v1")
    ids = rows.column("object_id").to_pylist()
    assert sorted(int(i) for i in ids) == unique
    # the survivor of each repeated id is the first input's row (its field's position)
    ra = dict(zip(ids, rows.column("ra").to_pylist(), strict=True))
    for i in (15, 18, 19):
        assert abs(ra[str(i)] - 10.0) < 3
    for i in (20, 24):
        assert abs(ra[str(i)] - 40.0) < 3
    split = rows.column("split").to_pylist()
    assert {s: split.count(s) for s in ("train", "val", "test")} == \
        {"train": m.rows.train, "val": m.rows.val, "test": m.rows.test}
    # the content revision, computed independently from the hub's rows
    assert m.content_revision == content_revision(ids, row_digests(rows))


def test_both_paths_give_the_same_build_json(with_overlay, tmp_path, dask_client, monkeypatch):
    raw = make_dup_raw(tmp_path / "raw")
    a = build("testsurvey_v1", raw, tmp_path / "a", client=dask_client).manifest
    monkeypatch.setattr(engine, "DRIVER_ROWS", 0)
    b = build("testsurvey_v1", raw, tmp_path / "b", client=dask_client).manifest
    keep = lambda m: m.model_dump(exclude={"created", "timings_s", "code_version"})  # noqa: E731
    assert keep(a) == keep(b)


def test_sorted_revision_equals_content_revision_and_refuses_disorder():
    rng = np.random.default_rng(0)
    ids = [f"{rng.integers(10**6)}-{i}" for i in range(3000)] + ["é", "\uffff", "😀", "a\u0301"]
    digests = [rng.bytes(32) for _ in ids]
    order = sorted(range(len(ids)), key=ids.__getitem__)
    rev = SortedRevision()
    for s in range(0, len(order), 500):
        part = order[s:s + 500]
        rev.update(pa.array([ids[i] for i in part]), pa.array([digests[i] for i in part], pa.binary(32)))
    assert rev.rows == len(ids)
    assert rev.hexdigest() == content_revision(ids, digests)
    with pytest.raises(ValueError, match="not strictly ascending"):
        SortedRevision().update(pa.array(["b", "a"]), pa.array([bytes(32)] * 2, pa.binary(32)))
    again = SortedRevision()
    again.update(pa.array(["a", "c"]), pa.array([bytes(32)] * 2, pa.binary(32)))
    with pytest.raises(ValueError, match="previous batch ended"):
        again.update(pa.array(["c", "d"]), pa.array([bytes(32)] * 2, pa.binary(32)))


# --- the guard: the driver's peak allocation over a whole build does not grow with the rows -----

BOX = (150.0, 152.0, 1.0, 3.0)  # ra0, ra1, dec0, dec1: the same HEALPix pixels at every size
INPUTS = 8
REPEATS = 40  # ids repeated across inputs: the same number at every size (rejections are O(rejections))


def write_truth_inputs(raw: Path, n: int, seed: int = 0) -> None:
    """`mmu sim`-style galaxy truth tables (RAW/<part>/sim_truth/galaxies.parquet: galaxy_id, ra,
    dec; the builder's other columns become null), `n` distinct ids over `INPUTS` inputs, plus
    `REPEATS` rows of each input that repeat ids of the input before it."""
    rng = np.random.default_rng(seed)
    ids = np.arange(n, dtype=np.int64)
    for k, part in enumerate(np.array_split(ids, INPUTS)):
        if k:
            part = np.r_[part, ids[(k - 1) * (n // INPUTS):][:REPEATS]]
        out = raw / f"part{k}" / "sim_truth" / "galaxies.parquet"
        out.parent.mkdir(parents=True)
        pq.write_table(pa.table({"galaxy_id": part, "ra": rng.uniform(*BOX[:2], len(part)),
                                 "dec": rng.uniform(*BOX[2:], len(part))}), out)


def driver_peak(raw: Path, hub: Path, client) -> tuple[int, object]:
    tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        result = build("sim_truth_v1", raw, hub, client=client, settings=PartitionSettings())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak, result.manifest


@pytest.fixture(scope="module")
def process_client():
    from dask.distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=40) as cluster, Client(cluster) as client:
        yield client


@pytest.mark.slow  # 30-90 s on the shared 2-core machine
def test_driver_peak_allocation_does_not_grow_with_rows(tmp_path, process_client, monkeypatch):
    """Workers in separate processes; the driver's peak Python allocation (tracemalloc: Python
    objects and numpy arrays) over whole builds of 10k and 100k rows. Measured 2026-11-27: 12.6 and
    12.5 MB; the engine before this change (ids, digests and a dict of every id in the driver):
    12.0 and 19.0 MB (1.59x), which the bound below refuses."""
    monkeypatch.setattr(engine, "DRIVER_ROWS", 0)  # the workers' path at every size
    write_truth_inputs(tmp_path / "warm" / "raw", 1_000)  # imports, numba compilation: fixed costs
    driver_peak(tmp_path / "warm" / "raw", tmp_path / "warm" / "hub", process_client)
    peaks = {}
    for n in (10_000, 100_000):
        write_truth_inputs(tmp_path / str(n) / "raw", n)
        peak, m = driver_peak(tmp_path / str(n) / "raw", tmp_path / str(n) / "hub", process_client)
        # the build really ran on these rows, and the repeats were rejected
        assert m.rows.total == n and len(m.rejected_rows) == REPEATS * (INPUTS - 1)
        assert m.rows.train + m.rows.val + m.rows.test == n
        peaks[n] = peak
    assert peaks[100_000] <= 1.25 * peaks[10_000], peaks


def test_the_driver_reads_no_partition_footer(tmp_path, process_client, monkeypatch):
    """`_metadata` gathers every partition file's footer (row groups x columns: it grows with the
    catalog); the one-pass writer writes it in a worker task. A driver that tried to would fail
    here: the worker processes keep hats' real writer."""
    import hats.io.parquet_metadata as hats_metadata

    def refuse(*args, **kwargs):
        raise AssertionError("the driver read the partitions' footers")

    monkeypatch.setattr(hats_metadata, "write_parquet_metadata", refuse)
    write_truth_inputs(tmp_path / "raw", 2_000)
    result = build("sim_truth_v1", tmp_path / "raw", tmp_path / "hub", client=process_client)
    assert result.manifest.partition.writer == "mmu"
    meta = pq.read_metadata(result.path / "sim_truth_v1" / "dataset" / "_metadata")
    assert meta.num_rows == result.manifest.rows.total == 2_000
