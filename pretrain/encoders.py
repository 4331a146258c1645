"""The built-in encoders: a timm ViT and a GroupNorm ConvNet on C-band cutouts, a transformer over
wavelength patches of a spectrum, a transformer over (time, band, flux, flux_err) epochs of a light
curve, an MLP over a vector of catalog scalars, and a tiny registered variant of each for tests.
Each maps the preprocessed modality dict (`mmu.pretrain.preprocess`) to features [B, width].
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mmu.pretrain.preprocess import sinusoidal
from mmu.pretrain.registry import register_encoder


class Block(nn.Module):
    """Pre-norm transformer block; `keep` [B, L] is True for tokens that take part in attention
    (a boolean mask, so it works unchanged under bf16 autocast)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, int(width * mlp_ratio)), nn.GELU(),
                                 nn.Linear(int(width * mlp_ratio), width))

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=keep[:, None, None, :])
        x = x + self.proj(a.transpose(1, 2).reshape(b, n, c))
        return x + self.mlp(self.norm2(x))


class TokenTransformer(nn.Module):
    """A [CLS] token + transformer blocks over given token embeddings; returns the [CLS] output."""

    def __init__(self, width: int, depth: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.width = width
        self.cls = nn.Parameter(torch.zeros(1, 1, width))
        nn.init.normal_(self.cls, std=0.02)
        self.blocks = nn.ModuleList(Block(width, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(width)

    def forward(self, tokens: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        b = tokens.shape[0]
        x = torch.cat([self.cls.expand(b, -1, -1).to(tokens.dtype), tokens], 1)
        keep = torch.cat([torch.ones(b, 1, dtype=torch.bool, device=pad.device), ~pad], 1)
        for blk in self.blocks:
            x = blk(x, keep)
        return self.norm(x[:, 0])


# ---------------------------------------------------------------- image


class ViTImageEncoder(nn.Module):
    """timm VisionTransformer on C-band cutouts, any size (dynamic_img_size), [CLS] pooling."""

    def __init__(self, channels: int, size: int, patch_size: int = 8, width: int = 384,
                 depth: int = 6, heads: int = 6, mlp_ratio: float = 4.0, drop_path: float = 0.0):
        super().__init__()
        from timm.models.vision_transformer import VisionTransformer

        self.width = width
        self.vit = VisionTransformer(img_size=size, patch_size=patch_size, in_chans=channels,
                                     num_classes=0, embed_dim=width, depth=depth, num_heads=heads,
                                     mlp_ratio=mlp_ratio, drop_path_rate=drop_path,
                                     dynamic_img_size=True, global_pool="token")

    def forward(self, x: dict) -> torch.Tensor:
        return self.vit(x["pixels"])


class ConvImageEncoder(nn.Module):
    """A residual ConvNet with GroupNorm (not BatchNorm: per-sample statistics keep the loss of
    a DDP batch equal to that of the same batch on one process), global average pooling."""

    def __init__(self, channels: int, widths: tuple[int, ...] = (64, 128, 256, 512), groups: int = 8,
                 blocks_per_stage: int = 1):
        super().__init__()
        self.width = widths[-1]
        layers: list[nn.Module] = [nn.Conv2d(channels, widths[0], 3, padding=1),
                                   nn.GroupNorm(min(groups, widths[0]), widths[0]), nn.GELU()]
        cin = widths[0]
        for i, w in enumerate(widths):
            for j in range(blocks_per_stage):
                layers.append(_ResBlock(cin, w, stride=2 if (i > 0 and j == 0) else 1, groups=groups))
                cin = w
        self.net = nn.Sequential(*layers)

    def forward(self, x: dict) -> torch.Tensor:
        return self.net(x["pixels"]).mean((-2, -1))


class _ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, groups: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.norm1 = nn.GroupNorm(min(groups, cout), cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.norm2 = nn.GroupNorm(min(groups, cout), cout)
        self.skip = (nn.Identity() if cin == cout and stride == 1 else
                     nn.Conv2d(cin, cout, 1, stride=stride, bias=False))

    def forward(self, x):
        y = F.gelu(self.norm1(self.conv1(x)))
        return F.gelu(self.norm2(self.conv2(y)) + self.skip(x))


@register_encoder("vit", kind="image")
def vit(modality, **options):
    """timm ViT; options: patch_size, width, depth, heads, mlp_ratio, drop_path."""
    return ViTImageEncoder(modality.channels, modality.size, **options)


@register_encoder("convnet", kind="image")
def convnet(modality, **options):
    """GroupNorm residual ConvNet; options: widths, groups, blocks_per_stage."""
    if "widths" in options:
        options["widths"] = tuple(options["widths"])
    return ConvImageEncoder(modality.channels, **options)


@register_encoder("tiny_vit", kind="image")
def tiny_vit(modality, **options):
    """Test-sized ViT (width 32, 1 block)."""
    return ViTImageEncoder(modality.channels, modality.size, **{
        "patch_size": 4, "width": 32, "depth": 1, "heads": 2, **options})


@register_encoder("tiny_convnet", kind="image")
def tiny_convnet(modality, **options):
    """Test-sized ConvNet (widths 8, 16)."""
    return ConvImageEncoder(modality.channels, **{"widths": (8, 16), "groups": 4, **options})


# ---------------------------------------------------------------- spectrum


class SpectrumTransformer(nn.Module):
    """Transformer over wavelength patches: `patch_size` pixels per token, a new token every
    `stride` pixels (stride < patch_size overlaps; larger patches = fewer tokens = faster). A token
    carries its pixels' (flux, good, amplitude) channels plus a continuous encoding of its mean
    log-wavelength, so grids differing per survey share one model. Patches with no good pixel are
    left out of attention."""

    def __init__(self, length: int, patch_size: int = 20, stride: int | None = None, width: int = 384,
                 depth: int = 6, heads: int = 6, mlp_ratio: float = 4.0, channels: int = 3):
        super().__init__()
        self.patch_size, self.stride = patch_size, stride or patch_size
        self.width = width
        self.n_tokens = max(1, -(-max(length - patch_size, 0) // self.stride) + 1)
        self.embed = nn.Linear(patch_size * channels, width)
        self.wave = nn.Linear(64, width)
        self.body = TokenTransformer(width, depth, heads, mlp_ratio)

    def _patches(self, t: torch.Tensor, fill) -> torch.Tensor:
        # t: [B, N, ...] -> [B, n_tokens, patch_size, ...], padded at the end with `fill`
        need = (self.n_tokens - 1) * self.stride + self.patch_size
        if t.shape[1] < need:
            pad_shape = (t.shape[0], need - t.shape[1], *t.shape[2:])
            t = torch.cat([t, torch.full(pad_shape, fill, dtype=t.dtype, device=t.device)], 1)
        t = t.unfold(1, self.patch_size, self.stride)  # [B, n, ..., patch]
        return t.movedim(-1, 2)

    def forward(self, x: dict) -> torch.Tensor:
        values = self._patches(x["values"], 0.0)  # [B, n, P, K]
        pad = self._patches(x["pad"], True).all(-1)  # [B, n]
        loglam = self._patches(x["loglam"], 0.0).mean(-1)  # [B, n]
        b, n = pad.shape
        tokens = self.embed(values.reshape(b, n, -1))
        # log10(lambda) in [3, 5] for 1000 A .. 10 um; periods from 1e-4 to 10 dex
        tokens = tokens + self.wave(sinusoidal(loglam, 32, 1e-4, 10.0))
        return self.body(tokens, pad)


@register_encoder("spectrum_transformer", kind="spectrum")
def spectrum_transformer(modality, **options):
    """Transformer over wavelength patches; options: patch_size, stride, width, depth, heads."""
    return SpectrumTransformer(modality.length, **options)


@register_encoder("tiny_spectrum", kind="spectrum")
def tiny_spectrum(modality, **options):
    """Test-sized spectrum transformer (patches of 16, width 32, 1 block)."""
    return SpectrumTransformer(modality.length, **{"patch_size": 16, "width": 32, "depth": 1,
                                                   "heads": 2, **options})


# ---------------------------------------------------------------- light curve


class LightcurveTransformer(nn.Module):
    """Transformer over epochs: a token = (flux, flux_err, amplitude) + a band embedding + a
    continuous time encoding (sin/cos at periods from 0.1 to 3000 days); variable length through
    the padding mask."""

    def __init__(self, n_bands: int, width: int = 256, depth: int = 4, heads: int = 4,
                 mlp_ratio: float = 4.0, channels: int = 3):
        super().__init__()
        self.width = width
        self.embed = nn.Linear(channels, width)
        self.band = nn.Embedding(n_bands + 1, width)  # index 0: a band not in the vocabulary
        self.time = nn.Linear(64, width)
        self.body = TokenTransformer(width, depth, heads, mlp_ratio)

    def forward(self, x: dict) -> torch.Tensor:
        tokens = self.embed(x["values"]) + self.band(x["band"]) + \
            self.time(sinusoidal(x["time"], 32, 0.1, 3000.0))
        return self.body(tokens, x["pad"])


@register_encoder("lightcurve_transformer", kind="lightcurve")
def lightcurve_transformer(modality, **options):
    """Transformer over (time, band, flux, flux_err) epochs; options: width, depth, heads."""
    return LightcurveTransformer(len(modality.bands), **options)


@register_encoder("tiny_lightcurve", kind="lightcurve")
def tiny_lightcurve(modality, **options):
    """Test-sized light-curve transformer (width 32, 1 block)."""
    return LightcurveTransformer(len(modality.bands), **{"width": 32, "depth": 1, "heads": 2, **options})


# ---------------------------------------------------------------- catalog scalars


class ScalarMLP(nn.Module):
    """An MLP over a short vector of catalog scalars (e.g. Gaia G/BP/RP magnitudes, parallax,
    proper motions). Each feature k is standardised with fixed `loc[k]` / `scale[k]` (catalog
    columns have units: magnitudes near 15, parallaxes near 1 mas, so one shared scaling would not
    do), clipped to +-`clip`, and set to 0 where it is missing (mask True, or not finite); the
    missing flags are a second input vector, so "no parallax" differs from "parallax = loc".
    Blocks: Linear -> LayerNorm -> GELU, `depth` of them, `width` wide."""

    def __init__(self, n_features: int, width: int = 128, depth: int = 2, loc: list[float] | None = None,
                 scale: list[float] | None = None, clip: float = 10.0):
        super().__init__()
        if n_features < 1:
            raise ValueError("a scalars modality needs at least one feature")
        for name, v in (("loc", loc), ("scale", scale)):
            if v is not None and len(v) != n_features:
                raise ValueError(f"scalar encoder option {name!r} has {len(v)} values for {n_features} features")
        if scale is not None and any(not s > 0 for s in scale):
            raise ValueError(f"scalar encoder option 'scale' must be > 0 for every feature, got {scale}")
        if depth < 1:
            raise ValueError(f"scalar encoder option 'depth' must be >= 1, got {depth}")
        self.width, self.clip = width, clip
        self.register_buffer("loc", torch.tensor(loc if loc is not None else [0.0] * n_features,
                                                 dtype=torch.float32), persistent=False)
        self.register_buffer("scale", torch.tensor(scale if scale is not None else [1.0] * n_features,
                                                   dtype=torch.float32), persistent=False)
        layers: list[nn.Module] = []
        cin = 2 * n_features
        for _ in range(depth):
            layers += [nn.Linear(cin, width), nn.LayerNorm(width), nn.GELU()]
            cin = width
        self.net = nn.Sequential(*layers)

    def forward(self, x: dict) -> torch.Tensor:
        v = x["values"].float()
        good = ~x["mask"] & torch.isfinite(v)
        z = ((torch.where(good, v, self.loc) - self.loc) / self.scale).clamp(-self.clip, self.clip)
        g = good.to(z.dtype)
        return self.net(torch.cat([z * g, 1.0 - g], -1))


@register_encoder("scalar_mlp", kind="scalars")
def scalar_mlp(modality, **options):
    """MLP over catalog scalars; options: width, depth, loc, scale (per feature), clip."""
    return ScalarMLP(len(modality.features), **options)


@register_encoder("tiny_scalar_mlp", kind="scalars")
def tiny_scalar_mlp(modality, **options):
    """Test-sized scalar MLP (width 32, 1 block)."""
    return ScalarMLP(len(modality.features), **{"width": 32, "depth": 1, **options})
