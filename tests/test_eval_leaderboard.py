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


def cell(task, proto, metric, value, model="m"):
    return {"task": {"name": task, "hub_dataset": "toysurvey_v1", "dataset_revision": "ab" * 32,
                     "split_hash": "cd" * 32, "type": "regression"},
            "protocol": {"name": proto, "selected": {"k": 16}}, "metrics": {metric: value},
            "model": {"sha256": "ef" * 32}, "splits": {"test": {"count": 40}},
            "embedding": {"which": "projection"}, "near_pretraining": {"count": 0},
            "environment": {"time": "2026-11-23T00:00:00Z", "git_commit": "0123456789ab"}}


SCORES = {"A": [0.9, 0.8, 0.5, 0.7], "B": [0.7, 0.8, 0.3, None], "base": [0.1, 0.2, 2.0, 0.1]}


def board_files():
    files = {}
    for model, vals in SCORES.items():
        meta = {"model": model, "kind": "baseline" if model == "base" else "checkpoint",
                "baseline": "raw-pca" if model == "base" else None, "verified": model == "base"}
        files[f"results/{model}/submission.json"] = json.dumps(meta).encode()
        for (t, p, m, _), v in zip(COLS, vals, strict=False):
            if v is not None:
                files[f"results/{model}/{t}__{p}.json"] = json.dumps(cell(t, p, m, v, model)).encode()
    return files


def test_borda_and_mean_by_hand():
    rows = {r.model: r for r in L.aggregate(board_files(), COLS)}
    # ZL: A beats B and base (2), B beats base (1). ZK: A = B (0.5 each) + both beat base -> 1.5, 1.5.
    # Class (lower is better): B 0.3 < A 0.5 < base 2.0 -> B 2, A 1. Mock: A beats base (1); B has none.
    assert rows["A"].borda == 5.5 and rows["B"].borda == 4.5 and rows["base"].borda == 0
    assert [rows[m].rank for m in ("A", "B", "base")] == [1, 2, 3]
    assert rows["A"].mean == pytest.approx((0.9 + 0.8 - 0.5 + 0.7) / 4)  # lower-is-better negated
    assert rows["B"].mean is None  # missing a column: blank, never a mean over fewer tasks
    assert rows["base"].mean == pytest.approx((0.1 + 0.2 - 2.0 + 0.1) / 4)
    assert rows["base"].baseline == "raw-pca" and rows["base"].verified and not rows["A"].verified


def test_markdown():
    rows = L.aggregate(board_files(), COLS)
    md = L.markdown(rows, COLS)
    lines = [line for line in md.splitlines() if line.startswith("| ")]
    assert lines[0].startswith("| rank | model | Borda | mean | ToyZ.v1 linear.v1 r2 ↑")
    assert "ToyClass.v1 knn16.v1 weighted_log_loss ↓" in lines[0]
    assert lines[1].startswith("| 1 | A | 5.5 | 0.4750 | 0.9000")
    assert lines[2].startswith("| 2 | B | 4.5 |  | 0.7000")  # mean blank
    assert "base (baseline: raw-pca) ✓ verified" in lines[3]


def test_model_card_metadata():
    rows = {r.model: r for r in L.aggregate(board_files(), COLS)}
    meta = L.model_card_metadata(rows["A"])
    (entry,) = meta["model-index"]
    assert entry["name"] == "A"
    got = {(r["task"]["name"], m["type"], m["value"]) for r in entry["results"] for m in r["metrics"]}
    assert ("ToyZ.v1 (linear.v1)", "r2", 0.9) in got and len(got) == 4
    ds = entry["results"][0]["dataset"]
    assert ds["revision"] == "ab" * 32 and ds["split"] == "test"
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
    assert len(body) == 2 and all("&lt;b onmouseover=alert(3)&gt;pca&lt;/b&gt;\\|x" in line for line in body)
    assert all(line.replace("\\|", "").count("|") == 5 + len(COLS) for line in body)  # no extra cell
    page = L.html_page(rows, COLS)
    assert "<script>alert" not in page and "<img src=x" not in page and "<b onmouseover" not in page
    assert "&lt;script&gt;alert(1)" in page


def test_a_board_with_no_scores_says_so_instead_of_ranking(tmp_path):
    """Issue 21 item 4: results whose tasks the rendering catalog does not know (a demo board
    without its overlay) leave no score in any column: the pages say so, with no ranks."""
    other_cols = [("MockRedshiftImage.v1", "linear.v1", "r2", True)]
    rows = L.aggregate(board_files(), other_cols)
    assert len(rows) == 3 and all(r.rank == 1 for r in rows)  # what used to be shown as a ranking
    md = L.markdown(rows, other_cols)
    assert "| rank |" not in md and "| 1 |" not in md
    assert "No scores to rank" in md and "ToyZ.v1 linear.v1" in md and "MockRedshiftImage.v1 linear.v1" in md
    page = L.html_page(rows, other_cols)
    assert 'id="board"' not in page and 'class="bar"' not in page and "No scores to rank" in page
    assert "No results on this board yet" in L.markdown([], other_cols)
    # through render: a warning, and `scored` False in what it returns
    board = tmp_path / "board"
    for name, data in board_files().items():
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
    """Rows of #board's tbody (data-model, cell texts) and other facts from a dumped DOM."""

    def __init__(self):
        super().__init__()
        self.rows, self.heads, self.bars, self.table = [], [], 0, {}
        self._in_body = self._cell = False
        self._text = ""

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table" and a.get("id") == "board":
            self.table = a
        elif tag == "tbody":
            self._in_body = True
        elif tag == "tr" and self._in_body:
            self.rows.append({"model": a.get("data-model"), "class": a.get("class"), "cells": []})
        elif tag == "td" and self._in_body:
            self._cell, self._text = True, ""
        elif tag == "th":
            self.heads.append(a.get("data-key"))
        elif tag == "rect" and "bar" in (a.get("class") or ""):
            self.bars += 1

    def handle_endtag(self, tag):
        if tag == "tbody":
            self._in_body = False
        elif tag == "td" and self._cell:
            self.rows[-1]["cells"].append(self._text.strip())
            self._cell = False

    def handle_data(self, data):
        if self._cell:
            self._text += data


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
    assert dom.heads[:4] == ["rank", "model", "borda", "mean"] and len(dom.heads) == 4 + len(COLS)
    assert [r["model"] for r in dom.rows] == ["A", "B", "base"]  # by Borda rank
    a, b, base = dom.rows
    assert a["cells"][:4] == ["1", "A", "5.5", "0.4750"]
    assert b["cells"][3] == ""  # mean blank for the model missing a task
    assert base["class"] == "baseline" and "baseline: raw-pca" in base["cells"][1]
    assert "verified" in base["cells"][1] and "verified" not in a["cells"][1]
    assert dom.bars == 3
    # the page's own sorter, run by the browser: by mean (blank last), by a lower-is-better column
    by_mean = dump_dom(page, "#sort=mean&dir=desc")
    assert [r["model"] for r in by_mean.rows] == ["A", "base", "B"] and by_mean.table["data-sorted"] == "mean:desc"
    by_class = dump_dom(page, "#sort=ToyClass.v1/knn16.v1")
    assert [r["model"] for r in by_class.rows] == ["B", "A", "base"]  # lowest log-loss first


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
    assert html.count('<tr data-model="clip-') == 2 and not re.search(r"https?://", html)
