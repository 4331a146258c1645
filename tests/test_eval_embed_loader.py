"""Embedding through DataLoader workers (mmu.eval.loader) gives the embeddings of the
single-process path, in the same row order, and the cache key of an fp32 run is unchanged; images
and fixed-length spectra read and collated as whole arrays equal the per-row path bit for bit, and
ragged or null values are named, never misaligned."""
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


# ------------------------------------------------ whole-array reading of fixed-shape columns (issue 18)

def per_row_reference(arr: pa.Array, shape) -> list[np.ndarray]:
    """Row i's values by the hub's per-row decoding (`flat_values` offsets, then reshape)."""
    from mmu.model.validate import flat_values

    values, off = flat_values(arr)
    return [values[off[i]:off[i + 1]].reshape(shape) for i in range(len(arr))]


@pytest.mark.parametrize("kind", ["fixed", "list", "large_list"])
def test_fixed_shape_values_equal_the_per_row_decoding(kind):
    from mmu.eval.loader import fixed_shape_values

    rng = np.random.default_rng(0)
    x = rng.normal(size=(7, 3, 4, 5)).astype(np.float32)
    t = pa.float32()
    for k in (5, 4, 3):
        t = {"fixed": pa.list_(t, k), "list": pa.list_(t), "large_list": pa.large_list(t)}[kind]
    arr = pa.array(x.tolist(), t)
    for a in (arr, arr.slice(2, 4), pa.chunked_array([arr.slice(0, 3), arr.slice(3)])):
        got = fixed_shape_values(a, "c", (3, 4, 5))
        ref = per_row_reference(a.combine_chunks() if isinstance(a, pa.ChunkedArray) else a, (3, 4, 5))
        assert got.shape == (len(a), 3, 4, 5) and got.dtype == np.float32
        np.testing.assert_array_equal(got, np.stack(ref))
    np.testing.assert_array_equal(fixed_shape_values(arr, "c"), x)  # shape from the data
    mask = pa.array((x > 0).tolist(), pa.list_(pa.list_(pa.list_(pa.bool_()))))
    np.testing.assert_array_equal(fixed_shape_values(mask, "m", (3, 4, 5)), x > 0)


def test_ragged_rows_and_nulls_are_named_never_misaligned():
    from mmu.eval.loader import RaggedColumn, fixed_shape_values

    ids = ["a", "b", "c"]
    ragged = pa.array([[1.0, 2.0], [3.0, 4.0, 5.0], [6.0, 7.0]])
    with pytest.raises(RaggedColumn, match=r"spec.flux: row 'b' has 3 values on axis 0, expected 2"):
        fixed_shape_values(ragged, "spec.flux", ids=ids)
    with pytest.raises(RaggedColumn, match=r"row 'a' has 2 values on axis 0, expected 3 \(rows of shape \(3,\)\)"):
        fixed_shape_values(ragged, "spec.flux", (3,), ids=ids)
    inner = pa.array([[[1.0], [2.0]], [[3.0], [4.0]], [[5.0], [6.0, 7.0]]])
    with pytest.raises(RaggedColumn, match=r"img.flux: row 'c' has 2 values on axis 1, expected 1"):
        fixed_shape_values(inner, "img.flux", ids=ids)
    with pytest.raises(RaggedColumn, match=r"row 'b' holds a null list on axis 0") as e:
        fixed_shape_values(pa.array([[[1.0]], [None], [[2.0]]]), "img.flux", ids=ids)
    assert e.value.null
    with pytest.raises(RaggedColumn, match=r"row 'b' is null"):
        fixed_shape_values(pa.array([[1.0], None, [2.0]], pa.list_(pa.float32(), 1)), "x", ids=ids)
    with pytest.raises(RaggedColumn, match=r"img.mask: row 'c' holds a null value"):
        fixed_shape_values(pa.array([[True], [False], [None]]), "img.mask", ids=ids)
    with pytest.raises(RaggedColumn, match=r"rows are 1-D lists, expected shape \(1, 1\)"):
        fixed_shape_values(pa.array([[1.0], [2.0]]), "x", (1, 1))
    # a null float reads as NaN, as the per-row decoding reads it
    got = fixed_shape_values(pa.array([[1.0, None], [2.0, 3.0]], pa.list_(pa.float32(), 2)), "x")
    assert np.isnan(got[0, 1]) and got[1].tolist() == [2.0, 3.0]


