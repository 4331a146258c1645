"""The demo's `report.html`: one static page (figures embedded as PNG, no http(s) resources) of
what a run did — example objects, the training curve, probe results against the baseline,
redshift predicted vs true, and the stage time table."""
from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import numpy as np


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _examples(hub: Path, pairs: str, hosts: str, n: int = 3) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pyarrow.parquet as pq

    from mmu.hub import catalog_dir
    from mmu.plots import plot_lightcurve, plot_spectrum, rgb_composite

    figs = []
    table = pq.read_table(catalog_dir(hub, pairs) / "dataset",
                          columns=["object_id", "legacysurvey_image", "desi_spectrum", "sim_truth_z"])
    rows = table.slice(0, n).to_pylist()
    if rows:
        fig, axes = plt.subplots(len(rows), 2, figsize=(10, 2.6 * len(rows)),
                                 gridspec_kw={"width_ratios": [1, 3]}, squeeze=False)
        for (a, b), r in zip(axes, rows):
            img = r["legacysurvey_image"]
            a.imshow(rgb_composite(np.asarray(img["flux"], np.float32), img["band"],
                                   np.asarray(img["mask"], bool)), origin="lower")
            a.set_xticks([])
            a.set_yticks([])
            a.set_title(f"{r['object_id']}  z = {r['sim_truth_z']:.3f}", fontsize=8)
            s = r["desi_spectrum"]
            plot_spectrum(b, s["lambda"], s["flux"], s["mask"])
        fig.tight_layout()
        figs.append(_png(fig))
    try:
        lc = pq.read_table(catalog_dir(hub, hosts) / "dataset", columns=["object_id", "plasticc_lightcurve",
                                                                          "plasticc_true_target"]).slice(0, 2)
    except (FileNotFoundError, KeyError, ValueError):
        return figs
    rows = lc.to_pylist()
    if rows:
        fig, axes = plt.subplots(1, len(rows), figsize=(5 * len(rows), 3), squeeze=False)
        for ax, r in zip(axes[0], rows):
            c = r["plasticc_lightcurve"]
            plot_lightcurve(ax, c["time"], c["band"], c["flux"], c["flux_err"], c["mask"])
            ax.set_title(f"{r['object_id']} (class {r['plasticc_true_target']})", fontsize=8)
        fig.tight_layout()
        figs.append(_png(fig))
    return figs


def _training_curve(log: Path) -> str | None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not log.exists():
        return None
    train, val = [], []
    for line in log.read_text().splitlines():
        rec = json.loads(line)
        if "loss" in rec:
            train.append((rec["step"], rec["loss"]))
        if "val_loss" in rec:
            val.append((rec["step"], rec["val_loss"]))
    fig, ax = plt.subplots(figsize=(6, 3))
    if train:
        ax.plot(*zip(*train), label="train loss")
    if val:
        ax.plot(*zip(*val), "o-", label="val loss")
    ax.set_xlabel("step")
    ax.set_ylabel("contrastive loss")
    ax.legend()
    fig.tight_layout()
    return _png(fig)


def _z_scatter(results_dir: Path) -> str | None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.2, 4))
    found = False
    for label, sub in (("pretrained", "pretrained"), ("random weights", "baseline-random-weights")):
        files = sorted((results_dir / sub).glob("DemoRedshiftImage*linear*.json"))
        if not files:
            continue
        res = json.loads(files[0].read_text())
        p = res["predictions"]
        ax.scatter(p["y"], p["fits"]["main"]["pred"], s=10, label=f"{label} (R² {res['main_score']['value']:.2f})")
        found = True
    if not found:
        plt.close(fig)
        return None
    lim = ax.get_xlim()
    ax.plot(lim, lim, "k:", lw=0.8)
    ax.set_xlabel("true z")
    ax.set_ylabel("predicted z (linear probe on image embeddings)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _png(fig)


def write_report(out: Path, summary: dict) -> Path:
    """OUT/report.html from a finished demo's summary (demo.json)."""
    out = Path(out)
    hub = out / "hub"
    esc = html.escape
    parts = [f"<h1>mmu demo ({esc(summary['size']['name'])}) — a mock universe, end to end</h1>",
             "<p><b>Demo run on mock data: not comparable with the public board.</b></p>"]
    for src in _examples(hub, "mock_ls_desi_v1", "demo_sn_hosts"):
        parts.append(f'<img alt="example objects" src="{src}">')
    curve = _training_curve(Path(summary["results"]["pretrain"]["checkpoint"]).parent.parent / "log.jsonl")
    if curve:
        parts += ["<h2>Training</h2>", f'<img alt="training curve" src="{curve}">']
    tasks = summary["results"].get("eval", {}).get("tasks", {})
    if tasks:
        parts += ["<h2>Probes (linear.v1, test split)</h2>",
                  "<table id='probes'><tr><th>task</th><th>metric</th><th>pretrained</th>"
                  "<th>random weights</th><th>test objects</th></tr>"]
        for name, row in tasks.items():
            p, b = row.get("pretrained", {}), row.get("random-weights", {})
            fmt = lambda v: "" if v is None else f"{v:.3f}"  # noqa: E731
            parts.append(f"<tr><td>{esc(name)}</td><td>{esc(str(p.get('main_score', '')))}</td>"
                         f"<td>{fmt(p.get('value'))}</td><td>{fmt(b.get('value'))}</td>"
                         f"<td>{p.get('n_test', '')}</td></tr>")
        parts.append("</table>")
        board = summary["results"]["eval"].get("leaderboard", {}).get("site")
        if board:
            parts.append("<p>Leaderboard: <a href=\"site/index.html\">site/index.html</a></p>")
    scatter = _z_scatter(out / "results")
    if scatter:
        parts += ["<h2>Redshift from images</h2>", f'<img alt="redshift predicted vs true" src="{scatter}">']
    parts += ["<h2>Stages</h2>", "<table id='stages'><tr><th>stage</th><th>seconds</th></tr>"]
    for k, v in summary["stages_s"].items():
        parts.append(f"<tr><td>{esc(k)}</td><td>{v:.1f}</td></tr>")
    parts.append(f"<tr><td><b>total</b></td><td><b>{summary['total_s']:.1f}</b></td></tr></table>")
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>mmu demo report</title>"
            "<style>body{font-family:sans-serif;max-width:1000px;margin:2em auto}"
            "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px}"
            "img{max-width:100%}</style></head><body>" + "\n".join(parts) + "</body></html>")
    path = out / "report.html"
    path.write_text(page)
    return path
