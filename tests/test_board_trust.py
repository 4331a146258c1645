"""Issue 16 item 4: the board never scores a result against truth the result itself carries.

Test labels come from a trusted lock (the task's catalog lock, or one a maintainer added to the
board) or from the dataset itself (`submit --hub`, in tests/test_eval_e2e.py); a task on a build
that none covers is refused. Every provenance field is checked or recomputed: one test per field
that the old board accepted when changed. Results files of format /1 (no `build`) still load.
"""
from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
import yaml

import mmu.eval.submit as SUB
import test_eval_submit as S
from mmu.eval import metrics as M
from mmu.eval.results import sha256_json
from mmu.eval.submit import SubmitError, submit
from mmu.registry.catalog import load_catalog


@pytest.fixture(autouse=True, scope="module")
def one_blas_thread():
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield


def _catalog(tmp_path, monkeypatch, pin_real, any_build=False):
    lock = tmp_path / "mock.lock"
    path = tmp_path / "overlay.yaml"
    path.write_text(yaml.safe_dump(S.overlay_yaml(lock, pin_real=pin_real, any_build=any_build)))
    monkeypatch.setenv("MMU_CATALOG", str(path))
    return {"lock": lock, "overlay": path, "catalog": load_catalog()}


@pytest.fixture
def unpinned(tmp_path, monkeypatch):
    """ToyZ.v1 and ToyClass.v1 name no lock: a new task on real data (only ToyMock.v1 is pinned)."""
    return _catalog(tmp_path, monkeypatch, pin_real=False)


@pytest.fixture
def pinned(tmp_path, monkeypatch):
    """Every toy task pinned by its catalog lock: only the provenance checks can refuse."""
    return _catalog(tmp_path, monkeypatch, pin_real=True)


@pytest.fixture
def board(tmp_path):
    repo = tmp_path / "board"
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q",
                    "--allow-empty", "-m", "init"], check=True)
    return repo


def merge(repo, branch):
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", "merge", "-q", branch],
                   check=True)


def branches(repo):
    return subprocess.run(["git", "-C", str(repo), "branch", "--format=%(refname:short)"], capture_output=True,
                          text=True, check=True).stdout.split()


def fabricate(path):
    """The attack: test labels replaced by the model's own predictions, every hash and metric
    recomputed so that the file is self-consistent (r2 = 1)."""
    r = json.loads(path.read_text())
    preds = r["predictions"]
    preds["y"] = list(preds["fits"]["main"]["pred"])
    r["metrics"] = M.compute("regression", r["task"]["metrics"], {"y": np.asarray(preds["y"]),
                                                                  "pred": preds["fits"]["main"]["pred"]})
    r["main_score"]["value"] = r["metrics"]["r2"]
    r["predictions_sha256"] = sha256_json(preds)
    path.write_text(json.dumps(r))
    return r


def only(res_dir, *keep):
    for f in res_dir.glob("*.json"):
        if f.name not in keep:
            f.unlink()
    return res_dir


# ---------------------------------------------------------------------- the labels' source


def test_fabricated_labels_on_an_empty_board_are_refused(unpinned, board, tmp_path):
    res = only(S.make_results(tmp_path / "r", unpinned), "ToyZ.v1__knn16.v1.json")
    r = fabricate(res / "ToyZ.v1__knn16.v1.json")
    assert r["metrics"]["r2"] == 1.0
    with pytest.raises(SubmitError) as e:
        submit(res, str(board))
    msg = str(e.value)
    assert "no trusted test labels for ToyZ.v1 on toysurvey_v1 revision " + S.REV[:16] in msg
    assert "mmu eval add-lock" in msg and "--hub HUB" in msg  # the two ways to fix it
    assert branches(board) == ["main"]  # nothing written


def test_honest_results_without_a_lock_are_refused_too(unpinned, board, tmp_path):
    res = S.make_results(tmp_path / "r", unpinned)
    with pytest.raises(SubmitError) as e:
        submit(res, str(board))
    assert str(e.value).count("no trusted test labels") == 3  # ToyZ x2 protocols, ToyClass; ToyMock is pinned


