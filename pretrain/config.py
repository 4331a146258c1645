"""Typed pretraining configs: YAML is data, parsed into strict pydantic models (unknown keys are
errors), overridable with dotted `key=value` arguments; the resolved config is saved with the run.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

KINDS = ("image", "spectrum", "lightcurve")


class ConfigError(ValueError):
    """A pretraining config (file or override) is malformed."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModalityConfig(_Strict):
    """One modality column of the training samples and the encoder that reads it."""

    kind: Literal["image", "spectrum", "lightcurve"] | None = Field(
        default=None, description="image / spectrum / lightcurve; default: from the column name")
    encoder: str = Field(description="a registered encoder name, or `module:name` for one registered "
                                     "by your own module (see `mmu.pretrain.registry`)")
    options: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the encoder")
    channels: int | None = Field(default=None, description="image: number of bands C")
    size: int | None = Field(default=None, description="image: cutout side H = W in pixels")
    length: int | None = Field(
        default=None, description="spectrum / light curve: fixed padded length (pixels / epochs); "
        "longer inputs are cut, shorter ones padded and masked")
    bands: list[str] = Field(default_factory=list,
                             description="light curve: band vocabulary, e.g. [lsst-u, lsst-g, ...]")

    @model_validator(mode="after")
    def _shape_fields(self):
        if self.kind == "image" and (self.channels is None or self.size is None):
            raise ValueError("an image modality needs `channels` and `size`")
        if self.kind in ("spectrum", "lightcurve") and self.length is None:
            raise ValueError(f"a {self.kind} modality needs a fixed `length` (padded batch shape)")
        if self.kind == "lightcurve" and not self.bands:
            raise ValueError("a light curve modality needs its `bands` vocabulary")
        return self


class ModelConfig(_Strict):
    embed_dim: int = 128
    modalities: dict[str, ModalityConfig]
    pairs: list[tuple[str, str]] | None = Field(
        default=None, description="modality pairs to align; default: every pair")

    @model_validator(mode="before")
    @classmethod
    def _infer_kinds(cls, data):
        mods = data.get("modalities") if isinstance(data, dict) else None
        if isinstance(mods, dict):
            for name, m in mods.items():
                if isinstance(m, dict) and m.get("kind") is None:
                    kind = next((k for k in KINDS if name == k or name.endswith("_" + k)), None)
                    if kind is None:
                        raise ValueError(f"modality column {name!r}: cannot tell its kind from the "
                                         f"name; set `kind:` to one of {KINDS}")
                    m["kind"] = kind
        return data

    @model_validator(mode="after")
    def _check_pairs(self):
        if len(self.modalities) < 2:
            raise ValueError("contrastive pretraining needs at least two modalities")
        for a, b in self.pair_list():
            for c in (a, b):
                if c not in self.modalities:
                    raise ValueError(f"pair ({a}, {b}): {c!r} is not one of the modalities "
                                     f"{sorted(self.modalities)}")
            if a == b:
                raise ValueError(f"pair ({a}, {b}) aligns a modality with itself")
        unused = set(self.modalities) - {c for p in self.pair_list() for c in p}
        if unused:  # an encoder outside every pair would get no gradient (and stall DDP)
            raise ValueError(f"modalities {sorted(unused)} are in no pair; add a pair or remove them")
        return self

    def pair_list(self) -> list[tuple[str, str]]:
        if self.pairs is not None:
            return [tuple(p) for p in self.pairs]
        names = list(self.modalities)
        return [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]


class LossConfig(_Strict):
    kind: Literal["infonce", "sigmoid"] = "infonce"
    local: bool = Field(default=False, description="each rank scores only its own rows as anchors "
                        "(gradients are identical either way; cheaper for large worlds)")
    init_temperature: float = Field(default=0.07, gt=0, description="infonce; sigmoid uses 0.1")
    init_bias: float = Field(default=-10.0, description="sigmoid: initial logit bias")
    max_logit_scale: float = Field(default=100.0, gt=1, description="clamp of exp(logit_scale)")


