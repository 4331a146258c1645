"""Masked pairwise contrastive loss (symmetric InfoNCE as open_clip's ClipLoss, or sigmoid as
SigLipLoss) that stays exact under DDP when samples lack modalities.

Every rank holds a fixed-shape batch with validity masks. For each pair (a, b) a row is valid if
the sample exists and has both modalities. Embeddings are all-gathered *with gradients*
(`torch.distributed.nn.functional.all_gather`) on every rank for every modality, whatever the
local masks, so no rank ever waits alone. Invalid rows are left out as anchors (not in the sum)
and as negatives (their logits are -inf); the sum is divided by the *global* number of valid
anchors. The loss of the whole global batch is therefore the single-process loss of the
concatenated batch, and so are the gradients:

- `local=False`: every rank computes the full global loss L; the gather's backward sums the
  identical gradients of the W ranks (W dL/dz) and DDP's gradient averaging divides by W.
- `local=True`: rank r scores only its own rows as anchors, L_r = W * (its share of L), so
  mean_r L_r = L and the gradients again average to dL/dθ; cheaper (B x WB logits, not WB x WB).
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate `x` from every rank along dim 0, keeping the gradient to each rank's part.

    Args:
        x: this rank's tensor, [B, ...]; the same shape on every rank.

    Returns:
        [world * B, ...] in rank order; `x` itself when not running distributed.
    """
    rank, world = _world()
    if world == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x), 0)


def gather_mask(m: torch.Tensor) -> torch.Tensor:
    """Concatenate a boolean mask from every rank along dim 0 (no gradient).

    Args:
        m: this rank's bool tensor, [B]; the same shape on every rank.

    Returns:
        The bool mask [world * B] in rank order; `m` itself when not running distributed.
    """
    rank, world = _world()
    if world == 1:
        return m
    # gloo has no bool all_gather: go through uint8
    parts = [torch.empty_like(m, dtype=torch.uint8) for _ in range(world)]
    dist.all_gather(parts, m.to(torch.uint8))
    return torch.cat(parts, 0).bool()


def pair_key(a: str, b: str) -> str:
    """The key naming modality pair (`a`, `b`) in loss statistics and parameter dicts: `"a|b"`."""
    return f"{a}|{b}"


class PairwiseContrastiveLoss(nn.Module):
    """Contrastive loss (InfoNCE or sigmoid) averaged over modality pairs, across all ranks.

    Embeddings and validity masks are gathered from every rank; only samples that have both
    modalities of a pair take part in it.

    Args:
        pairs: the (column, column) modality pairs to align.
        kind: "infonce" or "sigmoid".
        local: score only this rank's rows as anchors (the same gradients, less compute).

    Raises:
        ValueError: `kind` is not "infonce" or "sigmoid".
    """

    def __init__(self, pairs: list[tuple[str, str]], kind: str = "infonce", local: bool = False):
        super().__init__()
        if kind not in ("infonce", "sigmoid"):
            raise ValueError(f"unknown contrastive loss {kind!r}: use infonce or sigmoid")
        self.pairs, self.kind, self.local = list(pairs), kind, local

    def forward(self, embeddings: dict[str, torch.Tensor], valid: dict[str, torch.Tensor],
                logit_scale: dict[str, torch.Tensor], logit_bias: dict[str, torch.Tensor] | None = None):
        """embeddings {column: [B, D] normalised}, valid {column: bool [B]} (sample exists and has
        the modality). Returns (mean loss over pairs, {pair: (loss, global valid count)})."""
        rank, world = _world()
        columns = sorted({c for p in self.pairs for c in p})
        # fixed order, every modality, on every rank: the collectives always match up
        g_emb = {c: gather_with_grad(embeddings[c].float()) for c in columns}
        g_valid = {c: gather_mask(valid[c]) for c in columns}
        total = 0.0
        stats = {}
        for a, b in self.pairs:
            key = pair_key(a, b)
            za, zb = g_emb[a], g_emb[b]
            ok = g_valid[a] & g_valid[b]  # [WB]
            n = ok.sum()
            denom = n.clamp_min(1).to(torch.float32)
            bsz = embeddings[a].shape[0]
            rows = slice(rank * bsz, (rank + 1) * bsz) if self.local else slice(None)
            scale = logit_scale[key].exp()
            if self.kind == "infonce":
                s = self._infonce(za, zb, ok, rows, scale)
            else:
                s = self._sigmoid(za, zb, ok, rows, scale, logit_bias[key])
            loss = s / denom * (world if self.local else 1)
            total = total + loss
            stats[key] = (loss.detach(), n.detach())
        return total / len(self.pairs), stats

    @staticmethod
    def _masked_logits(q, k, ok_rows, ok_cols, scale):
        logits = scale * q @ k.T
        logits = logits.masked_fill(~ok_cols[None, :], float("-inf"))
        # invalid anchors get a constant row: finite, no gradient, left out of the sum below
        return logits.masked_fill(~ok_rows[:, None], 0.0)

    def _infonce(self, za, zb, ok, rows, scale):
        idx = torch.arange(za.shape[0], device=za.device)[rows]
        ok_rows = ok[rows]
        total = za.new_zeros(())
        for q, k in ((za, zb), (zb, za)):
            logits = self._masked_logits(q[rows], k, ok_rows, ok, scale)
            ce = torch.logsumexp(logits, -1) - logits.gather(1, idx[:, None])[:, 0]
            total = total + (ce * ok_rows).sum()
        return total / 2

    def _sigmoid(self, za, zb, ok, rows, scale, bias):
        ok_rows = ok[rows]
        logits = scale * za[rows] @ zb.T + bias
        n_rows = logits.shape[0]
        labels = -torch.ones_like(logits)
        idx = torch.arange(za.shape[0], device=za.device)[rows]
        labels[torch.arange(n_rows, device=za.device), idx] = 1.0
        pair_ok = (ok_rows[:, None] & ok[None, :]).to(logits.dtype)
        return -(F.logsigmoid(labels * logits) * pair_ok).sum()
