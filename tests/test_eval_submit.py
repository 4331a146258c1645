"""`mmu eval submit`: a valid result set lands as a commit on a branch of a git leaderboard; tampered
revisions, metrics, predictions and labels, unnamed or retuned protocols, traversal names,
duplicates, non-comparable and unverified baseline results are refused; the hf:// path opens a
pull request on the local recorded Hub endpoint, and offline writes nothing."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from mmu.eval import protocols as P
from mmu.eval.results import make_result, sha256_ids, write_result
from mmu.eval.submit import SubmitError, labels_sha256, submit
from mmu.eval.tasks import TaskData
from mmu.hub.manifest import BuildManifest, SplitRecord
from mmu.registry.catalog import load_catalog

TESTS = Path(__file__).resolve().parent
SPLIT_HASH = load_catalog().splits.hash
REV = "c0ffee" * 10 + "beef"


def overlay_yaml(lock: Path, pin_real: bool = True, any_build: bool = False) -> dict:
    """Three toy tasks on one toy dataset; the mock one pinned by `lock`, and with `pin_real` the
    other two as well (else nothing pins their labels: only a board lock or --hub can). With
    `any_build` the two pin no revision either: survey-label tasks, runnable on any build."""
    ds = {"name": "toysurvey_v1", "survey": "toysurvey", "release": "v1", "description": "toy",
          "modalities": ["spectrum"], "builder": "mmu_testbuilder:TestSpectra",
          "raw": {"archive": "local", "pattern": "x", "docs": "x"},
          "license": {"id": "MIT", "url": "https://opensource.org/license/mit"},
          "citation": ["@misc{toy, title={toy}}"], "homepage": "local"}
    common = dict(dataset="toysurvey_v1", dataset_revision=REV, split_hash=SPLIT_HASH, input_prefix="toy",
                  modality="spectrum", **({"lock": str(lock)} if pin_real else {}))
    real = {**common, "dataset_revision": None} if any_build else common
    real = {k: v for k, v in real.items() if v is not None}
    return {"datasets": [ds], "tasks": [
        {**real, "name": "ToyZ.v1", "target": "z", "type": "regression", "main_score": "r2",
         "higher_is_better": True, "metrics": ["r2", "sigma_nmad", "outlier_fraction", "bias"],
         "protocols": ["linear.v1", "knn16.v1"]},
        {**real, "name": "ToyClass.v1", "target": "cls", "type": "classification",
         "main_score": "weighted_log_loss", "higher_is_better": False, "class_weights": {"a": 2.0},
         "metrics": ["accuracy", "macro_f1", "weighted_log_loss"], "protocols": ["knn16.v1"]},
        {**common, "name": "ToyMock.v1", "target": "z", "type": "regression", "main_score": "r2",
         "higher_is_better": True, "protocols": ["knn16.v1"], "mock": True,
         "sim": {"seed": 1, "galaxies": 10}, "lock": str(lock)},
    ]}


@pytest.fixture
def catalog(tmp_path, monkeypatch):
    lock = tmp_path / "mock.lock"
    path = tmp_path / "overlay.yaml"
    path.write_text(yaml.safe_dump(overlay_yaml(lock)))
    monkeypatch.setenv("MMU_CATALOG", str(path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), str(TESTS.parent), os.environ.get("PYTHONPATH", "")]))
    return {"lock": lock, "overlay": path, "catalog": load_catalog()}


def fake_data(task, splits, comparable=True, revision=None):
    # only the fields results read; model_construct skips the rest of a real build.json
    manifest = BuildManifest.model_construct(content_revision=task.dataset_revision or revision, mock=task.mock,
                                             split=SplitRecord.model_construct(hash=task.split_hash),
                                             inputs_revisions=None)
    return TaskData(task, Path("."), manifest, {s: v.ids for s, v in splits.items()},
                    {s: v.y for s, v in splits.items()}, {s: np.zeros((len(v), 2)) for s, v in splits.items()},
                    comparable, [] if comparable else ["revision differs"])


def make_results(out: Path, catalog, model="toy-model", seed=0, kind="checkpoint", baseline=None,
                 fractions=False, revision=REV):
    """Results of every overlay task, from embeddings that are random projections of the labels;
    a task that pins no revision runs on the build `revision`."""
    from test_eval_protocols import signal_splits

    cat = catalog["catalog"]
    for t in [t for t in cat.tasks if t.dataset == "toysurvey_v1"]:  # the overlay's tasks
        classes = ["a", "b", "c"] if t.type == "classification" else None
        splits = signal_splits(n=(120, 40, 40), seed=3, classes=classes)
        if seed:  # another model: other embeddings of the same objects
            rng = np.random.default_rng(seed)
            splits = {s: P.Split(v.ids, v.y, v.x @ rng.normal(size=(v.x.shape[1], 8)).astype(np.float32))
                      for s, v in splits.items()}
        for pname in t.protocols:
            proto = P.get_protocol(pname)
            if pname == "linear.v1" and not fractions:
                proto = P.LINEAR_V1
            outcome = proto.run(t, splits, t.metric_names)
            res = make_result(model={"name": model, "kind": kind, "baseline": baseline, "sha256": f"{seed:064d}"},
                              task=t, data=fake_data(t, splits, revision=revision), outcome=outcome,
                              protocol=proto,
                              embedding={"which": "projection", "dtype": "float32"},
                              near={"count": None, "radius_arcsec": 1.0, "reason": "none"}, seconds={})
            write_result(out, res)
    if catalog["lock"] and not catalog["lock"].exists():
        catalog["lock"].write_text(json.dumps(lock_of(out)))
    return out


def lock_of(results: Path, mock: bool = False, skip=()) -> dict:
    """A lock (`mmu eval lock`'s format) pinning what these results ran on: in these tests the
    results are the only place the toy labels exist, so the first model's results stand in for
    the hub the publisher would lock. Tasks in `skip` are left out; the dataset's entry only when
    every task ran on one build."""
    tasks, revisions = {}, set()
    for f in sorted(results.glob("*.json")):
        r = json.loads(f.read_text())
        if r["task"]["name"] in skip:
            continue
        rev = r["task"]["dataset_revision_used"]
        revisions.add(rev)
        tasks[r["task"]["name"]] = {
            "dataset": r["task"]["hub_dataset"], "content_revision": rev,
            "splits": {s: {"count": r["splits"][s]["count"], "ids_sha256": r["splits"][s]["ids_sha256"]}
                       for s in ("train", "val", "test")},
            "test_labels_sha256": labels_sha256(r["predictions"])}
    datasets = {"toysurvey_v1": {"content_revision": min(revisions), "rows": None, "inputs_revisions": None,
                                 "mock": mock}} if len(revisions) == 1 else {}
    return {"format": "mmu-lock/1", "created": "2026-11-27T00:00:00Z", "mmu_version": None,
            "datasets": datasets, "tasks": tasks}


@pytest.fixture(autouse=True, scope="module")
def one_blas_thread():
    import sklearn.linear_model  # noqa: F401
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield


@pytest.fixture
def board(tmp_path):
    repo = tmp_path / "board"
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    (repo / "README.md").write_text("leaderboard\n")
    g = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(g + ["add", "README.md"], check=True)
    subprocess.run(g + ["commit", "-q", "-m", "init"], check=True)
    return repo


def git(repo, *args):
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout


def q(**kw):
    return dict(**kw)


def test_valid_submission_is_a_commit_on_a_branch(catalog, board, tmp_path):
    res = make_results(tmp_path / "r", catalog)
    out = submit(res, str(board), **q())
    assert out["branch"] == "submit/toy-model"
    files = git(board, "ls-tree", "-r", "--name-only", "submit/toy-model").split()
    assert "results/toy-model/ToyZ.v1__linear.v1.json" in files and "results/toy-model/submission.json" in files
    assert all(f == "README.md" or f.startswith("results/toy-model/") for f in files)
    assert git(board, "ls-tree", "-r", "--name-only", "main").split() == ["README.md"]  # main untouched
    assert git(board, "status", "--porcelain") == ""
    meta = json.loads(git(board, "show", "submit/toy-model:results/toy-model/submission.json"))
    assert meta["verified"] is False and meta["kind"] == "checkpoint"


def _tamper(res_dir, name, fn):
    p = res_dir / name
    r = json.loads(p.read_text())
    fn(r)
    p.write_text(json.dumps(r))


@pytest.mark.parametrize("case, fn, message", [
    ("revision", lambda r: r["task"].update(dataset_revision="0" * 64), "differs from catalog.yaml"),
    ("revision used", lambda r: r["task"].update(dataset_revision_used="0" * 64), "dataset_revision_used"),
    ("split hash", lambda r: r["task"].update(split_hash="1" * 64), "split_hash"),
    ("metric", lambda r: r["metrics"].update(r2=0.999), "recomputed"),
    ("main score", lambda r: r["main_score"].update(value=0.999), "main_score.value"),
    ("prediction", lambda r: r["predictions"]["fits"]["main"]["pred"].__setitem__(0, 99.0),
     "predictions_sha256 does not match"),
    ("fraction", lambda r: r["label_fractions"]["0.1"]["metrics"]["r2"]["values"].__setitem__(0, 0.99),
     "label_fractions"),
    ("unnamed protocol", lambda r: r["protocol"].update(name="knn8.v1"), "named, frozen"),
    ("retuned protocol", lambda r: r["protocol"]["spec"].update(ridge_alphas=[1.0]), "settings differ"),
    ("not comparable", lambda r: r.update(comparable=False, not_comparable=["other revision"]), "not comparable"),
    ("schema", lambda r: r.pop("near_pretraining"), "not a valid results file"),
    ("traversal task", lambda r: r["task"].update(name="../../etc/passwd"), "not in catalog.yaml"),
    ("id set", lambda r: r["splits"]["test"].update(ids_sha256=sha256_ids(["x"])), "test id set"),
])
def test_tampered_results_are_refused(catalog, board, tmp_path, case, fn, message):
    res = make_results(tmp_path / "r", catalog, fractions=True)
    _tamper(res, "ToyZ.v1__linear.v1.json", fn)
    with pytest.raises(SubmitError, match="submission refused") as e:
        submit(res, str(board), **q())
    assert message in str(e.value), str(e.value)
    assert git(board, "branch", "--list").split() == ["*", "main"]  # nothing written


def test_labels_and_mock_pins(catalog, board, tmp_path):
    a = make_results(tmp_path / "a", catalog)
    submit(a, str(board), **q())
    git(board, "-c", "user.name=t", "-c", "user.email=t@t", "merge", "-q", "submit/toy-model")
    b = make_results(tmp_path / "b", catalog, model="other", seed=7)

    def swap(r):  # the other model "fixes" the labels to suit its predictions (hash recomputed)
        r["predictions"]["y"][0] = r["predictions"]["fits"]["main"]["pred"][0]
        from mmu.eval.results import sha256_json
        r["predictions_sha256"] = sha256_json(r["predictions"])
    _tamper(b, "ToyZ.v1__knn16.v1.json", swap)
    with pytest.raises(SubmitError, match="test labels differ from those of the results already on the board"):
        submit(b, str(board), **q())
    c = make_results(tmp_path / "c", catalog, model="third", seed=8)
    _tamper(c, "ToyMock.v1__knn16.v1.json", swap)
    with pytest.raises(SubmitError, match="pins"):
        submit(c, str(board), **q())


def test_names_duplicates_and_replace(catalog, board, tmp_path, monkeypatch):
    res = make_results(tmp_path / "r", catalog)
    for bad in ("../evil", "a/b", ".hidden", "..", "x" * 81, ""):
        with pytest.raises(SubmitError, match="not allowed|is a path, not a name"):
            submit(res, str(board), model=bad, **q())
    submit(res, str(board), **q())
    git(board, "-c", "user.name=t", "-c", "user.email=t@t", "merge", "-q", "submit/toy-model")
    with pytest.raises(SubmitError, match="--replace"):
        submit(res, str(board), **q())
    # the same results a second later: still nothing new (submission.json's timestamp alone differs)
    import mmu.eval.submit as submit_module
    with monkeypatch.context() as m, pytest.raises(SubmitError, match="nothing to commit"):
        m.setattr(submit_module.time, "strftime", lambda fmt, t=None: "2099-01-01T00:00:00Z")
        submit(res, str(board), replace=True, branch="submit/toy-model", **q())
    newer = make_results(tmp_path / "newer", catalog, seed=2)  # same name, another checkpoint
    out = submit(newer, str(board), model="toy-model", replace=True, branch="submit/toy-model-2", **q())
    assert out["branch"] == "submit/toy-model-2"
    assert git(board, "diff", "--name-only", "main", "submit/toy-model-2").split()


def test_baselines_need_a_maintainer_rerun(catalog, board, tmp_path):
    res = make_results(tmp_path / "r", catalog, model="baseline-raw-pca", kind="baseline", baseline="raw-pca")
    with pytest.raises(SubmitError, match="verified-by"):
        submit(res, str(board), **q())
    rerun = make_results(tmp_path / "rerun", catalog, model="baseline-raw-pca", kind="baseline", baseline="raw-pca")
    submit(res, str(board), verified_by=rerun, **q())
    meta = json.loads(git(board, "show", "submit/baseline-raw-pca:results/baseline-raw-pca/submission.json"))
    assert meta["verified"] is True and meta["baseline"] == "raw-pca"
    other = make_results(tmp_path / "other", catalog, model="baseline-raw-pca", seed=5, kind="baseline",
                         baseline="raw-pca")
    with pytest.raises(SubmitError, match="re-run"):
        submit(res, str(board), verified_by=other, replace=True, branch="b2", **q())


def test_cli_submit_reports_and_returns_2(catalog, board, tmp_path, capsys):
    from mmu.cli import main

    res = make_results(tmp_path / "r", catalog)
    _tamper(res, "ToyZ.v1__knn16.v1.json", lambda r: r["metrics"].update(r2=1.0))
    assert main(["eval", "submit", str(res), "--leaderboard", str(board)]) == 2
    assert "recomputed" in capsys.readouterr().err


HF_SCRIPT = """
import sys
from pathlib import Path
from mmu.eval.submit import submit, SubmitError
try:
    print(submit(Path(sys.argv[1]), sys.argv[2]))
except SubmitError as e:
    print("REFUSED", e)
    sys.exit(3)
"""


def test_hf_leaderboard_pull_request_and_offline(catalog, tmp_path):
    from hf_endpoint import HubEndpoint

    res = make_results(tmp_path / "r", catalog)
    with HubEndpoint(token="hf_test") as hub:
        hub.create_repo("mmu/leaderboard", repo_type="dataset")
        env = {**os.environ, **hub.client_env(tmp_path / "home")}
        out = subprocess.run([sys.executable, "-c", HF_SCRIPT, str(res), "hf://datasets/mmu/leaderboard"],
                             env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "pull_request" in out.stdout
        pr = hub.files("mmu/leaderboard", revision="refs/pr/1")
        assert "results/toy-model/ToyZ.v1__linear.v1.json" in pr
        assert "results/toy-model/ToyZ.v1__linear.v1.json" not in hub.files("mmu/leaderboard")  # main untouched
        before = [c.oid for c in hub.commits("mmu/leaderboard")]
        off = subprocess.run([sys.executable, "-c", HF_SCRIPT, str(res), "hf://datasets/mmu/leaderboard"],
                             env={**env, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=120)
        assert off.returncode == 3 and "nothing was written" in off.stdout, off.stdout + off.stderr
        assert [c.oid for c in hub.commits("mmu/leaderboard")] == before  # offline: nothing written
        # a maintainer trusting a build's lock on a Hub board: a pull request adding locks/<revision>.json
        lock = tmp_path / "toy.lock"
        lock.write_text(json.dumps(lock_of(res, skip=("ToyMock.v1",))))
        script = ("import sys; from pathlib import Path; from mmu.eval.submit import add_lock; "
                  "print(add_lock(Path(sys.argv[1]), sys.argv[2], added_by='M'))")
        out = subprocess.run([sys.executable, "-c", script, str(lock), "hf://datasets/mmu/leaderboard"],
                             env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0 and "pull_request" in out.stdout, out.stdout + out.stderr
        assert f"locks/{REV}.json" in hub.files("mmu/leaderboard", revision="refs/pr/2")
        assert f"locks/{REV}.json" not in hub.files("mmu/leaderboard")
