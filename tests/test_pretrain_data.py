"""The training data stream: shards in the `mmu.shards.format` format -> fixed-shape masked batches, a
deterministic function of (seed, rank, step); ranks and loader workers never share a shard; a
corrupt shard is skipped with a warning naming it."""
from __future__ import annotations

import io
import tarfile
import warnings

import numpy as np
import pytest
import torch

from mmu.pretrain import data as D
from mmu.pretrain.config import parse_config
from mmu.pretrain.synthetic import write_synthetic_export

COLUMNS = {"legacysurvey_image": "image", "desi_spectrum": "spectrum", "plasticc_lightcurve": "lightcurve"}


def config(tmp, **data):
    return parse_config({
        "name": "data-test", "seed": 7,
        "model": {"modalities": {
            "legacysurvey_image": {"encoder": "tiny_convnet", "channels": 4, "size": 12},
            "desi_spectrum": {"encoder": "tiny_spectrum", "length": 100},
            "plasticc_lightcurve": {"encoder": "tiny_lightcurve", "length": 16,
                                    "bands": ["lsst-g", "lsst-r", "lsst-i"]}}},
        "data": {"train": [str(tmp / "train")], "batch_size": 4, "shuffle_buffer": 8,
                 "segment_steps": 3, **data},
        "train": {"steps": 1}, "run": {"dir": str(tmp / "run")}})


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wds")
    write_synthetic_export(tmp / "train", COLUMNS, n_samples=48, n_shards=4, seed=1,
                           missing={"plasticc_lightcurve": 0.5, "desi_spectrum": 0.2})
    return tmp


def take(loader, n):
    it = iter(loader)
    return [next(it) for _ in range(n)]


def test_load_npy_matches_numpy():
    for arr in (np.arange(12, dtype=np.float32).reshape(3, 4), np.array(["lsst-g", "lsst-r"]),
                np.zeros((2, 3), bool), np.asfortranarray(np.arange(6.0).reshape(2, 3))):
        buf = io.BytesIO()
        np.save(buf, arr)
        got = D.load_npy(buf.getvalue())
        assert got.dtype == arr.dtype and np.array_equal(got, arr)
    with pytest.raises(ValueError, match="truncated"):
        D.load_npy(buf.getvalue()[:-3])


def test_batches_have_fixed_shapes_masks_and_constants(export):
    cfg = config(export)
    b = take(D.train_loader(cfg, D.open_exports(cfg.data.train), 0, 1, 0), 1)[0]
    assert b["legacysurvey_image"]["flux"].shape == (4, 4, 12, 12)  # 16x16 centre-cropped
    assert b["desi_spectrum"]["flux"].shape == (4, 100)  # 128 pixels cut to 100
    assert b["plasticc_lightcurve"]["band"].shape == (4, 16)
    spec = b["desi_spectrum"]
    # lambda is not in the samples: it came from the index's constants
    assert torch.all(spec["lambda"][spec["present"], 0] == 3600.0)
    lc = b["plasticc_lightcurve"]
    for i in range(4):
        if not lc["present"][i]:
            assert lc["mask"][i].all() and (lc["band"][i] == 0).all()
        else:
            assert (lc["time"][i][~lc["mask"][i]] >= 0).all()
    assert b["valid"].all() and b["step"] == 0


def test_stream_is_a_function_of_seed_rank_step(export):
    cfg = config(export)
    ex = D.open_exports(cfg.data.train)
    full = take(D.train_loader(cfg, ex, 0, 1, 0), 10)
    ids = [b["object_id"] for b in full]
    assert len({tuple(i) for i in ids}) == 10
    for start in (3, 5):  # a segment boundary, and a step inside a segment
        resumed = take(D.train_loader(cfg, ex, 0, 1, start), 10 - start)
        assert [b["object_id"] for b in resumed] == ids[start:]
        assert torch.equal(resumed[-1]["legacysurvey_image"]["flux"], full[-1]["legacysurvey_image"]["flux"])
    other_seed = config(export)
    other_seed.seed = 8
    assert [b["object_id"] for b in take(D.train_loader(other_seed, ex, 0, 1, 0), 10)] != ids


def test_worker_processes_give_the_same_stream_from_any_step(export):
    cfg = config(export, num_workers=2)
    ex = D.open_exports(cfg.data.train)
    full = [b["object_id"] for b in take(D.train_loader(cfg, ex, 0, 1, 0), 8)]
    assert [b["object_id"] for b in take(D.train_loader(cfg, ex, 0, 1, 5), 3)] == full[5:]


