"""Hashes that identify inputs, builds and content.

- `file_sha256`: raw inputs (cached by path, size and mtime so reruns do not reread terabytes).
- `row_digests`: one sha256 per row over its values, independent of file layout and row order,
  so the *content revision* of a dataset (sorted object ids + row digests) survives a change of
  partitioning, compression or creation dates, and changes when any value changes.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa

CHUNK = 1 << 22


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file's bytes (hex), read in 4 MiB blocks.

    Example:
        >>> file_sha256("raw/desi/coadd-main-dark-1000.fits")[:12]   # doctest: +SKIP
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def canonical_json(obj) -> bytes:
    """`obj` as JSON with sorted keys and no spaces, the form `sha256_json` hashes.

    Example:
        >>> canonical_json({"b": 1, "a": [1, 2]})
        b'{"a":[1,2],"b":1}'
    """
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()


def sha256_json(obj) -> str:
    """sha256 (hex) of `canonical_json(obj)`: a key that does not depend on dict order.

    Example:
        >>> sha256_json({"a": 1}) == sha256_json({"a": 1})
        True
    """
    return hashlib.sha256(canonical_json(obj)).hexdigest()


class ChecksumCache:
    """sha256 of files keyed by (path, size, mtime_ns), persisted as JSON.

    Reading needs no write access (a missing or unreadable file is an empty cache); `save` writes
    only when `put` changed something, so an up-to-date check writes nothing.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.dirty = False
        try:
            self.entries = json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError):
            self.entries = {}

    def key(self, path: str) -> str:
        st = os.stat(path)
        return f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}"

    def get(self, path: str) -> str | None:
        return self.entries.get(self.key(path))

    def put(self, path: str, digest: str) -> None:
        key = self.key(path)
        if self.entries.get(key) != digest:
            self.entries[key] = digest
            self.dirty = True

    def save(self) -> None:
        """Write the cache atomically, if anything changed since it was read."""
        if not self.dirty:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(self.entries))
        os.replace(tmp, self.path)
        self.dirty = False


def _leaves(arr: pa.Array, offsets: np.ndarray, out: list):
    """Collect (values, per-row offsets) for every leaf of a (nested) column, nulls included."""
    validity = np.asarray(arr.is_valid(), dtype=np.uint8)
    out.append((validity, offsets))
    t = arr.type
    if pa.types.is_struct(t):
        for child in arr.flatten():
            _leaves(child, offsets, out)
    elif pa.types.is_fixed_size_list(t):
        _leaves(_fsl_values(arr), offsets * t.list_size, out)
    elif pa.types.is_list(t) or pa.types.is_large_list(t):
        child = np.asarray(arr.offsets, dtype=np.int64)
        values = arr.values.slice(child[0], child[-1] - child[0])
        _leaves(values, (child - child[0])[offsets], out)
    elif pa.types.is_string(t) or pa.types.is_large_string(t):
        values = [v.encode() if v is not None else b"" for v in arr.to_pylist()]
        out.append((values, offsets))
    else:
        values = arr.to_numpy(zero_copy_only=False)
        if values.dtype == object:
            values = np.array([0 if v is None else v for v in values])
        out.append((np.ascontiguousarray(values), offsets))


def _fsl_values(arr: pa.FixedSizeListArray) -> pa.Array:
    # flatten() drops null list slots; keep every slot so offsets stay row-aligned
    k = arr.type.list_size
    return arr.values.slice(arr.offset * k, len(arr) * k)


def row_digests(table: pa.Table, exclude: tuple[str, ...] = ("_healpix_29",)) -> list[bytes]:
    """sha256 of each row's values, in column-name order.

    Args:
        table: the rows.
        exclude: columns left out (HATS's spatial index, added at partitioning).

    Returns:
        One 32-byte digest per row; equal values give equal digests whatever the chunking.
    """
    n = table.num_rows
    leaves: list = []
    base = np.arange(n + 1, dtype=np.int64)
    for name in sorted(c for c in table.column_names if c not in exclude):
        col = table.column(name).combine_chunks()
        leaves.append(([name.encode()] * n, base))  # column boundary marker
        _leaves(col, base, leaves)
    digests = []
    for i in range(n):
        h = hashlib.sha256()
        for values, off in leaves:
            s, e = off[i], off[i + 1]
            if isinstance(values, list):
                h.update(b"\x1f".join(values[s:e]) + b"\x1e")
            else:
                h.update(values[s:e].tobytes())
            h.update(int(e - s).to_bytes(8, "little"))
        digests.append(h.digest())
    return digests


def content_revision(object_ids: list[str], digests: list[bytes]) -> str:
    """Order-independent hash of a dataset's content: rows sorted by object id.

    Args:
        object_ids: every row's object id.
        digests: the rows' `row_digests`, in the same order.

    Returns:
        The hex sha256 that build.json records as `content_revision` (and tasks pin).
    """
    order = sorted(range(len(object_ids)), key=object_ids.__getitem__)
    h = hashlib.sha256()
    for i in order:
        h.update(object_ids[i].encode() + b"\x00" + digests[i])
    return h.hexdigest()


class SortedRevision:
    """`content_revision` fed in object-id order, one batch at a time, in bounded memory.

    The same value as `content_revision` over all the rows: sha256 over ``object_id + b"\\0" +
    digest`` for every row in object-id order (Python str order, which is UTF-8 byte order, the
    order Arrow sorts strings in). The caller feeds batches whose ids ascend within and across
    batches; `update` checks that (a repeated or out-of-order id raises ValueError), so a wrong
    order cannot give a wrong revision silently. Each batch is hashed with one sha256 update over
    Arrow's joined buffer (no Python loop over rows).

    Example:
        >>> r = SortedRevision()
        >>> r.update(pa.array(["a", "b"]), pa.array([bytes(32), bytes(32)], pa.binary(32)))
        >>> r.hexdigest() == content_revision(["b", "a"], [bytes(32), bytes(32)])
        True
    """

    def __init__(self):
        self._h = hashlib.sha256()
        self._last: bytes | None = None
        self.rows = 0

    def update(self, object_ids: pa.Array, digests: pa.Array) -> None:
        """Add rows already sorted by object id (ids: string, digests: 32-byte binary)."""
        import pyarrow.compute as pc

        if isinstance(object_ids, pa.ChunkedArray):
            object_ids = object_ids.combine_chunks()
        if isinstance(digests, pa.ChunkedArray):
            digests = digests.combine_chunks()
        n = len(object_ids)
        if n == 0:
            return
        if len(digests) != n or object_ids.null_count or digests.null_count:
            raise ValueError(f"content revision: {n} object ids with {len(digests)} digests "
                             f"({object_ids.null_count} null ids, {digests.null_count} null digests)")
        ids = object_ids.cast(pa.binary())
        first, last = ids[0].as_py(), ids[n - 1].as_py()
        ascending = n < 2 or pc.all(pc.less(ids.slice(0, n - 1), ids.slice(1))).as_py()
        if not ascending or (self._last is not None and first <= self._last):
            raise ValueError(f"content revision: object ids are not strictly ascending near {first!r} "
                             f"(previous batch ended at {self._last!r})")
        joined = pc.binary_join_element_wise(ids, digests.cast(pa.binary()), b"\x00")
        offsets = np.frombuffer(joined.buffers()[1], np.int32, n + 1, joined.offset * 4)
        self._h.update(memoryview(joined.buffers()[2])[offsets[0]:offsets[-1]])
        self._last = last
        self.rows += n

    def hexdigest(self) -> str:
        return self._h.hexdigest()
