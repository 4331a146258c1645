"""`mmu eval leaderboard --leaderboard REPO --out SITE`: the board as Markdown and as one static,
self-contained HTML page (inline CSS, JS and SVG; no http(s) resources, so it opens from disk).

Results on different builds are never ranked together: the board is one table per (task, build),
a build being one content revision of the task's dataset, and mock builds (from `mmu sim` files)
and archive builds are in separate sections. In a table: one row per model with a result on that
build, one column per protocol of the task with its main score and direction; a cell's title
gives its provenance. The mean (each score signed so that higher is better) is left blank for a
model missing any column; the Borda rank beside it counts, per column, the models a model beats
(half a point per tie) and sums over the table's columns. Baselines are marked; `verified` only
where a maintainer's re-run confirmed the results. Also writes each model's Hub model-card
evaluation metadata (`model-index`) to SITE/model-cards/<model>.md.

The pages are jinja2 templates in eval/templates (leaderboard.html.j2, autoescaped; leaderboard.md.j2,
every value escaped for Markdown); this module computes what they show. A board with no score in
any column (results for tasks the rendering catalog does not define) says so instead of ranking.
"""
from __future__ import annotations

import functools
import html
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import jinja2

from mmu.eval.results import build_of
from mmu.eval.submit import RESULTS_DIR, SUBMISSION, board_files_git, parse_hf

log = logging.getLogger(__name__)


@dataclass
class Row:
    """One model on the board: its submission.json (`meta`), its results by (task, protocol); in
    a (task, build) table (`tables`), also the mean of its signed scores there (None when a
    column is missing), its Borda points and rank there."""

    model: str
    meta: dict
    cells: dict = field(default_factory=dict)  # (task, protocol) -> result
    mean: float | None = None
    borda: float = 0.0
    rank: int = 0

    @property
    def baseline(self) -> str | None:
        """The baseline kind of a `mmu eval baselines` entry, else None."""
        return self.meta.get("baseline") if self.meta.get("kind") == "baseline" else None

    @property
    def verified(self) -> bool:
        """Whether a maintainer's re-run confirmed the entry's results."""
        return bool(self.meta.get("verified"))


def read_board(leaderboard: str, ref: str = "HEAD") -> dict[str, bytes]:
    """The files under results/ of a board, by path relative to the board's root.

    Args:
        leaderboard: a git repository (read at `ref`, no working tree needed), a plain folder,
            or hf://datasets/OWNER/NAME (downloaded).
        ref: the git ref.

    Returns:
        {"results/<model>/<file>.json": bytes}.
    """
    if leaderboard.startswith("hf://"):
        from huggingface_hub import snapshot_download

        local = Path(snapshot_download(parse_hf(leaderboard), repo_type="dataset"))
        return {p.relative_to(local).as_posix(): p.read_bytes() for p in (local / RESULTS_DIR).rglob("*.json")}
    path = Path(leaderboard)
    if (path / ".git").exists() or path.suffix == ".git":
        return board_files_git(path, ref)
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in (path / RESULTS_DIR).rglob("*.json")}


def columns(catalog=None) -> list[tuple]:
    """The board's columns: (task, protocol, main score, higher is better) of every current
    (not superseded) task of the catalog, one per protocol."""
    from mmu.registry.catalog import load_catalog

    catalog = catalog or load_catalog()
    return [(t.name, p, t.main_score, t.higher_is_better) for t in catalog.tasks if not t.superseded_by
            for p in t.protocols]


def aggregate(files: dict[str, bytes], cols: list[tuple]) -> list[Row]:
    """The board's models with their results.

    Args:
        files: the board's files (`read_board`).
        cols: the columns (`columns`).

    Returns:
        One `Row` per model folder, by name. Ranks, Borda points and means exist only within one
        (task, build) table (`tables`): results on different builds are never ranked together.

    Example:
        >>> rows = aggregate(read_board("board"), columns())  # doctest: +SKIP
        >>> [t["title"] for t in tables(rows, columns())]  # doctest: +SKIP
    """
    rows: dict[str, Row] = {}
    for name, data in sorted(files.items()):
        parts = name.split("/")
        if len(parts) != 3 or parts[0] != RESULTS_DIR:
            continue
        row = rows.setdefault(parts[1], Row(parts[1], {}))
        obj = json.loads(data)
        if parts[2] == SUBMISSION:
            row.meta = obj
        else:
            row.cells[(obj["task"]["name"], obj["protocol"]["name"])] = {**obj, "build": build_of(obj), "_file": name}
    return [rows[k] for k in sorted(rows)]


def build_key(build: dict) -> tuple:
    """What makes two results comparable: the same kind, dataset and content revision."""
    return (build.get("kind"), build.get("dataset"), build.get("content_revision"))


