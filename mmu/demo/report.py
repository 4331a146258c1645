"""The demo's `report.html`: one static page (figures embedded as PNG, no http(s) resources) of
what a run did — example objects, the training curve, probe results against the baselines and
the redshift margin over random weights, redshift predicted vs true, retrieval examples (an image
and its nearest spectra), an embedding map coloured by redshift, and the stage time table.
The page is the jinja2 template mmu/demo/templates/report.html.j2 (autoescaped)."""
from __future__ import annotations

import base64
import functools
import hashlib
import io
import json
from pathlib import Path

import jinja2
import numpy as np

from mmu.demo.run import PAIRS


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def _dataset(hub: Path, name: str):
    """A built dataset's HATS partitions as one pyarrow dataset (read lazily)."""
    import pyarrow.dataset as pads

    from mmu.hub.layout import catalog_dir

    return pads.dataset(str(catalog_dir(hub, name) / "dataset"), format="parquet", partitioning="hive")


def _examples(hub: Path, pairs: str, hosts: str, n: int = 3) -> list[tuple[str, bytes]]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mmu.demo.plots import plot_lightcurve, plot_spectrum, rgb_composite

    figs = []
    table = _dataset(hub, pairs).head(200, columns=["object_id", "legacysurvey_image", "desi_spectrum",
                                                    "sim_truth_z"])
    # the highest-S/N spectra among the first 200 pairs (a faint galaxy's spectrum shows little)
    spec = table.column("desi_spectrum").combine_chunks()
    snr = [np.nanmedian(np.abs(np.asarray(f)) * np.sqrt(np.clip(np.asarray(iv), 0, None)))
           for f, iv in zip(spec.field("flux").to_pylist(), spec.field("ivar").to_pylist(), strict=False)]
    rows = table.take(np.argsort(snr)[::-1][:n]).to_pylist()
    if rows:
        fig, axes = plt.subplots(len(rows), 2, figsize=(10, 2.6 * len(rows)),
                                 gridspec_kw={"width_ratios": [1, 3]}, squeeze=False)
        for (a, b), r in zip(axes, rows, strict=False):
            img = r["legacysurvey_image"]
            a.imshow(rgb_composite(np.asarray(img["flux"], np.float32), img["band"],
                                   np.asarray(img["mask"], bool)), origin="lower")
            a.set_xticks([])
            a.set_yticks([])
            a.set_title(f"{r['object_id']}  z = {r['sim_truth_z']:.3f}", fontsize=8)
            s = r["desi_spectrum"]
            plot_spectrum(b, s["lambda"], s["flux"], s["mask"], smooth=11)
        fig.tight_layout()
        figs.append(("examples", _png(fig)))
    try:
        lc = _dataset(hub, hosts).head(2, columns=["object_id", "plasticc_lightcurve", "plasticc_true_target"])
    except (FileNotFoundError, KeyError, ValueError):
        return figs
    rows = lc.to_pylist()
    if rows:
        fig, axes = plt.subplots(1, len(rows), figsize=(5 * len(rows), 3), squeeze=False)
        for ax, r in zip(axes[0], rows, strict=False):
            c = r["plasticc_lightcurve"]
            plot_lightcurve(ax, c["time"], c["band"], c["flux"], c["flux_err"], c["mask"])
            ax.set_title(f"{r['object_id']} (class {r['plasticc_true_target']})", fontsize=8)
        fig.tight_layout()
        figs.append(("lightcurves", _png(fig)))
    return figs


def _training_curve(log: Path) -> bytes | None:
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
        ax.plot(*zip(*train, strict=False), label="train loss")
    if val:
        ax.plot(*zip(*val, strict=False), "o-", label="val loss")
    ax.set_xlabel("step")
    ax.set_ylabel("contrastive loss")
    ax.legend()
    fig.tight_layout()
    return _png(fig)