def test_a_maintainer_adds_the_publishers_lock_then_only_its_labels_score(unpinned, board, tmp_path):
    honest = S.make_results(tmp_path / "honest", unpinned)
    published = tmp_path / "toysurvey.lock"
    published.write_text(json.dumps({**S.lock_of(honest), "tasks": {
        k: v for k, v in S.lock_of(honest)["tasks"].items() if k != "ToyMock.v1"}}))
    with pytest.raises(SubmitError, match="--added-by"):
        SUB.add_lock(published, str(board), added_by="")
    out = SUB.add_lock(published, str(board), added_by="A. Maintainer")
    assert out["files"] == [f"locks/{S.REV}.json"] and out["branch"] == f"lock/{S.REV[:12]}"
    with pytest.raises(SubmitError, match="no trusted test labels"):  # not merged: not trusted yet
        submit(honest, str(board))
    merge(board, out["branch"])
    board_lock = json.loads((board / "locks" / f"{S.REV}.json").read_text())
    assert board_lock["mock"] is False and set(board_lock["tasks"]) == {"ToyZ.v1", "ToyClass.v1"}
    assert board_lock["added"][0]["by"] == "A. Maintainer"
    submit(honest, str(board))
    fake = only(S.make_results(tmp_path / "fake", unpinned, model="faker", seed=3), "ToyZ.v1__knn16.v1.json")
    fabricate(fake / "ToyZ.v1__knn16.v1.json")
    with pytest.raises(SubmitError, match=f"test labels differ from the ones the board lock locks/{S.REV}.json pins"):
        submit(fake, str(board))
    # a lock that pins other labels for the same build is refused, and so is a mock task's
    other = json.loads(published.read_text())
    other["tasks"]["ToyZ.v1"]["test_labels_sha256"] = "0" * 64
    published.write_text(json.dumps(other))
    with pytest.raises(SubmitError, match="already pins other id sets or labels"):
        SUB.add_lock(published, str(board), added_by="A. Maintainer", branch="lock/again")
    mocked = S.lock_of(honest)
    (tmp_path / "m.lock").write_text(json.dumps(mocked))
    with pytest.raises(SubmitError, match="ToyMock.v1 is a mock task"):
        SUB.add_lock(tmp_path / "m.lock", str(board), added_by="A. Maintainer", branch="lock/m")


def test_a_lock_without_the_mock_flag_or_of_another_format_is_refused(unpinned, board, tmp_path):
    honest = S.make_results(tmp_path / "honest", unpinned)
    lock = S.lock_of(honest)
    lock["tasks"].pop("ToyMock.v1")
    lock["datasets"]["toysurvey_v1"].pop("mock")
    (tmp_path / "a.lock").write_text(json.dumps(lock))
    with pytest.raises(SubmitError, match="does not say whether the build is mock"):
        SUB.add_lock(tmp_path / "a.lock", str(board), added_by="m")
    (tmp_path / "b.lock").write_text(json.dumps({**lock, "format": "mmu-mock-lock/1"}))
    with pytest.raises(SubmitError, match="expected 'mmu-lock/1'"):
        SUB.add_lock(tmp_path / "b.lock", str(board), added_by="m")


def test_a_survey_label_task_runs_on_any_build_each_pinned_by_its_publishers_lock(tmp_path, monkeypatch, board):
    """Issue 19: a task that pins no revision runs on any build; each build's results are scored
    against that build's lock, and the leaderboard never ranks two builds together."""
    from mmu.eval import leaderboard as L

    cat = _catalog(tmp_path, monkeypatch, pin_real=False, any_build=True)
    assert cat["catalog"].task("ToyZ.v1").dataset_revision is None
    rev_a, rev_b = "a1" * 32, "b2" * 32
    a = S.make_results(tmp_path / "a", cat, model="model-a", revision=rev_a)
    b = S.make_results(tmp_path / "b", cat, model="model-b", seed=5, revision=rev_b)
    r = json.loads((b / "ToyZ.v1__knn16.v1.json").read_text())
    assert r["task"]["dataset_revision"] is None and r["task"]["dataset_revision_used"] == rev_b
    assert r["build"] == {"kind": "archive", "dataset": "toysurvey_v1", "content_revision": rev_b,
                          "inputs_revisions": None}
    for res, rev in ((a, rev_a), (b, rev_b)):
        lock = tmp_path / f"{rev[:4]}.lock"
        lock.write_text(json.dumps(S.lock_of(res, skip=("ToyMock.v1",))))
        merge(board, SUB.add_lock(lock, str(board), added_by="M")["branch"])
    for res in (a, b):
        merge(board, submit(res, str(board))["branch"])
    # a third build that no lock covers (and no --hub): refused
    c = S.make_results(tmp_path / "c", cat, model="model-c", seed=6, revision="c3" * 32)
    with pytest.raises(SubmitError, match="no trusted test labels for ToyZ.v1 on toysurvey_v1 revision c3c3"):
        submit(c, str(board))
    rows = L.aggregate(L.read_board(str(board)), L.columns())
    tabs = [(t["kind"], t["task"], t["build"]["content_revision"], [x.model for x in t["rows"]])
            for t in L.tables(rows, L.columns())]
    assert ("mock", "ToyMock.v1", S.REV, ["model-a", "model-b"]) in tabs or \
        ("mock", "ToyMock.v1", S.REV, ["model-b", "model-a"]) in tabs
    assert ("archive", "ToyZ.v1", rev_a, ["model-a"]) in tabs and ("archive", "ToyZ.v1", rev_b, ["model-b"]) in tabs
    assert [k for k, *_ in tabs] == ["mock"] + ["archive"] * 4