def write_mock_hub(root, n=90, seed=5, dense=False):
    """One Parquet file per modality in the hub's schema (written with mmu.model.schema's struct
    builders, row groups of 16): a 4-band 20x20 image, a 64-pixel spectrum, a light curve of 3 to
    30 epochs; about 10 % of the rows lack the modality and a third are in another split (none and
    none with `dense`: batches are then slices of the file's table, not filtered copies)."""
    from mmu.model.schema import ImageSpec, LightcurveSpec, image_array, lightcurve_array

    rng = np.random.default_rng(seed)
    bands = ("des-g", "des-r", "des-i", "des-z")
    shape = (n, 4, 20, 20)
    lengths = rng.integers(3, 31, n)
    cols = {
        "image": (ImageSpec(bands=bands, height=20, width=20),
                  image_array(ImageSpec(bands=bands, height=20, width=20), rng.normal(size=shape),
                              rng.uniform(0.5, 2, shape), rng.random(shape) < 0.1, rng.uniform(1, 2, (n, 4)), 0.262)),
        "spectrum": (SpectrumSpec(length=64),
                     spectrum_array(SpectrumSpec(length=64), np.tile(np.linspace(3600, 9800, 64), (n, 1)),
                                    rng.normal(1, 0.3, (n, 64)), rng.uniform(0.5, 2, (n, 64)),
                                    rng.random((n, 64)) < 0.05, np.ones((n, 64)))),
        "lightcurve": (LightcurveSpec(),
                       lightcurve_array(LightcurveSpec(), [np.sort(rng.uniform(6e4, 6.03e4, k)) for k in lengths],
                                        [rng.choice(["lsst-g", "lsst-r", "lsst-i"], k) for k in lengths],
                                        [rng.normal(0, 1, k) for k in lengths],
                                        [rng.uniform(0.1, 1, k) for k in lengths],
                                        [rng.random(k) < 0.1 for k in lengths])),
    }
    files = {}
    for name, (spec, col) in cols.items():
        valid = (rng.random(n) > 0.1) | dense
        col = pa.StructArray.from_arrays(col.flatten(), fields=list(col.type), mask=pa.array(~valid))
        schema = dataset_schema({name: spec})
        data = {f.name: pa.nulls(n, f.type) for f in schema}
        data.update(object_id=pa.array([f"{name}-{i:03d}" for i in range(n)]), ra=pa.array(rng.uniform(0, 10, n)),
                    dec=pa.array(rng.uniform(-5, 5, n)),
                    split=pa.array(np.where((rng.random(n) < 0.67) | dense, "test", "val")),
                    **{name: col})
        files[name] = root / f"{name}.parquet"
        pq.write_table(pa.table({f.name: data[f.name].cast(f.type) for f in schema}, schema=schema), files[name],
                       row_group_size=16)
    return files


