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
`{"spectrum.lambda": [...]}`); `index.parquet` holds every sample's object_id, ra, dec, key, shard
and position, in shard order, in row groups of at most 131,072 rows (the benchmark measures
train/test proximity from it a row group at a time).
"""
from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

INDEX_JSON = "index.json"
INDEX_PARQUET = "index.parquet"
FORMAT_VERSION = 1
_KEY_RE = re.compile(r"[^A-Za-z0-9_-]")


def sample_key(object_id: str) -> str:
    """The WebDataset key of an object: every character outside [A-Za-z0-9_-] becomes ``_``.

    Example:
        >>> sample_key("0266-51602-0001.a")
        '0266-51602-0001_a'
    """
    return _KEY_RE.sub("_", object_id)


def shard_name(split: str, index: int) -> str:
    """The file name of shard `index` of `split`.

    Example:
        >>> shard_name("train", 3)
        'shard-train-000003.tar'
    """
    return f"shard-{split}-{index:06d}.tar"


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
    return buf.getvalue()


def encode_sample(meta: dict, arrays: dict[str, np.ndarray]) -> dict[str, bytes]:
    """The files of one sample, without the key.

    Args:
        meta: scalar metadata (object_id, ra, dec, split, survey columns).
        arrays: ``{"<column>.<field>": array}``, one `.npy` file each.

    Returns:
        ``{"json": bytes, "<column>.<field>.npy": bytes, ...}``.

    Raises:
        TypeError: a metadata value that JSON cannot hold.

    Example:
        >>> sorted(encode_sample({"object_id": "a"}, {"image.flux": np.zeros(2)}))
        ['image.flux.npy', 'json']
    """
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
    """Write (key, files) samples to the shard `path` with `webdataset.TarWriter`, atomically
    (`mmu.hub.layout.atomic_path`), with fixed tar headers (mtime 0, uid/gid 0, no user or
    group name, mode 0644) so the same samples give the same bytes.

    Members are named `<key>.<ext>`; within a sample TarWriter writes them in sorted order.

    Args:
        path: the shard file to write (its folder is created if missing).
        samples: (key, {ext: bytes}) pairs, e.g. `(sample_key(id), encode_sample(meta, arrays))`.

    Returns:
        {"name", "samples", "bytes", "sha256"} of the written shard (an `index.json` entry).

    Raises:
        ValueError: a sample's key is empty or holds a dot, or a file is not bytes.

    Example:
        >>> write_tar(out / shard_name("train", 0), [("obj1", {"json": b"{}"})])   # doctest: +SKIP
        {'name': 'shard-train-000000.tar', 'samples': 1, 'bytes': 2048, 'sha256': '...'}
    """
    import webdataset as wds

    from mmu.hub.layout import atomic_path

    path = Path(path)
    n = 0
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as raw:
            writer = wds.TarWriter(raw, user="", group="", mode=0o644, mtime=0, encoder=False,
                                   format=tarfile.USTAR_FORMAT)
            try:
                for key, files in samples:
                    if not key or "." in key:
                        raise ValueError(f"{path.name}: sample key {key!r} must be non-empty and "
                                         "hold no dot (use sample_key(object_id))")
                    writer.write({"__key__": key, **files})
                    n += 1
            finally:
                writer.close()
        digest, size = file_sha256(tmp), tmp.stat().st_size
    return {"name": path.name, "samples": n, "bytes": size, "sha256": digest}


def file_sha256(path: Path) -> str:
    """The sha256 of a file, read 4 MiB at a time (a shard's, index.parquet's)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def decode_sample(sample: dict) -> dict:
    """Decode one raw WebDataset sample.

    Args:
        sample: ``{"__key__", "json": bytes, "image.flux.npy": bytes, ...}`` (values may be
            already decoded).

    Returns:
        ``{"__key__", "meta": dict, "image": {"flux": ndarray, ...}, ...}``.

    Example:
        >>> decode_sample({"__key__": "a", **encode_sample({"object_id": "a"}, {"s.flux": np.ones(2)})})["s"]["flux"]
        array([1., 1.])
    """
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


class ShardEntry(BaseModel):
    """One tar shard listed in index.json (what `write_tar` returns)."""

    model_config = ConfigDict(extra="forbid")

    name: str  # file name, `shard-<split>-<n>.tar`
    samples: int
    bytes: int | None = None
    sha256: str | None = None
    split: str | None = None  # synthetic exports mix splits; else the name's middle part

    @property
    def shard_split(self) -> str:
        """The split the shard belongs to (its `split`, else the one in its name)."""
        return self.split or self.name.split("-")[1]