@pytest.mark.parametrize("mock", [False, True], ids=["archive-build", "mock-build"])
def test_desi_spectype_on_a_build_the_hub_and_its_lock_are_the_truth(tmp_path, monkeypatch, board, mock):
    """A catalog survey-label task (no pinned revision) on a written desi_dr1 build: refused on an
    empty board, accepted with --hub, then through the build's lock; `mock` follows the build."""
    import test_survey_tasks as T
    from mmu.eval.protocols import KNN16_V1
    from mmu.eval.results import make_result, write_result
    from mmu.eval.tasks import open_task

    monkeypatch.delenv("MMU_CATALOG", raising=False)
    hub = tmp_path / "hub"
    T.write_dataset(hub, "desi_dr1", T.desi_columns(n=2000, seed=3), mock=mock)
    task = load_catalog().task("DESISpectype.v1")
    assert task.dataset_revision is None and not task.mock
    data = open_task(task, hub)
    outcome = KNN16_V1.run(task, T.embedded(data, 4.0), task.metric_names)
    res = make_result(model={"name": "m", "kind": "checkpoint", "sha256": "1" * 64}, task=task, data=data,
                      outcome=outcome, protocol=KNN16_V1, embedding={"which": "projection"},
                      near={"count": None, "radius_arcsec": 1.0, "reason": "no training manifest"}, seconds={})
    assert res["mock"] is mock and res["build"]["kind"] == ("mock" if mock else "archive")
    out = tmp_path / "results"
    write_result(out, res)
    with pytest.raises(SubmitError, match="no trusted test labels for DESISpectype.v1 on desi_dr1"):
        submit(out, str(board))
    submit(out, str(board), hub=hub)
    lock = SUB.make_lock(hub, [task])
    assert lock["datasets"]["desi_dr1"]["mock"] is mock
    assert lock["tasks"]["DESISpectype.v1"]["test_labels_sha256"] == SUB.labels_sha256(res["predictions"])
    (tmp_path / "desi.lock").write_text(json.dumps(lock))
    merge(board, SUB.add_lock(tmp_path / "desi.lock", str(board), added_by="M", hub=hub)["branch"])
    submit(out, str(board), model="again")
    _set(out / "DESISpectype.v1__knn16.v1.json", lambda r: r.update(mock=not mock))
    with pytest.raises(SubmitError, match=f"mock is {not mock}"):
        submit(out, str(board), model="flipped")


# ------------------------------------------------------------ every provenance field checked


def _set(path, fn):
    r = json.loads(path.read_text())
    fn(r)
    path.write_text(json.dumps(r))


def _penalty_not_selected(r):
    sel = r["protocol"]["selected"]
    sel["penalty"] = next(p for p in sel["grid"] if p != sel["penalty"])


def _entry(r):
    r["task"]["entry"]["description"] = "easier than it looks"


