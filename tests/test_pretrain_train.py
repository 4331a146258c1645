"""The trainer end to end on CPU: the tiny variant of every shipped config lowers the validation
loss; a killed run resumed from its checkpoint ends with the same weights as an uninterrupted one;
checkpoints are named by their sha256, load with weights_only, carry config + manifest, and one
from another model is refused; the API embeds; `python -m mmu.pretrain` and 2-rank DDP run."""
from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
import yaml

from mmu.pretrain import train as T
from mmu.pretrain.api import load_pretrained
from mmu.pretrain.checkpoint import CheckpointError, file_sha256, list_checkpoints, load_checkpoint
from mmu.pretrain.config import config_dir, parse_config
from mmu.pretrain.data import open_exports
from mmu.pretrain.loss import PairwiseContrastiveLoss
from mmu.pretrain.synthetic import columns_of, tiny_variant, write_synthetic_export

SHIPPED = ["tiny_cpu", "astroclip", "trimodal"]


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def raw_config(name: str) -> dict:
    return yaml.safe_load((config_dir() / f"{name}.yaml").read_text())


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """A synthetic train/val export per shipped config, with that config's column names."""
    root = tmp_path_factory.mktemp("exports")
    out = {}
    for name in SHIPPED:
        cols = columns_of(raw_config(name))
        missing = {c: 0.25 for c, k in cols.items() if k == "lightcurve"}
        write_synthetic_export(root / name / "train", cols, n_samples=96, n_shards=4, seed=1,
                               missing=missing)
        write_synthetic_export(root / name / "val", cols, n_samples=32, n_shards=2, split="val",
                               seed=2, missing=missing)
        out[name] = root / name
    return out


def tiny(name, exports, run_dir, **kw):
    return parse_config(tiny_variant(raw_config(name), train=[str(exports[name] / "train")],
                                     val=[str(exports[name] / "val")], run_dir=str(run_dir), **kw))


def initial_val_loss(cfg):
    model = T.build_model(cfg)
    loss_fn = PairwiseContrastiveLoss(model.pairs, cfg.loss.kind, cfg.loss.local)
    from contextlib import nullcontext

    return T.evaluate(model, loss_fn, cfg, open_exports(cfg.data.val), 0, 1, torch.device("cpu"),
                      nullcontext)["val_loss"]


@pytest.mark.parametrize("name", SHIPPED)
def test_tiny_variant_of_each_config_lowers_the_val_loss(name, exports, tmp_path):
    cfg = tiny(name, exports, tmp_path / "run", steps=16)
    before = initial_val_loss(cfg)
    summary = T.run_training(cfg)
    after = summary["val"]["val_loss"]
    assert after < before - 0.05, (before, after)
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == list(range(1, 17))
    assert (tmp_path / "run" / "config.yaml").exists()
    assert parse_config(yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())) == cfg


def _state(run_dir):
    ckpt = load_checkpoint(list_checkpoints(run_dir / "checkpoints")[-1])
    return ckpt


def test_kill_and_resume_equals_uninterrupted(exports, tmp_path, monkeypatch):
    kw = dict(steps=10)
    a = tiny("trimodal", exports, tmp_path / "a", **kw)
    a.data.segment_steps = 4  # the checkpoint at step 5 falls inside a data segment
    a.augment.image_noise = 0.3  # random augmentations must replay too
    T.run_training(a)

    b = a.model_copy(deep=True)
    b.run.dir = str(tmp_path / "b")
    real_augment, calls = T.augment, []

    def dying_augment(*args, **kwargs):
        calls.append(1)
        if len(calls) == 8:
            raise KeyboardInterrupt("killed at step 8")
        return real_augment(*args, **kwargs)

    monkeypatch.setattr(T, "augment", dying_augment)
    with pytest.raises(KeyboardInterrupt):
        T.run_training(b)
    monkeypatch.setattr(T, "augment", real_augment)
    assert [int(p.name[4:12]) for p in list_checkpoints(tmp_path / "b" / "checkpoints")] == [5]
    with pytest.raises(T.TrainingError, match="--resume"):
        T.run_training(b)
    T.run_training(b, resume=True)

    sa, sb = _state(tmp_path / "a"), _state(tmp_path / "b")
    assert sa["step"] == sb["step"] == 10
    for k, v in sa["model"].items():
        assert torch.equal(v, sb["model"][k]), k
    for pa, pb in zip(sa["optimizer"]["state"].values(), sb["optimizer"]["state"].values(), strict=True):
        assert torch.equal(pa["exp_avg_sq"], pb["exp_avg_sq"])
    assert sa["scheduler"] == sb["scheduler"]
    # and the resumed run really trained: weights moved from the step-5 checkpoint
    first = [p for p in list_checkpoints(tmp_path / "a" / "checkpoints")][0]
    assert not all(torch.equal(v, load_checkpoint(first)["model"][k]) for k, v in sa["model"].items())


