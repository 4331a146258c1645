"""Trainer throughput on one device for the AstroCLIP-like config (pretrain/configs/astroclip.yaml):
samples/s, step time, peak memory and model FLOP utilisation,
  (a) compute only: one fixed-shape batch already on the device, the real `train_step`;
  (b) fed by the real loader: shards written with `mmu.shards.format` (real array shapes), `train_loader`
      with <= 4 workers, the same `train_step`;
each in fp32 eager and (on a GPU) bf16 autocast + compiled encoders.

    python benchmarks/trainer_throughput.py                 # GPU: full size; CPU: tiny size
    python benchmarks/trainer_throughput.py --size tiny     # force the CPU-sized run
    python benchmarks/trainer_throughput.py --flops-only    # FLOPs/sample: ours vs the reference

`--size full` is the config as shipped (ViT-B width on 8-pixel patches of 4x96x96 cutouts + a
6-layer 768-wide transformer over 20-pixel patches of 7,781-pixel spectra, batch 256). `--size
tiny` keeps the real data shapes (so the loader does the real work) with small encoders and
batch 16. The reference point quoted in the issue is a ViT-B/16 on 144x144x3 + a 6-layer,
768-wide transformer over 777 spectrum tokens at ~1,060 samples/s per H100 (bf16, compiled,
batch 256, compute only).
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from mmu.pretrain.config import config_dir, parse_config

# dense peak FLOP/s (bf16 tensor core; fp32 eager runs TF32 matmuls) by device name
PEAK = {"H100": {"bf16": 989e12, "fp32": 495e12}, "H200": {"bf16": 989e12, "fp32": 495e12},
        "A100": {"bf16": 312e12, "fp32": 156e12}}


#: candidate default models (issue 18): token counts of the shipped astroclip.yaml traded for speed.
#: image: 96x96 cutouts in patches of P (tokens (96/P)^2); spectrum: 7,781 pixels in patches of S.
VARIANTS = {
    "shipped": {},                                  # image 8 px (144 tokens), spectrum 20 px (390)
    "img12": {"image_patch": 12},                   # 64 image tokens
    "spec40": {"spectrum_patch": 40},               # 195 spectrum tokens
    "img12-spec40": {"image_patch": 12, "spectrum_patch": 40},
    "img12-spec60": {"image_patch": 12, "spectrum_patch": 60},   # 130 spectrum tokens
    "img16-spec40": {"image_patch": 16, "spectrum_patch": 40},   # 36 image tokens
}


def bench_config(size: str, batch: int | None, workers: int, run_dir: str, variant: str = "shipped") -> dict:
    raw = yaml.safe_load((config_dir() / "astroclip.yaml").read_text())
    v = VARIANTS[variant]
    if "image_patch" in v:
        raw["model"]["modalities"]["legacysurvey_image"]["options"]["patch_size"] = v["image_patch"]
    if "spectrum_patch" in v:
        raw["model"]["modalities"]["desi_spectrum"]["options"].update(patch_size=v["spectrum_patch"],
                                                                    stride=v["spectrum_patch"])
    if size == "tiny":
        mods = raw["model"]["modalities"]
        mods["legacysurvey_image"]["options"] = {"patch_size": 16, "width": 64, "depth": 2, "heads": 2}
        mods["desi_spectrum"]["options"] = {"patch_size": 80, "width": 64, "depth": 2, "heads": 2}
        raw["model"]["embed_dim"] = 64
        raw["data"].update(batch_size=16, shuffle_buffer=64)
    if batch:
        raw["data"]["batch_size"] = batch
    raw["data"].update(num_workers=workers, segment_steps=10 ** 6)
    raw["train"].update(steps=10 ** 6, progress=False, tensorboard=False)
    raw["run"] = {"dir": run_dir}
    return raw


def reference_config() -> dict:
    """The issue's reference: ViT-B/16 on 144x144x3, 6x768 transformer over 777 spectrum tokens
    (AstroCLIP's overlapping patches: 20 pixels every 10)."""
    raw = yaml.safe_load((config_dir() / "astroclip.yaml").read_text())
    mods = raw["model"]["modalities"]
    mods["legacysurvey_image"].update(channels=3, size=144,
                                      options={"patch_size": 16, "width": 768, "depth": 12, "heads": 12})
    mods["desi_spectrum"]["options"].update(patch_size=20, stride=10)
    raw["run"] = {"dir": "unused"}
    return raw


def synthetic_batch(cfg, device) -> dict:
    """One collated batch of the real shapes, built on the host once, then moved to `device`."""
    from mmu.pretrain.data import Collator
    from mmu.pretrain.train import _to

    rng = np.random.default_rng(0)
    samples = []
    for i in range(cfg.data.batch_size):
        s = {"object_id": str(i)}
        for col, m in cfg.model.modalities.items():
            if m.kind == "image":
                shape = (m.channels, m.size, m.size)
                s[col] = {"flux": rng.normal(size=shape).astype(np.float32),
                          "ivar": np.ones(shape, np.float32), "mask": rng.random(shape) < 0.01}
            else:
                n = m.length
                s[col] = {"flux": rng.normal(size=n).astype(np.float32), "ivar": np.ones(n, np.float32),
                          "mask": rng.random(n) < 0.01,
                          "lambda": np.linspace(3600, 9824, n).astype(np.float32)}
        samples.append(s)
    return _to(Collator(cfg.model.modalities, cfg.data.batch_size)(samples), device)


def flops_per_sample(cfg, device) -> float:
    """Model FLOPs of one forward + backward, per sample (torch's FlopCounterMode, fp32)."""
    from torch.utils.flop_counter import FlopCounterMode

    from mmu.pretrain.model import valid_masks
    from mmu.pretrain.train import make_training

    small = cfg.model_copy(deep=True)
    small.data.batch_size = min(cfg.data.batch_size, 8)
    small.train.compile = False
    model, loss_fn, *_ = make_training(small, device)
    batch = synthetic_batch(small, device)
    with FlopCounterMode(display=False) as counter:
        out = model(batch)
        loss, _ = loss_fn(out["embeddings"], valid_masks(batch, model.kinds), out["logit_scale"],
                          out["logit_bias"])
        loss.backward()
    return counter.get_total_flops() / small.data.batch_size


def run_mode(cfg, device, fed_by_loader: bool, steps: int, warmup: int, shards: Path | None) -> dict:
    from mmu.pretrain.data import open_exports, train_loader
    from mmu.pretrain.train import _to, make_training, train_step

    model, loss_fn, optimizer, scheduler, scaler, autocast = make_training(cfg, device)
    if cfg.train.compile and device.type == "cuda":
        for enc in model.encoders.values():
            enc.compile()
    if fed_by_loader:
        it = iter(train_loader(cfg, open_exports([str(shards)]), 0, 1, 0, pin_memory=device.type == "cuda"))
        next_batch = lambda: _to(next(it), device)  # noqa: E731
    else:
        fixed = synthetic_batch(cfg, device)
        next_batch = lambda: fixed  # noqa: E731
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for step in range(warmup):
        train_step(cfg, model, model, loss_fn, optimizer, scheduler, scaler, autocast, next_batch(), 0, step)
    sync()
    t = time.perf_counter()
    for step in range(warmup, warmup + steps):
        loss, _, _ = train_step(cfg, model, model, loss_fn, optimizer, scheduler, scaler, autocast,
                                next_batch(), 0, step)
    float(loss.detach())
    sync()
    dt = (time.perf_counter() - t) / steps
    return {"step_s": dt, "samples_per_s": cfg.data.batch_size / dt,
            "peak_mem_gib": (torch.cuda.max_memory_allocated() / 2 ** 30) if device.type == "cuda" else None}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=["auto", "tiny", "full"], default="auto")
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--steps", type=int, default=None, help="timed steps (default 30 GPU / 5 CPU)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps (default 10 GPU / 2 CPU)")
    p.add_argument("--workers", type=int, default=4, help="loader workers for (b), at most 4")
    p.add_argument("--samples", type=int, default=None, help="samples in the benchmark shards")
    p.add_argument("--modes", default="compute,loader")
    p.add_argument("--peak-tflops", type=float, default=None, help="device peak, for MFU on other devices")
    p.add_argument("--flops-only", action="store_true")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--variants", default="shipped", help=f"comma-separated, from {sorted(VARIANTS)}")
    p.add_argument("--precisions", default="fp32,bf16", help="fp32 (eager) and/or bf16 (compiled), on a GPU")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    size = a.size if a.size != "auto" else ("full" if cuda else "tiny")
    steps, warmup = a.steps or (30 if cuda else 5), a.warmup or (10 if cuda else 2)
    name = torch.cuda.get_device_name() if cuda else "cpu"
    tmp = tempfile.TemporaryDirectory()
    root = Path(tmp.name)

    if a.flops_only:
        ours = parse_config(bench_config("full", 8, 0, str(root / "run")))
        ref = parse_config(reference_config())
        f_ours, f_ref = flops_per_sample(ours, device), flops_per_sample(ref, device)
        print(json.dumps({"flops_per_sample_ours": f_ours, "flops_per_sample_reference": f_ref,
                          "ratio_ours_to_reference": f_ours / f_ref}))
        return

    for variant in a.variants.split(","):
        run_variant(a, variant, size, device, cuda, name, steps, warmup, root)
    tmp.cleanup()


