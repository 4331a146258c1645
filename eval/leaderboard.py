"""`mmu eval leaderboard --leaderboard REPO --out SITE`: the board as Markdown and as one static,
self-contained HTML page (inline CSS, JS and SVG; no http(s) resources, so it opens from disk).

One row per model; one column per (task, protocol) of the catalog with the task's main score and
its direction; a cell's title gives its provenance. The mean (each score signed so that higher
is better) is left blank for a model missing any column; the Borda rank beside it counts, per
column, the models a model beats (half a point per tie) and sums over columns. Baselines are
marked; `verified` only where a maintainer's re-run confirmed the results. Also writes each
model's Hub model-card evaluation metadata (`model-index`) to SITE/model-cards/<model>.md.
"""
from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path

from mmu.eval.submit import RESULTS_DIR, SUBMISSION, board_files_git, parse_hf


@dataclass
class Row:
    model: str
    meta: dict
    cells: dict = field(default_factory=dict)  # (task, protocol) -> result
    mean: float | None = None
    borda: float = 0.0
    rank: int = 0

    @property
    def baseline(self) -> str | None:
        return self.meta.get("baseline") if self.meta.get("kind") == "baseline" else None

    @property
    def verified(self) -> bool:
        return bool(self.meta.get("verified"))


def read_board(leaderboard: str, ref: str = "HEAD") -> dict[str, bytes]:
    if leaderboard.startswith("hf://"):
        from huggingface_hub import snapshot_download

        local = Path(snapshot_download(parse_hf(leaderboard), repo_type="dataset"))
        return {p.relative_to(local).as_posix(): p.read_bytes() for p in (local / RESULTS_DIR).rglob("*.json")}
    path = Path(leaderboard)
    if (path / ".git").exists() or path.suffix == ".git":
        return board_files_git(path, ref)
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in (path / RESULTS_DIR).rglob("*.json")}


def columns(catalog=None) -> list[tuple]:
    from mmu.registry.catalog import load_catalog

    catalog = catalog or load_catalog()
    return [(t.name, p, t.main_score, t.higher_is_better) for t in catalog.tasks if not t.superseded_by
            for p in t.protocols]


def aggregate(files: dict[str, bytes], cols: list[tuple]) -> list[Row]:
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
            row.cells[(obj["task"]["name"], obj["protocol"]["name"])] = {**obj, "_file": name}
    out = list(rows.values())
    keys = [(t, p) for t, p, _, _ in cols]
    for r in out:
        vals = [_signed(r, c) for c in cols]
        r.mean = None if any(v is None for v in vals) or not vals else sum(vals) / len(vals)
    for c in cols:
        scored = [(r, _signed(r, c)) for r in out if _signed(r, c) is not None]
        for r, v in scored:
            r.borda += sum(1.0 if v > w else 0.5 if v == w else 0.0 for o, w in scored if o is not r)
    order = sorted(out, key=lambda r: (-r.borda, r.model))
    for i, r in enumerate(order):
        r.rank = 1 + sum(1 for o in order if o.borda > r.borda)
    del keys
    return order


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
    m, t, e = cell["model"], cell["task"], cell.get("environment", {})
    near = cell.get("near_pretraining", {})
    return (f"{cell['_file']} | model sha256 {m['sha256'][:12]} | {t['hub_dataset']} rev "
            f"{t['dataset_revision'][:12]} | split {t['split_hash'][:8]} | {cell['protocol']['name']} "
            f"selected {json.dumps(_short(cell['protocol']['selected']))} | test n={cell['splits']['test']['count']}"
            f" | near pretraining: {near.get('count', 'null') if near.get('count') is not None else 'null'}"
            f" | {cell['embedding'].get('which')} | {e.get('time', '')} | git {str(e.get('git_commit'))[:10]}")


def _short(sel: dict) -> dict:
    return {k: v for k, v in sel.items() if not isinstance(v, list)}


def markdown(rows: list[Row], cols: list[tuple]) -> str:
    head = ["rank", "model", "Borda", "mean"] + [f"{t} {p} {s} {'↑' if hib else '↓'}" for t, p, s, hib in cols]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [str(r.rank), _label(r), f"{r.borda:g}", _fmt(r.mean)] + [_fmt(_score(r, c)) for c in cols]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    note = ("\nMean: over all columns, lower-is-better scores negated; blank for a model missing any "
            "column. Borda: per column, one point per model beaten (half per tie). Baselines come only "
            "from `mmu eval baselines`; ✓ verified = a maintainer re-ran the results.\n")
    return "\n".join(lines) + "\n" + note


_CSS = """body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 6px;text-align:right}th{background:#f3f3f3;cursor:pointer}
td.model{text-align:left}tr.baseline td{background:#f8f8f0;font-style:italic}.badge{font-size:11px;padding:0 4px;
border-radius:3px;background:#ddd;margin-left:4px}.verified{background:#bfe3bf}caption{text-align:left;margin:.5em 0}"""

