"""Synthetic training exports in the `mmu export-wds` format (shards + index.json + index.parquet),
for tests and benchmarks: the modalities of one object share a latent (size, colour, "redshift")
so there is something to align; arrays have the real dtypes and, on request, the real shapes.
Also `tiny_variant`: any pretraining config shrunk to test size (tiny encoders, small shapes).
"""
from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import numpy as np

from mmu.shards.format import INDEX_PARQUET, ShardIndex, encode_sample, sample_key, shard_name, write_index, write_tar

LSST_BANDS = ["lsst-u", "lsst-g", "lsst-r", "lsst-i", "lsst-z", "lsst-y"]


def _image(rng, z, shape):
    c, h, w = shape
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    r2 = (xx - (w - 1) / 2) ** 2 + ((yy - (h - 1) / 2) * (1.0 + 0.5 * z[2])) ** 2
    width = (0.08 + 0.06 * z[0]) * min(h, w)
    amps = 2.0 + 1.5 * z[1] * np.linspace(-1, 1, c, dtype=np.float32)
    flux = amps[:, None, None] * np.exp(-r2 / (2 * width ** 2))[None]
    ivar = np.full(shape, 100.0, np.float32)
    flux = (flux + rng.normal(0, 0.1, shape)).astype(np.float32)
    mask = rng.random(shape) < 0.01
    return {"flux": flux, "ivar": ivar, "mask": mask}


def _spectrum(rng, z, lam):
    n = len(lam)
    cont = 1.0 + 0.5 * z[1] * (lam - 6700.0) / 3100.0
    centre = 4500.0 + 2000.0 * (z[0] + 1.0)
    line = (1.5 + z[2]) * np.exp(-0.5 * ((lam - centre) / 30.0) ** 2)
    flux = (cont + line + rng.normal(0, 0.05, n)).astype(np.float32)
    return {"flux": flux, "ivar": np.full(n, 400.0, np.float32), "mask": rng.random(n) < 0.01,
            "lsf_sigma": np.full(n, 0.8, np.float32)}


def _lightcurve(rng, z, t_range):
    t = int(rng.integers(t_range[0], t_range[1] + 1))
    time = np.sort(rng.uniform(60000.0, 60300.0, t))
    period = 10.0 * 10 ** (z[0] + 1.0) / 10.0 + 5.0
    amp = 100.0 * (1.5 + z[1])
    flux = (amp * np.sin(2 * np.pi * time / period) + rng.normal(0, 5.0, t)).astype(np.float32)
    return {"time": time, "band": np.array(rng.choice(LSST_BANDS, t), dtype="<U6"),
            "flux": flux, "flux_err": np.full(t, 5.0, np.float32), "mask": rng.random(t) < 0.02}


