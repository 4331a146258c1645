"""Every pretraining config in pretrain/configs (recursively) parses, names registered encoders of
the right kind, and builds; configs reject unknown keys; overrides are dotted key=value."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mmu.pretrain.config import ConfigError, apply_overrides, config_dir, load_config, parse_config
from mmu.pretrain.registry import build_encoder, list_encoders, register_encoder

CONFIGS = sorted(config_dir().rglob("*.yaml"))


def test_configs_are_found_recursively():
    names = {p.name for p in CONFIGS}
    assert {"tiny_cpu.yaml", "astroclip.yaml", "trimodal.yaml"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(config_dir())))
def test_every_config_validates(path: Path):
    cfg = load_config(path)
    encoders = list_encoders()
    for column, m in cfg.model.modalities.items():
        assert m.encoder in encoders, f"{path}: {column} uses unregistered encoder {m.encoder}"
        assert encoders[m.encoder].kind == m.kind
    assert cfg.model.pair_list()
    assert cfg.train.ckpt_every % cfg.data.segment_steps == 0 or \
        cfg.data.segment_steps % cfg.train.ckpt_every == 0, "checkpoints should fall on segment boundaries"


def test_unknown_keys_are_rejected_with_their_location():
    raw = yaml.safe_load((config_dir() / "tiny_cpu.yaml").read_text())
    raw["optim"]["learning_rate"] = 1.0
    with pytest.raises(ConfigError, match=r"optim\.learning_rate"):
        parse_config(raw)
    with pytest.raises(ConfigError, match="train.stpes"):
        load_config(config_dir() / "tiny_cpu.yaml", ["train.stpes=3"])


def test_overrides_are_dotted_and_typed():
    cfg = load_config(config_dir() / "tiny_cpu.yaml",
                      ["train.steps=7", "data.train=[a, b]", "model.modalities.image.options.widths=[4, 8]",
                       "optim.grad_clip=null"])
    assert cfg.train.steps == 7 and cfg.data.train == ["a", "b"]
    assert cfg.model.modalities["image"].options == {"widths": [4, 8]} and cfg.optim.grad_clip is None
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides({}, ["train.steps"])


def test_modality_kind_comes_from_the_column_name_or_must_be_given():
    raw = yaml.safe_load((config_dir() / "tiny_cpu.yaml").read_text())
    raw["model"]["modalities"]["cutout"] = raw["model"]["modalities"].pop("image")
    with pytest.raises(ConfigError, match="cannot tell its kind"):
        parse_config(raw)
    raw["model"]["modalities"]["cutout"]["kind"] = "image"
    assert parse_config(raw).model.modalities["cutout"].kind == "image"


def test_registry_rejects_duplicates_and_wrong_kinds():
    cfg = load_config(config_dir() / "tiny_cpu.yaml")
    with pytest.raises(ValueError, match="already registered"):
        register_encoder("tiny_convnet", kind="image")(lambda m: None)
    with pytest.raises(ValueError, match="reads image"):
        build_encoder("tiny_convnet", cfg.model.modalities["spectrum"])
    with pytest.raises(KeyError, match="unknown encoder"):
        build_encoder("resnet9000", cfg.model.modalities["image"])


def test_every_modality_must_be_in_a_pair():
    raw = yaml.safe_load((config_dir() / "trimodal.yaml").read_text())
    raw["model"]["pairs"] = [["legacysurvey_image", "desi_spectrum"]]
    with pytest.raises(ConfigError, match="plasticc_lightcurve.*in no pair"):
        parse_config(raw)
    raw["model"]["pairs"].append(["desi_spectrum", "plasticc_lightcurve"])
    assert len(parse_config(raw).model.pair_list()) == 2


def test_encoder_from_your_own_module(tmp_path, monkeypatch):
    """`encoder: module:name` imports the module (which registers the encoder) on demand, so a
    config, and a checkpoint holding it, work with any `mmu` command without a launcher."""
    (tmp_path / "my_mmu_encoders.py").write_text(
        "import torch\n"
        "from mmu.pretrain.registry import register_encoder\n\n"
        "class Mean(torch.nn.Module):\n"
        "    width = 3\n"
        "    def forward(self, x):\n"
        "        return x['values'].mean(1)\n\n"
        "@register_encoder('spectrum_mean', kind='spectrum')\n"
        "def spectrum_mean(modality, **options):\n"
        "    return Mean()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = load_config(config_dir() / "tiny_cpu.yaml",
                      ["model.modalities.spectrum.encoder=my_mmu_encoders:spectrum_mean"])
    from mmu.pretrain.model import MultimodalCLIP

    model = MultimodalCLIP(cfg.model, cfg.loss)
    assert type(model.encoders["spectrum"]).__name__ == "Mean"
    assert model.projections["spectrum"].in_features == 3
    with pytest.raises(KeyError, match="registers no encoder named 'nope'"):
        build_encoder("my_mmu_encoders:nope", cfg.model.modalities["spectrum"])
    with pytest.raises(KeyError, match="cannot import module 'not_a_module_xyz'"):
        build_encoder("not_a_module_xyz:spectrum_mean", cfg.model.modalities["spectrum"])
    with pytest.raises(ValueError, match="reads spectrum"):
        build_encoder("my_mmu_encoders:spectrum_mean", cfg.model.modalities["image"])
