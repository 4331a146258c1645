"""Training-sample read rate, per core: decoded samples/s for the AstroCLIP sample (a 4x96x96 image
with ivar and mask + a 7,781-pixel spectrum with ivar and mask, ~400 KB), from shards written by
`mmu.shards.format` (target >= 1,000/s per core). One process, one thread, warm page cache.

    python benchmarks/loader_throughput.py [--samples 600] [--out DIR]

Stages timed: `read` (our tar reader: raw bytes of the wanted members), `decode` (+ .npy ->
arrays), `batches` (the trainer's whole stream: resampling, shuffle buffer, decode, fixed-shape
collation to torch tensors); against them webdataset's own reader with the same member
selection and the same zero-copy decoder (`webdataset.tarfile_samples(..., select_files=...)`
then `SampleDecoder`: `wds_read`, `wds_decode`), and, for reference, stock webdataset
(`WebDataset(...).decode()`, tarfile + np.load per member, every member). The stages run
interleaved, best of `--repeats` each, so a change in machine load hits all of them alike;
`ratios` compares our reader with webdataset's on the same work.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def write_shards(out: Path, n_samples: int, n_shards: int) -> None:
    from mmu.shards.format import ShardIndex, encode_sample, sample_key, shard_name, write_index, write_tar

    rng = np.random.default_rng(0)
    lam = np.linspace(3600, 9824, 7781).astype(np.float32)
    shards = []
    for s, ids in enumerate(np.array_split(np.arange(n_samples), n_shards)):
        def samples(ids=ids):
            for i in ids:
                oid = f"bench-{i:08d}"
                arrays = {
                    "legacysurvey_image.flux": rng.normal(size=(4, 96, 96)).astype(np.float32),
                    "legacysurvey_image.ivar": rng.uniform(1, 2, (4, 96, 96)).astype(np.float32),
                    "legacysurvey_image.mask": rng.random((4, 96, 96)) < 0.01,
                    "legacysurvey_image.band": np.array(["des-g", "des-r", "des-i", "des-z"]),
                    "legacysurvey_image.psf_fwhm": np.ones(4, np.float32),
                    "desi_spectrum.flux": rng.normal(size=7781).astype(np.float32),
                    "desi_spectrum.ivar": rng.uniform(1, 2, 7781).astype(np.float32),
                    "desi_spectrum.mask": rng.random(7781) < 0.01,
                    "desi_spectrum.lsf_sigma": np.full(7781, 0.8, np.float32),
                }
                yield sample_key(oid), encode_sample({"object_id": oid, "ra": 1.0, "dec": 2.0}, arrays)
        shards.append({**write_tar(out / shard_name("train", s), samples()), "split": "train"})
    index = {"format_version": 1, "dataset": "bench", "content_revision": "bench", "shards": shards,
             "constants": {"desi_spectrum.lambda": lam.tolist()}}
    write_index(out, ShardIndex.model_validate(index))


def config(out: Path, batch: int):
    from mmu.pretrain.config import parse_config

    return parse_config({
        "name": "loader-bench", "model": {"modalities": {
            "legacysurvey_image": {"encoder": "tiny_convnet", "channels": 4, "size": 96},
            "desi_spectrum": {"encoder": "tiny_spectrum", "length": 7781}}},
        "data": {"train": [str(out)], "batch_size": batch, "shuffle_buffer": 256, "segment_steps": 10 ** 6},
        "train": {"steps": 1}, "run": {"dir": str(out / "run")}})


def best_rates(fns: dict, repeats: int) -> dict[str, float]:
    """Samples/s of each stage, best of `repeats`, the stages run interleaved."""
    rates: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            n = fn()
            rates[name].append(n / (time.perf_counter() - t))
    return {k: max(v) for k, v in rates.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=600)
    p.add_argument("--shards", type=int, default=2)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, default=None, help="shard folder (default: a temporary one)")
    a = p.parse_args()

    import torch
    import webdataset as wds

    from mmu.pretrain import data as D

    torch.set_num_threads(1)
    tmp = tempfile.TemporaryDirectory() if a.out is None else None
    out = Path(tmp.name) if tmp else a.out
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "index.json").exists():
        write_shards(out, a.samples, a.shards)
    cfg = config(out, a.batch)
    ex = D.open_exports([str(out)])
    paths = [s["path"] for s in ex[0].shards("train")]
    n = sum(s["samples"] for s in ex[0].shards("train"))
    decoder = D.SampleDecoder(cfg.model.modalities, ex)
    sample_bytes = sum(Path(p).stat().st_size for p in paths) / n

    def read():
        k = 0
        for path in paths:
            for _ in D.iter_shard(path, decoder.wanted):
                k += 1
        return k

    def decode():
        k = 0
        for path in paths:
            for raw in D.iter_shard(path, decoder.wanted):
                k += decoder(raw) is not None
        return k

    stream = iter(D.TrainStream(paths, decoder, D.Collator(cfg.model.modalities, a.batch), seed=0,
                                rank=0, streams=1, shuffle_buffer=256, segment_steps=10 ** 6, start_step=0))
    next(stream)  # steady state: the shuffle buffer is full

    def batches():
        nb = max(1, n // a.batch)
        for _ in range(nb):
            next(stream)
        return nb * a.batch

    def wds_samples():
        # webdataset's tar reader, told which members to keep exactly as ours is (by extension)
        select = lambda fname: decoder.wanted(fname.rpartition("/")[2].partition(".")[2])  # noqa: E731
        return wds.tarfile_samples([{"url": p} for p in paths], select_files=select)

    def wds_read():
        return sum(1 for _ in wds_samples())

    def wds_decode():
        return sum(decoder(raw) is not None for raw in wds_samples())

    def stock_webdataset():
        ds = wds.WebDataset(paths, shardshuffle=False, empty_check=False).decode()
        return sum(1 for _ in ds)

    rates = best_rates({"read": read, "wds_read": wds_read, "decode": decode, "wds_decode": wds_decode,
                        "batches": batches, "stock_webdataset": stock_webdataset}, a.repeats)
    result = {"sample_bytes": round(sample_bytes), "samples": n, "threads": 1,
              **{f"{k}_per_s": v for k, v in rates.items()},
              "ratios": {"read_vs_wds_read": rates["read"] / rates["wds_read"],
                         "decode_vs_wds_decode": rates["decode"] / rates["wds_decode"],
                         "decode_vs_stock_webdataset": rates["decode"] / rates["stock_webdataset"]}}

    def rounded(v):
        if isinstance(v, dict):
            return {k: rounded(x) for k, x in v.items()}
        return round(v, 2 if v < 100 else 1) if isinstance(v, float) else v

    print(json.dumps(rounded(result)))
    if tmp:
        tmp.cleanup()


if __name__ == "__main__":
    main()