def test_checkpoint_files_api_and_refusal(exports, tmp_path):
    cfg = tiny("astroclip", exports, tmp_path / "run", steps=5)
    T.run_training(cfg)
    path = list_checkpoints(tmp_path / "run" / "checkpoints")[-1]
    assert path.name.startswith("step00000005-") and file_sha256(path).startswith(path.stem.split("-")[1])
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["config"]["name"] == "astroclip"
    assert ckpt["manifest"]["train"][0]["dataset"] == "synthetic_v1"
    assert len(ckpt["manifest"]["train"][0]["shards"]) == 4

    p = load_pretrained(path)
    assert p.step == 5 and p.sha256 == file_sha256(path) and p.manifest == ckpt["manifest"]
    from mmu.shards.format import decode_sample, iter_tar

    samples = [decode_sample(s) for s in iter_tar(exports["astroclip"] / "val" / "shard-val-000000.tar")][:3]
    from mmu.shards.format import read_index

    batch = p.collate(samples, constants=read_index(exports["astroclip"] / "val").constants)
    emb = p.embed(batch)
    assert set(emb) == {"legacysurvey_image", "desi_spectrum"}
    assert emb["desi_spectrum"].shape == (3, 16)
    torch.testing.assert_close(emb["desi_spectrum"].norm(dim=-1), torch.ones(3))
    feats = p.embed(batch, project=False)
    assert feats["legacysurvey_image"].shape == (3, p.model.encoders["legacysurvey_image"].width)

    other = cfg.model_copy(deep=True)
    other.model.embed_dim = 24
    refused = r"another model.*\n.*model\.embed_dim: checkpoint 16, config 24"
    with pytest.raises(CheckpointError, match=refused):
        T.run_training(other, resume=True)
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["model"]["embed_dim"] == 16
    with pytest.raises(CheckpointError, match="another model"):
        load_pretrained(path, expect_config=other)
    path.with_name("garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a loadable"):
        load_checkpoint(path.with_name("garbage.pt"))


def test_python_m_entry_point(exports, tmp_path):
    cfg = tiny_variant(raw_config("tiny_cpu"), train=[str(exports["tiny_cpu"] / "train")], val=[],
                       run_dir=str(tmp_path / "run"), steps=2)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "mmu.pretrain", "--config", str(path), "train.steps=3"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1])["step"] == 3
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 1 and "--resume" in again.stderr


def _ddp_train(rank, world, init_file, cfg_dict):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        T.run_training(parse_config(cfg_dict))
    finally:
        dist.destroy_process_group()


def test_two_rank_ddp_training_runs_validates_and_checkpoints(exports, tmp_path):
    cfg = tiny_variant(raw_config("trimodal"), train=[str(exports["trimodal"] / "train")],
                       val=[str(exports["trimodal"] / "val")], run_dir=str(tmp_path / "run"), steps=4)
    cfg["train"].update(ckpt_every=2, val_every=2)
    cfg["loss"]["local"] = True
    mp.spawn(_ddp_train, args=(2, str(tmp_path / "init"), cfg), nprocs=2, join=True)
    ckpt = load_checkpoint(list_checkpoints(tmp_path / "run" / "checkpoints")[-1])
    assert ckpt["data"]["world_size"] == 2 and len(ckpt["rng"]) == 2
    log = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert sum("val_loss" in r for r in log) == 2


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_bf16_compiled_training_on_gpu(exports, tmp_path):
    cfg = tiny("astroclip", exports, tmp_path / "run", steps=6)
    cfg.train.device, cfg.train.precision, cfg.train.compile = "cuda", "bf16", True
    before = initial_val_loss(cfg)
    summary = T.run_training(cfg)
    assert summary["val"]["val_loss"] < before
    p = load_pretrained(summary["checkpoint"], device="cuda")
    assert p.model.logit_scale["legacysurvey_image|desi_spectrum"].device.type == "cuda"


# ---------------------------------------------------------------- no silent training on nothing