@pytest.mark.parametrize("column,model", [
    ("image", {"kind": "image", "encoder": "tiny_convnet", "channels": 4, "size": 20}),   # as stored
    ("image", {"kind": "image", "encoder": "tiny_convnet", "channels": 4, "size": 16}),   # centre crop
    ("image", {"kind": "image", "encoder": "tiny_convnet", "channels": 4, "size": 25}),   # centre pad
    ("spectrum", {"kind": "spectrum", "encoder": "tiny_spectrum", "length": 64}),
    ("spectrum", {"kind": "spectrum", "encoder": "tiny_spectrum", "length": 50}),          # cut
    ("spectrum", {"kind": "spectrum", "encoder": "tiny_spectrum", "length": 80}),          # padded
    ("lightcurve", {"kind": "lightcurve", "encoder": "tiny_lightcurve", "length": 24,
                    "bands": ["lsst-g", "lsst-r", "lsst-i"]}),                              # row by row
])
@pytest.mark.parametrize("batch_rows,dense", [(16, False), (23, False), (23, True)])
def test_whole_array_batches_equal_the_per_row_path_bit_for_bit(tmp_path, column, model, batch_rows, dense):
    """The loader's batches for a trainer checkpoint (fields read and collated as whole arrays)
    are the per-row path's (`table_samples` + the trainer's `Collator`): same rows in the same
    order, the same tensors bit for bit, whatever the crop or padding."""
    from mmu.eval.loader import HubRows, block_layout, plan_units
    from mmu.pretrain.config import ModalityConfig
    from mmu.pretrain.data import Collator

    spec = ModalityConfig(**model)
    path = write_mock_hub(tmp_path, dense=dense)[column]
    assert (block_layout(spec, path, column) is None) == (column == "lightcurve")

    def collate(samples, c):
        return Collator({c: spec}, max(1, len(samples)))(samples)[c]

    units = plan_units([path], batch_rows)
    old = list(HubRows(units, "test", column, "m", batch_rows, collate))
    new = list(HubRows(units, "test", column, "m", batch_rows, collate, spec=spec))
    assert [b[:3] for b in new] == [b[:3] for b in old]
    assert sum(len(b[2]) for b in new) == pq.read_table(path).filter(
        pa.compute.and_(pa.compute.equal(pq.read_table(path)["split"], "test"),
                        pa.compute.is_valid(pq.read_table(path)[column]))).num_rows
    for (*_, a), (*_, b) in zip(old, new):
        assert list(a) == list(b)
        for k in a:
            assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
            assert torch.equal(a[k], b[k]), k


def test_a_null_inside_a_present_image_is_named_not_used(tmp_path):
    from mmu.eval.loader import HubRows, RaggedColumn, plan_units
    from mmu.model.schema import ImageSpec
    from mmu.pretrain.config import ModalityConfig

    spec = ImageSpec(bands=("des-g", "des-r"), height=3, width=3)
    schema = dataset_schema({"image": spec})
    n = 3
    flux = [[[[1.0] * 3] * 3] * 2, None, [[[2.0] * 3] * 3] * 2]  # row b's flux is null, its struct is not
    fields = {"band": [["des-g", "des-r"]] * n, "flux": flux, "ivar": [[[[1.0] * 3] * 3] * 2] * n,
              "mask": [[[[False] * 3] * 3] * 2] * n, "psf_fwhm": [[1.0, 1.0]] * n, "scale": [0.26] * n}
    struct_type = schema.field("image").type
    col = pa.StructArray.from_arrays([pa.array(fields[f.name], f.type) for f in struct_type], fields=list(struct_type))
    data = {f.name: pa.nulls(n, f.type) for f in schema}
    data.update(object_id=pa.array(["a", "b", "c"]), ra=pa.array([1.0] * n), dec=pa.array([0.0] * n),
                split=pa.array(["test"] * n), image=col)
    path = tmp_path / "img.parquet"
    pq.write_table(pa.table({f.name: data[f.name].cast(f.type) for f in schema}, schema=schema), path)
    m = ModalityConfig(kind="image", encoder="tiny_convnet", channels=2, size=3)
    with pytest.raises(RaggedColumn, match=r"img.parquet: image.flux: row 'b' is null"):
        list(HubRows(plan_units([path], 8), "test", "image", "image", 8, None, spec=m))


def test_only_the_trainers_collator_gets_whole_arrays(setup):
    from mmu.eval.loader import model_spec

    _, emb = setup
    assert model_spec(emb, "toy_spectrum").kind == "spectrum"
    assert model_spec(emb, "nope") is None

    class OwnCollate(E.CheckpointEmbedder):
        def collate(self, samples, column):
            return super().collate(samples, column)

    own = OwnCollate(None, pretrained=emb.p)
    assert model_spec(own, "toy_spectrum") is None
    # the config baselines collate with the trainer's collator too
    from mmu.eval.baselines import RawPCAEmbedder, SupervisedEmbedder

    for base in (RawPCAEmbedder(emb.p.config, device="cpu"), SupervisedEmbedder(emb.p.config, device="cpu")):
        assert model_spec(base, "toy_spectrum") is emb.p.config.model.modalities["toy_spectrum"]


