"""Time to embed and probe N objects (default 100k) with `mmu.eval`, for docs/benchmarks.md.

Embedding: a model of the given pretraining config (random weights: the speed does not depend
on training) embeds synthetic samples of the config's shapes through `CheckpointEmbedder` (the
trainer's collate + preprocess + encoders, exactly as `mmu eval run`); measured on `--embed-n`
samples per modality column and extrapolated linearly to N when smaller. Probing: `linear.v1`
(8-value ridge grid, 1/10/100% x 5 seeds) and `knn16.v1` on N embeddings of the model's width
(80/10/10 split), run in full.

    python benchmarks/eval_throughput.py --config tiny_cpu --n 100000 --embed-n 4096
    python benchmarks/eval_throughput.py --config astroclip --device cuda --embed-n 8192   # one GPU

`--hub-rows K` measures the whole path from the hub instead: K rows per modality column are
written as hub Parquet (the dataset schema, zstd level 3, row groups of 128 rows, as a build
writes them), then `embed_split` reads, collates and embeds them twice: the single-process
path (main process, fp32, 256 rows a batch: how `mmu eval` worked before the loader) on the
first `--old-rows` rows, and the loader path (DataLoader workers, pinned memory, bf16 on a GPU,
1024 rows a batch) on all K (both read images and fixed-length spectra as whole arrays since
issue 18's reader; `host_pipeline` times read + collate alone, per-row against whole arrays); the
probes run on N embeddings both on the reference path (scikit-learn / numpy) and on the device
(MMU_PROBE_DEVICE). Rates are extrapolated to N.

    python benchmarks/eval_throughput.py --config astroclip --device cuda --hub-rows 16384

`--host-only` (with `--hub-rows K`) times reading + collating alone, no model: the per-row path
(struct column, per-row arrays, the collator row by row) against the whole-array reader of
`mmu.eval.loader`, interleaved, best of `--repeats`, per `--host-workers` count, `--batch` rows a
batch; the ratio is whole-array / per-row rows/s (with 0 workers also per CPU-second of the
process, `ratio_cpu`, which a busy machine disturbs less than wall time), and the CPU time per
row of each stage in one process (`cpu_us_per_row`: Parquet decoding, arrays, collation).

    python benchmarks/eval_throughput.py --config astroclip --hub-rows 2048 --host-only --host-workers 0 \
        --batch 256 --repeats 3
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
    from mmu.eval.protocols import KNN16_V1, LINEAR_V1, Split
    from mmu.registry.catalog import TaskEntry

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


def write_hub_column(cfg, column: str, out: Path, rows: int, seed: int = 0) -> list[Path]:
    """`rows` rows of `column` in the hub's dataset schema (1,024 distinct rows, repeated)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mmu.model.schema import ImageSpec, SpectrumSpec, dataset_schema, image_array, spectrum_array

    m = cfg.model.modalities[column]
    rng = np.random.default_rng(seed)
    k = min(rows, 1024)
    if m.kind == "image":
        spec = ImageSpec(bands=tuple(f"des-{b}" for b in "grizy"[:m.channels]), height=m.size, width=m.size)
        shape = (k, m.channels, m.size, m.size)
        arr = image_array(spec, rng.normal(size=shape).astype(np.float32), np.ones(shape, np.float32),
                          rng.random(shape) < 0.01, np.ones((k, m.channels), np.float32), 1.0)
    else:
        spec = SpectrumSpec(length=m.length)
        lam = np.tile(np.linspace(3600, 9824, m.length, dtype=np.float32), (k, 1))
        arr = spectrum_array(spec, lam, rng.normal(1, 0.1, (k, m.length)), np.ones((k, m.length)),
                             rng.random((k, m.length)) < 0.01, np.ones((k, m.length)))
    schema = dataset_schema({column: spec})
    cols = {f.name: pa.nulls(k, f.type) for f in schema}
    cols.update(ra=pa.array(rng.uniform(0, 10, k)), dec=pa.array(rng.uniform(-5, 5, k)),
                split=pa.array(["test"] * k), **{column: arr})
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for f in range(0, rows, 4096):
        n = min(4096, rows - f)
        reps = [pa.table({**{c: cols[c] for c in cols}, "object_id": pa.array([f"o{f + j + i}" for i in range(k)])})
                .select([fld.name for fld in schema]).slice(0, min(k, n - j)) for j in range(0, n, k)]
        path = out / f"{column}-{f // 4096:04d}.parquet"
        pq.write_table(pa.concat_tables(reps).cast(schema), path, compression="zstd", compression_level=3,
                       row_group_size=128)
        files.append(path)
    return files