def run_variant(a, variant, size, device, cuda, name, steps, warmup, root) -> None:
    results = []
    shards = root / "shards"
    base = parse_config(bench_config(size, a.batch, min(a.workers, 4), str(root / "run"), variant))
    if "loader" in a.modes:
        from mmu.pretrain.synthetic import write_synthetic_export

        img, spec = base.model.modalities["legacysurvey_image"], base.model.modalities["desi_spectrum"]
        n = a.samples or max(8 * base.data.num_workers, 4 * base.data.batch_size)
        write_synthetic_export(shards, {"legacysurvey_image": "image", "desi_spectrum": "spectrum"},
                               n_samples=n, n_shards=max(2, 2 * base.data.num_workers),
                               image_shape=(img.channels, img.size, img.size), spectrum_length=spec.length)
    fps = flops_per_sample(base, device)
    precisions = [(p, p == "bf16") for p in a.precisions.split(",")] if cuda else [("fp32", False)]
    for prec, compiled in precisions:
        cfg = base.model_copy(deep=True)
        cfg.train.precision, cfg.train.compile = prec, compiled
        for mode in a.modes.split(","):
            r = run_mode(cfg, device, mode == "loader", steps, warmup, shards)
            peak = (a.peak_tflops * 1e12 if a.peak_tflops else
                    next((v[prec] for k, v in PEAK.items() if k in name), None))
            achieved = fps * r["samples_per_s"]
            r.update(variant=variant, device=name, size=size, mode=mode, precision=prec, compiled=compiled,
                     batch=cfg.data.batch_size, workers=cfg.data.num_workers if mode == "loader" else 0,
                     tflops=achieved / 1e12, mfu=(achieved / peak) if peak else None,
                     gflops_per_sample=fps / 1e9, torch=torch.__version__,
                     threads=torch.get_num_threads())
            results.append(r)
            print(json.dumps(r), flush=True)
    by = {(r["precision"], r["mode"]): r for r in results}
    for prec, _ in precisions:
        if (prec, "compute") in by and (prec, "loader") in by:
            print(f"{prec}: loader-fed / compute-only = "
                  f"{by[(prec, 'loader')]['samples_per_s'] / by[(prec, 'compute')]['samples_per_s']:.3f}")
    if ("bf16", "compute") in by and ("fp32", "compute") in by:
        print(f"bf16+compile / fp32 eager (compute only) = "
              f"{by[('bf16', 'compute')]['samples_per_s'] / by[('fp32', 'compute')]['samples_per_s']:.2f}")


if __name__ == "__main__":
    main()
