"""The benchmark end to end on a tiny hub: build two spectrum surveys whose fluxes encode a
magnitude, cross-match them, export the train split, pretrain a tiny model for a few steps,
then `mmu eval embed` / `run` / `baselines` / `submit` / `leaderboard` on a task overlay, and the
board's sources of truth: `submit --hub` and a published lock (`mmu eval lock`, `add-lock`)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from astropy.io import fits

from mmu.engine.build import build
from mmu.pairing.crossmatch import crossmatch
from mmu.shards.export import export_wds

NPIX = 64
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True, scope="module")
def one_blas_thread():
    import sklearn.linear_model  # noqa: F401  (load the BLAS libraries before limiting them)
    import torch
    from threadpoolctl import threadpool_limits

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(n)


def write_survey(path: Path, ids, ra, dec, mag, seed):
    """A TestSpectra FITS file (tests/mmu_testbuilder.py) whose spectra carry the magnitude."""
    rng = np.random.default_rng(seed)
    lam = np.linspace(4000, 8000, NPIX).astype(np.float32)
    shape = 1.0 + 0.3 * np.sin(lam / 300.0)
    amp = 10 ** (-0.4 * (np.asarray(mag) - 20.0))
    flux = (amp[:, None] * shape[None] * 10 + rng.normal(0, 0.3, (len(ids), NPIX))).astype(np.float32)
    cols = [fits.Column("ID", "K", array=np.asarray(ids, np.int64)), fits.Column("RA", "D", array=ra),
            fits.Column("DEC", "D", array=dec), fits.Column("MAG", "E", array=np.asarray(mag, np.float32)),
            fits.Column("FLUX", f"{NPIX}E", array=flux), fits.Column("IVAR", f"{NPIX}E", array=np.ones_like(flux))]
    path.parent.mkdir(parents=True, exist_ok=True)
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(cols, name="SPECTRA"),
                  fits.ImageHDU(lam, name="WAVE")]).writeto(path, overwrite=True)


def task_overlay(revision: str, split_hash: str) -> dict:
    paired = {"name": "toy_pair", "inputs": ["testsurvey_v1", "othersurvey_v1"],
              "prefixes": ["testsurvey", "othersurvey"]}
    common = dict(dataset="testsurvey_v1", dataset_revision=revision, paired=paired, split_hash=split_hash,
                  min_per_split={"train": 50, "val": 5, "test": 5})
    return {"tasks": [
        {**common, "name": "ToyMag.v1", "input_prefix": "testsurvey", "modality": "spectrum",
         "target": "testsurvey_mag", "filters": ["testsurvey_mag > 0"], "type": "regression",
         "main_score": "r2", "higher_is_better": True,
         "protocols": ["linear.v1", "knn16.v1", "knn64-astroclip.v1"]},
        {**common, "name": "ToyRetrieval.v1", "modality": "spectrum",
         "input_columns": ["testsurvey_spectrum", "othersurvey_spectrum"], "target": "testsurvey_mag",
         "type": "retrieval", "main_score": "r@1", "higher_is_better": True, "protocols": ["retrieval.v1"]},
    ]}


@pytest.fixture(scope="module")
def world(tmp_path_factory, test_overlay, dask_client):
    """hub + tasks overlay + exports + a tiny checkpoint trained for a few steps."""
    root = tmp_path_factory.mktemp("evalworld")
    rng = np.random.default_rng(3)
    n = 700
    # ~40 order-4 HEALPix pixels (= HATS partitions, each one split): few partitions build fast
    ra, dec = rng.uniform(0, 24, n), rng.uniform(-10, 10, n)
    mag = rng.uniform(18, 22, n)
    write_survey(root / "raw" / "a" / "spectra-a.fits", np.arange(n), ra, dec, mag, seed=1)
    off = 0.2 / 3600
    write_survey(root / "raw" / "b" / "other-b.fits", np.arange(n) + 10**6, (ra + off) % 360, dec, mag, seed=2)
    mp = pytest.MonkeyPatch()
    mp.setenv("MMU_CATALOG", str(test_overlay))
    mp.setenv("MMU_CACHE", str(root / "cache"))
    mp.setenv("PYTHONPATH", os.pathsep.join([str(REPO / "tests"), str(REPO), os.environ.get("PYTHONPATH", "")]))
    hub = root / "hub"
    build("testsurvey_v1", root / "raw" / "a", hub, client=dask_client)
    build("othersurvey_v1", root / "raw" / "b", hub, client=dask_client)
    pair = crossmatch(["testsurvey_v1", "othersurvey_v1"], hub, "toy_pair", client=dask_client)
    overlay = root / "tasks.yaml"
    overlay.write_text(yaml.safe_dump(task_overlay(pair.manifest.content_revision, pair.manifest.split.hash)))
    mp.setenv("MMU_CATALOG", os.pathsep.join([str(test_overlay), str(overlay)]))
    for split in ("train", "val"):
        export_wds("toy_pair", hub, root / "wds" / split, split=split, shard_size="64kB", shard_multiple=2,
                   client=dask_client)
    from mmu.pretrain.config import parse_config
    from mmu.pretrain.train import run_training

    cfg = parse_config({
        "name": "toy", "seed": 0,
        "model": {"embed_dim": 16, "modalities": {
            "testsurvey_spectrum": {"encoder": "tiny_spectrum", "length": NPIX},
            "othersurvey_spectrum": {"encoder": "tiny_spectrum", "length": NPIX}}},
        "data": {"train": [str(root / "wds" / "train")], "val": [str(root / "wds" / "val")], "batch_size": 32,
                 "num_workers": 0, "shuffle_buffer": 64, "segment_steps": 10, "val_max_samples": 32},
        "optim": {"lr": 3e-3, "warmup_steps": 2, "weight_decay": 0.0},
        "train": {"steps": 8, "device": "cpu", "ckpt_every": 8, "progress": False, "tensorboard": False,
                  "log_every": 4},
        "run": {"dir": str(root / "run")}})
    run_training(cfg)
    from mmu.pretrain.checkpoint import find_latest

    ckpt = find_latest(root / "run" / "checkpoints")
    yield {"root": root, "hub": hub, "ckpt": ckpt, "cfg": cfg, "revision": pair.manifest.content_revision,
           "overlay": overlay}
    mp.undo()


def mmu(*args, env=None, check=True):
    from mmu.cli import main

    rc = main([str(a) for a in args])
    if check:
        assert rc == 0, args
    return rc


def test_run_writes_results_with_provenance(world, tmp_path):
    out = tmp_path / "results"
    mmu("eval", "run", "--checkpoint", world["ckpt"], "--hub", world["hub"], "--out", out, "--name", "toy-clip")
    files = sorted(p.name for p in out.glob("*.json"))
    assert files == ["ToyMag.v1__knn16.v1.json", "ToyMag.v1__knn64-astroclip.v1.json",
                     "ToyMag.v1__linear.v1.json", "ToyRetrieval.v1__retrieval.v1.json"]
    r = json.loads((out / "ToyMag.v1__linear.v1.json").read_text())
    assert r["comparable"] is True and r["mock"] is False and r["format"] == "mmu-eval-result/2"
    from mmu.hub.layout import read_manifest

    pair = read_manifest(world["hub"], "toy_pair")
    assert r["build"] == {"kind": "archive", "dataset": "toy_pair", "content_revision": world["revision"],
                          "inputs_revisions": pair.inputs_revisions} and len(pair.inputs_revisions) == 2
    assert r["model"]["name"] == "toy-clip" and r["model"]["sha256"] == world["ckpt"].name.split("-")[1][:12] + \
        r["model"]["sha256"][12:]
    assert r["model"]["training_manifest"]["train"][0]["content_revision"] == world["revision"]
    assert r["task"]["dataset_revision_used"] == world["revision"]
    assert r["embedding"]["which"] == "projection" and r["embedding"]["dtype"] == "float32"
    assert set(r["embedding"]["cache_keys"]["testsurvey_spectrum"]) == {"train", "val", "test"}
    assert r["splits"]["test"]["count"] == len(r["predictions"]["ids"]) > 5
    assert r["protocol"]["selected"]["penalty"] in r["protocol"]["spec"]["ridge_alphas"]
    assert set(r["label_fractions"]) == {"0.01", "0.1", "1"}
    assert r["environment"]["packages"]["scikit-learn"] and r["environment"]["hardware"]["cpus"] >= 1
    # the flux encodes the magnitude: even a few-step model's embeddings carry it
    assert r["metrics"]["r2"] > 0.3
    # test objects are never in the pretraining shards (sky-region splits), measured, not assumed
    near = r["near_pretraining"]
    assert near["count"] == 0 and near["ids"] == [] and near["indexed_positions"] > 100 and near["reason"] is None
    ret = json.loads((out / "ToyRetrieval.v1__retrieval.v1.json").read_text())
    assert set(ret["metrics"]) >= {"r@1", "r@1[testsurvey_spectrum->othersurvey_spectrum]", "median_rank"}
    # a rerun is served from the embedding cache and gives the same numbers
    out2 = tmp_path / "again"
    mmu("eval", "run", "--checkpoint", world["ckpt"], "--hub", world["hub"], "--out", out2, "--name", "toy-clip",
        "--tasks", "ToyMag.v1", "--protocols", "knn16.v1")
    a = json.loads((out / "ToyMag.v1__knn16.v1.json").read_text())
    b = json.loads((out2 / "ToyMag.v1__knn16.v1.json").read_text())
    assert a["metrics"] == b["metrics"] and a["predictions_sha256"] == b["predictions_sha256"]


def test_near_pretraining_counts_test_objects_in_the_shards(world):
    from mmu.eval.results import near_pretraining

    idx = pq.read_table(world["root"] / "wds" / "train" / "index.parquet")
    radec = np.c_[np.asarray(idx.column("ra"))[:7], np.asarray(idx.column("dec"))[:7]]
    radec = np.vstack([radec + [0.5 / 3600, 0], [[200.0, -80.0]]])  # 7 within 0.5", one far away
    from mmu.pretrain.api import load_pretrained

    manifest = load_pretrained(world["ckpt"]).manifest
    near = near_pretraining(manifest, radec)
    assert near["count"] == 7 and near["rows"] == list(range(7))  # which test rows: the result names their ids
    assert near_pretraining({}, radec) == {**near_pretraining({}, radec), "count": None}
    gone = {"train": [{**manifest["train"][0], "path": "/nonexistent"}]}
    r = near_pretraining(gone, radec)
    assert r["count"] is None and "not readable" in r["reason"]


def test_embed_command_and_cache_key(world, tmp_path):
    out = tmp_path / "emb.parquet"
    mmu("eval", "embed", "--checkpoint", world["ckpt"], "--dataset", "toy_pair", "--hub", world["hub"],
        "--column", "othersurvey_spectrum", "--out", out, "--which", "backbone", "--split", "test")
    t = pq.read_table(out)
    assert t.column_names == ["object_id", "split", "embedding"]
    assert t.schema.field("embedding").type.value_type == "float"  # float32
    meta = json.loads(t.schema.metadata[b"mmu_eval"])
    assert meta["which"] == "backbone" and meta["dataset_revision"] == world["revision"]
    assert set(t.column("split").to_pylist()) == {"test"}


def test_embed_of_a_split_without_rows_is_a_one_line_error(world, tmp_path, monkeypatch, capsys):
    """A split with no rows (here: the manifest lists no val files) is a usage error naming the
    dataset, the column and the split, not an Arrow traceback, and writes nothing."""
    import mmu.hub.layout as layout

    real = layout.read_manifest

    def without_val(hub, name):
        m = real(hub, name)
        return m.model_copy(update={"data_files": {**m.data_files, "val": []}})

    monkeypatch.setattr(layout, "read_manifest", without_val)
    out = tmp_path / "emb.parquet"
    rc = mmu("eval", "embed", "--checkpoint", world["ckpt"], "--dataset", "toy_pair", "--hub", world["hub"],
             "--column", "othersurvey_spectrum", "--out", out, "--split", "val", check=False)
    err = capsys.readouterr().err
    assert rc == 2 and "toy_pair has no rows with 'othersurvey_spectrum' in split(s) val" in err
    assert "Traceback" not in err and not out.exists()


def test_cache_invalidates_when_any_key_part_changes(world, tmp_path):
    from mmu.eval.embed import CheckpointEmbedder, cache_key, embed_split
    from mmu.hub.layout import dataset_dir, read_manifest

    parts = dict(model_sha256="a" * 64, dataset="toy_pair", dataset_revision="r1", split="test",
                 column="testsurvey_spectrum", preprocessing="p1", which="projection")
    base = cache_key(**parts)
    for k, other in [("model_sha256", "b" * 64), ("dataset_revision", "r2"), ("split", "val"),
                     ("preprocessing", "p2"), ("which", "backbone"), ("column", "othersurvey_spectrum"),
                     ("dataset", "other")]:
        assert cache_key(**{**parts, k: other}) != base, k
    assert cache_key(**parts) == base
    with pytest.raises(ValueError):
        cache_key(**{**parts, "which": "logits"})
    # through embed_split: a hit for the same parts, a fresh embedding when one changes
    emb = CheckpointEmbedder(world["ckpt"])
    m = read_manifest(world["hub"], "toy_pair")
    files = [dataset_dir(world["hub"], "toy_pair") / f for f in m.data_files["test"]]
    calls = []  # the encoder's runs, whichever path embed_split feeds it by
    for method in ("embed", "embed_batch"):
        real = getattr(emb, method)
        setattr(emb, method, lambda *a, real=real: (calls.append(1), real(*a))[1])
    cache = tmp_path / "cache"
    ids, x, info = embed_split(emb, files, "toy_pair", m.content_revision, "test", "testsurvey_spectrum",
                               "projection", cache)
    n = len(calls)
    ids2, x2, info2 = embed_split(emb, files, "toy_pair", m.content_revision, "test", "testsurvey_spectrum",
                                  "projection", cache)
    assert len(calls) == n and info2["cached"] and np.array_equal(x, x2) and list(ids) == list(ids2)
    embed_split(emb, files, "toy_pair", "another-revision", "test", "testsurvey_spectrum", "projection", cache)
    assert len(calls) > n
    n = len(calls)
    emb.preprocessing_id = lambda c: "changed preprocessing"
    embed_split(emb, files, "toy_pair", m.content_revision, "test", "testsurvey_spectrum", "projection", cache)
    assert len(calls) > n
    # the preprocessing id follows the trainer's preprocessing source and the input shapes
    e2 = CheckpointEmbedder(world["ckpt"])
    pid = e2.preprocessing_id("testsurvey_spectrum")
    e2.p.config.model.modalities["testsurvey_spectrum"].length = 32
    assert e2.preprocessing_id("testsurvey_spectrum") != pid


def test_baselines(world, tmp_path):
    from mmu.eval.baselines import run_baselines

    done = run_baselines(world["cfg"], world["hub"], tmp_path, supervised_epochs=2, task_names=["ToyMag.v1"])
    assert set(done) == {"random-weights", "raw-pca", "supervised"}
    for kind, results in done.items():
        assert len(results) == 3
        r = results[0]
        assert r["model"]["kind"] == "baseline" and r["model"]["baseline"] == kind
        assert (tmp_path / f"baseline-{kind}" / "ToyMag.v1__linear.v1.json").exists()
        assert r["near_pretraining"]["count"] is None  # no pretraining shards: null, not 0
    pca = next(r for r in done["raw-pca"] if r["protocol"]["name"] == "linear.v1")
    assert pca["metrics"]["r2"] > 0.5  # the raw flux carries the magnitude: not saturated, not useless
    assert pca["model"]["fits"]["testsurvey_spectrum"]["fit_rows"] == pca["splits"]["train"]["count"]


def _toy_task(world):
    from mmu.eval.tasks import open_task
    from mmu.registry.catalog import load_catalog

    return open_task(load_catalog().task("ToyMag.v1"), world["hub"])


def test_raw_pca_through_the_loader_equals_a_fit_on_the_collated_rows(world):
    """The raw-PCA baseline reads its train rows through the parallel loader; the PCA equals one
    fitted on the same rows collated one by one (the trainer's collator, the first 5,000 by
    sha256 of the id), and the loader's embeddings equal the per-row ones."""
    from sklearn.decomposition import PCA

    from mmu.eval.baselines import RawPCAEmbedder, _flat
    from mmu.eval.embed import embed_split
    from mmu.eval.protocols import gallery_order
    from mmu.eval.tasks import iter_samples
    from mmu.pretrain.data import Collator

    col = "testsurvey_spectrum"
    d = _toy_task(world)
    emb = RawPCAEmbedder(world["cfg"], n_components=8, max_fit_rows=300, device="cpu")
    emb.prepare([(d, col)], col)
    wanted = set(d.ids["train"].tolist())
    ids = sorted(wanted)
    keep = set(np.asarray(ids)[gallery_order(ids)[:300]].tolist())
    spec = {col: world["cfg"].model.modalities[col]}
    rows = [s for _, samples in iter_samples(d.files["train"], "train", col, 100) for s in samples
            if s["object_id"] in keep]
    x = _flat(Collator(spec, len(rows))(rows)[col])
    ref = PCA(n_components=8, svd_solver="full").fit(x)
    assert len(rows) == 300 == emb.fits[col]["fit_rows"]
    np.testing.assert_allclose(emb.pca[col].components_, ref.components_, rtol=1e-5, atol=1e-6)
    got_ids, got, _ = embed_split(emb, d.files["test"], "toy_pair", "rev", "test", col, "backbone", None)
    test_rows = [s for _, samples in iter_samples(d.files["test"], "test", col, 64) for s in samples]
    np.testing.assert_array_equal(got_ids, [s["object_id"] for s in test_rows])
    # float32 sums over a batch of 64 against one of all rows
    np.testing.assert_allclose(got, emb.embed(test_rows, col, "backbone"), rtol=1e-5, atol=1e-4)