def tables(rows: list[Row], cols: list[tuple]) -> list[dict]:
    """The board's tables: one per (task, build) with results, mock builds first, then archive
    builds; each ranked on its own.

    Args:
        rows: the board's models (`aggregate`).
        cols: the columns (`columns`): (task, protocol, main score, higher is better).

    Returns:
        [{"kind", "task", "build", "columns", "rows"}], ``rows`` being `Row` copies restricted to
        that table's cells, sorted by Borda points (then name), with ``borda``, ``rank`` and
        ``mean`` computed over the table's columns only.
    """
    order = {c[0]: i for i, c in enumerate(cols)}
    groups: dict[tuple, dict] = {}
    for r in rows:
        for (task, proto), cell in r.cells.items():
            if task not in order:
                continue
            b = cell["build"]
            g = groups.setdefault((task, build_key(b)), {"kind": b.get("kind") or "archive", "task": task, "build": b,
                                                          "columns": [c for c in cols if c[0] == task], "models": {}})
            g["models"].setdefault(r.model, Row(r.model, r.meta)).cells[(task, proto)] = cell
    out = []
    for (task, _), g in sorted(groups.items(), key=lambda kv: (kv[1]["kind"] != "mock", order[kv[0][0]],
                                                                 str(kv[0][1]))):
        tcols, ranked = g["columns"], list(g["models"].values())
        for r in ranked:
            vals = [_signed(r, c) for c in tcols]
            r.mean = None if any(v is None for v in vals) or not vals else sum(vals) / len(vals)
        for c in tcols:
            scored_ = [(r, _signed(r, c)) for r in ranked if _signed(r, c) is not None]
            for r, v in scored_:
                r.borda += sum(1.0 if v > w else 0.5 if v == w else 0.0 for o, w in scored_ if o is not r)
        ranked.sort(key=lambda r: (-r.borda, r.model))
        for r in ranked:
            r.rank = 1 + sum(1 for o in ranked if o.borda > r.borda)
        out.append({"kind": g["kind"], "task": task, "build": g["build"], "columns": tcols, "rows": ranked})
    return out


def _score(r: Row, col) -> float | None:
    cell = r.cells.get((col[0], col[1]))
    return None if cell is None else cell["metrics"].get(col[2])


def _signed(r: Row, col) -> float | None:
    v = _score(r, col)
    return None if v is None else (v if col[3] else -v)


def _fmt(v) -> str:
    return "" if v is None else f"{v:.4f}"


def _label(r: Row) -> str:
    s = r.model
    if r.baseline:
        s += f" (baseline: {r.baseline})"
    if r.verified:
        s += " ✓ verified"
    return s


def provenance(cell: dict) -> str:
    """One line saying where a cell's score comes from (the page shows it on hover).

    Args:
        cell: a results file's content, with ``_file`` (its path on the board) added by `aggregate`.

    Returns:
        File, model sha256, the build (mock or archive, dataset, revision), split hash, protocol
        and its selected settings, test count, objects near the pretraining sky, embedding, time
        and git commit, joined by " | ".
    """
    m, t, e = cell["model"], cell["task"], cell.get("environment", {})
    near = cell.get("near_pretraining", {})
    b = cell.get("build") or build_of(cell)
    return (f"{cell['_file']} | model sha256 {m['sha256'][:12]} | {b.get('kind')} build {b.get('dataset')} rev "
            f"{str(b.get('content_revision'))[:12]} | split {t['split_hash'][:8]} | {cell['protocol']['name']} "
            f"selected {json.dumps(_short(cell['protocol']['selected']))} | test n={cell['splits']['test']['count']}"
            f" | near pretraining: {near.get('count', 'null') if near.get('count') is not None else 'null'}"
            f" | {cell['embedding'].get('which')} | {e.get('time', '')} | git {str(e.get('git_commit'))[:10]}")


def _short(sel: dict) -> dict:
    return {k: v for k, v in sel.items() if not isinstance(v, list)}


# ----------------------------------------------------------------------------- the pages


def _markdown_text(value) -> str:
    """A value as literal Markdown table text: no raw HTML (names come from submitted files) and
    no cell breaks."""
    if value is None:
        return ""
    return html.escape(str(value), quote=False).replace("|", "\\|")


@functools.cache
def _templates(kind: str) -> jinja2.Environment:
    """The Jinja environment of eval/templates: HTML autoescaped, Markdown escaped by `finalize`."""
    loader = jinja2.FileSystemLoader(Path(__file__).parent / "templates")
    common = dict(loader=loader, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                  keep_trailing_newline=True)
    if kind == "md":
        return jinja2.Environment(autoescape=False, finalize=_markdown_text, **common)
    return jinja2.Environment(autoescape=True, **common)


