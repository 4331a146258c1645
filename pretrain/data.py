"""The training data stream: `mmu export-wds` shards (format in `mmu.shards.format`) -> fixed-shape batches
with validity masks, as a deterministic function of (seed, rank, step).

Each rank owns the shards `sorted(shards)[rank::world]`; within a rank, P = max(1, num_workers)
streams own `rank_shards[p::P]`, so no two ranks or loader workers ever read the same shard.
Global batch g of a rank comes from stream g % P. Stream p's batches are cut into segments of
`segment_steps` global steps; segment k is a fresh webdataset pipeline (deterministic shard
resampling, shuffle buffer, batching, `with_epoch`) seeded from (seed, rank, p, k) only, never
from the process id or the clock. Resuming at step s rebuilds segment s // segment_steps and
skips its first batches without decoding them (none when s is a segment boundary).
"""
from __future__ import annotations

import ast
import hashlib
import json
import random
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from mmu.hub.layout import inside
from mmu.shards.format import INDEX_JSON, parse_index

FIELDS = {"image": ("flux", "ivar", "mask"),
          "spectrum": ("flux", "ivar", "mask", "lambda"),
          "lightcurve": ("time", "band", "flux", "flux_err", "mask"),
          "scalars": ("values", "mask")}


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers, stable across processes and machines (no `hash()`)."""
    digest = hashlib.sha256(repr(tuple(int(p) for p in parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


# ---------------------------------------------------------------- exports and the manifest


class Export:
    """One `mmu export-wds` output folder and its index.

    Raises (on opening):
        FileNotFoundError: the folder has no index.json.
        ValueError: the index is not valid (`mmu.shards.format.parse_index`).
        UnsafePath: a shard the index lists lies outside the folder (an absolute name, '..', or a
            symbolic link out of it): nothing outside an export is ever opened as a shard.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        raw = (self.path / INDEX_JSON).read_bytes() if (self.path / INDEX_JSON).exists() else None
        if raw is None:
            raise FileNotFoundError(f"{self.path / INDEX_JSON}: no shard index; is {self.path} an "
                                    "`mmu export-wds` output? (set data.train / data.val)")
        self.index = parse_index(raw, self.path / INDEX_JSON)
        self.index_sha256 = hashlib.sha256(raw).hexdigest()
        self.constants = {k: np.asarray(v) for k, v in self.index.constants.items()}
        self.shard_paths = [inside(self.path, s.name, source=self.path / INDEX_JSON, entry=f"shards[{k}].name",
                                   fix="export it again with `mmu export-wds`")
                            for k, s in enumerate(self.index.shards)]

    def shards(self, split: str) -> list[dict]:
        out = [{**s.model_dump(exclude_unset=True), "path": str(path)}
               for s, path in zip(self.index.shards, self.shard_paths, strict=True) if s.shard_split == split]
        return sorted(out, key=lambda s: s["name"])

    def describe(self, split: str) -> dict:
        ix = self.index
        return {"path": str(self.path), "dataset": ix.dataset,
                "content_revision": ix.content_revision, "build_key": ix.build_key,
                "inputs_datasets": ix.inputs_datasets, "inputs_revisions": ix.inputs_revisions,
                "mock": ix.mock, "split": split, "split_hash": ix.split_hash,
                "shuffle_seed": ix.seed, "index_sha256": self.index_sha256,
                "index_parquet_sha256": ix.index_parquet_sha256,
                "shards": [{"name": s["name"], "samples": s.get("samples"), "sha256": s.get("sha256")}
                           for s in self.shards(split)]}


def open_exports(paths: list[str]) -> list[Export]:
    """Open each `mmu export-wds` output folder in `paths`.

    Args:
        paths: export folders, each holding an index.json.

    Returns:
        One `Export` per path, in order.
    """
    return [Export(p) for p in paths]


def shard_columns(exports: list[Export]) -> dict[str, dict] | None:
    """{column: spec} of the modalities listed by the exports' index.json files (a column in any of
    them counts); None when an index has no `modalities` entry (then only the batches can tell)."""
    columns: dict[str, dict] = {}
    for e in exports:
        mods = e.index.modalities
        if not isinstance(mods, dict):
            return None
        for column, spec in mods.items():
            columns.setdefault(column, spec if isinstance(spec, dict) else {})
    return columns


def split_samples(exports: list[Export], split: str) -> int:
    """Samples of `split` in the exports (from their indexes)."""
    return sum(int(s.get("samples") or 0) for e in exports for s in e.shards(split))