def test_supervised_training_does_not_depend_on_loader_workers(world, monkeypatch):
    """The supervised baseline reads its train rows through the loader in the batches the
    single-process path made (the task's rows among each 48 rows of a file, in the files' order):
    0 or 2 workers train the same weights; its loader embeddings equal the per-row ones."""
    from mmu.eval.baselines import SupervisedEmbedder
    from mmu.eval.embed import embed_split
    from mmu.eval.tasks import iter_samples

    col = "testsurvey_spectrum"
    d = _toy_task(world)
    wanted = set(d.ids["train"].tolist())
    before = [[o for o in oids if o in wanted] for oids, _ in iter_samples(d.files["train"], "train", col, 48)]
    before = [b for b in before if b]
    fits = {}
    for workers in ("0", "2"):
        monkeypatch.setenv("MMU_EMBED_WORKERS", workers)
        emb = SupervisedEmbedder(world["cfg"], epochs=1, batch_size=48, device="cpu")
        batches, ids = emb.train_inputs([(d, col)], col, 48)
        assert [list(o) for o, _ in batches()] == before and len(ids) == sum(map(len, before))
        emb.prepare([(d, col)], col)
        fits[workers] = emb.fits[col]
    assert fits["0"] == fits["2"] and "precision" not in fits["0"]
    got_ids, got, _ = embed_split(emb, d.files["val"], "toy_pair", "rev", "val", col, "backbone", None)
    rows = [s for _, samples in iter_samples(d.files["val"], "val", col, 64) for s in samples]
    np.testing.assert_array_equal(got_ids, [s["object_id"] for s in rows])
    np.testing.assert_allclose(got, emb.embed(rows, col, "backbone"), rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a GPU")
def test_supervised_baseline_trains_on_the_gpu_in_bf16(world):
    from mmu.eval.baselines import SupervisedEmbedder

    col = "testsurvey_spectrum"
    d = _toy_task(world)
    emb = SupervisedEmbedder(world["cfg"], epochs=1)
    emb.prepare([(d, col)], col)
    assert emb.device.startswith("cuda") and emb.fits[col]["precision"] == "bf16"
    assert next(emb.encoders[col].parameters()).is_cuda


def test_the_board_reads_labels_from_the_hub_or_a_published_lock(world, tmp_path, capsys):
    """Issue 16 item 4 / issue 19: a task that no catalog lock pins (ToyMag.v1) is refused on an
    empty board; `submit --hub` reads the labels from the dataset itself, and a build's published
    lock (`mmu eval lock`), trusted by a maintainer (`mmu eval add-lock`), pins them for everyone.
    Fabricated labels fail against both."""
    import shutil
    import subprocess

    from mmu.eval.submit import labels_sha256
    from test_board_trust import fabricate

    out = tmp_path / "results"
    mmu("eval", "run", "--checkpoint", world["ckpt"], "--hub", world["hub"], "--out", out, "--name", "toy-clip",
        "--tasks", "ToyMag.v1", "--protocols", "knn16.v1")
    honest = json.loads((out / "ToyMag.v1__knn16.v1.json").read_text())
    board = tmp_path / "board"
    subprocess.run(["git", "init", "-q", "-b", "main", str(board)], check=True)
    git = ["git", "-C", str(board), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(git + ["commit", "-q", "--allow-empty", "-m", "init"], check=True)
    capsys.readouterr()
    assert mmu("eval", "submit", out, "--leaderboard", board, check=False) == 2
    err = capsys.readouterr().err
    assert f"no trusted test labels for ToyMag.v1 on toy_pair revision {world['revision'][:16]}" in err
    fake = tmp_path / "fake"
    shutil.copytree(out, fake)
    assert fabricate(fake / "ToyMag.v1__knn16.v1.json")["metrics"]["r2"] == 1.0
    assert mmu("eval", "submit", fake, "--leaderboard", board, "--hub", world["hub"], check=False) == 2
    assert f"test labels differ from the ones the hub {world['hub']} pins" in capsys.readouterr().err
    mmu("eval", "submit", out, "--leaderboard", board, "--hub", world["hub"])

    lock = tmp_path / "toy_pair.lock"
    mmu("eval", "lock", "--hub", world["hub"], "-o", lock)  # every non-mock task built there
    pins = json.loads(lock.read_text())
    assert pins["format"] == "mmu-lock/1" and set(pins["tasks"]) == {"ToyMag.v1", "ToyRetrieval.v1"}
    assert pins["tasks"]["ToyMag.v1"]["test_labels_sha256"] == labels_sha256(honest["predictions"])
    assert pins["tasks"]["ToyMag.v1"]["splits"]["test"]["ids_sha256"] == honest["splits"]["test"]["ids_sha256"]
    assert pins["datasets"]["toy_pair"]["mock"] is False
    tampered = tmp_path / "tampered.lock"
    bad = json.loads(lock.read_text())
    bad["tasks"]["ToyMag.v1"]["test_labels_sha256"] = labels_sha256(json.loads(
        (fake / "ToyMag.v1__knn16.v1.json").read_text())["predictions"])
    tampered.write_text(json.dumps(bad))
    capsys.readouterr()
    assert mmu("eval", "add-lock", tampered, "--leaderboard", board, "--added-by", "M", "--hub", world["hub"],
               check=False) == 2
    assert "disagrees with the build" in capsys.readouterr().err
    mmu("eval", "add-lock", lock, "--leaderboard", board, "--added-by", "M", "--hub", world["hub"])
    subprocess.run(git + ["merge", "-q", f"lock/{world['revision'][:12]}"], check=True)
    # trusted now: no --hub needed, and the fabricated labels fail against the board's lock
    mmu("eval", "submit", out, "--leaderboard", board, "--model", "toy-clip-2")
    assert mmu("eval", "submit", fake, "--leaderboard", board, "--model", "faker", check=False) == 2
    assert f"the board lock locks/{world['revision']}.json pins" in capsys.readouterr().err