def write_synthetic_export(out: str | Path, columns: dict[str, str], *, n_samples: int = 64,
                           n_shards: int = 4, split: str = "train", seed: int = 0,
                           image_shape: tuple[int, int, int] = (4, 16, 16),
                           spectrum_length: int = 128, constant_lambda: bool = True,
                           lightcurve_length: tuple[int, int] = (8, 24),
                           missing: dict[str, float] | None = None,
                           dataset: str = "synthetic_v1") -> dict:
    """Write `n_shards` shards of `split` to `out` (columns: {name: kind}); returns the index.

    `missing`: per column, the fraction of samples lacking it (as `--keep-unmatched` exports do).
    With `constant_lambda`, spectrum wavelengths are left out of the samples and stored once in
    the index's `constants` (as for a survey with one fixed grid)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    lam = np.linspace(3600.0, 9824.0, spectrum_length).astype(np.float32)
    missing = missing or {}
    per_shard = np.array_split(np.arange(n_samples), n_shards)
    shards, rows = [], []
    for si, ids in enumerate(per_shard):
        samples = []
        for pos, i in enumerate(ids):
            z = rng.uniform(-1, 1, 3).astype(np.float32)
            oid = f"{dataset}-{seed}-{i:07d}"
            ra, dec = float(rng.uniform(0, 360)), float(np.degrees(np.arcsin(rng.uniform(-1, 1))))
            meta = {"object_id": oid, "ra": ra, "dec": dec, "split": split, "latent": z.tolist()}
            arrays = {}
            for col, kind in columns.items():
                if rng.random() < missing.get(col, 0.0):
                    continue
                if kind == "image":
                    x = _image(rng, z, image_shape)
                elif kind == "spectrum":
                    x = _spectrum(rng, z, lam)
                    if not constant_lambda:
                        x["lambda"] = lam
                else:
                    x = _lightcurve(rng, z, lightcurve_length)
                arrays.update({f"{col}.{f}": v for f, v in x.items()})
            samples.append((sample_key(oid), encode_sample(meta, arrays)))
            rows.append({"object_id": oid, "ra": ra, "dec": dec, "shard": shard_name(split, si),
                         "position": pos})
        shards.append({**write_tar(out / shard_name(split, si), samples), "split": split})
    revision = hashlib.sha256(json.dumps([r["object_id"] for r in rows]).encode()).hexdigest()
    specs = {c: {"kind": k} for c, k in columns.items()}
    for c, k in columns.items():
        if k == "image":
            specs[c].update(bands=[f"synth-{b}" for b in "grizy"[:image_shape[0]]],
                            height=image_shape[1], width=image_shape[2])
        elif k == "spectrum":
            specs[c]["length"] = spectrum_length
    index = {"format_version": 1, "dataset": dataset, "content_revision": revision, "split": split,
             "split_hash": "synthetic", "seed": seed, "modalities": specs,
             "constants": ({f"{c}.lambda": lam.tolist() for c, k in columns.items() if k == "spectrum"}
                           if constant_lambda else {}),
             "shards": shards, "samples": n_samples}
    write_index(out, ShardIndex.model_validate(index))
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), out / INDEX_PARQUET)
    except ImportError:  # pragma: no cover - pyarrow is a dependency of mmu
        pass
    return index


TINY_ENCODER = {"image": "tiny_convnet", "spectrum": "tiny_spectrum", "lightcurve": "tiny_lightcurve"}
TINY_SHAPES = {"image": {"channels": 4, "size": 16}, "spectrum": {"length": 128},
               "lightcurve": {"length": 24}}


def tiny_variant(cfg: dict, *, train: list[str], val: list[str], run_dir: str, steps: int = 20) -> dict:
    """A raw config dict shrunk to CPU-test size: same modalities, pairs and loss, tiny encoders
    and shapes (4x16x16 images, 128-pixel spectra, 24-epoch light curves)."""
    from mmu.pretrain.config import KINDS

    cfg = copy.deepcopy(cfg)
    for name, m in cfg["model"]["modalities"].items():
        kind = m.get("kind") or next(k for k in KINDS if name == k or name.endswith("_" + k))
        m.update(encoder=TINY_ENCODER[kind], options={}, **TINY_SHAPES[kind])
    cfg["model"]["embed_dim"] = 16
    cfg["data"] = {**cfg.get("data", {}), "train": train, "val": val, "batch_size": 8,
                   "num_workers": 0, "shuffle_buffer": 16, "segment_steps": 5, "val_max_samples": 32}
    cfg["optim"] = {**cfg.get("optim", {}), "lr": 3e-3, "warmup_steps": 2, "weight_decay": 0.0}
    cfg["train"] = {**cfg.get("train", {}), "steps": steps, "precision": "fp32", "compile": False,
                    "device": "cpu", "log_every": 1, "val_every": 0, "ckpt_every": 5,
                    "progress": False, "tensorboard": False}
    cfg["run"] = {"dir": run_dir}
    return cfg


def columns_of(cfg: dict) -> dict[str, str]:
    from mmu.pretrain.config import KINDS

    return {name: m.get("kind") or next(k for k in KINDS if name == k or name.endswith("_" + k))
            for name, m in cfg["model"]["modalities"].items()}


def main(argv: list[str] | None = None) -> int:
    """`python -m mmu.pretrain.synthetic --out DIR --columns image=image,spectrum=spectrum`:
    writes DIR/train and DIR/val."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m mmu.pretrain.synthetic", description=main.__doc__)
    p.add_argument("--out", required=True)
    p.add_argument("--columns", default="image=image,spectrum=spectrum",
                   help="column=kind,... (kinds: image, spectrum, lightcurve)")
    p.add_argument("--train", type=int, default=512, help="training samples")
    p.add_argument("--val", type=int, default=128, help="validation samples")
    p.add_argument("--shards", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    columns = dict(item.split("=", 1) for item in a.columns.split(","))
    write_synthetic_export(Path(a.out) / "train", columns, n_samples=a.train, n_shards=a.shards,
                           split="train", seed=a.seed)
    write_synthetic_export(Path(a.out) / "val", columns, n_samples=a.val, n_shards=max(1, a.shards // 4),
                           split="val", seed=a.seed + 1)
    print(f"wrote {a.out}/train and {a.out}/val")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