def _z_scatter(results_dir: Path) -> bytes | None:
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
        n = len(p["y"])  # a few hundred test galaxies at `small`, thousands at `medium`: smaller, see-through dots
        ax.scatter(p["y"], p["fits"]["main"]["pred"], s=10 if n <= 300 else 4,
                   alpha=1.0 if n <= 300 else 0.5, zorder=3 if sub == "pretrained" else 2, lw=0,
                   label=f"{label} (R² {res['main_score']['value']:.2f})")
        found = True
    if not found:
        plt.close(fig)
        return None
    lim = ax.get_xlim()
    ax.plot(lim, lim, "k:", lw=0.8)
    ax.set_xlabel("true z")
    ax.set_ylabel("predicted z (linear probe on image embeddings)")
    for h in ax.legend(fontsize=7, markerscale=1.5).legend_handles:
        h.set_alpha(1.0)
    fig.tight_layout()
    return _png(fig)


MODELS = {"pretrained": "pretrained", "random-weights": "random weights", "raw-pca": "raw PCA",
          "supervised": "supervised"}


def _result(results_dir: Path, sub: str, task_prefix: str, protocol: str) -> dict | None:
    files = sorted((results_dir / sub).glob(f"{task_prefix}*{protocol.split('.')[0]}*.json"))
    return json.loads(files[0].read_text()) if files else None


def _rows(hub: Path, name: str, ids, columns: list[str]) -> dict:
    import pyarrow.dataset as pads

    t = _dataset(hub, name).to_table(columns=["object_id", *columns], filter=pads.field("object_id").isin(list(ids)))
    return {r["object_id"]: r for r in t.to_pylist()}


def _retrieval(hub: Path, results_dir: Path, queries: int = 3, shown: int = 3) -> bytes | None:
    """Three test images (query) and the pretrained model's nearest spectra in the test gallery."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mmu.demo.plots import plot_spectrum, rgb_composite

    res = _result(results_dir, "pretrained", "DemoRetrievalImageSpectrum", "retrieval.v1")
    if res is None:
        return None
    pred = res["predictions"]
    direction = next((d for d in pred["directions"] if d.startswith("legacysurvey_image->")), None)
    if direction is None:
        return None
    d = pred["directions"][direction]
    top = next(v for k, v in d.items() if k.startswith("top"))
    # the first queries in the gallery's fixed order: not picked for looking good
    picks = list(range(min(queries, len(pred["ids"]))))
    need = {pred["ids"][i] for i in picks} | {o for i in picks for o in top[i][:shown]}
    rows = _rows(hub, PAIRS, need, ["legacysurvey_image", "desi_spectrum", "sim_truth_z"])
    fig, axes = plt.subplots(len(picks), 1 + shown, figsize=(3.2 * (1 + shown), 2.4 * len(picks)),
                             gridspec_kw={"width_ratios": [1] + [1.6] * shown}, squeeze=False)
    for row_axes, i in zip(axes, picks, strict=False):
        q = rows[pred["ids"][i]]
        img = q["legacysurvey_image"]
        a = row_axes[0]
        a.imshow(rgb_composite(np.asarray(img["flux"], np.float32), img["band"], np.asarray(img["mask"], bool)),
                 origin="lower")
        a.set_xticks([])
        a.set_yticks([])
        a.set_title(f"query image, z = {q['sim_truth_z']:.3f}\npartner ranked {d['ranks'][i]}", fontsize=8)
        for k, (ax, oid) in enumerate(zip(row_axes[1:], top[i][:shown], strict=False)):
            r = rows[oid]
            s = r["desi_spectrum"]
            plot_spectrum(ax, s["lambda"], s["flux"], s["mask"], smooth=31)
            ax.set_xlabel("")
            ax.set_ylabel("")
            ax.tick_params(labelsize=6)
            mark = " (its own spectrum)" if oid == pred["ids"][i] else ""
            ax.set_title(f"#{k + 1}: z = {r['sim_truth_z']:.3f}{mark}", fontsize=8)
    fig.tight_layout()
    return _png(fig)


def _sha_order(ids) -> list[str]:
    return [hashlib.sha256(i.encode()).hexdigest() for i in ids]


def _first_by_sha(paths: list[Path], k: int) -> list[str]:
    """The `k` ids of the embedding files first in sha256(id) order, streamed a batch at a time."""
    import heapq

    import pyarrow.parquet as pq

    pool: list[tuple[str, str]] = []
    for path in paths:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=1 << 16, columns=["object_id"]):
            ids = [str(o) for o in batch.column(0).to_pylist()]
            pool = heapq.nsmallest(k, pool + list(zip(_sha_order(ids), ids, strict=True)))
    return [i for _, i in pool]


def _pick_embeddings(hub: Path, paths: list[Path], max_points: int) -> tuple[list[str], np.ndarray, dict]:
    """(ids, embeddings, truth rows) of the `max_points` embedded objects first in sha256(id)
    order among those with a truth row: the pick of every embedding by hash, without reading
    every embedding or truth row (memory bounded by `max_points`, whatever the demo's size)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    k = max_points
    while True:
        cand = _first_by_sha(paths, k)
        z = _rows(hub, "mock_ls_truth_v1", set(cand), ["sim_truth_z"])
        kept = [i for i in cand if i in z]
        if len(kept) >= max_points or len(cand) < k:  # enough, or every embedded id looked at
            break
        k *= 4
    kept = kept[:max_points]
    want = pa.array(kept, pa.string())
    found: dict[str, np.ndarray] = {}
    for path in paths:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=1 << 14, columns=["object_id", "embedding"]):
            batch = batch.filter(pc.is_in(batch.column(0).cast(pa.string()), value_set=want))
            if batch.num_rows:
                col = batch.column(1)
                emb = np.asarray(col.flatten().to_numpy(zero_copy_only=False), np.float32).reshape(
                    batch.num_rows, col.type.list_size)
                found.update(zip((str(o) for o in batch.column(0).to_pylist()), emb, strict=True))
    return kept, np.stack([found[i] for i in kept]) if kept else np.zeros((0, 0), np.float32), z


