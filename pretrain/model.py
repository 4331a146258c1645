"""The multimodal CLIP model: one encoder + linear projection per modality column, a learnable
temperature (and for the sigmoid loss a bias) per aligned pair."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mmu.pretrain.loss import pair_key
from mmu.pretrain.preprocess import preprocess
from mmu.pretrain.registry import build_encoder


class MultimodalCLIP(nn.Module):
    def __init__(self, model_cfg, loss_cfg):
        super().__init__()
        self.kinds = {c: m.kind for c, m in model_cfg.modalities.items()}
        self.pairs = model_cfg.pair_list()
        self.encoders = nn.ModuleDict({c: build_encoder(m.encoder, m, **m.options)
                                       for c, m in model_cfg.modalities.items()})
        self.projections = nn.ModuleDict({c: nn.Linear(enc.width, model_cfg.embed_dim, bias=False)
                                          for c, enc in self.encoders.items()})
        sigmoid = loss_cfg.kind == "sigmoid"
        init = math.log(10.0) if sigmoid else math.log(1.0 / loss_cfg.init_temperature)
        self.max_logit_scale = math.log(loss_cfg.max_logit_scale)
        self.logit_scale = nn.ParameterDict({pair_key(a, b): nn.Parameter(torch.tensor(init))
                                             for a, b in self.pairs})
        self.logit_bias = nn.ParameterDict({pair_key(a, b): nn.Parameter(torch.tensor(loss_cfg.init_bias))
                                            for a, b in self.pairs}) if sigmoid else None

    def encode(self, column: str, x: dict, project: bool = True) -> torch.Tensor:
        """Features of one modality from its *collated* tensors (normalisation included)."""
        feats = self.encoders[column](preprocess(self.kinds[column], x))
        if not project:
            return feats
        return F.normalize(self.projections[column](feats).float(), dim=-1)

    def forward(self, batch: dict) -> dict:
        return {"embeddings": {c: self.encode(c, batch[c]) for c in self.kinds},
                "logit_scale": {k: v for k, v in self.logit_scale.items()},
                "logit_bias": ({k: v for k, v in self.logit_bias.items()}
                               if self.logit_bias is not None else None)}

    @torch.no_grad()
    def clamp_logit_scales(self) -> None:
        """As open_clip does after each optimizer step: 0 <= logit_scale <= log(max)."""
        for p in self.logit_scale.values():
            p.clamp_(0, self.max_logit_scale)


def valid_masks(batch: dict, columns) -> dict[str, torch.Tensor]:
    """Per column: the row is a real sample and has that modality."""
    return {c: batch["valid"] & batch[c]["present"] for c in columns}
