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
from pathlib import Path

MANIFEST = "build.json"
STAGING = ".mmu-staging"


class NotBuilt(FileNotFoundError):
    pass


def dataset_dir(hub: str | Path, name: str) -> Path:
    return Path(hub) / name


def read_manifest(hub: str | Path, name: str) -> dict:
    path = dataset_dir(hub, name) / MANIFEST
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise NotBuilt(f"dataset {name!r} is not built in hub {hub} (no {path}); "
                       f"run `mmu build {name} --raw RAW --hub {hub}` first") from None


def catalog_dir(hub: str | Path, name: str) -> Path:
    return dataset_dir(hub, name) / name


def atomic_write_text(path: Path, text: str) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.write_text(text)
    os.replace(tmp, path)


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


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
