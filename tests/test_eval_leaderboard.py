"""The leaderboard: Borda points and the mean by hand, Markdown, a static HTML page read back from
a real browser's DOM (headless chromium), model-card metadata, and the `submit` -> merge ->
`leaderboard` round trip on a git repository."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

from mmu.eval import leaderboard as L

COLS = [("ToyZ.v1", "linear.v1", "r2", True), ("ToyZ.v1", "knn16.v1", "r2", True),
        ("ToyClass.v1", "knn16.v1", "weighted_log_loss", False), ("ToyMock.v1", "knn16.v1", "r2", True)]
REV, OTHER, MOCK = "ab" * 32, "cd" * 32, "ef" * 32


def cell(task, proto, metric, value, model="m", revision=None, fmt=2):
    """A results file as the board reads it; format 1 has no `build` (derived from `mock`)."""
    mock = task == "ToyMock.v1"
    rev = revision or (MOCK if mock else REV)
    out = {"task": {"name": task, "hub_dataset": "toysurvey_v1", "dataset_revision": rev,
                    "dataset_revision_used": rev, "split_hash": "cd" * 32, "type": "regression"},
           "mock": mock, "protocol": {"name": proto, "selected": {"k": 16}}, "metrics": {metric: value},
           "model": {"sha256": "ef" * 32}, "splits": {"test": {"count": 40}},
           "embedding": {"which": "projection"}, "near_pretraining": {"count": 0},
           "environment": {"time": "2026-11-23T00:00:00Z", "git_commit": "0123456789ab"}}
    if fmt == 2:
        out["build"] = {"kind": "mock" if mock else "archive", "dataset": "toysurvey_v1", "content_revision": rev,
                        "inputs_revisions": None}
    return out


SCORES = {"A": [0.9, 0.8, 0.5, 0.7], "B": [0.7, 0.8, 0.3, None], "base": [0.1, 0.2, 2.0, 0.1]}


def board_files(other_build=True):
    """Three models on one archive build (B as a format-1 file) and the mock build; model C, the
    best ToyZ score, on another build of the same dataset."""
    files = {}
    for model, vals in SCORES.items():
        meta = {"model": model, "kind": "baseline" if model == "base" else "checkpoint",
                "baseline": "raw-pca" if model == "base" else None, "verified": model == "base"}
        files[f"results/{model}/submission.json"] = json.dumps(meta).encode()
        for (t, p, m, _), v in zip(COLS, vals, strict=False):
            if v is not None:
                files[f"results/{model}/{t}__{p}.json"] = json.dumps(
                    cell(t, p, m, v, model, fmt=1 if model == "B" else 2)).encode()
    if other_build:
        files["results/C/submission.json"] = json.dumps({"model": "C", "kind": "checkpoint"}).encode()
        files["results/C/ToyZ.v1__linear.v1.json"] = json.dumps(
            cell("ToyZ.v1", "linear.v1", "r2", 0.95, "C", revision=OTHER)).encode()
    return files


def by_title(rows, cols=COLS):
    return {(t["task"], t["build"]["content_revision"]): t for t in L.tables(rows, cols)}


def test_one_table_per_task_and_build_ranked_by_hand():
    rows = L.aggregate(board_files(), COLS)
    assert [r.model for r in rows] == ["A", "B", "C", "base"]
    tabs = L.tables(rows, COLS)
    # mock first, then archive; ToyZ's two builds are two tables, never one ranking
    assert [(t["kind"], t["task"], t["build"]["content_revision"]) for t in tabs] == [
        ("mock", "ToyMock.v1", MOCK), ("archive", "ToyZ.v1", REV), ("archive", "ToyZ.v1", OTHER),
        ("archive", "ToyClass.v1", REV)]
    t = by_title(rows)
    z = {r.model: r for r in t[("ToyZ.v1", REV)]["rows"]}
    # linear: A beats B and base (2), B beats base (1); knn: A = B (0.5 each), both beat base -> A 3.5, B 2.5
    assert set(z) == {"A", "B", "base"} and (z["A"].borda, z["B"].borda, z["base"].borda) == (3.5, 2.5, 0)
    assert [z[m].rank for m in ("A", "B", "base")] == [1, 2, 3]
    assert z["A"].mean == pytest.approx(0.85) and z["base"].mean == pytest.approx(0.15)
    other = t[("ToyZ.v1", OTHER)]["rows"]
    assert [(r.model, r.rank, r.borda, r.mean) for r in other] == [("C", 1, 0.0, None)]  # alone, knn missing
    cls = {r.model: r for r in t[("ToyClass.v1", REV)]["rows"]}
    assert (cls["B"].borda, cls["A"].borda, cls["base"].borda) == (2, 1, 0)  # lower log-loss is better
    assert cls["B"].mean == pytest.approx(-0.3)
    mock = t[("ToyMock.v1", MOCK)]
    assert mock["kind"] == "mock" and [r.model for r in mock["rows"]] == ["A", "base"]
    assert z["base"].baseline == "raw-pca" and z["base"].verified and not z["A"].verified


def test_format_1_results_land_on_their_derived_build():
    rows = {r.model: r for r in L.aggregate(board_files(), COLS)}
    b = rows["B"].cells[("ToyZ.v1", "linear.v1")]["build"]
    assert b == {"kind": "archive", "dataset": "toysurvey_v1", "content_revision": REV, "inputs_revisions": None}


def test_markdown():
    md = L.markdown(L.aggregate(board_files(), COLS), COLS)
    assert md.index("## Mock builds") < md.index("## Archive builds")
    heads = [line for line in md.splitlines() if line.startswith("### ")]
    assert heads == [f"### ToyMock.v1 on toysurvey_v1 @ {MOCK[:12]} (mock build)",
                     f"### ToyZ.v1 on toysurvey_v1 @ {REV[:12]} (archive build)",
                     f"### ToyZ.v1 on toysurvey_v1 @ {OTHER[:12]} (archive build)",
                     f"### ToyClass.v1 on toysurvey_v1 @ {REV[:12]} (archive build)"]
    z = md[md.index(heads[1]):md.index(heads[2])].splitlines()
    lines = [line for line in z if line.startswith("| ")]
    assert lines[0] == "| rank | model | Borda | mean | linear.v1 r2 ↑ | knn16.v1 r2 ↑ |"
    assert lines[1] == "| 1 | A | 3.5 | 0.8500 | 0.9000 | 0.8000 |"
    assert lines[2] == "| 2 | B | 2.5 | 0.7500 | 0.7000 | 0.8000 |"
    assert lines[3] == "| 3 | base (baseline: raw-pca) ✓ verified | 0 | 0.1500 | 0.1000 | 0.2000 |"
    c = [line for line in md[md.index(heads[2]):md.index(heads[3])].splitlines() if line.startswith("| ")]
    assert c[1:] == ["| 1 | C | 0 |  | 0.9500 |  |"]  # mean blank: a column missing


def test_model_card_metadata():
    rows = {r.model: r for r in L.aggregate(board_files(), COLS)}
    meta = L.model_card_metadata(rows["A"])
    (entry,) = meta["model-index"]
    assert entry["name"] == "A"
    got = {(r["task"]["name"], m["type"], m["value"]) for r in entry["results"] for m in r["metrics"]}
    assert ("ToyZ.v1 (linear.v1)", "r2", 0.9) in got and len(got) == 4
    revs = {r["task"]["name"]: r["dataset"]["revision"] for r in entry["results"]}
    assert revs["ToyZ.v1 (linear.v1)"] == REV and revs["ToyMock.v1 (knn16.v1)"] == MOCK  # the build's revision
    assert entry["results"][0]["dataset"]["split"] == "test"
    from huggingface_hub import ModelCard

    card = ModelCard("---\n" + yaml.safe_dump(meta) + "---\n# A\n")
    assert len(card.data.eval_results) == 4


HOSTILE = {"<script>alert(1)": [0.9, 0.8, 0.5, 0.7], "x<img src=x onerror=alert(2)>": [0.1, 0.2, 2.0, 0.1]}


def hostile_board():
    files = {}
    for model, vals in HOSTILE.items():
        meta = {"model": model, "kind": "baseline", "baseline": "<b onmouseover=alert(3)>pca</b>|x",
                "verified": False}
        files[f"results/{model}/submission.json"] = json.dumps(meta).encode()
        for (t, p, m, _), v in zip(COLS, vals, strict=False):
            files[f"results/{model}/{t}__{p}.json"] = json.dumps(cell(t, p, m, v, model)).encode()
    return files


def test_markdown_shows_names_as_text_never_as_html():
    """Issue 16 item 11: names from submitted files reach the Markdown escaped, as index.html
    escapes them; a '|' in a name cannot add a cell."""
    rows = L.aggregate(hostile_board(), COLS)
    md = L.markdown(rows, COLS)
    assert "<script" not in md and "<img" not in md and "<b " not in md
    assert "&lt;script&gt;alert(1)" in md and "x&lt;img src=x onerror=alert(2)&gt;" in md
    body = [line for line in md.splitlines() if line.startswith("| ") and "baseline" in line]
    assert len(body) == 2 * 3 and all("&lt;b onmouseover=alert(3)&gt;pca&lt;/b&gt;\\|x" in line for line in body)
    # no extra cell: 4 fixed columns + one per protocol of the table's task (2 for ToyZ, else 1)
    assert sorted(line.replace("\\|", "").count("|") for line in body) == [6, 6, 6, 6, 7, 7]
    page = L.html_page(rows, COLS)
    assert "<script>alert" not in page and "<img src=x" not in page and "<b onmouseover" not in page
    assert "&lt;script&gt;alert(1)" in page


def test_a_board_with_no_scores_says_so_instead_of_ranking(tmp_path):
    """Issue 21 item 4: results whose tasks the rendering catalog does not know (a demo board
    without its overlay) leave no score in any column: the pages say so, with no ranks."""
    other_cols = [("MockRedshiftImage.v1", "linear.v1", "r2", True)]
    rows = L.aggregate(board_files(other_build=False), other_cols)
    assert len(rows) == 3 and L.tables(rows, other_cols) == []  # nothing to rank
    md = L.markdown(rows, other_cols)
    assert "| rank |" not in md and "| 1 |" not in md
    assert "No scores to rank" in md and "ToyZ.v1 linear.v1" in md and "MockRedshiftImage.v1 linear.v1" in md
    page = L.html_page(rows, other_cols)
    assert 'class="board"' not in page and 'class="bar"' not in page and "No scores to rank" in page
    assert "No results on this board yet" in L.markdown([], other_cols)
    # through render: a warning, and `scored` False in what it returns
    board = tmp_path / "board"
    for name, data in board_files(other_build=False).items():
        (board / name).parent.mkdir(parents=True, exist_ok=True)
        (board / name).write_bytes(data)
    import logging
    from unittest import mock

    seen: list[logging.LogRecord] = []
    warnings = logging.Handler(logging.WARNING)  # on the module's logger: mmu's loggers do not propagate
    warnings.emit = seen.append
    logging.getLogger("mmu.eval.leaderboard").addHandler(warnings)
    try:
        with mock.patch.object(L, "columns", return_value=other_cols):
            got = L.render(str(board), tmp_path / "site")
    finally:
        logging.getLogger("mmu.eval.leaderboard").removeHandler(warnings)
    assert got["scored"] is False and got["rows"] == 3
    assert any("No scores to rank" in r.getMessage() for r in seen if r.levelno == logging.WARNING)
    assert "No scores to rank" in (tmp_path / "site" / "index.html").read_text()
    with mock.patch.object(L, "columns", return_value=COLS):  # the same board, its own columns
        got = L.render(str(board), tmp_path / "site2")
    assert got["scored"] is True and '<tr data-model="A">' in (tmp_path / "site2" / "index.html").read_text()


# ----------------------------------------------------------------------------- the browser


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    if os.environ.get("MMU_REQUIRE_BROWSER"):
        pytest.fail("MMU_REQUIRE_BROWSER is set but no chromium is installed (apt-get install chromium)")
    pytest.skip("no chromium (set MMU_REQUIRE_BROWSER=1 to make this a failure)")


class _Dom(HTMLParser):
    """Each table.board of a dumped DOM (its attributes, header keys, tbody rows: data-model and
    cell texts), and the bars of the plots."""

    def __init__(self):
        super().__init__()
        self.tables, self.bars = [], 0
        self._in_body = self._cell = False
        self._text = ""

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table" and "board" in (a.get("class") or ""):
            self.tables.append({"attrs": a, "heads": [], "rows": []})
        elif tag == "tbody":
            self._in_body = True
        elif tag == "tr" and self._in_body:
            self.tables[-1]["rows"].append({"model": a.get("data-model"), "class": a.get("class"), "cells": []})
        elif tag == "td" and self._in_body:
            self._cell, self._text = True, ""
        elif tag == "th" and self.tables:
            self.tables[-1]["heads"].append(a.get("data-key"))
        elif tag == "rect" and "bar" in (a.get("class") or ""):
            self.bars += 1

    def handle_endtag(self, tag):
        if tag == "tbody":
            self._in_body = False
        elif tag == "td" and self._cell:
            self.tables[-1]["rows"][-1]["cells"].append(self._text.strip())
            self._cell = False

    def handle_data(self, data):
        if self._cell:
            self._text += data

    def table(self, task, revision):
        (t,) = [t for t in self.tables if t["attrs"]["data-task"] == task and t["attrs"]["data-revision"] == revision]
        return t


def dump_dom(page: Path, fragment: str = "") -> _Dom:
    exe = chromium()
    out = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                          "--disable-dev-shm-usage", "--no-first-run", "--user-data-dir=" + str(page.parent / ".chr"),
                          "--dump-dom", page.resolve().as_uri() + fragment],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "<table" in out.stdout, out.stderr[-2000:]
    dom = _Dom()
    dom.feed(out.stdout)
    return dom


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    rows = L.aggregate(board_files(), COLS)
    (out / "index.html").write_text(L.html_page(rows, COLS))
    return out / "index.html"


def test_page_is_self_contained(page):
    text = page.read_text()
    assert not re.search(r"https?://", text)
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=", text)


def test_page_in_a_browser(page):
    dom = dump_dom(page)
    assert [(t["attrs"]["data-kind"], t["attrs"]["data-task"]) for t in dom.tables] == [
        ("mock", "ToyMock.v1"), ("archive", "ToyZ.v1"), ("archive", "ToyZ.v1"), ("archive", "ToyClass.v1")]
    z = dom.table("ToyZ.v1", REV)
    assert z["heads"] == ["rank", "model", "borda", "mean", "ToyZ.v1/linear.v1", "ToyZ.v1/knn16.v1"]
    assert [r["model"] for r in z["rows"]] == ["A", "B", "base"]  # by Borda rank in this table
    a, b, base = z["rows"]
    assert a["cells"] == ["1", "A", "3.5", "0.8500", "0.9000", "0.8000"]
    assert base["class"] == "baseline" and "baseline: raw-pca" in base["cells"][1]
    assert "verified" in base["cells"][1] and "verified" not in a["cells"][1]
    assert [r["model"] for r in dom.table("ToyZ.v1", OTHER)["rows"]] == ["C"]  # its own build, its own table
    assert dom.table("ToyZ.v1", OTHER)["rows"][0]["cells"][3] == ""  # mean blank: knn16 missing
    assert dom.bars == 2 + 3 + 1 + 3
    # the page's own sorter, run by the browser on every table with that column
    by_mean = dump_dom(page, "#sort=mean&dir=asc")
    assert [r["model"] for r in by_mean.table("ToyZ.v1", REV)["rows"]] == ["base", "B", "A"]
    assert by_mean.table("ToyZ.v1", REV)["attrs"]["data-sorted"] == "mean:asc"
    by_class = dump_dom(page, "#sort=ToyClass.v1/knn16.v1")
    assert [r["model"] for r in by_class.table("ToyClass.v1", REV)["rows"]] == ["B", "A", "base"]  # lowest first
    assert [r["model"] for r in by_class.table("ToyZ.v1", REV)["rows"]] == ["A", "B", "base"]  # no such column


def test_submit_merge_render_round_trip(tmp_path, monkeypatch):
    """Two submissions merged into the board's main branch, rendered by the CLI."""
    import test_eval_submit as S
    from mmu.cli import main
    from mmu.eval.submit import submit

    lock = tmp_path / "mock.lock"
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(yaml.safe_dump(S.overlay_yaml(lock)))
    monkeypatch.setenv("MMU_CATALOG", str(overlay))
    from threadpoolctl import threadpool_limits

    from mmu.registry.catalog import load_catalog

    cat = {"lock": lock, "overlay": overlay, "catalog": load_catalog()}
    repo = tmp_path / "board"
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q",
                    "--allow-empty", "-m", "init"], check=True)
    with threadpool_limits(1):
        for model, seed in (("clip-a", 0), ("clip-b", 4)):
            res = S.make_results(tmp_path / model, cat, model=model, seed=seed)
            submit(res, str(repo))
            subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", "merge", "-q",
                            f"submit/{model}"], check=True)
    site = tmp_path / "site"
    assert main(["eval", "leaderboard", "--leaderboard", str(repo), "--out", str(site)]) == 0
    md = (site / "leaderboard.md").read_text()
    assert "clip-a" in md and "clip-b" in md
    assert (site / "model-cards" / "clip-a.md").read_text().startswith("---\nmodel-index:")
    html = (site / "index.html").read_text()
    # one row per model in each (task, build) table: ToyMock.v1 (mock), ToyZ.v1 and ToyClass.v1 (archive)
    assert html.count('<tr data-model="clip-') == 2 * 3 and not re.search(r"https?://", html)
    assert html.index('data-kind="mock"') < html.index('data-kind="archive"')