def scored(rows: list[Row], cols: list[tuple]) -> bool:
    """Whether any model has a score in any column (else there is nothing to rank)."""
    return any(_score(r, c) is not None for r in rows for c in cols)


def empty_board_message(rows: list[Row], cols: list[tuple]) -> str | None:
    """What a board with no score in any column says instead of ranking; None when it has scores.

    Args:
        rows: the board's models (`aggregate`).
        cols: the columns rendered (`columns`).

    Returns:
        None when some model has a score in some column; otherwise a sentence naming the results
        on the board and the tasks the catalog rendering it knows, so that a board read against
        the wrong catalog (a demo board without its task overlay) says so.
    """
    if scored(rows, cols):
        return None
    if not rows:
        return "No results on this board yet: nothing to rank."
    on_board = sorted({f"{t} {p}" for r in rows for t, p in r.cells})
    wanted = sorted({f"{t} {p}" for t, p, _, _ in cols})
    if not on_board:
        return (f"No scores to rank: the board lists {len(rows)} model(s) but holds no results files.")
    return (f"No scores to rank: the board's {len(rows)} model(s) have results for "
            f"{_names(on_board)}, but the catalog rendering it has columns for "
            f"{_names(wanted) if wanted else 'no task'}. Render it with the catalog that defines "
            f"its tasks (the MMU_CATALOG task overlay, e.g. a demo's demo-tasks.yaml).")


def _names(items: list[str], most: int = 6) -> str:
    return ", ".join(items[:most]) + (f" and {len(items) - most} more" if len(items) > most else "")


def _columns_view(cols: list[tuple]) -> list[dict]:
    return [{"key": f"{t}/{p}", "task": t, "protocol": p, "metric": s, "arrow": "↑" if hib else "↓",
             "better": "higher" if hib else "lower"} for t, p, s, hib in cols]


def _rows_view(rows: list[Row], cols: list[tuple]) -> list[dict]:
    out = []
    for r in rows:
        cells = []
        for c in cols:
            v = _score(r, c)
            cell = r.cells.get((c[0], c[1]))
            cells.append({"text": _fmt(v), "value": "" if v is None else repr(v if c[3] else -v),
                          "title": provenance(cell) if cell else "no result"})
        out.append({"model": r.model, "label": _label(r), "baseline": r.baseline, "verified": r.verified,
                    "rank": r.rank, "borda": f"{r.borda:g}", "mean": _fmt(r.mean),
                    "mean_value": "" if r.mean is None else repr(r.mean), "cells": cells})
    return out


def _plot_view(rows: list[Row]) -> dict:
    """Geometry of the inline SVG: Borda points per model as horizontal bars."""
    w, bar, gap, left = 520, 16, 6, 220
    top = max([r.borda for r in rows] + [1.0])
    bars = []
    for i, r in enumerate(rows):
        y = 20 + i * (bar + gap)
        length = (w - left - 40) * r.borda / top
        bars.append({"model": r.model, "y": y, "text_y": y + bar - 4, "label_x": left - 6,
                     "length": f"{length:.1f}", "value_x": f"{left + length + 4:.1f}", "value": f"{r.borda:g}",
                     "fill": "#b0b0a0" if r.baseline else "#4a7ab5"})
    return {"width": w, "height": len(rows) * (bar + gap) + 30, "left": left, "bar": bar, "bars": bars}


KIND_HEADINGS = {"mock": "Mock builds (from `mmu sim` files; not comparable with results on real data)",
                 "archive": "Archive builds (the surveys' own data)"}


def _build_title(t: dict) -> str:
    b = t["build"]
    inputs = b.get("inputs_revisions")
    extra = f", inputs {', '.join(str(r)[:12] for r in inputs)}" if inputs else ""
    return f"{t['task']} on {b.get('dataset')} @ {str(b.get('content_revision'))[:12]} ({t['kind']} build{extra})"


def _sections_view(rows: list[Row], cols: list[tuple]) -> list[dict]:
    """The tables grouped by kind (mock first), each with its columns, rows and bar plot."""
    sections: dict[str, dict] = {}
    for i, t in enumerate(tables(rows, cols)):
        sec = sections.setdefault(t["kind"], {"kind": t["kind"], "heading": KIND_HEADINGS.get(t["kind"], t["kind"]),
                                              "tables": []})
        sec["tables"].append({"id": f"board-{i}", "title": _build_title(t), "task": t["task"], "kind": t["kind"],
                              "revision": str(t["build"].get("content_revision")),
                              "dataset": str(t["build"].get("dataset")), "columns": _columns_view(t["columns"]),
                              "rows": _rows_view(t["rows"], t["columns"]), "plot": _plot_view(t["rows"])})
    return list(sections.values())


