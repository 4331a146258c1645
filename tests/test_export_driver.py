"""`mmu export-wds` ranks, scatters and indexes on the workers; the driver holds counts (issue 15).

The shuffled order is pinned independently here (rank of sha256(seed:object_id) over the split's
rows, shard = position % shards, samples in position order), for one ranking bucket and for
many; the driver's peak Python allocation must not grow with the rows. Before the bucketed
ranking the driver read every object id, built an id -> position dict, broadcast it, and
collected every sample's index entry: its peak grew about tenfold from 10k to 100k rows.
"""
from __future__ import annotations

import hashlib
import tarfile
import tracemalloc
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mmu.hub.manifest import BuildManifest, PartitionRecord, RowCounts, SplitRecord, write_manifest
from mmu.model.schema import SpectrumSpec, dataset_schema
from mmu.shards import export as export_mod
from mmu.shards.export import ExportError, export_wds
from mmu.shards.format import read_index


def write_hub(hub: Path, name: str, n: int, parts: int = 8, seed: int = 0, spectrum: int | None = None,
              ids=None) -> BuildManifest:
    """A hub dataset of `n` rows in `parts` Parquet files, each row's split drawn at random (so a
    file holds all three and the export must filter), with a build.json; with `spectrum`, a fixed
    grid spectrum modality of that length (a constant wavelength grid, random fluxes)."""
    from mmu.registry.catalog import load_catalog

    rng = np.random.default_rng(seed)
    ids = [f"obj:{i}" for i in range(n)] if ids is None else list(ids)
    mods = {"spectrum": SpectrumSpec(spectrum)} if spectrum else {}
    schema = dataset_schema(mods, extra=[pa.field("mag", pa.float32())])
    cols = {"object_id": ids, "ra": rng.uniform(150, 152, n), "dec": rng.uniform(1, 3, n),
            "survey": ["toy"] * n, "release": ["t"] * n,
            "split": rng.choice(["train", "val", "test"], n, p=[0.8, 0.1, 0.1]).tolist(),
            "mag": rng.uniform(18, 22, n).astype(np.float32)}
    if spectrum:
        lam = np.linspace(4000, 8000, spectrum, dtype=np.float32)
        flux = rng.normal(0, 1, (n, spectrum)).astype(np.float32)
        cols["spectrum"] = pa.StructArray.from_arrays(
            [pa.FixedSizeListArray.from_arrays(pa.array(np.tile(lam, n)), spectrum),
             pa.FixedSizeListArray.from_arrays(pa.array(flux.ravel()), spectrum),
             pa.FixedSizeListArray.from_arrays(pa.array(np.ones(n * spectrum, np.float32)), spectrum),
             pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(n * spectrum, bool)), spectrum),
             pa.FixedSizeListArray.from_arrays(pa.array(np.ones(n * spectrum, np.float32)), spectrum)],
            fields=list(schema.field("spectrum").type))
    table = pa.table({f.name: cols[f.name] for f in schema}, schema=schema)
    d = hub / name
    files = []
    for k, chunk in enumerate(np.array_split(np.arange(n), parts)):
        rel = f"{name}/dataset/Norder=4/Dir=0/Npix={k}.parquet"
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table.take(chunk), d / rel)
        files.append(rel)
    sd = load_catalog().splits
    counts = {s: int(np.sum(np.asarray(cols["split"]) == s)) for s in ("train", "val", "test")}
    m = BuildManifest(
        name=name, survey="toy", release="t", builder="test", builder_version="1", config={},
        schema_version="1", code_version="test", engine_version="test", build_key="k" * 64,
        content_revision=hashlib.sha256(f"{name}:{n}:{seed}".encode()).hexdigest(), mock=True, mock_seed=seed,
        split=SplitRecord(method=sd.method, order=sd.order, seed=sd.seed, fractions=dict(sd.fractions), hash=sd.hash),
        rows=RowCounts(total=n, **counts), inputs=[],
        partition=PartitionRecord(partition_bytes=1, row_group_bytes=1, compression_level=1, highest_order=4,
                                  margin_delta=0, margin_order=4, margin_threshold_arcsec=10, margin_catalog="none"),
        modalities={k: {"kind": v.kind, **v.describe()} for k, v in mods.items()},
        # every file holds rows of every split: list each under each split, as a build lists a partition
        data_files={s: files for s in ("train", "val", "test")}, created="2026-11-27T00:00:00Z")
    write_manifest(d, m)
    return m