class ShardIndex(BaseModel):
    """`index.json` of an export folder: its shards, where the rows came from, and the constants.

    `mmu export-wds` fills every field; synthetic and benchmark exports leave the provenance
    fields unset. An index written before `format_version` existed is read as version 1.

    Example:
        >>> ix = read_index("shards/train")                    # doctest: +SKIP
        >>> ix.samples, ix.shards[0].name, sorted(ix.constants)  # doctest: +SKIP
    """

    model_config = ConfigDict(extra="forbid")

    format_version: int = FORMAT_VERSION
    dataset: str
    content_revision: str
    shards: list[ShardEntry]
    build_key: str | None = None
    split: str | None = None
    split_hash: str | None = None
    seed: int | None = None
    samples: int | None = None
    shard_multiple: int | None = None
    modalities: dict[str, dict[str, Any]] | None = None
    constants: dict[str, Any] = Field(default_factory=dict)
    mock: bool | None = None
    inputs_datasets: list[str] | None = None
    inputs_revisions: list[str] | None = None
    index_parquet_sha256: str | None = None
    seconds: float | None = None

    def to_json(self) -> dict:
        """JSON data with exactly the keys that were set (plus ``format_version``)."""
        data = self.model_dump(mode="json", exclude_unset=True)
        data["shards"] = [s.model_dump(mode="json", exclude_unset=True) for s in self.shards]
        data["format_version"] = self.format_version
        return data


def parse_index(data: bytes | str | dict, source: str | Path = INDEX_JSON) -> ShardIndex:
    """Validate index.json content into a `ShardIndex`.

    Args:
        data: the file's bytes or text, or the parsed object.
        source: where it came from, for error messages.

    Returns:
        The typed index (a missing ``format_version`` reads as 1).

    Raises:
        ValueError: not JSON, a newer format version than this code reads, or a field missing or
            of the wrong type (the message names the file and the field).
        UnsafePath: a shard name that is not a plain file name of the export folder (a path,
            ``..``): a reader never opens a file outside the export (`mmu.hub.layout.check_name`).
    """
    if not isinstance(data, dict):
        try:
            data = json.loads(data)
        except json.JSONDecodeError as e:
            raise ValueError(f"{source}: not JSON ({e})") from None
        if not isinstance(data, dict):
            raise ValueError(f"{source}: a shard index holds a JSON object, got {type(data).__name__}")
    from mmu.hub.layout import UnsafePath, check_name
    from mmu.hub.manifest import validate_versioned

    index = validate_versioned(ShardIndex, data, source=source, what="shard index", current=FORMAT_VERSION,
                               hint="upgrade mmu or re-export")
    for k, shard in enumerate(index.shards):
        try:
            check_name(shard.name, "shard name")
        except UnsafePath:
            raise UnsafePath(f"{source}: shards[{k}].name {shard.name!r} is not a file name in the export folder "
                             "(letters, digits, '.', '_' and '-'; no '/', no '..'; was the index altered?); "
                             "export it again with `mmu export-wds`") from None
    return index


def read_index(directory: str | Path) -> ShardIndex:
    """The typed `index.json` of an export folder.

    Args:
        directory: an `mmu export-wds` output folder.

    Returns:
        Its `ShardIndex`.

    Raises:
        FileNotFoundError: the folder has no index.json.
        ValueError: the index is not valid (see `parse_index`).

    Example:
        >>> read_index("shards/train").constants["desi_spectrum.lambda"][:2]   # doctest: +SKIP
    """
    path = Path(directory) / INDEX_JSON
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no shard index; is {directory} an `mmu export-wds` output?") from None
    return parse_index(raw, path)


def write_index(directory: str | Path, index: ShardIndex) -> Path:
    """Write `directory/index.json` atomically (the one place an index is written).

    Args:
        directory: the export folder.
        index: what to write.

    Returns:
        The path written.
    """
    from mmu.hub.layout import atomic_write_json

    path = Path(directory) / INDEX_JSON
    atomic_write_json(path, index.to_json())
    return path


def iter_tar(path: str | Path) -> Iterator[dict]:
    """Samples of one shard, grouped by key, as raw dicts (for tools and tests; the trainer
    streams with webdataset).

    Args:
        path: a shard tar.

    Yields:
        ``{"__key__": key, "<ext>": bytes, ...}`` per sample, in file order.
    """
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