def _embedding_map(hub: Path, results_dir: Path, cache: Path, max_points: int = 1500) -> bytes | None:
    """t-SNE of the image embeddings (every split) of the pretrained model and of the random-weight
    encoder, coloured by true redshift: the `max_points` galaxies first in sha256(object id) order
    (among those with a truth row), read from the embedding cache a batch at a time."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.manifold import TSNE

    panels = []
    for label, sub in (("pretrained", "pretrained"), ("random weights", "baseline-random-weights")):
        res = _result(results_dir, sub, "DemoRedshiftImage", "linear.v1")
        if res is None:
            continue
        keys = next(iter(res["embedding"]["cache_keys"].values()))
        paths = [cache / keys[split][:2] / f"{keys[split]}.parquet" for split in ("train", "val", "test")]
        if all(p.exists() for p in paths):
            panels.append((label, *_pick_embeddings(hub, paths, max_points)))
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.4), squeeze=False)
    for ax, (label, ids, emb, z) in zip(axes[0], panels, strict=False):
        xy = TSNE(n_components=2, init="pca", random_state=0, perplexity=30).fit_transform(emb)
        zz = np.array([z[i]["sim_truth_z"] for i in ids])
        sc = ax.scatter(xy[:, 0], xy[:, 1], c=zz, s=4, cmap="viridis")
        ax.set_title(f"{label} ({len(ids)} galaxies)", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("image embeddings, t-SNE", fontsize=10)
    fig.colorbar(sc, ax=axes[0].tolist(), label="true z", shrink=0.9)
    return _png(fig)


def write_report(out: Path, summary: dict) -> Path:
    """OUT/report.html from a finished demo's summary (demo.json); its figures also as
    OUT/figures/*.png and its numbers as OUT/report.json.

    The page (template ``mmu/demo/templates/report.html.j2``, autoescaped) shows example
    objects, the training curve, the probe table, the redshift margin over random weights,
    redshift predicted vs true, retrieval examples, an embedding map and the stage times; a
    figure whose inputs are missing is left out.

    Args:
        out: the demo's output folder (hub/, results/, cache/, runs/).
        summary: `mmu.demo.run.Demo.run`'s summary.

    Returns:
        The path of report.html.
    """
    import matplotlib

    from mmu.hub.layout import atomic_write_json

    out = Path(out)
    # our own settings, whatever an imported library did to the global ones (GaiaXPy's plotter,
    # imported with the Gaia mock, turns `text.usetex` on, which needs a LaTeX install)
    with matplotlib.rc_context({"text.usetex": False}):
        page, figures = _write_report(out, summary)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    for name, png in figures.items():
        (out / "figures" / f"{name}.png").write_bytes(png)
    ev = summary["results"].get("eval", {})
    atomic_write_json(out / "report.json", {
        "format": "mmu-demo-report/1", "size": summary["size"]["name"], "seed": summary["seed"],
        "note": "demo run on mock data: not comparable with the public board",
        "margin": ev.get("margin"), "probes": ev.get("tasks"), "leaderboard": ev.get("leaderboard"),
        "stages_s": summary["stages_s"], "reused": summary.get("reused", []), "total_s": summary["total_s"],
        "report": str(page), "figures": sorted(f"{name}.png" for name in figures)})
    return page


@functools.cache
def _templates() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
                              autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True,
                              lstrip_blocks=True)


def _probes_view(tasks: dict) -> dict:
    """The probe table: one row per task (with where its labels come from: the simulator's truth or
    the survey's own columns), one column per model that has results (best bold)."""
    labels = [k for k in MODELS if any(k in row for row in tasks.values())]
    rows = []
    for name, row in tasks.items():
        first = next(iter(row.values()))
        best = max((v["value"] for v in row.values() if v.get("value") is not None), default=None)
        cells = []
        for k in labels:
            v = row.get(k, {}).get("value")
            text = ("" if v is None else f"{v:.3f}") if k in row else "—"
            cells.append({"text": text, "best": v is not None and v == best})
        rows.append({"task": name, "protocol": first.get("protocol", "linear.v1"),
                     "metric": str(first.get("main_score", "")), "labels": first.get("labels", ""),
                     "cells": cells, "n_test": first.get("n_test", "")})
    return {"labels": [MODELS[k] for k in labels], "rows": rows}


def _write_report(out: Path, summary: dict) -> tuple[Path, dict[str, bytes]]:
    """The page (written) and its figures by name (PNG bytes), each also embedded in the page."""
    hub = out / "hub"
    figures: dict[str, bytes] = {}

    def figure(name: str, png: bytes, alt: str) -> dict:
        figures[name] = png
        return {"alt": alt, "src": f"data:image/png;base64,{base64.b64encode(png).decode()}"}

    examples = [figure(name, png, "example objects") for name, png in _examples(hub, PAIRS, "demo_sn_hosts")]
    curve = _training_curve(Path(summary["results"]["pretrain"]["checkpoint"]).parent.parent / "log.jsonl")
    ev = summary["results"].get("eval", {})
    tasks = ev.get("tasks", {})
    sections = []
    for title, name, make, alt in (
            ("Redshift from images", "redshift_scatter", lambda: _z_scatter(out / "results"),
             "redshift predicted vs true"),
            ("Retrieval: an image and its nearest spectra", "retrieval",
             lambda: _retrieval(hub, out / "results"), "retrieval examples"),
            ("Embedding map", "embedding_map", lambda: _embedding_map(hub, out / "results", out / "cache"),
             "embedding map coloured by redshift")):
        png = make()
        if png:
            sections.append({"title": title, "figure": figure(name, png, alt)})
    reused = set(summary.get("reused", []))
    page = _templates().get_template("report.html.j2").render(
        size=summary["size"]["name"], examples=examples,
        training_curve=figure("training_curve", curve, "training curve") if curve else None,
        probes=_probes_view(tasks) if tasks else None, margin=ev.get("margin") if tasks else None,
        board=bool(tasks and ev.get("leaderboard", {}).get("site")), figures=sections,
        stages=[{"name": k, "seconds": v, "reused": k in reused} for k, v in summary["stages_s"].items()],
        total=summary["total_s"])
    path = out / "report.html"
    path.write_text(page)
    return path, figures