def test_ranks_and_streams_never_share_a_shard(export):
    ex = D.open_exports([str(export / "train")])
    r0, r1 = D.rank_shards(ex, "train", 0, 2, 2), D.rank_shards(ex, "train", 1, 2, 2)
    streams = [r0[0::2], r0[1::2], r1[0::2], r1[1::2]]
    assert sorted(sum(streams, [])) == sorted(s["path"] for s in ex[0].shards("train"))
    assert all(len(s) == 1 for s in streams)
    with pytest.raises(ValueError, match="at least 6"):
        D.rank_shards(ex, "train", 0, 3, 2)


def test_corrupt_shard_is_skipped_with_a_warning_naming_it(export, tmp_path):
    import shutil

    shutil.copytree(export / "train", tmp_path / "train")
    bad = tmp_path / "train" / "shard-train-000001.tar"
    with tarfile.open(bad) as tar:
        offset = tar.getmembers()[20].offset
    data = bytearray(bad.read_bytes())
    data[offset:offset + 512] = b"\x07" * 512  # garbage over a header in the middle
    bad.write_bytes(bytes(data))
    trunc = tmp_path / "train" / "shard-train-000002.tar"
    with tarfile.open(trunc) as tar:
        offset = tar.getmembers()[21].offset  # cut at a member boundary, inside a sample
    trunc.write_bytes(trunc.read_bytes()[:offset])
    cfg = config(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batches = take(D.train_loader(cfg, D.open_exports(cfg.data.train), 0, 1, 0), 12)
    messages = [str(w.message) for w in caught]
    assert any("shard-train-000001.tar" in m and "corrupt" in m for m in messages), messages
    assert any("shard-train-000002.tar" in m and "corrupt" in m for m in messages), messages
    assert all(b["legacysurvey_image"]["flux"].shape == (4, 4, 12, 12) for b in batches)


def test_val_batches_are_equal_in_number_on_every_rank(export):
    cfg = config(export, val=[str(export / "train")], val_split="train", val_max_samples=40)
    ex = D.open_exports(cfg.data.val)
    per_rank = [list(D.val_batches(cfg, ex, r, 3)) for r in range(3)]
    assert len({len(b) for b in per_rank}) == 1
    ids = [i for batches in per_rank for b in batches for i, v in zip(b["object_id"], b["valid"], strict=True) if v]
    assert len(ids) == len(set(ids)) == 48  # 4 shards over 3 ranks: 24 + 12 + 12, all seen once


def test_manifest_names_datasets_revisions_and_shard_hashes(export):
    ex = D.open_exports([str(export / "train")])
    m = D.training_manifest(ex, [], "train", "val")
    entry = m["train"][0]
    assert entry["dataset"] == "synthetic_v1" and len(entry["content_revision"]) == 64
    assert len(entry["index_sha256"]) == 64 and len(entry["shards"]) == 4
    assert all(len(s["sha256"]) == 64 for s in entry["shards"])


def test_index_is_typed_and_an_index_without_format_version_still_reads(export, tmp_path):
    """index.json goes through `mmu.shards.format.ShardIndex`: an index written before the
    `format_version` key existed reads as version 1; a newer version or a malformed index is a
    clear error naming the file."""
    import json
    import shutil

    from mmu.shards.format import INDEX_JSON, read_index

    ex = D.Export(export / "train")
    assert ex.index.format_version == 1 and ex.index.dataset
    assert sum(s["samples"] for s in ex.shards("train")) == ex.index.samples == 48
    old = tmp_path / "old"
    shutil.copytree(export / "train", old)
    data = json.loads((old / INDEX_JSON).read_text())
    del data["format_version"]
    (old / INDEX_JSON).write_text(json.dumps(data))
    legacy = D.Export(old)
    assert legacy.index.format_version == 1
    assert legacy.shards("train") == [{**s, "path": s["path"].replace(str(export / "train"), str(old))}
                                      for s in ex.shards("train")]
    assert set(legacy.constants) == set(ex.constants)
    (old / INDEX_JSON).write_text(json.dumps({**data, "format_version": 99}))
    with pytest.raises(ValueError, match=r"index.json: shard index format version 99"):
        D.Export(old)
    (old / INDEX_JSON).write_text(json.dumps({k: v for k, v in data.items() if k != "shards"}))
    with pytest.raises(ValueError, match=r"index.json: not a valid shard index \(shards: Field required"):
        read_index(old)
    with pytest.raises(FileNotFoundError, match="no shard index"):
        read_index(tmp_path / "nowhere")