def test_shards_without_the_configs_columns_refuse_to_start_and_the_hint_works(exports, tmp_path):
    # tiny_cpu pairs `image`/`spectrum`; these shards hold `legacysurvey_image`/`desi_spectrum`
    shards = exports["astroclip"]
    cfg = tiny_variant(raw_config("tiny_cpu"), train=[str(shards / "train")], val=[str(shards / "val")],
                       run_dir=str(tmp_path / "run"), steps=2)
    with pytest.raises(T.TrainingError) as refused:
        T.run_training(parse_config(cfg))
    msg = str(refused.value)
    assert "data.train: no pair of the config's modalities is in the shards" in msg
    assert "image (image), spectrum (spectrum); pairs image|spectrum" in msg
    assert "desi_spectrum (spectrum), legacysurvey_image (image)" in msg
    assert "image -> legacysurvey_image, spectrum -> desi_spectrum" in msg
    assert "pretrain/configs/demo.yaml" in msg  # a shipped config for these columns
    assert not (tmp_path / "run" / "checkpoints").exists()
    # the suggested override, pasted as printed, trains on these shards
    override = re.search(r'"(model\.modalities=.*)"', msg).group(1)
    from mmu.pretrain.config import apply_overrides

    fixed = parse_config(apply_overrides(cfg, [override]))
    assert set(fixed.model.modalities) == {"legacysurvey_image", "desi_spectrum"}
    assert fixed.model.modalities["legacysurvey_image"].size == 16
    summary = T.run_training(fixed)
    assert summary["empty_batches"] == 0 and summary["last"]["loss"] > 0


def test_a_column_of_another_kind_or_band_count_is_refused(exports, tmp_path):
    cfg = tiny("astroclip", exports, tmp_path / "run", steps=2)
    cfg.model.modalities["legacysurvey_image"].channels = 3
    with pytest.raises(T.TrainingError, match=r"'legacysurvey_image' has 4 bands .* channels: 3"):
        T.run_training(cfg)


def test_batches_without_a_pair_are_skipped_counted_and_reported(tmp_path):
    cols = {"image": "image", "spectrum": "spectrum"}
    # 80 % of the samples lack their spectrum: with 2 rows a batch, most batches hold no pair
    write_synthetic_export(tmp_path / "x" / "train", cols, n_samples=64, n_shards=2, seed=3,
                           missing={"spectrum": 0.8})
    raw = tiny_variant(raw_config("tiny_cpu"), train=[str(tmp_path / "x" / "train")], val=[],
                       run_dir=str(tmp_path / "run"), steps=12)
    raw["data"]["batch_size"] = 2
    raw["train"].update(ckpt_every=1, keep_checkpoints=20)
    summary = T.run_training(parse_config(raw))
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    steps = [r for r in log if "lr" in r]
    empty = [r["step"] for r in steps if r.get("empty_batch")]
    trained = [r for r in steps if not r.get("empty_batch")]
    assert 0 < len(empty) < 12 and summary["empty_batches"] == len(empty)
    assert all(r["loss"] is None for r in steps if r.get("empty_batch"))  # not averaged in as 0.0
    assert trained and all(isinstance(r["loss"], float) and r["pairs"]["image|spectrum"]["n_valid"] > 0
                           for r in trained)
    assert log[-1] == {"step": 12, "empty_batches": len(empty), "final": True}
    # a skipped step leaves the weights alone (a zero-loss AdamW step would still move them)
    ckpts = {int(p.name[4:12]): p for p in list_checkpoints(tmp_path / "run" / "checkpoints")}
    k = next(s for s in empty if s > 1)
    before, after = load_checkpoint(ckpts[k - 1]), load_checkpoint(ckpts[k])
    assert all(torch.equal(v, after["model"][n]) for n, v in before["model"].items())
    assert after["scheduler"]["last_epoch"] == k  # the schedule still follows the step count
    assert after["data"]["empty_batches"] == sum(s <= k for s in empty)


def test_a_run_whose_batches_never_hold_a_pair_stops(tmp_path):
    cols = {"image": "image", "spectrum": "spectrum"}
    write_synthetic_export(tmp_path / "x" / "train", cols, n_samples=32, n_shards=2, seed=3,
                           missing={"spectrum": 1.0})  # listed in the index, in no sample
    raw = tiny_variant(raw_config("tiny_cpu"), train=[str(tmp_path / "x" / "train")], val=[],
                       run_dir=str(tmp_path / "run"), steps=4)
    with pytest.raises(T.TrainingError, match="4 batches in a row .* held no row with both modalities"):
        T.run_training(parse_config(raw))
    assert not list_checkpoints(tmp_path / "run" / "checkpoints")