def _describe_columns(columns: dict[str, dict]) -> str:
    return ", ".join(f"{c} ({columns[c].get('kind', '?')})" for c in sorted(columns)) or "none"


def column_mismatch(model_cfg, exports: list[Export], setting: str) -> tuple[str | None, list[str]]:
    """Compare the config's modality columns with the ones the shards hold.

    Returns (error, warnings): an error when no pair of the config is present in the shards (a run
    would see no pair and learn nothing) or a column's kind / image bands differ, naming both sides
    and suggesting the renaming as a `model.modalities=...` override; warnings for pairs that are
    absent while others are present."""
    shard_cols = shard_columns(exports)
    if shard_cols is None:
        return None, []
    where = ", ".join(str(e.path / INDEX_JSON) for e in exports)
    mods, pairs = model_cfg.modalities, model_cfg.pair_list()
    errors = []
    for column, m in mods.items():
        spec = shard_cols.get(column)
        if spec is None:
            continue
        if spec.get("kind") not in (None, m.kind):
            errors.append(f"column {column!r} is a {spec['kind']} in the shards but a {m.kind} in the "
                          f"config (model.modalities.{column}.kind)")
        elif m.kind == "scalars" and spec.get("features") and list(spec["features"]) != list(m.features):
            errors.append(f"column {column!r} packs the catalog columns {spec['features']} in the shards; the "
                          f"config says features: {list(m.features)} (model.modalities.{column}.features)")
        elif m.kind == "image" and spec.get("bands") and len(spec["bands"]) != m.channels:
            errors.append(f"column {column!r} has {len(spec['bands'])} bands {spec['bands']} in the "
                          f"shards; the config says channels: {m.channels} "
                          f"(set model.modalities.{column}.channels={len(spec['bands'])})")
    if errors:
        return f"{setting} ({where}): " + "; ".join(errors), []
    present = [p for p in pairs if p[0] in shard_cols and p[1] in shard_cols]
    config_desc = ", ".join(f"{c} ({m.kind})" for c, m in mods.items())
    pair_desc = ", ".join(f"{a}|{b}" for a, b in pairs)
    if present:
        absent = [f"{a}|{b}" for a, b in pairs if (a, b) not in present]
        return None, ([f"{setting}: the pairs {absent} of the config are not in the shards ({where} "
                       f"list {_describe_columns(shard_cols)}); only {[f'{a}|{b}' for a, b in present]} "
                       "will be trained"] if absent else [])
    import yaml

    rename = _suggest_renaming(mods, shard_cols)
    lines = [f"{setting}: no pair of the config's modalities is in the shards, so training would see "
             "no pair and learn nothing.",
             f"  the config's columns (model.modalities): {config_desc}; pairs {pair_desc}",
             f"  the shards' columns ({where}): {_describe_columns(shard_cols)}"]
    if rename:
        lines.append("  Name the config's modalities after the shards' columns ("
                     + ", ".join(f"{a} -> {b}" for a, b in rename.items()) + "), e.g. with the override")
        override = f'    --set "{_renaming_override(mods, rename)}"'
        if model_cfg.pairs is not None:
            new_pairs = [[rename.get(a, a), rename.get(b, b)] for a, b in pairs]
            override += f' "model.pairs={yaml.safe_dump(new_pairs, default_flow_style=True).strip()}"'
        lines.append(override)
    fitting = _configs_for(shard_cols)
    if fitting:
        lines.append(f"  or a config written for these columns: {', '.join(fitting)}")
    return "\n".join(lines), []


def _suggest_renaming(mods: dict, shard_cols: dict[str, dict]) -> dict[str, str]:
    """Config column -> the first unused shard column of the same kind."""
    used = {c for c in mods if c in shard_cols}
    rename = {}
    for column, m in mods.items():
        if column in shard_cols:
            continue
        match = next((c for c, spec in shard_cols.items() if spec.get("kind") == m.kind and c not in used), None)
        if match is not None:
            rename[column] = match
            used.add(match)
    return rename


def _renaming_override(mods: dict, rename: dict[str, str]) -> str:
    import yaml

    from mmu.pretrain.config import KINDS

    renamed = {}
    for column, m in mods.items():
        name = rename.get(column, column)
        body = m.model_dump(exclude_none=True, exclude_defaults=True)
        body.pop("kind", None)
        if next((k for k in KINDS if name == k or name.endswith("_" + k)), None) != m.kind:
            body = {"kind": m.kind, **body}  # the new name does not tell the kind
        renamed[name] = body
    flow = yaml.safe_dump(renamed, default_flow_style=True, width=10 ** 6, sort_keys=False).strip()
    return f"model.modalities={flow}"


