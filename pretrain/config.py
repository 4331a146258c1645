"""Typed pretraining configs: YAML is data, parsed into strict pydantic models (unknown keys are
errors; numbers and booleans are not coerced: `steps: true` or `ckpt_every: "10"` is refused, an
int is a valid float), overridable with dotted `key=value` arguments; the resolved config is saved
with the run. The YAML reader refuses a key given twice and any `!!python/...` tag, naming the line.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, ValidationError, model_validator

KINDS = ("image", "spectrum", "lightcurve", "scalars")


class ConfigError(ValueError):
    """A pretraining config (file or override) is malformed."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModalityConfig(_Strict):
    """One modality column of the training samples and the encoder that reads it."""

    kind: Literal["image", "spectrum", "lightcurve", "scalars"] | None = Field(
        default=None, description="image / spectrum / lightcurve / scalars; default: from the column name")
    encoder: str = Field(description="a registered encoder name, or `module:name` for one registered "
                                     "by your own module (see `mmu.pretrain.registry`)")
    options: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the encoder")
    channels: StrictInt | None = Field(default=None, description="image: number of bands C")
    size: StrictInt | None = Field(default=None, description="image: cutout side H = W in pixels")
    length: StrictInt | None = Field(
        default=None, description="spectrum / light curve: fixed padded length (pixels / epochs); "
        "longer inputs are cut, shorter ones padded and masked")
    bands: list[str] = Field(default_factory=list,
                             description="light curve: band vocabulary, e.g. [lsst-u, lsst-g, ...]")
    features: list[str] = Field(default_factory=list,
                                description="scalars: the catalog columns of the vector, in order (as "
                                "`mmu export-wds --scalars NAME=col,...` packed them)")

    @model_validator(mode="after")
    def _shape_fields(self):
        if self.kind == "image" and (self.channels is None or self.size is None):
            raise ValueError("an image modality needs `channels` and `size`")
        if self.kind in ("spectrum", "lightcurve") and self.length is None:
            raise ValueError(f"a {self.kind} modality needs a fixed `length` (padded batch shape)")
        if self.kind == "lightcurve" and not self.bands:
            raise ValueError("a light curve modality needs its `bands` vocabulary")
        if self.kind == "scalars" and not self.features:
            raise ValueError("a scalars modality needs its `features` (the catalog columns, in order)")
        return self


class ModelConfig(_Strict):
    """The `model` section: embedding size, the modality encoders and the modality pairs to align.

    A modality's `kind` may be left out when its column name is, or ends in `_<kind>`.
    """

    embed_dim: StrictInt = 128
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
    """The `loss` section: InfoNCE or sigmoid contrastive loss, its initial temperature/bias and logit clamp."""
    kind: Literal["infonce", "sigmoid"] = "infonce"
    local: StrictBool = Field(default=False, description="each rank scores only its own rows as anchors "
                        "(gradients are identical either way; cheaper for large worlds)")
    init_temperature: StrictFloat = Field(default=0.07, gt=0, description="infonce; sigmoid uses 0.1")
    init_bias: StrictFloat = Field(default=-10.0, description="sigmoid: initial logit bias")
    max_logit_scale: StrictFloat = Field(default=100.0, gt=1, description="clamp of exp(logit_scale)")


class DataConfig(_Strict):
    """The `data` section: the exported shard folders for train/val and how they are batched and streamed."""
    train: list[str] = Field(default_factory=list, description="`mmu export-wds` output folders")
    val: list[str] = Field(default_factory=list, description="folders holding the val split")
    train_split: str = "train"
    val_split: str = "val"
    batch_size: StrictInt = Field(default=32, gt=0, description="per rank")
    num_workers: StrictInt = Field(default=0, ge=0, description="loader processes per rank; part of the "
                             "data stream's definition (a resumed run must keep it)")
    shuffle_buffer: StrictInt = Field(default=1000, ge=1)
    segment_steps: StrictInt = Field(default=1000, gt=0, description="the stream is reseeded from "
                               "(seed, rank, stream, segment) every this many steps; checkpoints "
                               "on segment boundaries resume without replaying data")
    val_max_samples: StrictInt = Field(default=2048, gt=0, description="per rank")


class AugmentConfig(_Strict):
    """The `augment` section: image flips, 90-degree rotations and extra noise applied in training."""
    image_flips: StrictBool = True
    image_rot90: StrictBool = True
    image_noise: StrictFloat = Field(default=0.0, ge=0, description="extra Gaussian noise, in units of "
                               "each pixel's sigma = ivar^-1/2 (ivar is lowered to match)")