def markdown(rows: list[Row], cols: list[tuple], title: str | None = None) -> str:
    """The board as Markdown: a section per kind of build (mock, archive) and in it one table per
    (task, build) (rank, model, Borda, mean, one column per protocol of the task).

    Every value is escaped for Markdown: a model or baseline name holding HTML shows as text,
    never as markup, and a '|' cannot break the table. A board with no scores says so instead
    of ranking (`empty_board_message`).

    Args:
        rows: the board's models (`aggregate`).
        cols: the columns (`columns`): (task, protocol, main score, higher is better).
        title: a "# title" line above the tables (none by default).

    Returns:
        The Markdown text, ending with a newline.

    Example:
        >>> print(markdown(aggregate(read_board("board"), columns()), columns()))  # doctest: +SKIP
    """
    return _templates("md").get_template("leaderboard.md.j2").render(
        title=title, empty=empty_board_message(rows, cols), sections=_sections_view(rows, cols))


def html_page(rows: list[Row], cols: list[tuple], title: str = "mmu benchmark leaderboard") -> str:
    """The board as one static HTML page: a section per kind of build (mock, archive), one
    sortable table per (task, build) with a bar plot of its Borda points (inline SVG), inline
    CSS and JS, no http(s) resources, so that it opens from disk.

    Every name and provenance string is HTML-escaped (jinja2 autoescape). A board with no scores
    shows `empty_board_message` instead of the tables.

    Args:
        rows: the board's models (`aggregate`).
        cols: the columns (`columns`).
        title: the page's title and heading.

    Returns:
        The page's HTML text. Its sorter reads ``#sort=KEY&dir=asc|desc`` from the URL and sorts
        every table that has that column.
    """
    return _templates("html").get_template("leaderboard.html.j2").render(
        title=title, empty=empty_board_message(rows, cols), sections=_sections_view(rows, cols))


def model_card_metadata(row: Row) -> dict:
    """The Hub model card `model-index` of one model's results (huggingface_hub's format).

    Args:
        row: one model of the board.

    Returns:
        {"model-index": [...]} with one result group per (task, protocol) and every scalar
        metric, marked verified when the board's entry is; {} for a model with no results.
    """
    from huggingface_hub import EvalResult
    from huggingface_hub.repocard_data import eval_results_to_model_index

    results = []
    for (task, proto), cell in sorted(row.cells.items()):
        t = cell["task"]
        for metric, value in cell["metrics"].items():
            if value is None or "[" in metric:
                continue
            results.append(EvalResult(
                task_type=f"{t['type']}", task_name=f"{task} ({proto})", dataset_type=t["hub_dataset"],
                dataset_name=t["hub_dataset"], dataset_config=f"{task}/{proto}",  # one group per column
                dataset_revision=(cell.get("build") or build_of(cell))["content_revision"], dataset_split="test",
                metric_type=metric, metric_value=value, metric_name=f"{metric} ({proto})",
                verified=row.verified))
    return {"model-index": eval_results_to_model_index(row.model, results)} if results else {}


def render(leaderboard: str, out: str | Path, ref: str = "HEAD") -> dict:
    """Write a board's pages: OUT/index.html, OUT/leaderboard.md and OUT/model-cards/<model>.md.

    Args:
        leaderboard: a git repository (path), a folder with results/, or hf://datasets/OWNER/NAME.
        out: the site folder (created).
        ref: the git ref to render.

    Returns:
        {"rows": models, "columns": columns, "tables": (task, build) tables, "scored": whether
        any model has a score, "index": path of index.html, "markdown": path of leaderboard.md}.
        A board without scores is rendered with a note instead of ranks, and logged as a warning.

    Example:
        >>> render("board", "site")  # doctest: +SKIP
        {'rows': 4, 'columns': 6, 'tables': 3, 'scored': True, ...}
    """
    import yaml

    out = Path(out)
    cols = columns()
    rows = aggregate(read_board(leaderboard, ref), cols)
    out.mkdir(parents=True, exist_ok=True)
    (out / "leaderboard.md").write_text(markdown(rows, cols))
    (out / "index.html").write_text(html_page(rows, cols))
    cards = out / "model-cards"
    cards.mkdir(exist_ok=True)
    for r in rows:
        meta = model_card_metadata(r)
        if meta:
            (cards / f"{r.model}.md").write_text("---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n")
    empty = empty_board_message(rows, cols)
    if empty:
        log.warning("%s: %s", leaderboard, empty)
    n_tables = len(tables(rows, cols))
    log.info("wrote %s and %s: %d model(s), %d (task, build) table(s)", out / "index.html", out / "leaderboard.md",
             len(rows), n_tables)
    return {"rows": len(rows), "columns": len(cols), "tables": n_tables, "scored": empty is None,
            "index": str(out / "index.html"), "markdown": str(out / "leaderboard.md")}