_JS = """(function(){var t=document.getElementById('board');var hs=t.tHead.rows[0].cells;
function val(td){var v=td.getAttribute('data-value');return v===''||v===null?null:parseFloat(v);}
function sortBy(key,dir){var k=-1;for(var i=0;i<hs.length;i++){if(hs[i].getAttribute('data-key')===key)k=i;}
if(k<0)return;var rows=Array.prototype.slice.call(t.tBodies[0].rows);
rows.sort(function(a,b){var x=val(a.cells[k]),y=val(b.cells[k]);if(x===null&&y===null)return 0;
if(x===null)return 1;if(y===null)return -1;return dir==='asc'?x-y:y-x;});
rows.forEach(function(r){t.tBodies[0].appendChild(r);});t.setAttribute('data-sorted',key+':'+dir);}
for(var i=0;i<hs.length;i++){hs[i].addEventListener('click',function(){var key=this.getAttribute('data-key');
var cur=t.getAttribute('data-sorted')||'';var dir=cur===key+':desc'?'asc':'desc';sortBy(key,dir);});}
var m=/sort=([^&]+)(?:&dir=(asc|desc))?/.exec(decodeURIComponent(location.hash||''));
if(m)sortBy(m[1],m[2]||'desc');})();"""


def _plot(rows: list[Row]) -> str:
    """Inline SVG: Borda points per model (horizontal bars)."""
    w, bar, gap, left = 520, 16, 6, 220
    top = max([r.borda for r in rows] + [1.0])
    h = len(rows) * (bar + gap) + 30
    parts = [f'<svg id="plot" width="{w}" height="{h}" role="img" '
             f'aria-label="Borda points per model">']
    for i, r in enumerate(rows):
        y = 20 + i * (bar + gap)
        length = (w - left - 40) * r.borda / top
        fill = "#b0b0a0" if r.baseline else "#4a7ab5"
        parts.append(f'<text x="{left - 6}" y="{y + bar - 4}" text-anchor="end" font-size="12">'
                     f'{html.escape(r.model)}</text><rect class="bar" data-model="{html.escape(r.model)}" '
                     f'x="{left}" y="{y}" width="{length:.1f}" height="{bar}" fill="{fill}"/>'
                     f'<text x="{left + length + 4:.1f}" y="{y + bar - 4}" font-size="11">{r.borda:g}</text>')
    parts.append(f'<text x="{left}" y="12" font-size="11">Borda points</text></svg>')
    return "".join(parts)


def html_page(rows: list[Row], cols: list[tuple], title: str = "mmu benchmark leaderboard") -> str:
    e = html.escape
    head = ['<th data-key="rank">rank</th>', '<th data-key="model">model</th>',
            '<th data-key="borda" title="Borda points">Borda</th>',
            '<th data-key="mean" title="mean over all columns, lower-is-better negated; blank if any is missing">mean</th>']
    for t, p, s, hib in cols:
        head.append(f'<th data-key="{e(t)}/{e(p)}" title="{e(s)}, {"higher" if hib else "lower"} is better">'
                    f'{e(t)}<br>{e(p)}<br>{e(s)} {"↑" if hib else "↓"}</th>')
    body = []
    for r in rows:
        badges = (f'<span class="badge baseline">baseline: {e(r.baseline)}</span>' if r.baseline else "") + \
                 ('<span class="badge verified">✓ verified</span>' if r.verified else "")
        cells = [f'<td data-value="{r.rank}">{r.rank}</td>', f'<td class="model" data-value="">{e(r.model)}{badges}</td>',
                 f'<td data-value="{r.borda:g}">{r.borda:g}</td>',
                 f'<td class="mean" data-value="{"" if r.mean is None else repr(r.mean)}">{_fmt(r.mean)}</td>']
        for c in cols:
            v = _score(r, c)
            cell = r.cells.get((c[0], c[1]))
            tip = e(provenance(cell)) if cell else "no result"
            signed = "" if v is None else repr(v if c[3] else -v)
            cells.append(f'<td data-value="{signed}" title="{tip}">{_fmt(v)}</td>')
        cls = ' class="baseline"' if r.baseline else ""
        body.append(f'<tr{cls} data-model="{e(r.model)}">' + "".join(cells) + "</tr>")
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>'
            f'<style>{_CSS}</style></head><body><h1>{e(title)}</h1>'
            f'<table id="board"><caption>Click a header to sort (lower-is-better columns sort by the negated '
            f'score, so best first). Hover a cell for its provenance.</caption><thead><tr>{"".join(head)}</tr>'
            f'</thead><tbody>{"".join(body)}</tbody></table><h2>Borda points</h2>{_plot(rows)}'
            f'<p>Numbers on the mock universe are not comparable with published ones on real data; splits '
            f'are by sky region (docs/benchmark.md).</p><script>{_JS}</script></body></html>\n')


def model_card_metadata(row: Row) -> dict:
    """The Hub model card `model-index` of one model's results (huggingface_hub's format)."""
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
                dataset_revision=t["dataset_revision"], dataset_split="test",
                metric_type=metric, metric_value=value, metric_name=f"{metric} ({proto})",
                verified=row.verified))
    return {"model-index": eval_results_to_model_index(row.model, results)} if results else {}


def render(leaderboard: str, out: str | Path, ref: str = "HEAD", log=print) -> dict:
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
    log(f"wrote {out / 'index.html'} and {out / 'leaderboard.md'}: {len(rows)} model(s), {len(cols)} column(s)")
    return {"rows": len(rows), "columns": len(cols)}
