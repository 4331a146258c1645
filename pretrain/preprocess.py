"""Normalisation (one function, used by training and by evaluation alike) and training-time
augmentations, on batched tensors on the training device.

A collated batch (see `mmu.pretrain.data`) is `{"valid": bool[B], column: {...}}` with, per kind:
  image       flux/ivar float32 [B,C,H,W], mask bool [B,C,H,W], present bool [B]
  spectrum    flux/ivar/lambda float32 [B,N], mask bool [B,N], present bool [B]
  lightcurve  time float32 [B,T] (days since the first good epoch), band int64 [B,T] (0 = unknown),
              flux/flux_err float32 [B,T], mask bool [B,T], present bool [B]
  scalars     values float32 [B,K] (catalog columns in `features` order), mask bool [B,K], present bool [B]
`mask` is True where a value is bad (or padding), as everywhere in mmu.
"""
from __future__ import annotations

import math

import torch

EPS = 1e-12


def _good(x: dict, ivar_key: str | None = "ivar") -> torch.Tensor:
    good = ~x["mask"]
    if ivar_key is not None:
        good = good & (x[ivar_key] > 0) & torch.isfinite(x[ivar_key])
    return good & torch.isfinite(x["flux"])


def normalize_image(x: dict, softening: float = 1.0) -> dict:
    """arcsinh(flux / (softening * sigma)): linear within the noise, logarithmic for bright
    sources. sigma is one number per cutout, the geometric mean over its bands of
    sigma_band = (mean ivar over the band's good pixels)^-1/2: unit-free (any survey's flux units)
    and the same for every band, so band ratios — colours — survive the scaling (a per-band
    sigma would add each brick's depth scatter to every colour). Bad pixels -> 0."""
    good = _good(x)
    g = good.to(x["flux"].dtype)
    n_good = g.sum((-2, -1))
    mean_ivar = (x["ivar"].clamp_min(0) * g).sum((-2, -1)) / n_good.clamp_min(1)
    has = (n_good > 0) & (mean_ivar > 0)
    log_sigma = torch.where(has, -0.5 * torch.log(mean_ivar.clamp_min(EPS)), torch.zeros_like(mean_ivar))
    log_sigma = log_sigma.sum(-1, keepdim=True) / has.sum(-1, keepdim=True).clamp_min(1)
    sigma = log_sigma.exp()[..., None, None]
    flux = torch.where(good, x["flux"], torch.zeros_like(x["flux"]))
    return {"pixels": torch.asinh(flux / (softening * sigma)) * g}


def normalize_spectrum(x: dict) -> dict:
    """Flux standardised by the good pixels' mean and std; channels (flux, good, log10 std), so the
    encoder sees the shape and the amplitude; bad/padded pixels are 0 and `pad` marks them."""
    good = _good(x)
    g = good.to(torch.float32)
    n = g.sum(-1, keepdim=True).clamp_min(1)
    flux = torch.where(good, x["flux"].float(), torch.zeros_like(x["flux"], dtype=torch.float32))
    mean = flux.sum(-1, keepdim=True) / n
    var = (((flux - mean) * g) ** 2).sum(-1, keepdim=True) / n
    std = var.clamp_min(EPS).sqrt()
    z = ((flux - mean) / std).clamp(-50, 50) * g
    amp = torch.log10(std + 1e-6).expand_as(z) * g
    loglam = torch.log10(x["lambda"].float().clamp_min(1.0))
    return {"values": torch.stack([z, g, amp], -1), "loglam": loglam, "pad": ~good}


def normalize_lightcurve(x: dict) -> dict:
    """Flux and flux_err divided by the light curve's largest |good flux|; channels
    (flux, flux_err, log10 scale); `pad` marks bad and padded epochs."""
    good = _good(x, ivar_key=None) & torch.isfinite(x["flux_err"]) & (x["flux_err"] > 0)
    g = good.to(torch.float32)
    flux = torch.where(good, x["flux"].float(), torch.zeros_like(x["flux"], dtype=torch.float32))
    err = torch.where(good, x["flux_err"].float(), torch.zeros_like(flux))
    scale = flux.abs().amax(-1, keepdim=True).clamp_min(1e-6)
    amp = torch.log10(scale).expand_as(flux) * g
    values = torch.stack([flux / scale, (err / scale).clamp(max=100), amp], -1)
    return {"values": values, "time": x["time"].float() * g, "band": x["band"] * good, "pad": ~good}


def normalize_scalars(x: dict) -> dict:
    """Catalog scalars keep their units here: each column has its own (magnitudes, mas, mas/yr),
    so the encoder standardises them with per-feature constants from its config
    (`mmu.pretrain.encoders.ScalarMLP`); bad values (mask True, not finite) are 0 and `mask` marks them."""
    values = x["values"].float()
    mask = x["mask"] | ~torch.isfinite(values)
    return {"values": torch.where(mask, torch.zeros_like(values), values), "mask": mask}


NORMALIZERS = {"image": normalize_image, "spectrum": normalize_spectrum, "lightcurve": normalize_lightcurve,
               "scalars": normalize_scalars}


def preprocess(kind: str, x: dict) -> dict:
    """The encoder input of one modality from its collated tensors (same in training and eval)."""
    return NORMALIZERS[kind](x)


def augment_image(x: dict, generator: torch.Generator, flips: bool, rot90: bool,
                  noise: float) -> dict:
    """Random flips and 90-degree rotations per cutout (the sky has no preferred orientation) and
    extra noise drawn from each pixel's own sigma, with ivar lowered to stay consistent."""
    x = dict(x)
    b = x["flux"].shape[0]
    dev = x["flux"].device
    fields = ("flux", "ivar", "mask")
    if flips:
        flip = torch.rand(b, device=dev, generator=generator) < 0.5
        sel = flip[:, None, None, None]
        for f in fields:
            x[f] = torch.where(sel, x[f].flip(-1), x[f])
    if rot90 and x["flux"].shape[-1] == x["flux"].shape[-2]:
        k = torch.randint(0, 4, (b,), device=dev, generator=generator)
        for f in fields:
            out = x[f]
            for r in (1, 2, 3):
                out = torch.where((k == r)[:, None, None, None], torch.rot90(x[f], r, (-2, -1)), out)
            x[f] = out
    if noise > 0:
        sigma = torch.where(x["ivar"] > 0, x["ivar"].clamp_min(EPS).rsqrt(), torch.zeros_like(x["ivar"]))
        eps = torch.randn(x["flux"].shape, device=dev, generator=generator)
        x["flux"] = x["flux"] + noise * sigma * eps
        x["ivar"] = x["ivar"] / (1.0 + noise * noise)
    return x


def augment(batch: dict, kinds: dict[str, str], generator: torch.Generator, cfg) -> dict:
    """Training augmentations of a collated batch (`cfg`: an `AugmentConfig`)."""
    out = dict(batch)
    for column, kind in kinds.items():
        if kind == "image":
            out[column] = augment_image(batch[column], generator, cfg.image_flips, cfg.image_rot90,
                                        cfg.image_noise)
    return out


def sinusoidal(x: torch.Tensor, n_freq: int, min_period: float, max_period: float) -> torch.Tensor:
    """Continuous position encoding: sin/cos at log-spaced periods, [...] -> [..., 2 n_freq]."""
    periods = torch.logspace(math.log10(min_period), math.log10(max_period), n_freq,
                             device=x.device, dtype=torch.float32)
    ang = x.float()[..., None] * (2 * math.pi / periods)
    return torch.cat([ang.sin(), ang.cos()], -1)
