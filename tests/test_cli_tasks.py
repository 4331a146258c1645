"""`--tasks FILE` (issue 21 #4): every eval command that reads tasks takes a task overlay file, as a
demo folder's demo-tasks.yaml, instead of needing MMU_CATALOG=FILE in the environment."""
from __future__ import annotations

import re
import subprocess

import pytest
import yaml

from mmu.cli import main
from mmu.registry.catalog import active_overlays, load_catalog

OVERLAY_TASKS = ["ToyZ.v1", "ToyClass.v1", "ToyMock.v1"]


@pytest.fixture
def overlay(tmp_path, monkeypatch):
    import test_eval_submit as S

    monkeypatch.delenv("MMU_CATALOG", raising=False)
    lock = tmp_path / "mock.lock"
    path = tmp_path / "demo-tasks.yaml"
    path.write_text(yaml.safe_dump(S.overlay_yaml(lock)))
    return {"path": path, "lock": lock}


@pytest.fixture(autouse=True)
def one_blas_thread():
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield


@pytest.fixture
def fake_run(monkeypatch):
    """`mmu eval run` up to `run_tasks`: what it was asked to run, and the tasks the catalog held."""
    import mmu.eval.embed as E
    import mmu.eval.run as R

    seen = {}

    class FakeEmbedder:
        def __init__(self, path, device=None, **options):  # e.g. trust_code
            self.path = path

    def fake_run_tasks(emb, hub, out, *, model, task_names, **kw):
        seen["task_names"] = task_names
        seen["catalog_tasks"] = [t.name for t in load_catalog().tasks]
        return []

    monkeypatch.setattr(E, "CheckpointEmbedder", FakeEmbedder)
    monkeypatch.setattr(R, "run_tasks", fake_run_tasks)
    monkeypatch.setattr(R, "model_block", lambda emb, name=None: {"name": name})
    return seen


def eval_run(tmp_path, *tasks):
    return main(["eval", "run", "--checkpoint", str(tmp_path / "m.pt"), "--hub", str(tmp_path / "hub"),
                 "--out", str(tmp_path / "results"), "--tasks", *map(str, tasks)])


def test_eval_run_with_a_task_file_runs_its_tasks(overlay, fake_run, tmp_path):
    assert eval_run(tmp_path, overlay["path"]) == 0
    assert fake_run["task_names"] == OVERLAY_TASKS
    assert set(OVERLAY_TASKS) <= set(fake_run["catalog_tasks"])
    assert not set(OVERLAY_TASKS) & {t.name for t in load_catalog().tasks}  # only during the command


def test_eval_run_with_a_task_file_and_names_runs_the_names(overlay, fake_run, tmp_path):
    assert eval_run(tmp_path, "ToyZ.v1", overlay["path"]) == 0
    assert fake_run["task_names"] == ["ToyZ.v1"]


def test_eval_run_names_alone_are_still_names(fake_run, tmp_path, monkeypatch):
    monkeypatch.delenv("MMU_CATALOG", raising=False)
    name = load_catalog().tasks[0].name
    assert eval_run(tmp_path, name) == 0
    assert fake_run["task_names"] == [name]


def test_a_task_file_already_in_mmu_catalog_is_not_added_twice(overlay, fake_run, tmp_path, monkeypatch):
    monkeypatch.setenv("MMU_CATALOG", str(overlay["path"]))
    assert eval_run(tmp_path, overlay["path"]) == 0
    assert fake_run["catalog_tasks"].count("ToyZ.v1") == 1


def test_a_missing_or_empty_task_file_is_a_usage_error(tmp_path, fake_run, capsys):
    assert eval_run(tmp_path, tmp_path / "nope.yaml") == 2
    assert f"error: --tasks {tmp_path / 'nope.yaml'}: no such task file" in capsys.readouterr().err
    (tmp_path / "empty.yaml").write_text("tasks: []\n")
    assert eval_run(tmp_path, tmp_path / "empty.yaml") == 2
    assert "defines no tasks" in capsys.readouterr().err
    (tmp_path / "bad.yaml").write_text("tasks:\n  - name: Broken.v1\n")
    assert eval_run(tmp_path, tmp_path / "bad.yaml") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --tasks: ") and "bad.yaml" in err
    assert "task_names" not in fake_run


def test_eval_baselines_takes_a_task_file(overlay, monkeypatch, tmp_path):
    import mmu.eval.baselines as B
    from mmu.pretrain.config import config_dir

    seen = {}

    def fake(cfg, hub, out, *, task_names=None, **kw):
        seen.update(task_names=task_names, catalog=[t.name for t in load_catalog().tasks])
        return []

    monkeypatch.setattr(B, "run_baselines", fake)
    assert main(["eval", "baselines", "--config", str(config_dir() / "tiny_cpu.yaml"), "--hub", str(tmp_path),
                 "--out", str(tmp_path / "out"), "--tasks", str(overlay["path"])]) == 0
    assert seen["task_names"] == OVERLAY_TASKS and set(OVERLAY_TASKS) <= set(seen["catalog"])


def test_submit_and_leaderboard_take_a_task_file(overlay, tmp_path, capsys):
    """The demo's path: results on overlay tasks, submitted and rendered with --tasks FILE only."""
    import test_eval_submit as S

    with active_overlays(overlay["path"]):
        cat = {"lock": overlay["lock"], "overlay": overlay["path"], "catalog": load_catalog()}
        results = S.make_results(tmp_path / "results", cat, model="clip-a")
    board = tmp_path / "board"
    subprocess.run(["git", "init", "-q", "-b", "main", str(board)], check=True)
    git = ["git", "-C", str(board), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(git + ["commit", "-q", "--allow-empty", "-m", "init"], check=True)

    # without the task file the board's catalog does not know the tasks: refused
    assert main(["eval", "submit", str(results), "--leaderboard", str(board)]) == 2
    assert "ToyZ.v1" in capsys.readouterr().err
    assert main(["eval", "submit", str(results), "--leaderboard", str(board), "--tasks", str(overlay["path"])]) == 0
    capsys.readouterr()
    subprocess.run(git + ["merge", "-q", "submit/clip-a"], check=True)

    site = tmp_path / "site"
    assert main(["eval", "leaderboard", "--leaderboard", str(board), "--out", str(site),
                 "--tasks", str(overlay["path"])]) == 0
    md = (site / "leaderboard.md").read_text()
    assert "clip-a" in md and "ToyZ.v1" in md
    html = (site / "index.html").read_text()
    # one table per (task, build): the model has a row in each overlay task's table
    assert html.count('<tr data-model="clip-a"') >= 1
    assert all(re.search(re.escape(name), html) for name in OVERLAY_TASKS)


def test_submit_and_leaderboard_take_files_not_names(tmp_path, capsys):
    assert main(["eval", "leaderboard", "--leaderboard", str(tmp_path), "--out", str(tmp_path / "s"),
                 "--tasks", "ToyZ.v1"]) == 2
    assert "--tasks ToyZ.v1: not a task file" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()