class TrainerCollate:
    """`CheckpointEmbedder.collate` without a model: the trainer's `Collator` on one column."""

    def __init__(self, cfg):
        self.modalities = cfg.model.modalities

    def __call__(self, samples: list[dict], column: str) -> dict:
        from mmu.pretrain.data import Collator

        return Collator({column: self.modalities[column]}, max(1, len(samples)))(samples)[column]


def host_pipeline_rate(cfg, files, column: str, workers_list, batch_rows: int = 1024, repeats: int = 1) -> dict:
    """Rows/s of reading + collating alone (no encoder), through the same DataLoader, per worker
    count, two ways run interleaved (best of `repeats` each): `per_row` (the whole struct column
    read, `table_samples` per-row arrays, the trainer's collator row by row: the loader before the
    whole-array reader) and `whole_arrays` (the collator's fields only, each turned into one
    [rows, *shape] array and collated whole: `mmu.eval.loader` for a trainer checkpoint)."""
    from torch.utils.data import DataLoader

    from mmu.eval.loader import HubRows, block_layout, plan_units

    spec = cfg.model.modalities[column]
    collate = TrainerCollate(cfg)
    out = {"whole_arrays_used": block_layout(spec, files[0], column) is not None}
    for w in workers_list:
        rates: dict[str, list[float]] = {"per_row": [], "whole_arrays": []}
        if w == 0:  # and per CPU-second of this process: steadier than wall time on a shared machine
            rates.update(per_row_cpu=[], whole_arrays_cpu=[])
        for _ in range(repeats):
            for name, sp in (("per_row", None), ("whole_arrays", spec)):
                ds = HubRows(plan_units(files, batch_rows), "test", column, column, batch_rows, collate, spec=sp)
                t0, c0, rows = time.perf_counter(), time.process_time(), 0
                for _, _, oids, _ in DataLoader(ds, batch_size=None, num_workers=w,
                                                prefetch_factor=4 if w else None):
                    rows += len(oids)
                rates[name].append(rows / (time.perf_counter() - t0))
                if w == 0:
                    rates[f"{name}_cpu"].append(rows / (time.process_time() - c0))
        best = {k: max(v) for k, v in rates.items()}
        r = {k: round(v, 1) for k, v in best.items()}
        r["ratio"] = round(best["whole_arrays"] / best["per_row"], 2)
        if w == 0:
            r["ratio_cpu"] = round(best["whole_arrays_cpu"] / best["per_row_cpu"], 2)
        out[f"workers={w}"] = r
    return out