FIELDS = [
    ("near_pretraining.count", "ToyZ.v1__knn16.v1.json",
     lambda r: r["near_pretraining"].update(count=0, ids=[]) or r["near_pretraining"].update(count=3),
     "near_pretraining.count 3 but 0 test ids"),
    ("near_pretraining.ids", "ToyZ.v1__knn16.v1.json",
     lambda r: r["near_pretraining"].update(count=1, ids=["not-a-test-object"]), "not test objects"),
    ("near_pretraining.radius", "ToyZ.v1__knn16.v1.json",
     lambda r: r["near_pretraining"].update(radius_arcsec=1e-6), "radius_arcsec"),
    ("mock", "ToyZ.v1__knn16.v1.json", lambda r: r.update(mock=True), "mock is True"),
    ("mock of a mock task", "ToyMock.v1__knn16.v1.json", lambda r: r.update(mock=False), "mock is False"),
    ("build.kind", "ToyZ.v1__knn16.v1.json", lambda r: r["build"].update(kind="mock"), "build.kind"),
    ("build.content_revision", "ToyZ.v1__knn16.v1.json", lambda r: r["build"].update(content_revision="1" * 64),
     "build.content_revision"),
    ("main_score.name", "ToyZ.v1__knn16.v1.json", lambda r: r["main_score"].update(name="bias"),
     "main_score is 'bias'"),
    ("main_score.direction", "ToyClass.v1__knn16.v1.json",
     lambda r: r["main_score"].update(higher_is_better=True), "main_score is"),
    ("environment extra key", "ToyZ.v1__knn16.v1.json",
     lambda r: r["environment"].update(note="<script>alert(1)</script>"), "environment.note"),
    ("environment type", "ToyZ.v1__knn16.v1.json",
     lambda r: r["environment"]["hardware"].update(cpus="many"), "environment.hardware.cpus"),
    ("environment packages", "ToyZ.v1__knn16.v1.json",
     lambda r: r["environment"]["packages"].update(evil="1.0"), "environment.packages"),
    ("protocol.selected penalty", "ToyZ.v1__linear.v1.json", _penalty_not_selected,
     "protocol.selected.penalty"),
    ("protocol.selected grid", "ToyZ.v1__linear.v1.json",
     lambda r: r["protocol"]["selected"].update(grid=[1.0] * 8), "protocol.selected.grid"),
    ("protocol.selected fit rows", "ToyZ.v1__linear.v1.json",
     lambda r: r["protocol"]["selected"].update(fit_rows=10), "protocol.selected.fit_rows"),
    ("protocol.selected k", "ToyZ.v1__knn16.v1.json", lambda r: r["protocol"]["selected"].update(k=64),
     "protocol.selected.k"),
    ("protocol.selected extra", "ToyZ.v1__knn16.v1.json",
     lambda r: r["protocol"]["selected"].update(tuned_on="test"), "does not select"),
    ("task.entry", "ToyZ.v1__knn16.v1.json", _entry, "task.entry differs"),
    ("task.mock", "ToyZ.v1__knn16.v1.json", lambda r: r["task"].update(mock=True), "task.mock"),
    ("model extra field", "ToyZ.v1__knn16.v1.json", lambda r: r["model"].update(award="best model"),
     "model.award"),
    ("model sha256", "ToyZ.v1__knn16.v1.json", lambda r: r["model"].update(sha256="xyz"), "model.sha256"),
]


@pytest.mark.parametrize("field, name, fn, message", FIELDS, ids=[f[0] for f in FIELDS])
def test_every_provenance_field_is_checked(pinned, board, tmp_path, field, name, fn, message):
    res = S.make_results(tmp_path / "r", pinned)
    submit(res, str(board), branch="untouched")  # the untampered set is accepted
    _set(res / name, fn)
    with pytest.raises(SubmitError, match="submission refused") as e:
        submit(res, str(board), branch="tampered")
    assert message in str(e.value), str(e.value)
    assert "tampered" not in branches(board)


def test_the_selected_penalty_is_the_frozen_rules_choice(pinned, tmp_path):
    """The rule the board applies is the one the probe ran: on honest results it agrees."""
    from mmu.eval.submit import linear_penalty

    res = S.make_results(tmp_path / "r", pinned)
    r = json.loads((res / "ToyZ.v1__linear.v1.json").read_text())
    sel = r["protocol"]["selected"]
    assert linear_penalty(sel["grid"], sel["val_scores"], True) == sel["penalty"]
    best = int(np.nanargmax([np.nan if s is None else s for s in sel["val_scores"]]))
    assert sel["penalty"] == sel["grid"][best]
    assert linear_penalty([1, 2, 3], [0.5, 0.9, 0.9], True) == 2  # a tie: the first of the grid
    assert linear_penalty([1, 2, 3], [0.5, None, 0.1], False) == 3  # lower is better, None skipped


# ------------------------------------------------------------------- format 1 still loads


def as_format_1(path):
    r = json.loads(path.read_text())
    r["format"] = "mmu-eval-result/1"
    r.pop("build")
    r["near_pretraining"].pop("ids")
    path.write_text(json.dumps(r))


def test_format_1_results_still_load_and_derive_their_build(pinned, board, tmp_path):
    from mmu.eval.results import build_of, read_results

    res = S.make_results(tmp_path / "r", pinned)
    for f in res.glob("*.json"):
        as_format_1(f)
    loaded = dict((p.name, r) for p, r in read_results(res))
    assert len(loaded) == 4
    b = build_of(loaded["ToyMock.v1__knn16.v1.json"])
    assert b == {"kind": "mock", "dataset": "toysurvey_v1", "content_revision": S.REV, "inputs_revisions": None}
    assert build_of(loaded["ToyZ.v1__knn16.v1.json"])["kind"] == "archive"
    submit(res, str(board))  # count 0 without ids is consistent
    _set(res / "ToyZ.v1__knn16.v1.json", lambda r: r["near_pretraining"].update(count=2))
    with pytest.raises(SubmitError, match="mmu-eval-result/1 file names none"):
        submit(res, str(board), branch="b2", replace=True)
    _set(res / "ToyZ.v1__knn16.v1.json", lambda r: r.update(format="mmu-eval-result/2"))
    with pytest.raises(SubmitError, match="records its build"):
        submit(res, str(board), branch="b3", replace=True)