def expected_shards(hub: Path, name: str, split: str, seed: int, n_shards: int) -> list[list[str]]:
    """The reference order, from the rows alone: rank of sha256(seed:id) (ties by file, row)."""
    from mmu.hub.layout import read_manifest

    m = read_manifest(hub, name)
    ids = []
    for f in m.data_files[split]:
        t = pq.read_table(hub / name / f, columns=["object_id", "split"]).to_pydict()
        ids += [o for o, s in zip(t["object_id"], t["split"], strict=True) if s == split]
    key = [int.from_bytes(hashlib.sha256(f"{seed}:{o}".encode()).digest()[:8], "big") for o in ids]
    ranked = [ids[i] for i in sorted(range(len(ids)), key=lambda i: key[i])]  # stable: ties keep file order
    return [ranked[s::n_shards] for s in range(n_shards)]


def tar_keys(path: Path) -> list[str]:
    with tarfile.open(path) as tf:
        return list(dict.fromkeys(m.name.split(".", 1)[0] for m in tf.getmembers()))


@pytest.mark.parametrize("rows_per_bucket", [1 << 20, 64])
def test_shuffled_order_is_the_sha256_rank_with_one_or_many_buckets(tmp_path, dask_client, monkeypatch,
                                                                  rows_per_bucket):
    hub = tmp_path / "hub"
    write_hub(hub, "toy_v1", 1500, parts=5, seed=1, spectrum=16)
    monkeypatch.setattr(export_mod, "ROWS_PER_BUCKET", rows_per_bucket)
    ix = export_wds("toy_v1", hub, tmp_path / "out", split="train", shard_size="40kB", seed=7, shard_multiple=4,
                    client=dask_client)
    buckets = 1 << export_mod._bucket_bits(1500)
    assert buckets == (1 if rows_per_bucket > 1500 else 32)
    n_shards = len(ix.shards)
    expect = expected_shards(hub, "toy_v1", "train", 7, n_shards)
    assert ix.samples == sum(map(len, expect)) > 1000 and n_shards % 4 == 0 and n_shards > 4
    index = pq.read_table(tmp_path / "out" / "index.parquet").to_pydict()
    got: dict[str, list] = {}
    for oid, shard, pos in zip(index["object_id"], index["shard"], index["position"], strict=True):
        assert pos == len(got.setdefault(shard, []))
        got[shard].append(oid)
    assert [got[s.name] for s in ix.shards] == expect
    for s, want in zip(ix.shards, expect, strict=True):
        assert tar_keys(tmp_path / "out" / s.name) == [o.replace(":", "_") for o in want]
        assert s.samples == len(want)
    assert ix.constants["spectrum.lambda"][0] == pytest.approx(4000.0)
    assert hashlib.sha256((tmp_path / "out" / "index.parquet").read_bytes()).hexdigest() == ix.index_parquet_sha256
    assert pq.read_schema(tmp_path / "out" / "index.parquet").types == [
        pa.string(), pa.float64(), pa.float64(), pa.string(), pa.string(), pa.int64()]
    assert read_index(tmp_path / "out") == ix


def test_ids_that_share_a_sample_key_are_refused_before_any_shard(tmp_path, dask_client, monkeypatch):
    hub = tmp_path / "hub"
    ids = [f"obj{i}" for i in range(400)]
    ids[10], ids[300] = "a.b", "a:b"  # both become the key a_b
    write_hub(hub, "clash_v1", 400, parts=3, seed=2, ids=ids)
    # every row train, so the clash is in the split
    for f in (hub / "clash_v1").rglob("*.parquet"):
        t = pq.read_table(f)
        pq.write_table(t.set_column(t.schema.get_field_index("split"), "split", pa.array(["train"] * t.num_rows)), f)
    monkeypatch.setattr(export_mod, "ROWS_PER_BUCKET", 16)
    with pytest.raises(ExportError, match=r"clash_v1: two object ids map to the same WebDataset key.*"
                                          r"\['a.b', 'a:b'\] -> 'a_b'"):
        export_wds("clash_v1", hub, tmp_path / "out", split="train", client=dask_client)
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out.export-tmp"))  # the staging folder is removed