def test_in_unit_order_puts_worker_streams_back_in_file_order():
    from mmu.eval.loader import in_unit_order

    # two workers: units 0, 2, 4 and 1, 3; unit 1 has two batches, unit 2 none, unit 3 one
    arrivals = [(0, 0, "a"), (1, 0, "b"), (0, None, None), (1, 8, "c"), (2, None, None), (1, None, None),
                (4, 0, "e"), (3, 0, "d"), (4, None, None), (3, None, None)]
    assert [x[2] for x in in_unit_order(iter(arrivals))] == ["a", "b", "c", "d", "e"]
    # a stream that ends while a unit has not is an error, never a silent loss of later batches
    with pytest.raises(RuntimeError, match="ended before unit 0 did: 1 batch"):
        list(in_unit_order(iter([(1, 0, "b"), (1, None, None)])))


@pytest.mark.parametrize("batch_rows", [17, 64])
def test_streamed_batches_are_in_file_order_with_any_number_of_workers(setup, batch_rows):
    """`iter_inputs` streams (no sort at the end, as a training loop needs): with 0 or 2 workers
    the same rows come in the same order with the same tensors."""
    from mmu.eval.loader import iter_inputs

    files, emb = setup
    runs = {}
    for workers in (0, 2):
        got = list(iter_inputs(emb, files, "train", "spectrum", "toy_spectrum", batch_rows, workers))
        ids = [o for oids, _ in got for o in oids]
        flux = torch.cat([x["flux"] for _, x in got]).numpy()
        runs[workers] = ids, flux
    want_ids, _ = reference(emb, files, "train", "backbone")
    assert runs[0][0] == runs[2][0] == list(want_ids)
    np.testing.assert_array_equal(runs[0][1], runs[2][1])


@pytest.mark.slow
def test_whole_arrays_equal_the_per_row_path_on_a_built_mock_hub(sim_raw, tmp_path_factory, dask_client):
    """The same bit-for-bit comparison on hubs the engine built from the mock observatory's
    archive files: Legacy Survey cutouts, DESI spectra, PLAsTiCC light curves (row by row)."""
    from mmu.engine.build import build
    from mmu.eval.loader import HubRows, block_layout, plan_units
    from mmu.hub.layout import dataset_dir, read_manifest
    from mmu.model.schema import SPLITS, modalities_of
    from mmu.pretrain.config import ModalityConfig
    from mmu.pretrain.data import Collator
    from test_builder_helpers import link_tree

    tmp = tmp_path_factory.mktemp("loader_hub")
    hub = tmp / "hub"
    for name, sub in [("legacysurvey_dr10_south", "legacysurvey"), ("desi_dr1", "desi"), ("plasticc_2018", "plasticc")]:
        build(name, link_tree(sim_raw, tmp / name, sub), hub, client=dask_client)
        manifest = read_manifest(hub, name)
        files = [dataset_dir(hub, name) / f for s in SPLITS for f in manifest.data_files.get(s, [])]
        (column, have), = modalities_of(pq.read_schema(files[0])).items()
        if have.kind == "image":
            models = [dict(channels=len(have.bands), size=s) for s in (have.height, have.height - 7, have.height + 6)]
        elif have.kind == "spectrum":
            models = [dict(length=n) for n in (have.length, have.length - 100, have.length + 50)]
        else:
            models = [dict(length=40, bands=sorted({f"lsst-{b}" for b in "ugrizy"}))]
        for kw in models:
            spec = ModalityConfig(kind=have.kind, encoder="x", **kw)
            assert (block_layout(spec, files[0], column) is None) == (have.kind == "lightcurve")

            def collate(samples, c, spec=spec):
                return Collator({c: spec}, max(1, len(samples)))(samples)[c]

            rows = 0
            for split in SPLITS:
                units = plan_units(files, 64)
                old = list(HubRows(units, split, column, "m", 64, collate))
                new = list(HubRows(units, split, column, "m", 64, collate, spec=spec))
                assert [b[:3] for b in new] == [b[:3] for b in old]
                for (*_, a), (*_, b) in zip(old, new):
                    assert list(a) == list(b)
                    assert all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a), (name, kw, split)
                rows += sum(len(b[2]) for b in new)
            assert rows == manifest.rows.train + manifest.rows.val + manifest.rows.test > 0, name