def stage_cpu(cfg, files, column: str, batch_rows: int, repeats: int) -> dict:
    """CPU microseconds per row of each stage in this process, both paths, best of `repeats`:
    `parquet` (read_row_groups: decompression + nested-list decoding), `arrays` (per-row sample
    dicts, or whole [rows, *shape] arrays) and `collate` (the collator's tensors)."""
    import pyarrow.parquet as pq

    from mmu.eval.loader import batch_arrays, block_layout, collate_arrays
    from mmu.eval.tasks import table_samples
    from mmu.model.schema import SPLIT_COLUMN

    spec = cfg.model.modalities[column]
    layout = block_layout(spec, files[0], column)
    collate = TrainerCollate(cfg)
    best: dict[str, dict[str, float]] = {}
    for _ in range(repeats):
        for name in ("per_row", "whole_arrays"):
            cpu, rows = {"parquet": 0.0, "arrays": 0.0, "collate": 0.0}, 0
            for path in files:
                pf = pq.ParquetFile(path)
                wanted = [f"{column}.{f}" for f in layout[0]] if name == "whole_arrays" else [column]
                n_groups = pf.metadata.num_row_groups
                per = max(1, batch_rows // pf.metadata.row_group(0).num_rows)  # row groups a batch
                for g in range(0, n_groups, per):
                    groups = list(range(g, min(n_groups, g + per)))
                    c0 = time.process_time()
                    t = pf.read_row_groups(groups, columns=["object_id", SPLIT_COLUMN, *wanted], use_threads=False)
                    c1 = time.process_time()
                    if name == "whole_arrays":
                        ids, arrays = batch_arrays(t, "test", column, *layout, path)
                        c2 = time.process_time()
                        collate_arrays(spec, column, arrays, ids)
                    else:
                        ids, samples = table_samples(t, "test", column, path)
                        c2 = time.process_time()
                        collate(samples, column)
                    c3 = time.process_time()
                    cpu["parquet"] += c1 - c0
                    cpu["arrays"] += c2 - c1
                    cpu["collate"] += c3 - c2
                    rows += len(ids)
            us = {k: 1e6 * v / rows for k, v in cpu.items()}
            if name not in best or sum(us.values()) < sum(best[name].values()):
                best[name] = us
    return {name: {k: round(v, 1) for k, v in us.items()} for name, us in best.items()}


def time_host_only(cfg, rows: int, root: Path, workers_list, batch_rows: int, repeats: int) -> dict:
    """`--host-only`: the read + collate rates of `host_pipeline_rate` per image / spectrum
    column of the config, on `rows` hub rows; no model is built, nothing is embedded."""
    out = {}
    for column, m in cfg.model.modalities.items():
        if m.kind not in ("image", "spectrum"):
            continue
        files = write_hub_column(cfg, column, root / "hub" / column, rows)
        mb = sum(f.stat().st_size for f in files) / 1e6
        out[column] = {"rows": rows, "hub_mb": round(mb, 1), "batch_rows": batch_rows,
                       **host_pipeline_rate(cfg, files, column, workers_list, batch_rows, repeats),
                       "cpu_us_per_row": stage_cpu(cfg, files, column, batch_rows, repeats)}
        print(json.dumps({column: out[column]}), flush=True)
    return out


def time_hub_path(cfg, device: str, n: int, rows: int, old_rows: int, workers: int | None,
                  compile_: bool, root: Path, host_workers=(1, 4)) -> dict:
    import os

    import torch

    from mmu.eval.baselines import random_weights_checkpoint
    from mmu.eval.embed import CheckpointEmbedder, embed_split

    out = {}
    ckpt = random_weights_checkpoint(cfg, root / "ckpt")
    old = CheckpointEmbedder(ckpt, device=device, precision="fp32")
    new = CheckpointEmbedder(ckpt, device=device, precision="auto", compile=compile_)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for column in cfg.model.modalities:
        t0 = time.perf_counter()
        files = write_hub_column(cfg, column, root / "hub" / column, rows)
        write_s = time.perf_counter() - t0
        mb = sum(f.stat().st_size for f in files) / 1e6
        r = {"rows": rows, "hub_mb": round(mb, 1), "write_s": round(write_s, 1)}
        # the single-process path: every row group in this process, fp32, 256 a batch
        os.environ["MMU_EMBED_WORKERS"] = "0"
        sub = files[:max(1, -(-old_rows // 4096))]
        embed_split(old, sub[:1], "bench", "r", "test", column, "projection", batch_rows=256)  # warm-up
        sync()
        t0 = time.perf_counter()
        ids, _, _ = embed_split(old, sub, "bench", "r", "test", column, "projection", batch_rows=256,
                                num_workers=0)
        sync()
        dt = time.perf_counter() - t0
        r["single_process_fp32"] = {"rows": len(ids), "seconds": round(dt, 2), "per_s": round(len(ids) / dt, 1)}
        del os.environ["MMU_EMBED_WORKERS"]
        embed_split(new, files[:1], "bench", "r", "test", column, "projection", num_workers=workers)  # warm-up
        sync()
        t0 = time.perf_counter()
        ids, _, info = embed_split(new, files, "bench", "r", "test", column, "projection", num_workers=workers)
        sync()
        dt = time.perf_counter() - t0
        r["loader"] = {"rows": len(ids), "seconds": round(dt, 2), "per_s": round(len(ids) / dt, 1),
                       "precision": new.precision, "compiled": compile_,
                       "workers": workers if workers is not None else "default",
                       "read_mb_per_s": round(mb / dt, 1)}
        r["host_pipeline"] = host_pipeline_rate(cfg, files, column, workers_list=host_workers)
        r["speedup"] = round(r["loader"]["per_s"] / r["single_process_fp32"]["per_s"], 2)
        r["embed_s_extrapolated_to_n"] = round(n / r["loader"]["per_s"], 1)
        out[column] = r
        print(json.dumps({column: r}), flush=True)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="tiny_cpu", help="a config in pretrain/configs (or a path)")
    p.add_argument("--n", type=int, default=100_000, help="objects to embed and probe")
    p.add_argument("--embed-n", type=int, default=4096, help="samples actually embedded per column")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--hub-rows", type=int, default=0, help="measure from hub Parquet: rows written per column")
    p.add_argument("--old-rows", type=int, default=2048, help="rows for the single-process path (--hub-rows)")
    p.add_argument("--workers", type=int, default=None, help="loader workers (--hub-rows; default: mmu's)")
    p.add_argument("--compile", action="store_true", help="torch.compile the encoders (--hub-rows)")
    p.add_argument("--host-workers", default="1,4",
                   help="worker counts for the host-side rate alone (read + collate, no encoder)")
    p.add_argument("--host-only", action="store_true",
                   help="with --hub-rows: only the read + collate rates, per-row path against whole arrays "
                        "(no model, no embedding, no probes)")
    p.add_argument("--repeats", type=int, default=1, help="--host-only: best of this many runs of each path")
    p.add_argument("--reference-probes", action="store_true",
                   help="with --hub-rows: also time the probes on the scikit-learn / numpy path")
    a = p.parse_args(argv)
    import torch

    from mmu.pretrain.config import config_dir, load_config

    if a.threads:
        torch.set_num_threads(a.threads)
    path = Path(a.config) if Path(a.config).exists() else config_dir() / f"{a.config}.yaml"
    cfg = load_config(path)
    if a.hub_rows and a.host_only:
        import os

        with tempfile.TemporaryDirectory() as tmp:
            host = time_host_only(cfg, a.hub_rows, Path(tmp), [int(w) for w in a.host_workers.split(",")],
                                  a.batch, a.repeats)
        print(json.dumps({"config": cfg.name, "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                          "load_average": [round(x, 2) for x in os.getloadavg()], "host": host}, indent=1))
        return 0
    if a.hub_rows:
        import os

        with tempfile.TemporaryDirectory() as tmp:
            hub = time_hub_path(cfg, a.device, a.n, a.hub_rows, a.old_rows, a.workers, a.compile, Path(tmp),
                                host_workers=[int(w) for w in a.host_workers.split(",")])
        probes = {"device": time_probes(a.n, cfg.model.embed_dim)}
        if a.reference_probes:
            os.environ["MMU_PROBE_DEVICE"] = "sklearn"
            probes["reference"] = time_probes(a.n, cfg.model.embed_dim)
            del os.environ["MMU_PROBE_DEVICE"]
        worst = max(v["embed_s_extrapolated_to_n"] for v in hub.values())
        report = {"config": cfg.name, "device": a.device,
                  "gpu": torch.cuda.get_device_name() if a.device.startswith("cuda") else None,
                  "cpus": os.cpu_count(), "n": a.n, "hub": hub, "probe_seconds": probes,
                  "total_seconds_one_column": round(worst + sum(probes["device"].values()), 1)}
        print(json.dumps(report, indent=1))
        return 0
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