class DataConfig(_Strict):
    train: list[str] = Field(default_factory=list, description="`mmu export-wds` output folders")
    val: list[str] = Field(default_factory=list, description="folders holding the val split")
    train_split: str = "train"
    val_split: str = "val"
    batch_size: int = Field(default=32, gt=0, description="per rank")
    num_workers: int = Field(default=0, ge=0, description="loader processes per rank; part of the "
                             "data stream's definition (a resumed run must keep it)")
    shuffle_buffer: int = Field(default=1000, ge=1)
    segment_steps: int = Field(default=1000, gt=0, description="the stream is reseeded from "
                               "(seed, rank, stream, segment) every this many steps; checkpoints "
                               "on segment boundaries resume without replaying data")
    val_max_samples: int = Field(default=2048, gt=0, description="per rank")


class AugmentConfig(_Strict):
    image_flips: bool = True
    image_rot90: bool = True
    image_noise: float = Field(default=0.0, ge=0, description="extra Gaussian noise, in units of "
                               "each pixel's sigma = ivar^-1/2 (ivar is lowered to match)")


class OptimConfig(_Strict):
    lr: float = Field(default=5e-4, gt=0)
    weight_decay: float = Field(default=0.05, ge=0)
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    warmup_steps: int = Field(default=100, ge=0)
    min_lr_ratio: float = Field(default=0.0, ge=0, le=1)
    grad_clip: float | None = Field(default=1.0, description="max global grad norm; null: none")


class TrainConfig(_Strict):
    steps: int = Field(gt=0)
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    compile: bool = Field(default=False, description="torch.compile the encoders (GPU only)")
    device: str = Field(default="auto", description="auto / cpu / cuda")
    log_every: int = Field(default=10, gt=0)
    val_every: int = Field(default=0, ge=0, description="0: only at the end")
    ckpt_every: int = Field(default=1000, gt=0)
    keep_checkpoints: int = Field(default=3, gt=0)
    progress: bool = True
    tensorboard: bool = True


class RunConfig(_Strict):
    dir: str = Field(description="output folder: config.yaml, log.jsonl, checkpoints/, tb/")


class PretrainConfig(_Strict):
    name: str
    seed: int = 0
    model: ModelConfig
    loss: LossConfig = Field(default_factory=LossConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    train: TrainConfig
    run: RunConfig

    def to_dict(self) -> dict:
        return json.loads(self.model_dump_json())

    def model_signature(self) -> dict:
        """What determines the model's parameters: a checkpoint's must equal the config's."""
        m = self.to_dict()["model"]
        return {"model": m, "loss": self.loss.kind}

    def signature_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.model_signature(), sort_keys=True).encode()).hexdigest()


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """`a.b.c=value` (value parsed as YAML: numbers, booleans, lists) into a copy of `data`;
    the one override syntax of every mmu command (`mmu.overrides`)."""
    from mmu import overrides as mmu_overrides

    try:
        return mmu_overrides.apply_overrides(data, overrides)
    except mmu_overrides.OverrideError as e:
        raise ConfigError(str(e)) from None


def parse_config(data: dict, source: str = "<config>") -> PretrainConfig:
    try:
        return PretrainConfig.model_validate(data)
    except ValidationError as e:
        lines = [f"{source}: invalid pretraining config:"]
        for err in e.errors():
            loc = ".".join(str(x) for x in err["loc"])
            lines.append(f"  {loc}: {err['msg']}")
        raise ConfigError("\n".join(lines)) from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> PretrainConfig:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config; see pretrain/configs/ for examples") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config is a YAML mapping")
    return parse_config(apply_overrides(data, overrides or []), str(path))


def dump_config(cfg: PretrainConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)


def config_dir() -> Path:
    return Path(__file__).resolve().parent / "configs"
