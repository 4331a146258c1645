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
import re
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mmu.hub.manifest import MANIFEST, BuildManifest, load_manifest_file

STAGING = ".mmu-staging"
PLAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")


class NotBuilt(FileNotFoundError):
    """A dataset that is not built in the hub (no HUB/NAME/build.json)."""


class UnsafePath(ValueError):
    """A name that is not a plain name (a path, '..', an absolute name), or a file named by an
    index or manifest that would lie outside its folder. Refused input: the CLI exits 2."""


def check_name(name: str, what: str = "dataset name") -> str:
    """`name` if it is a plain name, usable as one path component: letters, digits, '.', '_' and
    '-', at most 80, starting with a letter or digit, no '..'. The one check of every name that
    becomes a file or folder (a dataset in a hub, a shard in an export, a model or task in results).

    Args:
        name: the name to check.
        what: what the name is, for the message ("dataset name", "model name", ...).

    Returns:
        `name` unchanged.

    Raises:
        UnsafePath: any other name; a path (``../hub0/x``, ``/data/hub/x``, ``hub/x``) is told to
            pass the last part as the name and the rest as the hub.

    Example:
        >>> check_name("desi_dr1")
        'desi_dr1'
        >>> check_name("../hub0/x")  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        mmu.hub.layout.UnsafePath: dataset name '../hub0/x' is a path, not a name: ...
    """
    if isinstance(name, str) and PLAIN_NAME.match(name) and ".." not in name:
        return name
    if not (isinstance(name, str) and ("/" in name or "\\" in name or name in (".", ".."))):
        raise UnsafePath(f"{what} {name!r} is not allowed: use letters, digits, '.', '_' and '-' "
                         "(at most 80, starting with a letter or digit, no '..')")
    message = f"{what} {name!r} is a path, not a name"
    if not what.startswith("dataset"):
        raise UnsafePath(f"{message}: give one plain name (no '/', no '..')")
    last, parent = Path(name).name, Path(name).parent
    if PLAIN_NAME.match(last) and ".." not in last:
        raise UnsafePath(f"{message}: name a dataset by its folder in the hub, e.g. `{last} --hub {parent}`")
    raise UnsafePath(f"{message}: name a dataset by its folder in the hub given with --hub")


def inside(folder: str | Path, name: str, *, source: str | Path, entry: str,
           fix: str = "write it again") -> Path:
    """``folder / name`` for a file that an index or manifest (`source`) names relative to `folder`,
    refused if it would lie outside `folder`: an absolute name, a ``..`` part, or a symlink (of the
    name or any folder on its way) that resolves out of `folder`.

    Args:
        folder: the folder the file must stay in (an export folder, a dataset's collection).
        name: the relative name as the index gives it.
        source: the index or manifest file that names it, for the message.
        entry: which entry of `source` it is, e.g. ``shards[3].name``.
        fix: what to do about it, for the message (e.g. "re-export it with `mmu export-wds`").

    Returns:
        ``Path(folder) / name`` (not resolved: messages keep the user's spelling).

    Raises:
        UnsafePath: naming `source`, the entry, the name and where it leads.

    Example:
        >>> inside("shards/train", "shard-train-000000.tar", source="shards/train/index.json",
        ...        entry="shards[0].name")
        PosixPath('shards/train/shard-train-000000.tar')
    """
    folder = Path(folder)
    why = None
    if not isinstance(name, str) or "\0" in name or not Path(name).parts:
        why = "is not a file name"
    elif os.path.isabs(name):
        why = "is an absolute path"
    elif ".." in Path(name).parts:
        why = "climbs out with '..'"
    else:
        real = (folder / name).resolve()
        if folder.resolve() not in real.parents:
            why = f"resolves to {real} (through a symbolic link)"
    if why:
        raise UnsafePath(f"{source}: {entry} {name!r} {why}: every file it names must lie inside {folder} "
                         f"(was it altered?); {fix}")
    return folder / name


def dataset_dir(hub: str | Path, name: str) -> Path:
    """The folder of dataset `name` in `hub` (the HATS collection root: card, build.json, catalog).

    Raises:
        UnsafePath: `name` is not a plain name (`check_name`): a path never reads outside `hub`.

    Example:
        >>> dataset_dir("hub", "desi_dr1")
        PosixPath('hub/desi_dr1')
    """
    return Path(hub) / check_name(name)


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