def _configs_for(shard_cols: dict[str, dict]) -> list[str]:
    """The shipped configs (pretrain/configs/) whose every pair is in the shards."""
    from mmu.pretrain.config import ConfigError, config_dir, load_config

    fitting = []
    for path in sorted(config_dir().glob("*.yaml")):
        try:
            cfg = load_config(path)
        except (ConfigError, ValueError):
            continue
        if all(a in shard_cols and b in shard_cols for a, b in cfg.model.pair_list()):
            fitting.append(f"pretrain/configs/{path.name}")
    return fitting


def training_manifest(train: list[Export], val: list[Export], train_split: str, val_split: str) -> dict:
    """What a checkpoint was trained on (datasets, content revisions, split hash, shard sha256s)."""
    return {"train": [e.describe(train_split) for e in train],
            "val": [e.describe(val_split) for e in val]}


# ---------------------------------------------------------------- reading shards


class CorruptShard(ValueError):
    """A shard's tar is damaged: truncated, or a header fails its checksum."""
    pass


def iter_shard(path: str, wanted) -> Iterator[dict]:
    """Raw samples {"__key__", "__url__", ext: bytes} of a POSIX tar, keeping only the members
    `wanted(ext)` accepts (the others are skipped without reading). Faster than tarfile for the
    many small members of a training shard; checks every header's checksum."""
    current = None
    with open(path, "rb", buffering=1 << 20) as f:
        while True:
            header = f.read(512)
            if len(header) < 512:  # a complete tar ends with zero blocks, never at a member
                raise CorruptShard(f"truncated at byte {f.tell()} (no end-of-archive marker)")
            if header == b"\0" * 512:
                break
            chksum = int(header[148:156].split(b"\0")[0].strip() or b"-1", 8)
            if chksum != sum(header) - sum(header[148:156]) + 256:
                raise CorruptShard(f"bad tar header checksum at byte {f.tell() - 512}")
            name = header[:100].split(b"\0")[0].decode()
            prefix = header[345:500].split(b"\0")[0].decode()
            if prefix:
                name = f"{prefix}/{name}"
            size = int(header[124:136].split(b"\0")[0].strip() or b"0", 8)
            padded = (size + 511) & ~511
            typeflag = header[156:157]
            if typeflag not in (b"0", b"\0"):
                f.seek(padded, 1)
                continue
            key, _, ext = name.rpartition("/")[2].partition(".")
            if wanted is not None and not wanted(ext):
                f.seek(padded, 1)
                continue
            data = f.read(padded)
            if len(data) < size:
                raise CorruptShard(f"{name}: truncated member ({len(data)} of {size} bytes)")
            if current is None or current["__key__"] != key:
                if current is not None:
                    yield current
                current = {"__key__": key, "__url__": path}
            current[ext] = data[:size]
    if current is not None:
        yield current


def _tar_samples(wanted, max_bad: int):
    """A webdataset pipeline stage: {"url"} shard dicts -> raw samples; a corrupt shard is
    skipped with a warning naming it (the samples before the damage are kept)."""

    errors = (OSError, CorruptShard, UnicodeDecodeError, ValueError)  # bound now: safe at exit

    def stage(sources):
        bad_in_a_row = 0
        for source in sources:
            url = source["url"]
            n = 0
            try:
                for sample in iter_shard(url, wanted):
                    n += 1
                    yield sample
            except errors as exn:
                warnings.warn(f"skipping corrupt shard {url} after {n} samples: {exn}", stacklevel=2)
            bad_in_a_row = 0 if n else bad_in_a_row + 1
            if bad_in_a_row >= max_bad:
                raise RuntimeError(f"{max_bad} shards in a row gave no samples (last: {url}); "
                                   "are the shards of this rank all corrupt or empty?")

    return stage


_HEADERS: dict[bytes, tuple] = {}


