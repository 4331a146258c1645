"""The WebDataset training-shard format: what `mmu export-wds` writes and the trainer reads.

A shard is a POSIX tar of samples. One sample = the files sharing a key:

    <key>.json                 metadata: object_id, ra, dec, split, survey columns (scalars only)
    <key>.<column>.<field>.npy one array per modality field, e.g. `image.flux.npy`,
                               `desi_spectrum.ivar.npy`, `lightcurve.band.npy` (unicode array)

`<key>` is the object id with every character outside [A-Za-z0-9_-] replaced by `_` (a dot
would end the key); the exact id is in the JSON. A sample lacking a modality (an unmatched
object kept with `--keep-unmatched`) has no files for it: the trainer masks that modality.

Next to the shards, `index.json` lists every shard (name, samples, bytes, sha256), the source
dataset and its content revision, the split, the shuffle seed, the modality specs, and the
per-dataset constants left out of every sample (e.g. a fixed wavelength grid
`{"spectrum.lambda": [...]}`); `index.parquet` holds every sample's object_id, ra, dec, shard
and position (the benchmark measures train/test proximity from it).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile
import uuid
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

INDEX_JSON = "index.json"
INDEX_PARQUET = "index.parquet"
FORMAT_VERSION = 1
_KEY_RE = re.compile(r"[^A-Za-z0-9_-]")


def sample_key(object_id: str) -> str:
    return _KEY_RE.sub("_", object_id)


def shard_name(split: str, index: int) -> str:
    return f"shard-{split}-{index:06d}.tar"


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
    return buf.getvalue()


def encode_sample(meta: dict, arrays: dict[str, np.ndarray]) -> dict[str, bytes]:
    """Files of one sample: {"json": ..., "image.flux.npy": ...} (without the key)."""
    files = {"json": json.dumps(meta, sort_keys=True, default=_json_default).encode()}
    for name, arr in arrays.items():
        files[f"{name}.npy"] = _npy_bytes(arr)
    return files


def _json_default(v):
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    if isinstance(v, (np.bool_,)):
        return bool(v)
    if isinstance(v, np.ndarray):
        return v.tolist()
    raise TypeError(f"cannot store {type(v).__name__} in sample metadata")


def write_tar(path: Path, samples: Iterable[tuple[str, dict[str, bytes]]]) -> dict:
    """Write (key, files) samples to `path` atomically (temporary name, then rename), with
    fixed tar headers (mtime 0, uid 0) so the same samples give the same bytes."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    n = 0
    h = hashlib.sha256()
    with open(tmp, "wb") as raw:
        with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for key, files in samples:
                for ext, data in files.items():
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(data)
                    info.mtime = 0
                    info.mode = 0o644
                    tar.addfile(info, io.BytesIO(data))
                n += 1
    with open(tmp, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    size = tmp.stat().st_size
    os.replace(tmp, path)
    return {"name": path.name, "samples": n, "bytes": size, "sha256": h.hexdigest()}


def decode_sample(sample: dict) -> dict:
    """A raw webdataset sample ({"__key__", "json": bytes, "image.flux.npy": bytes, ...}) ->
    {"__key__", "meta": dict, "image": {"flux": ndarray, ...}, ...}."""
    out: dict = {"__key__": sample.get("__key__")}
    for name, data in sample.items():
        if name.startswith("__"):
            continue
        if name == "json":
            out["meta"] = json.loads(data) if isinstance(data, (bytes, str)) else data
        elif name.endswith(".npy"):
            column, _, field = name[:-4].rpartition(".")
            arr = data if isinstance(data, np.ndarray) else np.load(io.BytesIO(data), allow_pickle=False)
            out.setdefault(column, {})[field] = arr
    return out


def read_index(directory: str | Path) -> dict:
    path = Path(directory) / INDEX_JSON
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no shard index; is {directory} an `mmu export-wds` output?") from None


def iter_tar(path: str | Path) -> Iterator[dict]:
    """Samples of one shard, grouped by key, as raw dicts (for tools and tests; the trainer
    streams with webdataset)."""
    current: dict | None = None
    with tarfile.open(path, "r") as tar:
        for member in tar:
            if not member.isfile():
                continue
            key, _, ext = member.name.partition(".")
            data = tar.extractfile(member).read()
            if current is None or current["__key__"] != key:
                if current is not None:
                    yield current
                current = {"__key__": key}
            current[ext] = data
    if current is not None:
        yield current