def driver_peak(hub: Path, name: str, out: Path, client) -> tuple[int, object]:
    tracemalloc.start()
    tracemalloc.reset_peak()
    ix = export_wds(name, hub, out, split="train", shard_size="256MiB", seed=0, client=client,
                    scalars={"phot": ["mag"]})
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak, ix


@pytest.mark.slow  # about a minute on a loaded 2-core machine
def test_driver_peak_allocation_does_not_grow_with_rows(tmp_path, process_client, monkeypatch):
    # ranking buckets of 16,384 rows: 1 at 10k rows, 8 at 100k (a survey has thousands), so the
    # bucketed path with its per-bucket offsets is what is measured
    monkeypatch.setattr(export_mod, "ROWS_PER_BUCKET", 16384)
    # warm-up: imports and first-call costs are fixed
    write_hub(tmp_path / "warm", "cat_v1", 1_000, seed=3)
    driver_peak(tmp_path / "warm", "cat_v1", tmp_path / "warm_out", process_client)
    peaks = {}
    for n in (10_000, 100_000):
        m = write_hub(tmp_path / str(n), "cat_v1", n, seed=3)
        peak, ix = driver_peak(tmp_path / str(n), "cat_v1", tmp_path / f"out{n}", process_client)
        assert ix.samples == m.rows.train and len(ix.shards) == 8  # the export really ran on these rows
        assert pq.read_metadata(tmp_path / f"out{n}" / "index.parquet").num_rows == m.rows.train
        peaks[n] = peak
    assert peaks[100_000] <= 1.5 * peaks[10_000], peaks


# --------------------------------------------------------------- eval and the demo report: bounded reads


def test_modality_presence_reads_one_small_field_and_matches_the_struct_validity(tmp_path, monkeypatch):
    from mmu.eval import tasks as tasks_mod

    n = 300
    rng = np.random.default_rng(4)
    present = rng.random(n) > 0.3
    spec = SpectrumSpec(None)
    schema = dataset_schema({"spectrum": spec})
    rows = []
    for i in range(n):
        if not present[i]:
            rows.append(None)
            continue
        k = int(rng.integers(50, 200))
        # a present spectrum whose small field is null must still count as present
        rows.append({"lambda": np.linspace(4000, 8000, k).tolist(), "flux": rng.normal(size=k).tolist(),
                     "ivar": np.ones(k).tolist(), "mask": None if i % 7 == 0 else [False] * k,
                     "lsf_sigma": np.ones(k).tolist()})
    t = pa.table({"spectrum": pa.array(rows, schema.field("spectrum").type)})
    path = tmp_path / "part.parquet"
    pq.write_table(t, path, row_group_size=64)
    read = []
    real = pq.ParquetFile.read
    monkeypatch.setattr(pq.ParquetFile, "read", lambda self, columns=None, **kw: read.append(columns) or
                        real(self, columns=columns, **kw))
    got = tasks_mod.present_rows(path, "spectrum")
    assert read == [["spectrum.mask"]]  # the bool mask: the smallest field of a spectrum
    np.testing.assert_array_equal(got, present)
    np.testing.assert_array_equal(got, np.asarray(pq.read_table(path).column("spectrum").is_valid()))


def _angular_hits(test: np.ndarray, ref: np.ndarray, radius_arcsec: float) -> list[int]:
    """Brute force: test rows within the radius of any reference position (haversine)."""
    t, r = np.radians(test)[:, None, :], np.radians(ref)[None, :, :]
    a = np.sin((r[..., 1] - t[..., 1]) / 2) ** 2 + np.cos(t[..., 1]) * np.cos(r[..., 1]) * np.sin(
        (r[..., 0] - t[..., 0]) / 2) ** 2
    d = np.degrees(2 * np.arcsin(np.sqrt(a))) * 3600
    return np.flatnonzero((d < radius_arcsec).any(1)).tolist()