def load_npy(buf: bytes) -> np.ndarray:
    """A .npy file's array, zero-copy over `buf` (read-only); headers are parsed once per form."""
    if buf[:6] != b"\x93NUMPY":
        raise ValueError("not a .npy file")
    if buf[6] == 1:
        hlen, start = int.from_bytes(buf[8:10], "little"), 10
    else:
        hlen, start = int.from_bytes(buf[8:12], "little"), 12
    header = bytes(buf[start:start + hlen])
    parsed = _HEADERS.get(header)
    if parsed is None:
        d = ast.literal_eval(header.decode("latin1"))
        dtype = np.dtype(d["descr"])
        if dtype.hasobject:
            raise ValueError("object arrays are not allowed in training shards")
        parsed = (dtype, bool(d["fortran_order"]), tuple(d["shape"]), int(np.prod(d["shape"])))
        if len(_HEADERS) < 4096:
            _HEADERS[header] = parsed
    dtype, fortran, shape, count = parsed
    offset = start + hlen
    if len(buf) - offset < count * dtype.itemsize:
        raise ValueError(f"truncated .npy ({len(buf) - offset} of {count * dtype.itemsize} bytes)")
    arr = np.frombuffer(buf, dtype=dtype, count=count, offset=offset)
    return arr.reshape(shape, order="F" if fortran else "C")


# ---------------------------------------------------------------- decoding and collation


class SampleDecoder:
    """Raw sample -> {"object_id", column: {field: array} or None (modality absent)}; a sample
    with a modality half present (a damaged shard) is skipped with a warning."""

    def __init__(self, modalities: dict, exports: list[Export]):
        self.modalities = modalities
        self.constants = {str(e.path): e.constants for e in exports}
        self.wanted_ext = {"json"} | {f"{c}.{f}.npy" for c, m in modalities.items() for f in FIELDS[m.kind]}

    def wanted(self, ext: str) -> bool:
        return ext in self.wanted_ext

    def __call__(self, raw: dict) -> dict | None:
        url = raw.get("__url__", "?")
        consts = self.constants.get(str(Path(url).parent), {})
        try:
            meta = json.loads(raw["json"]) if "json" in raw else {}
            out = {"object_id": meta.get("object_id", raw["__key__"])}
            for column, m in self.modalities.items():
                arrays, missing = {}, []
                for f in FIELDS[m.kind]:
                    data = raw.get(f"{column}.{f}.npy")
                    if data is not None:
                        arrays[f] = load_npy(data)
                    else:
                        missing.append(f)
                if not arrays:
                    out[column] = None
                    continue
                for f in missing:
                    if f"{column}.{f}" in consts:
                        arrays[f] = consts[f"{column}.{f}"]
                    else:
                        raise ValueError(f"has {column} but no {column}.{f}")
                out[column] = arrays
            return out
        except (ValueError, KeyError, SyntaxError, json.JSONDecodeError) as exn:
            warnings.warn(f"{url}: skipping sample {raw.get('__key__')!r}: {exn}", stacklevel=2)
            return None


def _fit(n_src: int, n_dst: int) -> tuple[slice, slice]:
    """Centre crop (source larger) or centre pad (source smaller) along one axis."""
    if n_src >= n_dst:
        o = (n_src - n_dst) // 2
        return slice(o, o + n_dst), slice(0, n_dst)
    o = (n_dst - n_src) // 2
    return slice(0, n_src), slice(o, o + n_src)


