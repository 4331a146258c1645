"""Checkpoints: written atomically (temporary file, fsync, rename), named with their sha256 prefix
(`step00001000-3f2a9c1b7d04.pt`), loaded with `weights_only=True`, each carrying the resolved
config, the training manifest and the model signature, so a checkpoint from another model is
refused with a message rather than half-loaded."""
from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
import warnings
from pathlib import Path

import torch

from mmu.hub.layout import atomic_write

FORMAT = "mmu-pretrain-checkpoint/1"
LATEST = "latest.json"
_NAME_RE = re.compile(r"^step(\d{8})-([0-9a-f]{12})\.pt$")


class CheckpointError(ValueError):
    """A checkpoint is unreadable, damaged, or belongs to another model."""


def file_sha256(path: Path) -> str:
    """The sha256 hex digest of a file's content, read in 4 MiB blocks.

    Args:
        path: the file.

    Returns:
        The 64-character hex digest.
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def save_checkpoint(directory: str | Path, state: dict, step: int, keep: int = 3) -> Path:
    """Write `state` as checkpoint `step`, point latest.json at it, keep the newest `keep`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".step{step:08d}.tmp-{uuid.uuid4().hex[:8]}"
    with open(tmp, "wb") as f:
        torch.save({"format": FORMAT, **state}, f)
        f.flush()
        os.fsync(f.fileno())
    sha = file_sha256(tmp)
    final = directory / f"step{step:08d}-{sha[:12]}.pt"
    os.replace(tmp, final)
    atomic_write(directory / LATEST, json.dumps(
        {"file": final.name, "sha256": sha, "step": step}).encode(), fsync=True)
    for old in list_checkpoints(directory)[:-keep]:
        if old != final:
            old.unlink(missing_ok=True)
    return final


def list_checkpoints(directory: str | Path) -> list[Path]:
    """Checkpoints in `directory`, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted((p for p in directory.iterdir() if _NAME_RE.match(p.name)),
                  key=lambda p: int(_NAME_RE.match(p.name).group(1)))


def verify(path: Path) -> bool:
    """Whether checkpoint `path` is named stepNNNNNNNN-<sha>.pt and its content matches that sha256 prefix.

    Args:
        path: the checkpoint file.

    Returns:
        True when the name is valid and the content's sha256 starts with the prefix in it.
    """
    m = _NAME_RE.match(path.name)
    return bool(m) and file_sha256(path).startswith(m.group(2))


def find_latest(directory: str | Path) -> Path | None:
    """The newest checkpoint whose content matches the sha256 in its name (a damaged newest one
    is passed over with a warning)."""
    for path in reversed(list_checkpoints(directory)):
        if verify(path):
            return path
        warnings.warn(f"{path}: content does not match the sha256 in its name; skipping it", stacklevel=2)
    return None


def why_refused(path: Path) -> str | None:
    """Why checkpoint `path` cannot be resumed from (None: it is intact): its content does not
    match the sha256 in its name (truncated or altered), it does not load, or it is not an mmu
    pretraining checkpoint (foreign)."""
    m = _NAME_RE.match(path.name)
    if not m:
        return "not named stepNNNNNNNN-<sha256 prefix>.pt"
    try:
        actual = file_sha256(path)
    except OSError as e:
        return f"unreadable ({e.strerror or e})"
    reasons = []
    if not actual.startswith(m.group(2)):
        reasons.append(f"sha256 mismatch (name says {m.group(2)}, content is {actual[:12]}; "
                       f"{path.stat().st_size} bytes: truncated or altered)")
    try:
        load_checkpoint(path)
    except CheckpointError as e:
        detail = str(e).removeprefix(f"{path}: ")
        reasons.append(("truncated or not a torch file: " if "not a loadable" in detail else "foreign: ")
                       + detail.splitlines()[0][:200])
    return "; ".join(reasons) or None


def refused_checkpoints(directory: str | Path) -> list[tuple[Path, str]]:
    """(checkpoint, why it was refused) for each checkpoint in `directory` that is not intact."""
    return [(p, why) for p in list_checkpoints(directory) if (why := why_refused(p))]


def load_checkpoint(path: str | Path) -> dict:
    """Load an mmu pretraining checkpoint onto the CPU (`weights_only`, so no arbitrary objects).

    Args:
        path: the checkpoint file.

    Returns:
        The checkpoint's state dict (with its `format` key).

    Raises:
        FileNotFoundError: `path` does not exist.
        CheckpointError: the file does not load, or is not an mmu pretraining checkpoint of this format.
    """
    path = Path(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:  # unpickling errors come in many types
        raise CheckpointError(f"{path}: not a loadable mmu pretraining checkpoint ({e})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an mmu pretraining checkpoint (format "
                              f"{ckpt.get('format') if isinstance(ckpt, dict) else type(ckpt).__name__!r}, "
                              f"expected {FORMAT!r})")
    return ckpt


def _flatten(d, prefix=""):
    if isinstance(d, dict):
        out = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}


def check_same_model(ckpt: dict, signature: dict, path: str | Path) -> None:
    """Refuse a checkpoint whose model differs from the one `signature` describes."""
    theirs, ours = _flatten(ckpt.get("model_signature", {})), _flatten(signature)
    diff = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
    if diff:
        lines = [f"  {k}: checkpoint {theirs.get(k, '<absent>')!r}, config {ours.get(k, '<absent>')!r}"
                 for k in diff[:12]]
        name = ckpt.get("config", {}).get("name", "?")
        raise CheckpointError(
            f"{path}: checkpoint is from another model (run {name!r}); it differs from this "
            f"config in:\n" + "\n".join(lines) +
            "\nUse the config saved in the checkpoint (or the run's config.yaml), or a new run.dir.")