def test_near_pretraining_streams_the_training_indexes_against_the_test_tree(tmp_path, monkeypatch):
    from mmu.eval import results

    rng = np.random.default_rng(5)
    test = np.c_[rng.uniform(10, 11, 400), rng.uniform(-1, 0, 400)]
    exports, refs = [], []
    for e in range(2):
        m = 3000
        pos = np.c_[rng.uniform(10, 11, m), rng.uniform(-1, 0, m)]
        # some samples sit 0.5" from a test object, a quarter of them in the shard not trained on
        near = rng.choice(400, 80 if e == 0 else 60, replace=False)
        pos[:len(near)] = test[near] + [0, 0.5 / 3600]
        shard = np.asarray([f"shard-train-{s:06d}.tar" for s in rng.integers(0, 4, m)])
        d = tmp_path / f"export{e}"
        d.mkdir()
        pq.write_table(pa.table({"ra": pos[:, 0], "dec": pos[:, 1], "shard": shard}), d / "index.parquet",
                       row_group_size=500)
        listed = [f"shard-train-{s:06d}.tar" for s in (0, 1, 2)]  # shard 3 was not trained on
        exports.append({"path": str(d), "shards": [{"name": s} for s in listed]})
        refs.append(pos[np.isin(shard, listed)])
    monkeypatch.setattr(results, "INDEX_BATCH", 700)
    near = results.near_pretraining({"train": exports[:1], "val": exports[1:]}, test)
    want = _angular_hits(test, np.concatenate(refs), 1.0)
    assert 50 < len(want) < 400
    assert near["rows"] == want and near["count"] == len(want)
    assert near["indexed_positions"] == sum(len(r) for r in refs)
    assert [x["positions"] for x in near["indexes"]] == [len(r) for r in refs]


def test_report_embedding_pick_equals_the_whole_set_pick(tmp_path):
    from mmu.demo.report import _pick_embeddings
    from mmu.eval.embed import write_embeddings

    rng = np.random.default_rng(6)
    hub = tmp_path / "hub"
    paths, all_ids, all_emb = [], [], []
    for k, n in enumerate((900, 120, 130)):
        ids = [f"ls:{k}:{i}" for i in range(n)]
        emb = rng.normal(size=(n, 8)).astype(np.float32)
        paths.append(tmp_path / f"{k}.parquet")
        write_embeddings(paths[-1], ids, emb, {})
        all_ids += ids
        all_emb.append(emb)
    all_emb = np.concatenate(all_emb)
    # the truth catalog lacks 90% of the objects: the pick must look past its first candidates
    truth = [i for i in all_ids if rng.random() < 0.1]
    d = hub / "mock_ls_truth_v1" / "mock_ls_truth_v1" / "dataset" / "Norder=4" / "Dir=0"
    d.mkdir(parents=True)
    z = rng.uniform(0, 1, len(truth))
    pq.write_table(pa.table({"object_id": truth, "sim_truth_z": z}), d / "Npix=1.parquet")
    ids, emb, rows = _pick_embeddings(hub, paths, 40)
    sha = {i: hashlib.sha256(i.encode()).hexdigest() for i in truth}
    want = sorted(truth, key=sha.get)[:40]
    assert ids == want
    np.testing.assert_array_equal(emb, all_emb[[all_ids.index(i) for i in want]])
    assert [rows[i]["sim_truth_z"] for i in ids] == [float(z[truth.index(i)]) for i in want]


def test_probe_memory_does_not_grow_with_the_first_row_group(tmp_path):
    """The driver's probe of the first partition (modalities, constants, bytes per sample) decoded
    a batch of 256 rows, i.e. a whole row group of image or spectrum rows, into the driver (the
    export driver's RSS grew 217 -> 417 MB from the 100- to the 1,000-galaxy scale box). It reads
    16-row batches page by page now: Arrow's pool high-water mark, each in a fresh process, is the
    same for a first row group of 100 and of 400 rows of ~340 kB (~33 MB; 125 and >350 MB before)."""
    import json
    import subprocess
    import sys

    code = ("import json, sys, pyarrow as pa; from mmu.shards.export import _probe; "
            "m, c, b = _probe(sys.argv[1], 'train'); "
            "print(json.dumps({'peak': pa.default_memory_pool().max_memory(), 'bytes': b, 'mods': sorted(m)}))")
    peaks = []
    for n in (100, 400):
        write_hub(tmp_path / f"hub{n}", "big", n, parts=1, spectrum=20_000)  # one row group of n rows
        f = next((tmp_path / f"hub{n}" / "big").rglob("Npix=*.parquet"))
        assert pq.ParquetFile(f).metadata.num_row_groups == 1
        out = json.loads(subprocess.run([sys.executable, "-c", code, str(f)], capture_output=True, text=True,
                                        check=True).stdout)
        assert out["mods"] == ["spectrum"] and out["bytes"] > 20_000 * 4
        peaks.append(out["peak"])
    assert peaks[1] < 1.3 * peaks[0], peaks
