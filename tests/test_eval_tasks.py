"""Every benchmark task of catalog.yaml (one parametrized test per entry) and the TaskEntry schema:
named protocols that apply to the task type, registered datasets and paired inputs, known
metrics, parseable filters, and for mock tasks the lock file's pins (revision, simulation)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from mmu.eval import metrics as M
from mmu.eval.protocols import KNN, LinearProbe, Retrieval, get_protocol
from mmu.eval.tasks import parse_filter
from mmu.registry.catalog import TaskEntry, default_catalog_path, parse_catalog

REPO_CATALOG = default_catalog_path()
RAW = yaml.safe_load(REPO_CATALOG.read_text())
CATALOG = parse_catalog(RAW, str(REPO_CATALOG))
TASKS = CATALOG.tasks
APPLIES = {"regression": (LinearProbe, KNN), "classification": (LinearProbe, KNN), "retrieval": (Retrieval,)}


def test_the_benchmark_v1_tasks_exist():
    names = {t.name for t in TASKS}
    for want in ("MockRedshiftImage.v1", "MockRedshiftSpectrum.v1", "MockLogMassImage.v1",
                 "MockLogMassSpectrum.v1", "MockSSFRImage.v1", "MockSSFRSpectrum.v1",
                 "MockMorphologyImage.v1", "MockTransientClass.v1", "MockRetrievalImageSpectrum.v1"):
        assert want in names


@pytest.mark.parametrize("task", TASKS, ids=[t.name for t in TASKS])
def test_task_entry(task: TaskEntry):
    names = {d.name for d in CATALOG.datasets}
    assert task.dataset in names
    if task.paired:
        assert all(i in names for i in task.paired.inputs), task.paired.inputs
        assert any(c.startswith(p + "_") for c in task.columns for p in task.paired.prefixes)
        assert task.target.split("_")[0] in {p.split("_")[0] for p in task.paired.prefixes}
    assert task.split_hash == CATALOG.splits.hash
    assert all(m in M.KNOWN for m in task.metric_names)
    for p in task.protocols:
        assert isinstance(get_protocol(p), APPLIES[task.type]), (p, task.type)
    for f in task.filters:
        parse_filter(f)
    if task.type == "classification" and "weighted_log_loss" in task.metric_names:
        assert task.class_weights is not None
    if task.mock:
        lock_path = REPO_CATALOG.parent / task.lock
        lock = json.loads(lock_path.read_text())
        assert lock["sim"] == task.sim
        assert lock["datasets"][task.hub_name]["content_revision"] == task.dataset_revision, \
            f"{task.name}: catalog.yaml and {task.lock} disagree; rerun {lock['command']}"
        pinned = lock["tasks"][task.name]
        for split, n in task.min_per_split.items():
            assert pinned["splits"][split]["count"] >= n
        assert task.sim["simulator_version"] and {"seed", "galaxies", "transients", "footprint"} <= set(task.sim)


def base(**kw):
    d = dict(name="T.v1", dataset="d", dataset_revision="r", modality="image", input_prefix="x", target="y",
             split_hash="h", type="regression", main_score="r2", higher_is_better=True, protocols=["linear.v1"])
    d.update(kw)
    return d


@pytest.mark.parametrize("bad, message", [
    (dict(name="Unversioned"), "versioned"),
    (dict(filters=["x_primary and 1"]), "filter"),
    (dict(type="retrieval", main_score="r@1"), "two columns"),
    (dict(main_score="accuracy"), "main_score"),
    (dict(mock=True), "lock"),
    (dict(protocols=[]), "protocol"),
    (dict(colour="red"), "Extra inputs"),
    (dict(paired={"name": "p", "inputs": ["other", "d2"], "prefixes": ["a", "b"]}), "paired.inputs"),
])
def test_task_entry_schema_rejects(bad, message):
    with pytest.raises(ValidationError, match=message):
        TaskEntry(**base(**bad))


def test_task_columns_and_defaults():
    t = TaskEntry(**base())
    assert t.columns == ["x_image"] and t.metric_names == ["r2"] and t.hub_name == "d"
    t = TaskEntry(**base(type="retrieval", main_score="r@1", input_columns=["a_image", "b_spectrum"],
                         protocols=["retrieval.v1"],
                         paired={"name": "ab", "inputs": ["d", "e"], "prefixes": ["a", "b"]}))
    assert t.columns == ["a_image", "b_spectrum"] and t.hub_name == "ab"
    assert parse_filter("desi_zwarn == 0") == ("desi_zwarn", "==", 0)
    assert parse_filter("legacysurvey_brick_primary") == ("legacysurvey_brick_primary", None, None)


def test_cli_wiring_stays_light():
    """`mmu eval` is wired into `mmu.cli` without importing torch or scikit-learn."""
    import subprocess
    import sys

    code = ("import sys, mmu.cli; p = mmu.cli.make_parser(); a = p.parse_args(['eval', 'run', '--checkpoint', 'c',"
            " '--hub', 'h', '--out', 'o']); print(a.func.__name__, 'torch' in sys.modules, 'sklearn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parent.parent)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["run_run", "False", "False"]