class OptimConfig(_Strict):
    """The `optim` section: AdamW settings, warm-up and cosine floor of the learning rate, gradient clipping."""
    lr: StrictFloat = Field(default=5e-4, gt=0)
    weight_decay: StrictFloat = Field(default=0.05, ge=0)
    betas: tuple[StrictFloat, StrictFloat] = (0.9, 0.98)
    eps: StrictFloat = 1e-6
    warmup_steps: StrictInt = Field(default=100, ge=0)
    min_lr_ratio: StrictFloat = Field(default=0.0, ge=0, le=1)
    grad_clip: StrictFloat | None = Field(default=1.0, description="max global grad norm; null: none")


class TrainConfig(_Strict):
    """The `train` section: number of steps, precision, device, and how often to log, validate and checkpoint."""
    steps: StrictInt = Field(gt=0)
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    compile: StrictBool = Field(default=False, description="torch.compile the encoders (GPU only)")
    device: str = Field(default="auto", description="auto / cpu / cuda")
    log_every: StrictInt = Field(default=10, gt=0)
    val_every: StrictInt = Field(default=0, ge=0, description="0: only at the end")
    ckpt_every: StrictInt = Field(default=1000, gt=0)
    keep_checkpoints: StrictInt = Field(default=3, gt=0)
    progress: StrictBool = True
    tensorboard: StrictBool = True


class RunConfig(_Strict):
    """The `run` section: the output folder of the run."""
    dir: str = Field(description="output folder: config.yaml, log.jsonl, checkpoints/, tb/")


class PretrainConfig(_Strict):
    """A complete pretraining config: the run's name and seed plus every section of the YAML file."""
    name: str
    seed: StrictInt = 0
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
    """Validate config data as a `PretrainConfig`.

    Args:
        data: the config as a mapping (as read from YAML, overrides applied).
        source: name of where `data` came from, used in the error message.

    Returns:
        The validated `PretrainConfig`.

    Raises:
        ConfigError: `data` is not a valid config; one line per problem, each naming its field.
    """
    try:
        return PretrainConfig.model_validate(data)
    except ValidationError as e:
        lines = [f"{source}: invalid pretraining config:"]
        for err in e.errors():
            loc = ".".join(str(x) for x in err["loc"])
            lines.append(f"  {loc}: {err['msg']}")
        raise ConfigError("\n".join(lines)) from None


class _ConfigLoader(yaml.SafeLoader):
    """YAML as plain data (SafeLoader: no `!!python/...` objects) that refuses a key given twice in
    one mapping (PyYAML lets the last one win silently) and reads `1e-4` as a float, as YAML 1.2
    and JSON do (PyYAML's YAML 1.1 reads it as a string)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    if key in seen:
                        raise ConfigError(f"duplicate key {key!r} at line {line} (first given at line "
                                          f"{seen[key]}); give each key once")
                    seen[key] = line
                except TypeError:  # an unhashable key: the base class reports it
                    continue
        return super().construct_mapping(node, deep=deep)


_ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))


def load_yaml(text: str, source: str = "<config>"):
    """`text` as YAML data; a malformed document, a duplicate key or a Python tag is one
    `ConfigError` line naming `source` and the line."""
    try:
        return yaml.load(text, Loader=_ConfigLoader)  # noqa: S506 - a SafeLoader subclass
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        if "python/" in problem:
            problem += " (a config is plain data: Python object tags are not allowed)"
        raise ConfigError(f"{source}: not valid YAML{where}: {problem}") from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> PretrainConfig:
    """Read a YAML pretraining config file, apply `a.b.c=value` overrides and validate it.

    Args:
        path: the YAML config file.
        overrides: `a.b.c=value` overrides (see `apply_overrides`), applied before validation.

    Returns:
        The validated `PretrainConfig`.

    Raises:
        ConfigError: the file is missing, unreadable, not a YAML mapping, an override is malformed,
            or the result is not a valid config.

    Example:
        >>> cfg = load_config("pretrain/configs/tiny_cpu.yaml", ["train.steps=10"])  # doctest: +SKIP
    """
    path = Path(path)
    try:
        data = load_yaml(path.read_text(), str(path))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config; see pretrain/configs/ for examples") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read the config ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config is a YAML mapping")
    return parse_config(apply_overrides(data, overrides or []), str(path))


def dump_config(cfg: PretrainConfig) -> str:
    """`cfg` as YAML text, sections in their declared order.

    Args:
        cfg: the config to write.

    Returns:
        The YAML document (`load_config` reads it back as an equal config).
    """
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)


def config_dir() -> Path:
    """The folder of the example configs shipped with the package (`pretrain/configs/`)."""
    return Path(__file__).resolve().parent / "configs"
