"""The small public API for using a trained checkpoint (the benchmark harness uses this):

    from mmu.pretrain.api import load_pretrained
    p = load_pretrained("runs/astroclip/checkpoints/step00010000-3f2a9c1b7d04.pt")
    p = load_pretrained("runs/astroclip")     # a run folder: its newest intact checkpoint
    p.config, p.manifest, p.sha256            # what it is and what it was trained on
    batch = p.collate(samples)                # decoded samples -> fixed-shape tensors
    emb = p.embed(batch)                      # {column: [B, embed_dim]} L2-normalised
    feats = p.embed(batch, project=False)     # {column: [B, width]} backbone features

A sample is `{"object_id": str, column: {field: ndarray} or None}` with the fields of the data
model (image flux/ivar/mask; spectrum flux/ivar/mask/lambda; light curve time/band/flux/flux_err/
mask) — what `mmu.shards.format.decode_sample` returns, or a Parquet row's modality struct. Normalisation
happens inside `embed` (`mmu.pretrain.preprocess.preprocess`), exactly as in training.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mmu.pretrain.checkpoint import CheckpointError, check_same_model, file_sha256, find_latest, load_checkpoint
from mmu.pretrain.config import ConfigError, PretrainConfig, parse_config
from mmu.pretrain.data import Collator
from mmu.pretrain.model import MultimodalCLIP


@dataclass
class Pretrained:
    model: MultimodalCLIP
    config: PretrainConfig
    manifest: dict
    step: int
    sha256: str
    path: Path

    @property
    def columns(self) -> list[str]:
        return list(self.model.kinds)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def collate(self, samples: list[dict | None], constants: dict | None = None) -> dict:
        """Decoded samples -> one batch of len(samples) rows, shapes as in training.
        `constants`: fields left out of the samples, e.g. an export index's
        `{"desi_spectrum.lambda": [...]}` (`mmu.shards.format.read_index(dir).constants`)."""
        consts = {k: np.asarray(v) for k, v in (constants or {}).items()}
        return Collator(self.config.model.modalities, max(1, len(samples)))(
            [_normalise_sample(s, consts) for s in samples])

    @torch.no_grad()
    def embed(self, batch: dict, project: bool = True, columns: list[str] | None = None) -> dict:
        """{column: features} for the columns present in `batch` (rows lacking a modality get
        features too: mask them with batch[column]["present"])."""
        self.model.eval()
        dev = self.device
        out = {}
        for c in columns or [c for c in self.columns if c in batch]:
            x = {k: v.to(dev) for k, v in batch[c].items() if isinstance(v, torch.Tensor)}
            out[c] = self.model.encode(c, x, project=project).float()
        return out


def _normalise_sample(s, constants: dict):
    if s is None:
        return None
    if "object_id" not in s:  # mmu.shards.format.decode_sample output
        s = {**s, "object_id": (s.get("meta") or {}).get("object_id", s.get("__key__", ""))}
    for key, value in constants.items():
        column, _, field = key.rpartition(".")
        if isinstance(s.get(column), dict) and field not in s[column]:
            s = {**s, column: {**s[column], field: value}}
    return s


def resolve_checkpoint(path: str | Path) -> Path:
    """`path` itself when it is a file; for a run folder (`run.dir`) or its `checkpoints/`, the newest
    checkpoint whose content matches the sha256 in its name."""
    path = Path(path)
    if not path.is_dir():
        return path
    folder = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    latest = find_latest(folder)
    if latest is None:
        raise CheckpointError(f"{path}: a folder without an intact checkpoint (stepNNNNNNNN-<sha256>.pt "
                              f"in {folder}); pass a checkpoint file or a `mmu pretrain` run.dir")
    return latest


def refuse_untrusted_code(cfg: PretrainConfig, path: str | Path) -> None:
    """Refuse a checkpoint config naming an encoder as `module:name`: building that model imports
    `module`, i.e. runs code the checkpoint's author chose. Built-in (registered) encoders need no
    trust; pass `trust_code=True` (`--trust-code`) only for checkpoints whose source you trust."""
    foreign = [(col, m.encoder) for col, m in cfg.model.modalities.items() if ":" in m.encoder]
    if foreign:
        named = ", ".join(f"{col}: {enc!r} (module {enc.partition(':')[0]!r})" for col, enc in foreign)
        raise CheckpointError(
            f"{path}: its config names encoders outside the built-in registry ({named}); loading it "
            "would import and run that module's code. Load it only if you trust the checkpoint's "
            "source: --trust-code (mmu eval), or load_pretrained(..., trust_code=True)")


def load_pretrained(path: str | Path, device: str | torch.device = "cpu",
                    expect_config: PretrainConfig | None = None, trust_code: bool = False) -> Pretrained:
    """Load a checkpoint (weights_only) into its model; `path` is a checkpoint file or a run folder
    (then its newest intact checkpoint). With `expect_config`, refuse a checkpoint of another
    model. Only built-in (registered) encoders are built unless `trust_code`: an encoder named
    `module:name` in the checkpoint's config imports `module` (as `trust_remote_code` in the
    Hugging Face libraries), so it is refused by default."""
    path = resolve_checkpoint(path)
    ckpt = load_checkpoint(path)
    if not isinstance(ckpt.get("config"), dict):
        raise CheckpointError(f"{path}: the checkpoint carries no config (not written by `mmu pretrain`?)")
    try:
        cfg = parse_config(ckpt["config"], f"{path} (embedded config)")
    except ConfigError as e:
        raise CheckpointError(str(e)) from None
    if not trust_code:
        refuse_untrusted_code(cfg, path)
    if expect_config is not None:
        check_same_model(ckpt, expect_config.model_signature(), path)
    model = MultimodalCLIP(cfg.model, cfg.loss)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit the model its config describes "
                              f"(was an encoder changed since it was trained?): {e}") from None
    model.to(device).eval()
    return Pretrained(model, cfg, ckpt.get("manifest", {}), int(ckpt["step"]), file_sha256(path), path)