def test_start_message_rate_and_oversized_batch_warning(exports, tmp_path):
    cfg = tiny("tiny_cpu", exports, tmp_path / "run", steps=7)
    cfg.data.batch_size = 128  # the training export holds 96 samples
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    T.log.addHandler(handler)
    try:
        T.run_training(cfg)
    finally:
        T.log.removeHandler(handler)
    err = "\n".join(r.getMessage() for r in records)
    assert "data.batch_size 128 = 128 rows per step exceeds the 96 training samples" in err
    assert "set data.batch_size to at most 96" in err
    assert re.search(r"training tiny_cpu: [\d.]+ M parameters on cpu, \d+ threads?, precision fp32; "
                     r"steps 1 to 7 of 128 rows from 96 training samples", err), err
    assert re.search(r"[\d.]+ steps/s \(\d+ samples/s\): about \d+ s for the remaining 1 steps", err), err


def test_load_pretrained_takes_a_run_folder(exports, tmp_path):
    summary = T.run_training(tiny("tiny_cpu", exports, tmp_path / "run", steps=6))  # ckpts 5, 6
    newest = Path(summary["checkpoint"])
    assert newest.name.startswith("step00000006-")
    assert load_pretrained(tmp_path / "run").path == newest
    assert load_pretrained(tmp_path / "run" / "checkpoints").step == 6
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="empty: a folder without an intact checkpoint"):
        load_pretrained(tmp_path / "empty")


def test_cli_refuses_the_issue_21_run(exports, tmp_path):
    """`mmu pretrain --config tiny_cpu.yaml` on legacysurvey_image/desi_spectrum shards used to
    train 50 steps at loss 0.0000 and exit 0; it refuses, writing nothing, naming both sides."""
    shards = exports["astroclip"]
    cmd = [sys.executable, "-m", "mmu.pretrain", "--config", str(config_dir() / "tiny_cpu.yaml"),
           f"data.train=[{shards / 'train'}]", f"data.val=[{shards / 'val'}]", f"run.dir={tmp_path / 'run'}"]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                         timeout=300)
    assert out.returncode != 0 and out.stdout == ""
    assert "no pair of the config's modalities is in the shards" in out.stderr
    assert "desi_spectrum (spectrum), legacysurvey_image (image)" in out.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("error,where,keys", [
    (torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), "GPU",
     ["--set data.batch_size=8", "train.precision=bf16"]),
    (MemoryError(), "host (CPU)", ["--set data.batch_size=8", "data.shuffle_buffer="]),
])
def test_out_of_memory_stops_with_one_line_naming_the_step_and_the_settings(exports, tmp_path, monkeypatch,
                                                                             capsys, error, where, keys):
    """Issue 18: an out-of-memory error inside a training step (injected into the model's forward on
    its 3rd call) stops the run with one line: the step, the batch size and precision it ran with,
    and the config keys to lower, instead of a traceback through the encoders."""
    from mmu.pretrain.model import MultimodalCLIP

    cfg = tiny("tiny_cpu", exports, tmp_path / "run", steps=6)
    cfg.data.batch_size = 16
    forward, calls = MultimodalCLIP.forward, []

    def failing(self, *a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise error
        return forward(self, *a, **k)

    monkeypatch.setattr(MultimodalCLIP, "forward", failing)
    with pytest.raises(T.TrainingError) as stopped:
        T.run_training(cfg)
    msg = str(stopped.value)
    assert "\n" not in msg
    assert msg.startswith(f"out of {where} memory at step 3 (training) with data.batch_size=16 per process, "
                          "train.precision=fp32"), msg
    for key in keys:
        assert key in msg, msg
    # through the CLI's error path: exit 1 and that line, not a traceback
    from mmu.cli import main

    monkeypatch.setattr(T, "run_training", lambda *a, **k: (_ for _ in ()).throw(stopped.value))
    assert main(["pretrain", "--config", str(config_dir() / "tiny_cpu.yaml")]) == 1
    assert msg in capsys.readouterr().err


def test_out_of_memory_in_validation_names_the_stage(exports, tmp_path, monkeypatch):
    cfg = tiny("tiny_cpu", exports, tmp_path / "run", steps=4)
    cfg.train.val_every = 2

    def failing(*a, **k):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(T, "evaluate", failing)
    with pytest.raises(T.TrainingError, match=r"^out of GPU memory at step 2 \(validation\) with "
                                              r"data.batch_size=\d+ .*--set data.batch_size="):
        T.run_training(cfg)