class Collator:
    """Decoded samples -> one fixed-shape batch of `batch_size` rows (see `preprocess` for the
    layout); rows past the samples, skipped samples and absent modalities are masked out."""

    def __init__(self, modalities: dict, batch_size: int):
        self.modalities, self.batch_size = modalities, batch_size
        self.vocab = {c: {b: i + 1 for i, b in enumerate(m.bands)}
                      for c, m in modalities.items() if m.kind == "lightcurve"}

    def __call__(self, samples: list[dict | None], step: int = -1) -> dict:
        B = self.batch_size
        batch = {"valid": torch.zeros(B, dtype=torch.bool), "step": step,
                 "object_id": [""] * B}
        for column, m in self.modalities.items():
            batch[column] = getattr(self, "_" + m.kind)(column, m, samples)
        for i, s in enumerate(samples):
            if s is not None:
                batch["valid"][i] = True
                batch["object_id"][i] = s["object_id"]
        return batch

    def _alloc(self, shape: tuple, fields_f32, fields_other=()):
        out = {f: np.zeros((self.batch_size, *shape), np.float32) for f in fields_f32}
        out["mask"] = np.ones((self.batch_size, *shape), bool)
        out["present"] = np.zeros(self.batch_size, bool)
        return out

    @staticmethod
    def _tensors(out: dict) -> dict:
        return {k: torch.from_numpy(v) for k, v in out.items()}

    def _image(self, column, m, samples):
        C, S = m.channels, m.size
        out = self._alloc((C, S, S), ("flux", "ivar"))
        for i, s in enumerate(samples):
            x = None if s is None else s.get(column)
            if x is None:
                continue
            flux = x["flux"]
            if flux.ndim != 3 or flux.shape[0] != C:
                raise ValueError(f"{column}: sample {s['object_id']!r} has shape {flux.shape}; the "
                                 f"config says {C} bands (model.modalities.{column}.channels)")
            (sy, dy), (sx, dx) = _fit(flux.shape[1], S), _fit(flux.shape[2], S)
            out["flux"][i, :, dy, dx] = flux[:, sy, sx]
            out["ivar"][i, :, dy, dx] = x["ivar"][:, sy, sx]
            out["mask"][i, :, dy, dx] = x["mask"][:, sy, sx]
            out["present"][i] = True
        return self._tensors(out)

    def _spectrum(self, column, m, samples):
        L = m.length
        out = self._alloc((L,), ("flux", "ivar", "lambda"))
        for i, s in enumerate(samples):
            x = None if s is None else s.get(column)
            if x is None:
                continue
            n = min(len(x["flux"]), L)
            for f in ("flux", "ivar", "lambda"):
                out[f][i, :n] = x[f][:n]
            out["mask"][i, :n] = x["mask"][:n]
            out["lambda"][i, n:] = x["lambda"][n - 1] if n else 0.0
            out["present"][i] = True
        return self._tensors(out)

    def _scalars(self, column, m, samples):
        K = len(m.features)
        out = self._alloc((K,), ("values",))
        for i, s in enumerate(samples):
            x = None if s is None else s.get(column)
            if x is None:
                continue
            if x["values"].shape != (K,) or x["mask"].shape != (K,):
                raise ValueError(f"{column}: sample {s['object_id']!r} has {x['values'].shape} values; the "
                                 f"config lists {K} features (model.modalities.{column}.features)")
            out["values"][i] = x["values"]
            out["mask"][i] = x["mask"]
            out["present"][i] = True
        return self._tensors(out)

    def _lightcurve(self, column, m, samples):
        L = m.length
        out = self._alloc((L,), ("time", "flux", "flux_err"))
        band = np.zeros((self.batch_size, L), np.int64)
        vocab = self.vocab[column]
        for i, s in enumerate(samples):
            x = None if s is None else s.get(column)
            if x is None:
                continue
            n = min(len(x["time"]), L)
            t = np.asarray(x["time"][:n], np.float64)
            good = ~x["mask"][:n]
            t0 = t[good].min() if good.any() else (t.min() if n else 0.0)
            out["time"][i, :n] = t - t0  # float64 MJD -> float32 days since the first epoch
            out["flux"][i, :n] = x["flux"][:n]
            out["flux_err"][i, :n] = x["flux_err"][:n]
            out["mask"][i, :n] = x["mask"][:n]
            names, inverse = np.unique(x["band"][:n], return_inverse=True)
            band[i, :n] = np.array([vocab.get(str(b), 0) for b in names], np.int64)[inverse]
            out["present"][i] = True
        t = self._tensors(out)
        t["band"] = torch.from_numpy(band)
        return t


# ---------------------------------------------------------------- streams


class TrainStream(IterableDataset):
    """The infinite training batches of one rank from `start_step` on (see the module doc)."""

    def __init__(self, shards: list[str], decoder: SampleDecoder, collator: Collator, *, seed: int,
                 rank: int, streams: int, shuffle_buffer: int, segment_steps: int, start_step: int):
        super().__init__()
        self.shards, self.decoder, self.collator = shards, decoder, collator
        self.seed, self.rank, self.streams = seed, rank, streams
        self.shuffle_buffer, self.segment_steps, self.start_step = shuffle_buffer, segment_steps, start_step

    def segment(self, p: int, k: int, n_batches: int):
        seed = derive_seed(self.seed, self.rank, p, k)
        shards = self.shards[p::self.streams]
        return wds.DataPipeline(
            wds.ResampledShards(shards, seed=seed, worker_seed=lambda: 0, deterministic=True),
            _tar_samples(self.decoder.wanted, max_bad=max(10, 3 * len(shards))),
            wds.shuffle(self.shuffle_buffer, initial=self.shuffle_buffer, rng=random.Random(seed)),
            wds.batched(self.collator.batch_size, collation_fn=None, partial=False),
        ).with_epoch(n_batches)

    def __iter__(self):
        info = get_worker_info()
        w, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        if nw != self.streams:
            raise RuntimeError(f"the stream was defined for {self.streams} loader workers, "
                               f"got {nw}")
        P, L, s0 = self.streams, self.segment_steps, self.start_step
        g0 = s0 + w  # first global batch of this worker; then every P-th
        p = g0 % P
        k = g0 // L
        while True:
            first = k * L + (p - k * L) % P
            steps = range(first, (k + 1) * L, P)
            if len(steps):
                it = iter(self.segment(p, k, len(steps)))
                for g in steps:
                    raw = next(it)
                    if g >= g0:
                        yield self.collator([self.decoder(r) for r in raw], step=g)
            k += 1


