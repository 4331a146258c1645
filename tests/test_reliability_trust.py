"""Trust and configs (issue 16, items 5, 6, 8, 9): a checkpoint naming a `module:name` encoder is
refused unless its code is trusted and the module is not imported; `--resume` over only corrupt
checkpoints fails naming each one; config values are not coerced and duplicate YAML keys are
refused; a damaged checkpoint or config is a one-line error, not a traceback."""
from __future__ import annotations

import sys
import textwrap

import pytest

torch = pytest.importorskip("torch")

from mmu.cli.main import main  # noqa: E402
from mmu.pretrain import registry  # noqa: E402
from mmu.pretrain.api import load_pretrained  # noqa: E402
from mmu.pretrain.checkpoint import CheckpointError, save_checkpoint  # noqa: E402
from mmu.pretrain.config import parse_config  # noqa: E402

MODULE = "mmu_untrusted_encoder_mod"


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def toy_config(run_dir, image_encoder="tiny_convnet") -> dict:
    return {"name": "toy", "model": {"embed_dim": 16, "modalities": {
        "image": {"encoder": image_encoder, "channels": 4, "size": 16},
        "spectrum": {"encoder": "tiny_spectrum", "length": 128}}},
        "data": {"train": ["x"], "batch_size": 8}, "train": {"steps": 1, "device": "cpu"},
        "run": {"dir": str(run_dir)}}


@pytest.fixture
def untrusted(tmp_path, monkeypatch):
    """A checkpoint whose config names `MODULE:evil_convnet`; importing MODULE writes a marker file."""
    marker = tmp_path / "imported.txt"
    (tmp_path / "mods").mkdir()
    (tmp_path / "mods" / f"{MODULE}.py").write_text(textwrap.dedent(f"""\
        from pathlib import Path
        from mmu.pretrain.registry import register_encoder
        from mmu.pretrain.encoders import tiny_convnet

        Path({str(marker)!r}).write_text("imported")

        @register_encoder("evil_convnet", kind="image")
        def evil_convnet(modality, **options):
            return tiny_convnet(modality, **options)
        """))
    monkeypatch.syspath_prepend(str(tmp_path / "mods"))
    registry.list_encoders()  # the built-ins, before the registry is swapped for a copy
    monkeypatch.setattr(registry, "_ENCODERS", dict(registry._ENCODERS))
    monkeypatch.delitem(sys.modules, MODULE, raising=False)

    from mmu.pretrain.train import build_model

    torch.manual_seed(0)
    weights = build_model(parse_config(toy_config(tmp_path / "run"))).state_dict()  # same shapes
    cfg = toy_config(tmp_path / "run", f"{MODULE}:evil_convnet")
    path = save_checkpoint(tmp_path / "ckpt", {"model": weights, "config": cfg, "manifest": {},
                                               "step": 0}, step=0)
    yield path, marker
    sys.modules.pop(MODULE, None)


def test_a_checkpoint_naming_module_code_is_refused_without_trust_and_not_imported(untrusted):
    path, marker = untrusted
    with pytest.raises(CheckpointError, match=rf"{MODULE}:evil_convnet.*module '{MODULE}'.*--trust-code"):
        load_pretrained(path)
    assert not marker.exists() and MODULE not in sys.modules

    p = load_pretrained(path, trust_code=True)
    assert marker.exists() and MODULE in sys.modules
    assert type(p.model.encoders["image"]).__name__ == "ConvImageEncoder"


def test_eval_cli_refuses_module_code_without_trust_code(untrusted, tmp_path, capsys):
    path, marker = untrusted
    (tmp_path / "hub").mkdir()
    rc = main(["eval", "embed", "--checkpoint", str(path), "--dataset", "nope", "--hub",
               str(tmp_path / "hub"), "--out", str(tmp_path / "e.parquet"), "--column", "spectrum"])
    err = capsys.readouterr().err
    assert rc == 2 and "--trust-code" in err and MODULE in err and "Traceback" not in err
    assert not marker.exists() and MODULE not in sys.modules

    # with --trust-code the checkpoint loads; the command then stops at the missing dataset
    rc = main(["eval", "embed", "--checkpoint", str(path), "--dataset", "nope", "--hub",
               str(tmp_path / "hub"), "--out", str(tmp_path / "e.parquet"), "--column", "spectrum",
               "--trust-code"])
    err = capsys.readouterr().err
    assert marker.exists() and "--trust-code" not in err and "nope" in err


