"""Embedding through DataLoader workers (mmu.eval.loader) gives the embeddings of the
single-process path, in the same row order, and the cache key of an fp32 run is unchanged."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

torch = pytest.importorskip("torch")

from mmu.eval import embed as E  # noqa: E402
from mmu.model.schema import SpectrumSpec, dataset_schema, spectrum_array  # noqa: E402

L = 128


def write_hub_file(path, n, seed, row_group_rows):
    """A Parquet file in the hub schema: object_id, ra, dec, split, a `spectrum` column (some rows
    null, some in another split)."""
    rng = np.random.default_rng(seed)
    spec = SpectrumSpec(length=L)
    lam = np.tile(np.linspace(3600, 9800, L, dtype=np.float32), (n, 1))
    flux = rng.normal(1, 0.3, (n, L)).astype(np.float32)
    ivar = rng.uniform(0.5, 2, (n, L)).astype(np.float32)
    mask = rng.random((n, L)) < 0.05
    col = spectrum_array(spec, lam, flux, ivar, mask, np.ones((n, L), np.float32))
    valid = rng.random(n) > 0.1
    col = pa.StructArray.from_arrays(col.flatten(), fields=list(col.type), mask=pa.array(~valid))
    schema = dataset_schema({"spectrum": spec})
    cols = {f.name: pa.nulls(n, f.type) for f in schema}
    cols.update(object_id=pa.array([f"{path.stem}-{i:04d}" for i in range(n)]),
                ra=pa.array(rng.uniform(0, 10, n)), dec=pa.array(rng.uniform(-5, 5, n)),
                split=pa.array(np.where(rng.random(n) < 0.85, "train", "val")), spectrum=col)
    table = pa.table({f.name: cols[f.name].cast(f.type) for f in schema}, schema=schema)
    pq.write_table(table, path, row_group_size=row_group_rows)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from mmu.eval.baselines import random_weights_checkpoint
    from mmu.pretrain.config import parse_config

    tmp = tmp_path_factory.mktemp("embed")
    files = []
    for k, (n, rg) in enumerate([(150, 40), (97, 13), (60, 60)]):
        files.append(tmp / f"part{k}.parquet")
        write_hub_file(files[-1], n, k, rg)
    cfg = parse_config({
        "name": "toy", "model": {"embed_dim": 16, "modalities": {
            "toy_spectrum": {"encoder": "tiny_spectrum", "length": L},
            "toy_image": {"encoder": "tiny_convnet", "channels": 4, "size": 16}}},
        "data": {"train": ["x"], "batch_size": 8}, "train": {"steps": 1, "device": "cpu"},
        "run": {"dir": str(tmp / "run")}})
    emb = E.CheckpointEmbedder(random_weights_checkpoint(cfg, tmp / "ckpt"), device="cpu")
    return files, emb


def reference(emb, files, split, which):
    """The path as it was before the loader: all-column collate, `Pretrained.embed`, 256 rows."""
    from mmu.eval.tasks import iter_samples

    ids, out = [], []
    for oids, samples in iter_samples(files, split, "spectrum", 256):
        samples = [{"object_id": s["object_id"], "toy_spectrum": s["spectrum"]} for s in samples]
        got = emb.p.embed(emb.p.collate(samples), project=(which == "projection"),
                          columns=["toy_spectrum"])["toy_spectrum"]
        ids += oids
        out.append(got[:len(samples)].numpy())
    return np.asarray(ids), np.concatenate(out)


@pytest.mark.parametrize("workers,batch_rows", [(0, 256), (0, 17), (2, 32)])
@pytest.mark.parametrize("which", ["projection", "backbone"])
def test_loader_path_equals_the_single_process_path(setup, workers, batch_rows, which):
    files, emb = setup
    want_ids, want = reference(emb, files, "train", which)
    ids, got, info = E.embed_split(emb, files, "toy", "rev", "train", "spectrum", which,
                                   batch_rows=batch_rows, model_column="toy_spectrum", num_workers=workers)
    assert info["cached"] is False
    np.testing.assert_array_equal(ids, want_ids)  # same rows, same order (files, then rows)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert len(ids) == sum(1 for _ in ids) and len(set(ids.tolist())) == len(ids)


def test_plan_units_cover_every_row_group_once(setup):
    from mmu.eval.loader import plan_units

    files, _ = setup
    units = plan_units(files, 30)
    seen = [(f, g) for f, groups in units for g in groups]
    want = [(str(f), g) for f in files for g in range(pq.ParquetFile(f).metadata.num_row_groups)]
    assert seen == want
    for f, groups in units:  # every run but a file's last holds >= 30 rows
        md = pq.ParquetFile(f).metadata
        last = max(g for ff, gs in units if ff == f for g in gs)
        if groups[-1] != last:
            assert sum(md.row_group(g).num_rows for g in groups) >= 30


def test_fp32_cache_key_is_unchanged_and_bf16_gets_its_own():
    parts = ("m", "d", "r", "train", "c", "p", "projection")
    old = E.cache_key(*parts)
    assert E.cache_key(*parts, precision="fp32") == old
    assert E.cache_key(*parts, precision="bf16") != old


def test_out_of_memory_names_the_batch_size(setup, monkeypatch):
    files, emb = setup

    class OutOfMemoryError(RuntimeError):
        pass

    def boom(*a, **k):
        raise OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(emb, "embed_batch", boom)
    with pytest.raises(E.EmbedError, match="batch size of 64 rows.*--batch-rows 16"):
        E.embed_split(emb, files, "toy", "rev", "train", "spectrum", "projection", batch_rows=64,
                      model_column="toy_spectrum", num_workers=0)


def test_bf16_embeddings_are_close_to_fp32(setup):
    files, emb = setup
    _, want, _ = E.embed_split(emb, files, "toy", "rev", "val", "spectrum", "projection",
                               model_column="toy_spectrum", num_workers=0)
    emb16 = E.CheckpointEmbedder(None, pretrained=emb.p, precision="bf16")
    _, got, info = E.embed_split(emb16, files, "toy", "rev", "val", "spectrum", "projection",
                                 model_column="toy_spectrum", num_workers=0)
    assert info["precision"] == "bf16"
    cos = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert cos.min() > 0.99


def test_a_model_that_does_not_fit_the_column_is_refused_before_reading(setup, tmp_path):
    """A checkpoint whose config does not match the task's column: one clear error naming both."""
    files, emb = setup
    with pytest.raises(E.EmbedError, match="'toy_image' takes a image, but the dataset's 'spectrum' is a spectrum"):
        E.embed_split(emb, files, "toy", "rev", "train", "spectrum", "projection", model_column="toy_image")
    # images with another number of bands
    from mmu.model.schema import ImageSpec, image_array

    spec = ImageSpec(bands=("des-g", "des-r", "des-z"), height=16, width=16)
    n = 4
    col = image_array(spec, np.zeros((n, 3, 16, 16), np.float32), np.ones((n, 3, 16, 16), np.float32),
                      np.zeros((n, 3, 16, 16), bool), np.ones((n, 3), np.float32), 1.0)
    schema = dataset_schema({"image": spec})
    cols = {f.name: pa.nulls(n, f.type) for f in schema}
    cols.update(object_id=pa.array([f"i{i}" for i in range(n)]), ra=pa.array([1.0] * n),
                dec=pa.array([0.0] * n), split=pa.array(["train"] * n), image=col)
    path = tmp_path / "img.parquet"
    pq.write_table(pa.table({f.name: cols[f.name].cast(f.type) for f in schema}, schema=schema), path)
    with pytest.raises(E.EmbedError, match=r"takes 4-band images .* has 3 bands \['des-g', 'des-r', 'des-z'\]"):
        E.embed_split(emb, [path], "toy", "rev", "train", "image", "projection", model_column="toy_image")


def test_a_split_without_rows_embeds_nothing_and_caches_nothing(setup, tmp_path):
    """The toy files hold train and val rows only: the test split is empty, which is no error for
    `embed_split` (a task may have an empty split) and leaves no cache entry with a 0-wide array."""
    files, emb = setup
    ids, x, info = E.embed_split(emb, files, "toy", "rev", "test", "spectrum", "projection",
                                 cache_dir=tmp_path / "cache", model_column="toy_spectrum", num_workers=0)
    assert len(ids) == 0 and x.size == 0 and info["cached"] is False
    assert not list((tmp_path / "cache").rglob("*.parquet"))


def test_eval_embed_and_run_take_a_batch_size():
    from mmu.cli import make_parser

    for cmd in (["eval", "embed", "--checkpoint", "c", "--hub", "h", "--dataset", "d", "--column", "x",
                 "--out", "o.parquet"], ["eval", "run", "--checkpoint", "c", "--hub", "h", "--out", "o"]):
        args = make_parser().parse_args([*cmd, "--batch-rows", "64"])
        assert args.batch_rows == 64
        assert make_parser().parse_args(cmd).batch_rows is None  # the device decides
