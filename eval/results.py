"""Results files: one JSON per (model, task version, protocol), with full provenance, and the
schema `submit` validates them against.

Provenance: the task entry with its dataset revision and split hash (and the revision actually
read), per-split object counts and id-set hashes, the model sha256 + metadata + training
manifest, the embedding (which, dtype, cache keys), the protocol spec and selected values, seeds,
all metrics, the test predictions and their hash, harness/git/package versions, hardware, time,
the `mock` and `comparable` flags, the build the task ran on (`build`: mock or archive, the dataset,
its content revision and its inputs' revisions), and the measured test objects within 1″ of any
pretraining position (their count and ids; null, with the reason, when it cannot be measured;
never assumed 0).

Format versions: ``mmu-eval-result/2`` (written now) adds the ``build`` block and
``near_pretraining.ids``, and its ``model`` and ``environment`` blocks are strict (no extra keys).
``mmu-eval-result/1`` files still load: `build_of` derives their build from the task block (kind
from ``mock``, no inputs' revisions), and a count of 0 means no ids.
"""
from __future__ import annotations

import hashlib
import json
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

FORMAT = "mmu-eval-result/2"
FORMATS = ("mmu-eval-result/1", FORMAT)  # what `read_results` and `submit` accept
HARNESS_VERSION = "1"
NEAR_RADIUS_ARCSEC = 1.0
PACKAGES = ("mmu", "numpy", "scikit-learn", "scipy", "torch", "pyarrow", "datasets", "hats", "lsdb")


def sha256_ids(ids) -> str:
    """sha256 of a set of object ids (as strings, sorted, one per line): order does not matter.

    Example:
        >>> sha256_ids(["b", "a"]) == sha256_ids(["a", "b"])
        True
    """
    return hashlib.sha256("\n".join(sorted(str(i) for i in ids)).encode()).hexdigest()


def sha256_json(obj) -> str:
    """sha256 of `obj` as canonical JSON (sorted keys, no spaces)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def result_filename(task: str, protocol: str) -> str:
    """A result's file name: ``<task>__<protocol>.json``."""
    return f"{task}__{protocol}.json"


def safe_name(name: str, what: str = "name") -> str:
    """`name` if usable as one path component (the shared rule of `mmu.hub.layout.check_name`:
    letters, digits, '.', '_' and '-', at most 80, starting with a letter or digit, no '..').

    Args:
        name: the name to check.
        what: what the name is, for the message ("model name", "task name", ...).

    Returns:
        `name` unchanged.

    Raises:
        ValueError: any other name (`mmu.hub.layout.UnsafePath`).
    """
    from mmu.hub.layout import check_name

    return check_name(name, what)


# ----------------------------------------------------------------------------- provenance