def test_builtin_encoders_load_without_trust(tmp_path):
    from mmu.eval.baselines import random_weights_checkpoint

    path = random_weights_checkpoint(parse_config(toy_config(tmp_path / "run")), tmp_path / "ckpt")
    assert load_pretrained(path).step == 0


def tiny_run(tmp_path, steps=15) -> dict:
    import yaml

    from mmu.pretrain.config import config_dir
    from mmu.pretrain.synthetic import columns_of, tiny_variant, write_synthetic_export

    raw = yaml.safe_load((config_dir() / "tiny_cpu.yaml").read_text())
    cols = columns_of(raw)
    write_synthetic_export(tmp_path / "exp" / "train", cols, n_samples=32, n_shards=2, seed=1)
    write_synthetic_export(tmp_path / "exp" / "val", cols, n_samples=16, n_shards=1, split="val", seed=2)
    return tiny_variant(raw, train=[str(tmp_path / "exp" / "train")], val=[str(tmp_path / "exp" / "val")],
                        run_dir=str(tmp_path / "run"), steps=steps)


def test_resume_with_every_checkpoint_corrupt_fails_naming_each(tmp_path, capsys):
    import yaml

    from mmu.pretrain.checkpoint import list_checkpoints
    from mmu.pretrain.train import TrainingError, run_training

    raw = tiny_run(tmp_path)
    run_training(parse_config(raw))
    ckpts = list_checkpoints(tmp_path / "run" / "checkpoints")
    assert [p.name[:12] for p in ckpts] == ["step00000005", "step00000010", "step00000015"]
    truncated, foreign, altered = ckpts
    truncated.write_bytes(truncated.read_bytes()[:1000])
    torch.save({"format": "someone-else/1", "weights": torch.zeros(3)}, foreign)
    altered.write_bytes(altered.read_bytes() + b"\0")

    with pytest.raises(TrainingError) as info:
        run_training(parse_config(raw), resume=True)
    msg = str(info.value)
    assert "no intact checkpoint to resume from" in msg
    lines = {line.split(":")[0].strip(): line for line in msg.splitlines()[1:4]}
    assert set(lines) == {p.name for p in ckpts}
    assert "sha256 mismatch" in lines[truncated.name] and "truncated" in lines[truncated.name]
    assert "sha256 mismatch" in lines[foreign.name] and "foreign" in lines[foreign.name]
    assert "someone-else/1" in lines[foreign.name]
    assert "sha256 mismatch" in lines[altered.name]
    with pytest.raises(TrainingError, match="no intact checkpoint to keep"):  # nor a fresh start over them
        run_training(parse_config(raw))
    assert list_checkpoints(tmp_path / "run" / "checkpoints") == ckpts  # nothing new was written

    cfg_file = tmp_path / "tiny.yaml"
    cfg_file.write_text(yaml.safe_dump(raw))
    capsys.readouterr()
    rc = main(["pretrain", "--config", str(cfg_file), "--resume"])
    err = capsys.readouterr().err
    assert rc == 1 and all(p.name in err for p in ckpts) and "Traceback" not in err


@pytest.mark.parametrize("override, key", [("train.steps=true", "train.steps"),
                                           ("train.ckpt_every=yes", "train.ckpt_every"),
                                           ("train.steps='12'", "train.steps"),
                                           ("optim.lr=true", "optim.lr"),
                                           ("train.progress=1", "train.progress"),
                                           ("augment.image_flips=no_thanks", "augment.image_flips")])
