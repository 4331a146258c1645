"""The hub on disk: where a dataset lives, its manifest, atomic writes and replacement.

    HUB/<name>/README.md              dataset card (HF datasets configs + features)
    HUB/<name>/collection.properties  HATS collection
    HUB/<name>/<name>/                HATS catalog (Norder=/Dir=/Npix= Parquet)
    HUB/<name>/<name>_<r>arcs/        margin cache
    HUB/<name>/build.json             manifest
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mmu.hub.manifest import MANIFEST, BuildManifest, load_manifest_file

STAGING = ".mmu-staging"


class NotBuilt(FileNotFoundError):
    """A dataset that is not built in the hub (no HUB/NAME/build.json)."""


def dataset_dir(hub: str | Path, name: str) -> Path:
    """The folder of dataset `name` in `hub` (the HATS collection root: card, build.json, catalog).

    Example:
        >>> dataset_dir("hub", "desi_dr1")
        PosixPath('hub/desi_dr1')
    """
    return Path(hub) / name


def read_manifest(hub: str | Path, name: str) -> BuildManifest:
    """The manifest of dataset `name` in `hub` (HUB/NAME/build.json), typed.

    Args:
        hub: the hub directory.
        name: the dataset's name.

    Returns:
        The `mmu.hub.manifest.BuildManifest`; a hub built before build.json carried a
        ``format_version`` reads as version 1.

    Raises:
        NotBuilt: the dataset is not built in `hub` (the message says how to build it).
        ValueError: the build.json is not valid (the message names the file and field).

    Example:
        >>> read_manifest("hub", "desi_dr1").rows.total          # doctest: +SKIP
        1200
    """
    path = dataset_dir(hub, name) / MANIFEST
    try:
        return load_manifest_file(path)
    except FileNotFoundError:
        raise NotBuilt(not_built_message(hub, name)) from None


def built_datasets(hub: str | Path) -> list[str]:
    """The names of the datasets built in `hub` (folders holding a build.json), sorted."""
    hub = Path(hub)
    if not hub.is_dir():
        return []
    return sorted(p.parent.name for p in hub.glob(f"*/{MANIFEST}"))


def not_built_message(hub: str | Path, name: str) -> str:
    """Why `name` cannot be read from `hub`: the nearest built name, what the hub holds, how to
    make a dataset (a survey build or a cross-match: the name alone cannot tell which)."""
    import difflib

    built = built_datasets(hub)
    near = difflib.get_close_matches(name, built, n=1, cutoff=0.6)
    text = f"dataset {name!r} is not built in hub {hub}" + (f"; did you mean {near[0]!r}?" if near else ".")
    text += (f" The hub holds: {', '.join(built)}." if built else " The hub holds no built datasets.")
    if not near:
        text += (f" Make it with `mmu build {name} --raw RAW --hub {hub}` (a survey dataset) or "
                 f"`mmu crossmatch A B --hub {hub} --name {name}` (a paired catalog).")
    return text


def catalog_dir(hub: str | Path, name: str) -> Path:
    """The HATS catalog inside dataset `name`'s collection (``HUB/NAME/NAME``).

    Example:
        >>> catalog_dir("hub", "desi_dr1")
        PosixPath('hub/desi_dr1/desi_dr1')
    """
    return dataset_dir(hub, name) / name


@contextmanager
def atomic_path(path: str | Path, *, fsync: bool = False) -> Iterator[Path]:
    """A temporary path beside `path` to write to; on a clean exit it is renamed onto `path`.

    The one atomic-write helper of the project: a reader sees the old file or the whole new
    one, never a part. The temporary name is hidden (`.NAME.tmp-XXXXXXXX`, which `mmu push`
    never uploads) and removed if the block raises.

    Args:
        path: the file to write; its folder is created if missing.
        fsync: flush the file to disk before the rename (for checkpoints, which must survive
            a power cut, not only a killed process).

    Returns:
        A context manager yielding the temporary `Path` to write.

    Example:
        >>> with atomic_path(out / "part.parquet") as tmp:   # doctest: +SKIP
        ...     pq.write_table(table, tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
        if fsync:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: str | Path, data: bytes | str, *, fsync: bool = False) -> Path:
    """Write `data` (bytes, or text as UTF-8) to `path` atomically (see `atomic_path`).

    Args:
        path: the file to write; its folder is created if missing.
        data: the whole content.
        fsync: flush to disk before the rename.

    Returns:
        `path`, as a `Path`.

    Raises:
        TypeError: if `data` is neither bytes nor str.

    Example:
        >>> atomic_write(tmp_path / "notes.txt", "done\n")   # doctest: +SKIP
    """
    if isinstance(data, str):
        data = data.encode()
    elif not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"atomic_write({path}): data must be bytes or str, not {type(data).__name__}")
    with atomic_path(path, fsync=fsync) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> None:
    """`atomic_write` for text (UTF-8); kept for the callers that write text."""
    atomic_write(path, text)


def atomic_write_json(path: str | Path, obj) -> None:
    """`obj` as indented JSON with sorted keys (values JSON cannot hold become strings),
    written with `atomic_write`."""
    atomic_write(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def replace_dir(new: Path, target: Path) -> None:
    """Move a finished directory into place; an existing target is swapped out, then removed."""
    target = Path(target)
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(target, old)
    os.replace(new, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