def rank_shards(exports: list[Export], split: str, rank: int, world: int, streams: int) -> list[str]:
    """The shard files of `split` that rank `rank` reads (every `world`-th, starting at `rank`).

    Args:
        exports: the opened exports.
        split: the split whose shards to take.
        rank: this process's rank.
        world: the number of ranks.
        streams: loader streams per rank (`num_workers`, at least 1).

    Returns:
        Paths of this rank's shards.

    Raises:
        ValueError: the split has fewer than `world * streams` shards, so some stream would have none.
    """
    shards = [s["path"] for e in exports for s in e.shards(split)]
    need = world * streams
    if len(shards) < need:
        raise ValueError(f"split {split!r} has {len(shards)} shard(s) in {[str(e.path) for e in exports]}; "
                         f"{world} rank(s) x {streams} loader stream(s) need at least {need} so that "
                         "none reads another's shard: export smaller shards or use fewer workers")
    return shards[rank::world]


def train_loader(cfg, exports: list[Export], rank: int, world: int, start_step: int,
                 pin_memory: bool = False) -> DataLoader:
    """The DataLoader of training batches for one rank, starting at step `start_step`.

    The stream is deterministic in (seed, rank, stream, segment), so a run resumed at `start_step`
    sees the same batches it would have seen.

    Args:
        cfg: the `PretrainConfig`.
        exports: the training exports.
        rank: this process's rank.
        world: the number of ranks.
        start_step: the global step of the first batch.
        pin_memory: pin batch memory (for GPU training).

    Returns:
        A `DataLoader` yielding collated batches (its own batching is off).

    Raises:
        ValueError: too few shards for `world` ranks times the loader streams.
    """
    d = cfg.data
    streams = max(1, d.num_workers)
    mods = cfg.model.modalities
    ds = TrainStream(rank_shards(exports, d.train_split, rank, world, streams),
                     SampleDecoder(mods, exports), Collator(mods, d.batch_size), seed=cfg.seed, rank=rank,
                     streams=streams, shuffle_buffer=d.shuffle_buffer, segment_steps=d.segment_steps,
                     start_step=start_step)
    return DataLoader(ds, batch_size=None, num_workers=d.num_workers, pin_memory=pin_memory,
                      prefetch_factor=4 if d.num_workers else None,
                      generator=torch.Generator().manual_seed(0),  # leave the global RNG alone
                      persistent_workers=False)


def val_batches(cfg, exports: list[Export], rank: int, world: int):
    """The same fixed number of validation batches on every rank (from the shard index), so the
    gathers of the validation loss always pair up; short ranks get fully masked batches."""
    d = cfg.data
    shards = [s for e in exports for s in e.shards(d.val_split)]
    counts = [min(d.val_max_samples, sum(s.get("samples", 0) for s in shards[r::world]))
              for r in range(world)]
    n_batches = max(1, max(-(-c // d.batch_size) for c in counts))
    mods = cfg.model.modalities
    decoder, collator = SampleDecoder(mods, exports), Collator(mods, d.batch_size)
    stage = _tar_samples(decoder.wanted, max_bad=10 ** 9)
    samples = (decoder(r) for r in stage({"url": s["path"]} for s in shards[rank::world]))
    taken = 0
    for b in range(n_batches):
        chunk = []
        while len(chunk) < d.batch_size and taken < counts[rank]:
            s = next(samples, StopIteration)
            if s is StopIteration:
                taken = counts[rank]
                break
            chunk.append(s)
            taken += 1
        yield collator(chunk, step=b)