def test_config_values_are_not_coerced(tmp_path, override, key):
    from mmu.pretrain.config import ConfigError, apply_overrides

    with pytest.raises(ConfigError, match=rf"(?s)invalid.*{key}: Input should be a valid"):
        parse_config(apply_overrides(toy_config(tmp_path), [override]))


def test_ints_stay_valid_floats_and_exponents_without_a_dot_are_floats(tmp_path):
    from mmu.pretrain.config import load_config

    cfg_file = tmp_path / "c.yaml"
    import yaml

    cfg_file.write_text(yaml.safe_dump(toy_config(tmp_path)) + "optim: {lr: 1e-3, weight_decay: 0, "
                        "betas: [1, 0.5]}\n")
    cfg = load_config(cfg_file, ["train.steps=7"])
    assert cfg.optim.lr == 1e-3 and cfg.optim.weight_decay == 0.0 and cfg.optim.betas == (1.0, 0.5)
    assert cfg.train.steps == 7 and type(cfg.train.steps) is int


@pytest.mark.parametrize("text, message", [
    ("name: a\ntrain:\n  steps: 3\n  steps: 4\n",
     r"c\.yaml: duplicate key 'steps' at line 4 \(first given at line 3\)"),
    ("name: a\nname: b\n", r"duplicate key 'name' at line 2 \(first given at line 1\)"),
    ("model: {embed_dim: 8, embed_dim: 9}\n", r"duplicate key 'embed_dim' at line 1"),
    ("name: [a, b\n", r"c\.yaml: not valid YAML at line 2, column 1: expected ','"),
    ("name: !!python/object/apply:os.system ['touch pwned']\n",
     r"c\.yaml: not valid YAML at line 1.*python/object/apply:os\.system.*not allowed"),
])
def test_bad_yaml_is_one_line_naming_file_and_line(tmp_path, capsys, text, message):
    from mmu.pretrain.config import ConfigError, load_config

    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        load_config(cfg_file)
    assert "\n" not in str(info.value)
    rc = main(["pretrain", "--config", str(cfg_file)])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err
    assert not (tmp_path / "pwned").exists() and not __import__("os").path.exists("pwned")


@pytest.mark.parametrize("damage", ["truncated", "foreign", "text", "no_config", "bad_config"])
@pytest.mark.parametrize("command", ["run", "embed"])
def test_eval_of_a_damaged_or_foreign_checkpoint_is_one_line(tmp_path, capsys, damage, command):
    """A refused checkpoint is refused input: `error: <file>: why`, exit 2 (as every `mmu eval`
    refusal), never a traceback."""
    from mmu.eval.baselines import random_weights_checkpoint

    good = random_weights_checkpoint(parse_config(toy_config(tmp_path / "run")), tmp_path / "ckpt")
    bad = tmp_path / "bad.pt"
    if damage == "truncated":
        bad.write_bytes(good.read_bytes()[:4096])
    elif damage == "foreign":
        torch.save({"state_dict": {"w": torch.zeros(2)}}, bad)
    elif damage == "text":
        bad.write_text("hello\n")
    else:
        state = torch.load(good, weights_only=True)
        if damage == "no_config":
            del state["config"]
        else:
            state["config"]["train"]["steps"] = "many"
        torch.save(state, bad)
    (tmp_path / "hub").mkdir()
    args = {"run": ["eval", "run", "--checkpoint", str(bad), "--hub", str(tmp_path / "hub"),
                    "--out", str(tmp_path / "res")],
            "embed": ["eval", "embed", "--checkpoint", str(bad), "--dataset", "d", "--hub",
                      str(tmp_path / "hub"), "--out", str(tmp_path / "e.parquet"), "--column", "spectrum"]}
    rc = main(args[command])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith(f"error: {bad}") and "Traceback" not in err
    assert err.count("\n") == (2 if damage == "bad_config" else 1)  # the config error lists its field
    assert {"truncated": "not a loadable", "foreign": "not an mmu pretraining checkpoint",
            "text": "not a loadable", "no_config": "carries no config",
            "bad_config": "train.steps"}[damage] in err