def git_commit() -> str | None:
    """The commit of the mmu checkout running this code; None outside a git checkout."""
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def environment() -> dict:
    """A result's ``environment`` block: harness version, git commit, Python and package
    versions, hardware (CPUs, torch threads, the GPU's name) and the time (UTC)."""
    versions = {}
    for p in PACKAGES:
        try:
            versions[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            versions[p] = None
    hw = {"machine": platform.machine(), "processor": platform.processor() or None,
          "cpus": _cpus(), "system": platform.system()}
    if "torch" in sys.modules:
        import torch

        hw["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            hw["gpu"] = torch.cuda.get_device_name(0)
    return {"harness_version": HARNESS_VERSION, "git_commit": git_commit(), "python": platform.python_version(),
            "packages": versions, "hardware": hw, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def _cpus():
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


INDEX_BATCH = 1 << 16  # training-index rows per query batch in `near_pretraining`


def near_pretraining(training_manifest: dict | None, radec_test: np.ndarray,
                     radius_arcsec: float = NEAR_RADIUS_ARCSEC) -> dict:
    """How many test positions lie within `radius_arcsec` of any sample position in the shards
    the checkpoint was pretrained on (the manifest's exports' index.parquet, restricted to the
    shards the manifest lists).

    Args:
        training_manifest: the checkpoint's training manifest ({"train": [export, ...], "val": ...},
            each export with its ``path`` and ``shards``), or None.
        radec_test: [n, 2] test positions (degrees).
        radius_arcsec: the match radius.

    Returns:
        {"count", "radius_arcsec", "reason", "indexed_positions", "indexes", "rows"}; ``rows`` are
        the indexes into `radec_test` of the test positions within the radius (`make_result` turns
        them into ``ids``); ``count`` is None, with a ``reason`` and no rows, when it cannot be
        measured (no manifest, an index not readable here).
    """
    out = {"count": None, "radius_arcsec": radius_arcsec, "reason": None, "indexed_positions": 0,
           "indexes": [], "rows": []}
    exports = [e for key in ("train", "val") for e in ((training_manifest or {}).get(key) or [])]
    if not exports:
        out["reason"] = "the checkpoint has no training manifest with shard indexes"
        return out
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    from scipy.spatial import cKDTree

    for e in exports:
        path = Path(e.get("path", "")) / "index.parquet"
        if not path.is_file():
            out["reason"] = f"shard index {path} is not readable here (copy the export next to the checkpoint?)"
            return out
    # the tree is built on the test positions (the task's, already in memory) and the training
    # indexes are streamed against it a row group at a time: memory is bounded by the test set and
    # one row group, whatever the size of the pretraining data
    test = np.asarray(radec_test, float).reshape(-1, 2)
    tree = cKDTree(_unit(test)) if len(test) else None
    chord = 2 * np.sin(np.radians(radius_arcsec / 3600) / 2)
    hit = np.zeros(len(test), bool)
    for e in exports:
        path = Path(e.get("path", "")) / "index.parquet"
        listed = pa.array(sorted({s["name"] for s in e.get("shards") or []}), pa.string())
        kept = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=INDEX_BATCH, columns=["ra", "dec", "shard"]):
            if len(listed):
                batch = batch.filter(pc.is_in(batch.column("shard"), value_set=listed))
            kept += batch.num_rows
            if tree is None or not batch.num_rows:
                continue
            ref = np.c_[np.asarray(batch.column("ra"), float), np.asarray(batch.column("dec"), float)]
            for rows in tree.query_ball_point(_unit(ref), chord):
                hit[rows] = True
        out["indexes"].append({"path": str(path), "positions": kept})
        out["indexed_positions"] += kept
    if out["indexed_positions"] == 0 or len(test) == 0:
        out["count"] = 0
        return out
    out["rows"] = np.flatnonzero(hit).tolist()
    out["count"] = len(out["rows"])
    return out


def _unit(radec):
    ra, dec = np.radians(radec[:, 0]), np.radians(radec[:, 1])
    return np.c_[np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)]


# ----------------------------------------------------------------------------- schema

HEX64 = r"^[0-9a-f]{64}$"
UTC_TIME = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelInfo(_Strict):
    """A result's ``model`` block: exactly these keys (what `mmu.eval.run.model_block` writes for a
    checkpoint or a baseline), so that nothing unchecked rides along to the board."""

    name: str
    kind: Literal["checkpoint", "baseline"]
    baseline: Literal["random-weights", "raw-pca", "supervised"] | None = None
    sha256: str = Field(pattern=HEX64)
    path: str | None = None
    step: int | None = None
    config: dict | None = None
    signature_sha256: str | None = None
    training_manifest: dict | None = None
    fits: dict | None = None

    @model_validator(mode="after")
    def _baseline_kind(self):
        if (self.kind == "baseline") != (self.baseline is not None):
            raise ValueError(f"model kind {self.kind!r} with baseline {self.baseline!r}: a baseline names its "
                             f"kind, a checkpoint none")
        return self


class TaskInfo(_Strict):
    """A result's ``task`` block: the catalog entry and the revision and split hash actually used.
    ``dataset_revision`` is None for a task that runs on any build of its dataset (survey labels);
    ``dataset_revision_used`` is the build it ran on."""

    name: str
    dataset: str
    hub_dataset: str
    dataset_revision: str | None
    dataset_revision_used: str | None
    split_hash: str
    split_hash_used: str | None
    type: Literal["regression", "classification", "retrieval"]
    main_score: str
    higher_is_better: bool
    class_weights: dict[str, float] | None
    metrics: list[str]
    mock: bool
    entry: dict


class SplitInfo(_Strict):
    """How many objects a split has and the sha256 of their ids."""

    count: int = Field(ge=0)
    ids_sha256: str


class ProtocolInfo(_Strict):
    """A result's protocol: name, frozen spec and its sha256, the settings selected on val."""

    name: str
    spec: dict
    spec_sha256: str
    selected: dict


class MainScore(_Strict):
    """The task's main score: its name, value and direction."""

    name: str
    value: float | None
    higher_is_better: bool


class ShardIndex(_Strict):
    path: str
    positions: int = Field(ge=0)


class Near(_Strict):
    """Test objects near the pretraining sky (`near_pretraining`): how many, and which (test ids)."""

    count: int | None = Field(ge=0)
    radius_arcsec: float
    reason: str | None
    indexed_positions: int = Field(default=0, ge=0)
    indexes: list[ShardIndex] = Field(default_factory=list)
    ids: list[str] = Field(default_factory=list)


class Hardware(_Strict):
    machine: str
    processor: str | None = None
    cpus: int | None = Field(default=None, ge=1)
    system: str
    torch_threads: int | None = Field(default=None, ge=1)
    gpu: str | None = None


class Environment(_Strict):
    """A result's ``environment`` block (`environment`): typed, every key known."""

    harness_version: Literal["1"]
    git_commit: str | None = Field(pattern=r"^[0-9a-f]{7,64}$")
    python: str = Field(pattern=r"^\d+\.\d+\.\d+\S*$")
    packages: dict[str, str | None]
    hardware: Hardware
    time: str = Field(pattern=UTC_TIME)

    @field_validator("packages")
    @classmethod
    def _known_packages(cls, v):
        if set(v) != set(PACKAGES):
            raise ValueError(f"packages must list exactly {', '.join(PACKAGES)} (got {', '.join(sorted(v))})")
        return v


class Build(_Strict):
    """Which build a result ran on: mock (from `mmu sim` files) or archive, the hub dataset (or
    paired catalog), its content revision, and its inputs' content revisions (paired catalogs)."""

    kind: Literal["mock", "archive"]
    dataset: str
    content_revision: str
    inputs_revisions: list[str] | None = None


class Result(_Strict):
    """One results file (``mmu-eval-result/2``, or the older ``/1`` without ``build``); `mmu eval
    submit` validates against it."""

    format: Literal["mmu-eval-result/1", "mmu-eval-result/2"]
    model: ModelInfo
    task: TaskInfo
    mock: bool
    comparable: bool
    not_comparable: list[str]
    build: Build | None = None
    splits: dict[Literal["train", "val", "test"], SplitInfo]
    embedding: dict
    protocol: ProtocolInfo
    seeds: list[int]
    metrics: dict[str, float | None]
    main_score: MainScore
    label_fractions: dict | None
    predictions: dict
    predictions_sha256: str
    near_pretraining: Near
    environment: Environment
    seconds: dict[str, float] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _v2_has_build(self):
        if self.format == FORMAT and self.build is None:
            raise ValueError(f"a {FORMAT} result records its build (`build`)")
        return self


def build_of(res: dict) -> dict:
    """A result's ``build`` block; for a ``mmu-eval-result/1`` file (no block), derived from its
    task block: kind from ``mock``, the hub dataset, the revision used (else the task's), no
    inputs' revisions."""
    if isinstance(res.get("build"), dict):
        return res["build"]
    t = res.get("task") or {}
    return {"kind": "mock" if res.get("mock") else "archive", "dataset": t.get("hub_dataset"),
            "content_revision": t.get("dataset_revision_used") or t.get("dataset_revision"),
            "inputs_revisions": None}


def near_ids(res: dict) -> list[str]:
    """The test ids a result says are near the pretraining sky (a ``/1`` file: none recorded)."""
    return list((res.get("near_pretraining") or {}).get("ids") or [])


def make_result(*, model: dict, task, data, outcome, protocol, embedding: dict, near: dict,
                seconds: dict) -> dict:
    """One results file's content (format ``mmu-eval-result/2``, the `Result` schema).

    Args:
        model: the model block (`mmu.eval.run.model_block`).
        task: the catalog task entry.
        data: the opened task (`mmu.eval.tasks.TaskData`): ids, labels, manifest, comparability.
        outcome: what the protocol returned (metrics, selected settings, predictions).
        protocol: the protocol (name, frozen spec, seeds).
        embedding: which embedding, its dimension, columns, cache keys and preprocessing.
        near: `near_pretraining` of the test positions (its ``rows`` index the test split).
        seconds: time spent embedding and probing.

    Returns:
        A JSON-ready dict (numpy values converted), with the predictions and their sha256.

    Raises:
        ValueError: `near` counts test objects near the pretraining sky without saying which.
    """
    m = data.manifest
    mock = bool(task.mock or m.mock)
    near = dict(near)
    rows = near.pop("rows", None)
    if rows is not None:
        near["ids"] = [str(data.ids["test"][i]) for i in rows]
    elif "ids" not in near:
        if near.get("count"):
            raise ValueError(f"near_pretraining counts {near['count']} test objects but names none")
        near["ids"] = []
    res = {
        "format": FORMAT,
        "model": model,
        "task": {"name": task.name, "dataset": task.dataset, "hub_dataset": task.hub_name,
                 "dataset_revision": task.dataset_revision, "dataset_revision_used": m.content_revision,
                 "split_hash": task.split_hash, "split_hash_used": m.split.hash,
                 "type": task.type, "main_score": task.main_score, "higher_is_better": task.higher_is_better,
                 "class_weights": task.class_weights, "metrics": task.metric_names, "mock": task.mock,
                 "entry": task.model_dump(mode="json")},
        "mock": mock,
        "comparable": bool(data.comparable),
        "not_comparable": list(data.not_comparable),
        "build": data.build,
        "splits": {s: {"count": int(len(data.ids[s])), "ids_sha256": sha256_ids(data.ids[s])}
                   for s in ("train", "val", "test")},
        "embedding": embedding,
        "protocol": {"name": protocol.name, "spec": json.loads(json.dumps(protocol.spec())),
                     "spec_sha256": protocol.spec_sha256(), "selected": outcome.selected},
        "seeds": list(getattr(protocol, "seeds", ()) or [0]),
        "metrics": outcome.metrics,
        "main_score": {"name": task.main_score, "value": outcome.metrics.get(task.main_score),
                       "higher_is_better": task.higher_is_better},
        "label_fractions": outcome.label_fractions,
        "predictions": outcome.predictions,
        "predictions_sha256": sha256_json(outcome.predictions),
        "near_pretraining": near,
        "environment": environment(),
        "seconds": seconds,
    }
    return json.loads(json.dumps(res, default=_json_default))


def _json_default(v):
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v)
    if isinstance(v, np.ndarray):
        return v.tolist()
    raise TypeError(type(v).__name__)


def write_result(out_dir: Path, result: dict) -> Path:
    """Write `result` atomically to OUT_DIR/<task>__<protocol>.json and return the path."""
    from mmu.hub.layout import atomic_write_json

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / result_filename(result["task"]["name"], result["protocol"]["name"])
    atomic_write_json(path, result)
    return path


def read_results(path: Path) -> list[tuple[Path, dict]]:
    """(path, content) of a results file, or of every ``*.json`` results file in a folder (format
    ``mmu-eval-result/2`` or the older ``/1``); JSON files of another format are left out.

    Raises:
        json.JSONDecodeError: a ``*.json`` file that is not JSON.
    """
    path = Path(path)
    files = sorted(path.glob("*.json")) if path.is_dir() else [path]
    out = []
    for f in files:
        data = json.loads(f.read_text())
        if isinstance(data, dict) and data.get("format") in FORMATS:
            out.append((f, data))
    return out
