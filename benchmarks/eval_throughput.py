"""Time to embed and probe N objects (default 100k) with `mmu.eval`, for docs/benchmarks.md.

Embedding: a model of the given pretraining config (random weights: the speed does not depend
on training) embeds synthetic samples of the config's shapes through `CheckpointEmbedder` (the
trainer's collate + preprocess + encoders, exactly as `mmu eval run`); measured on `--embed-n`
samples per modality column and extrapolated linearly to N when smaller. Probing: `linear.v1`
(8-value ridge grid, 1/10/100% x 5 seeds) and `knn16.v1` on N embeddings of the model's width
(80/10/10 split), run in full.

    python benchmarks/eval_throughput.py --config tiny_cpu --n 100000 --embed-n 4096
    python benchmarks/eval_throughput.py --config astroclip --device cuda --embed-n 8192   # one GPU
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def synthetic_samples(cfg, column: str, n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    m = cfg.model.modalities[column]
    out = []
    for i in range(n):
        if m.kind == "image":
            shape = (m.channels, m.size, m.size)
            x = {"flux": rng.normal(0, 1, shape).astype(np.float32), "ivar": np.ones(shape, np.float32),
                 "mask": np.zeros(shape, bool)}
        elif m.kind == "spectrum":
            x = {"flux": rng.normal(1, 0.1, m.length).astype(np.float32), "ivar": np.ones(m.length, np.float32),
                 "mask": np.zeros(m.length, bool), "lambda": np.linspace(3600, 9824, m.length).astype(np.float32)}
        else:
            t = m.length
            x = {"time": np.sort(rng.uniform(0, 300, t)) + 60000.0, "band": np.array(rng.choice(m.bands, t)),
                 "flux": rng.normal(0, 1, t).astype(np.float32), "flux_err": np.ones(t, np.float32),
                 "mask": np.zeros(t, bool)}
        out.append({"object_id": f"o{i}", column: x})
    return out


def time_embedding(cfg, device: str, n: int, batch: int) -> dict:
    from mmu.eval.baselines import random_weights_checkpoint
    from mmu.eval.embed import CheckpointEmbedder

    with tempfile.TemporaryDirectory() as tmp:
        emb = CheckpointEmbedder(random_weights_checkpoint(cfg, Path(tmp)), device=device)
        out = {}
        for column in cfg.model.modalities:
            samples = synthetic_samples(cfg, column, min(n, 4 * batch))
            emb.embed(samples[:batch], column, "projection")  # warm-up
            done, t0 = 0, time.perf_counter()
            while done < n:
                chunk = samples[(done % len(samples)):(done % len(samples)) + batch] or samples[:batch]
                chunk = chunk[:n - done]
                emb.embed(chunk, column, "projection")
                done += len(chunk)
            if device.startswith("cuda"):
                import torch
                torch.cuda.synchronize()
            dt = time.perf_counter() - t0
            out[column] = {"samples": done, "seconds": round(dt, 3), "per_s": round(done / dt, 1)}
        return out


def time_probes(n: int, dim: int, seed: int = 0) -> dict:
    from mmu.registry.catalog import TaskEntry
    from mmu.eval.protocols import KNN16_V1, LINEAR_V1, Split

    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, 4))
    x = (latent @ rng.normal(size=(4, dim)) + 0.3 * rng.normal(size=(n, dim))).astype(np.float32)
    y = latent[:, 0]
    cut = [int(0.8 * n), int(0.9 * n)]
    ids = np.array([f"o{i}" for i in range(n)])
    splits = {s: Split(ids[a:b], y[a:b], x[a:b]) for s, (a, b) in
              zip(("train", "val", "test"), ((0, cut[0]), (cut[0], cut[1]), (cut[1], n)))}
    task = TaskEntry(name="Bench.v1", dataset="d", dataset_revision="r", modality="image", target="y",
                     split_hash="h", type="regression", main_score="r2", higher_is_better=True,
                     protocols=["linear.v1", "knn16.v1"])
    out = {}
    for proto in (LINEAR_V1, KNN16_V1):
        t0 = time.perf_counter()
        proto.run(task, splits, ["r2"])
        out[proto.name] = round(time.perf_counter() - t0, 2)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="tiny_cpu", help="a config in pretrain/configs (or a path)")
    p.add_argument("--n", type=int, default=100_000, help="objects to embed and probe")
    p.add_argument("--embed-n", type=int, default=4096, help="samples actually embedded per column")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    a = p.parse_args(argv)
    import torch

    from mmu.pretrain.config import config_dir, load_config

    if a.threads:
        torch.set_num_threads(a.threads)
    path = Path(a.config) if Path(a.config).exists() else config_dir() / f"{a.config}.yaml"
    cfg = load_config(path)
    emb = time_embedding(cfg, a.device, min(a.n, a.embed_n), a.batch)
    embed_s = {c: a.n / v["per_s"] for c, v in emb.items()}
    probes = time_probes(a.n, cfg.model.embed_dim)
    report = {"config": cfg.name, "device": a.device, "torch_threads": torch.get_num_threads(), "n": a.n,
              "embedding": emb, "embed_seconds_extrapolated": {c: round(s, 1) for c, s in embed_s.items()},
              "probe_seconds": probes,
              "total_seconds_one_column": round(max(embed_s.values()) + sum(probes.values()), 1)}
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
