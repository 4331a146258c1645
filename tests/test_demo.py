"""`mmu demo --size tiny` end to end, as the README's main command runs it, and its resumption."""
from __future__ import annotations

import json
import subprocess
import sys
from html.parser import HTMLParser

import pytest


@pytest.mark.slow
def test_tiny_demo_runs_the_chain_and_a_rerun_reuses_every_stage(tmp_path):
    out = tmp_path / "demo"
    cmd = [sys.executable, "-m", "mmu", "demo", "--out", str(out), "--size", "tiny", "--no-progress"]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    summary = json.loads((out / "demo.json").read_text())
    assert set(summary["stages_s"]) == {"sim", "build", "crossmatch", "export", "pretrain", "eval"}
    build = summary["results"]["build"]
    assert {"legacysurvey_dr10_south", "desi_dr1", "sdss_dr17", "plasticc_2018", "sim_truth_v1"} <= set(build)
    assert all(b["rows"]["total"] > 0 for b in build.values())
    pairs = summary["results"]["crossmatch"]["mock_ls_desi_v1"]
    assert pairs["rows"]["total"] > 0
    hosts = summary["results"]["crossmatch"]["demo_sn_hosts"]
    assert hosts["rows"]["total"] > 0
    assert summary["results"]["export"]["train"]["samples"] == pairs["rows"]["train"]
    ckpt = summary["results"]["pretrain"]["checkpoint"]
    assert ckpt and (out / "runs").exists() and ckpt.endswith(".pt")
    for name in ("legacysurvey_dr10_south", "mock_ls_desi_v1"):
        manifest = json.loads((out / "hub" / name / "build.json").read_text())
        assert manifest["mock"] is True and manifest["mock_seed"] == 1
    assert "total" in first.stdout and "pretrain" in first.stdout  # the stage table: the command's output
    assert "[demo] pretrain ..." in first.stderr  # progress: log lines
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "(earlier run, reused)" in second.stdout
    # evaluated on the demo's own task overlay, against the three baselines, and submitted
    ev = summary["results"]["eval"]
    tasks = ev["tasks"]
    assert set(tasks) == {"DemoRedshiftImage.v1", "DemoLogMassImage.v1", "DemoRedshiftSpectrum.v1",
                          "DemoRetrievalImageSpectrum.v1", "DemoLegacySurveyDESIRedshift.v1",
                          "DemoDESIRedshiftSpectrum.v1"}
    # the survey-label tasks beside the mock ones: DESI's own redshifts, on the pair made without the truth
    survey = {n for n, t in tasks.items() if t["pretrained"]["labels"] == "survey (DESI)"}
    assert survey == {"DemoLegacySurveyDESIRedshift.v1", "DemoDESIRedshiftSpectrum.v1"}
    assert json.loads((out / "hub" / "ls_dr10_desi_dr1" / "build.json").read_text())["inputs_datasets"] == [
        "legacysurvey_dr10_south", "desi_dr1"]
    for name, t in tasks.items():
        aligned_only = name.startswith("DemoRetrieval")  # PCA / supervised share no embedding space
        assert set(t) == ({"pretrained", "random-weights"} if aligned_only else
                          {"pretrained", "random-weights", "raw-pca", "supervised"})
        assert all(v["comparable"] and v["n_test"] > 0 for v in t.values())
    # the margin is recomputed from the two results files (same test objects, same order)
    m = ev["margin"]
    res = {k: json.loads((out / "results" / k / "DemoRedshiftImage.v1__linear.v1.json").read_text())
           for k in ("pretrained", "baseline-random-weights")}
    from mmu.eval.metrics import r2
    p, b = res["pretrained"]["predictions"], res["baseline-random-weights"]["predictions"]
    assert p["ids"] == b["ids"] and m["n"] == len(p["ids"])
    assert m["delta"] == pytest.approx(r2(p["y"], p["fits"]["main"]["pred"]) - r2(b["y"], b["fits"]["main"]["pred"]))
    assert m["ci"][0] <= m["delta"] <= m["ci"][1]
    # the board: every model submitted on its own branch, merged, the baselines verified by a re-run
    board_log = subprocess.run(["git", "-C", str(out / "leaderboard"), "log", "--format=%s", "main"],
                               capture_output=True, text=True, check=True).stdout
    for model in ("demo-pretrained", "baseline-random-weights", "baseline-raw-pca", "baseline-supervised"):
        assert f"Merge submit/{model}" in board_log
    for k in ("random-weights", "raw-pca", "supervised"):
        meta = json.loads(subprocess.run(
            ["git", "-C", str(out / "leaderboard"), "show", f"main:results/baseline-{k}/submission.json"],
            capture_output=True, text=True, check=True).stdout)
        assert meta["verified"] is True
    page = (out / "site" / "index.html").read_text()
    assert "not comparable with the public board" in page and "demo-pretrained" in page
    assert "baseline-supervised" in page
    report = (out / "report.html").read_text()
    # examples, light curves, training curve, z scatter, retrieval, embedding map
    assert report.count("data:image/png;base64,") >= 6
    assert "http://" not in report and "https://" not in report
    assert "DemoRedshiftImage.v1" in report and "not comparable with the public board" in report
    assert f"{m['delta']:+.3f}" in report
    assert json.loads((out / "report.json").read_text())["margin"] == m
    assert second.stderr.count("reusing") == 6
    # the report as a browser renders it: the probe table's rows are the demo's results
    from test_eval_leaderboard import chromium
    exe = chromium()
    dom = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                          "--no-first-run", f"--user-data-dir={tmp_path / '.chr'}", "--dump-dom",
                          (out / "report.html").as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    cells = _table_cells(dom.stdout, "probes")
    assert {r[0] for r in cells} == set(tasks)
    for name, protocol, _, labels, *values, n_test in cells:
        assert labels == tasks[name]["pretrained"]["labels"]
        for label, shown in zip(("pretrained", "random-weights", "raw-pca", "supervised"), values, strict=False):
            if label in tasks[name]:
                assert float(shown) == pytest.approx(tasks[name][label]["value"], abs=5e-4)
            else:
                assert shown == "—"
        assert protocol == tasks[name]["pretrained"]["protocol"]
        assert int(n_test) == tasks[name]["pretrained"]["n_test"]


@pytest.mark.benchmark
def test_small_demo_learns_redshift_from_images_above_random_weights(tmp_path):
    """The issue's bar for `--size small` (about 2,000 galaxies in 120 fields, a 2-core CPU): the
    pretrained image embedding's linear-probe R² on redshift beats the same encoder at random
    weights by >= 0.10, with the lower end of a paired-bootstrap 95% interval above 0."""
    out = tmp_path / "demo"
    cmd = [sys.executable, "-m", "mmu", "demo", "--out", str(out), "--size", "small", "--no-progress"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    m = json.loads((out / "report.json").read_text())["margin"]
    assert m["n"] >= 150, m  # enough test galaxies for the interval to mean something
    assert m["delta"] >= 0.10 and m["ci"][0] > 0, m
    assert m["met"] is True
    report = (out / "report.html").read_text()
    assert "class='met'" in report


def _table_cells(page: str, table_id: str) -> list[list[str]]:
    class Cells(HTMLParser):
        rows: list = []
        inside = in_cell = False

        def handle_starttag(self, tag, attrs):
            if tag == "table":
                self.inside = dict(attrs).get("id") == table_id
            elif self.inside and tag == "tr":
                self.rows.append([])
            elif self.inside and tag == "td":
                self.in_cell = True
                self.rows[-1].append("")

        def handle_endtag(self, tag):
            if tag == "td":
                self.in_cell = False
            elif tag == "table":
                self.inside = False

        def handle_data(self, data):
            if self.in_cell:
                self.rows[-1][-1] += data

    parser = Cells()
    parser.rows = []
    parser.feed(page)
    return [r for r in parser.rows if r]


@pytest.mark.parametrize("size", ["tiny", "small", "medium"])
def test_every_size_trains_on_what_the_demo_builds(size, tmp_path):
    """Each size's pretraining config reads the demo's paired catalog as built: its modality
    columns, a crop no larger than the Legacy Survey cutouts, the DESI grid's length (medium
    cannot be run on a CPU in CI; this is what can be checked of it without one)."""
    from mmu.builders.desi import NPIX
    from mmu.demo.run import SIZES, Demo
    from mmu.registry.catalog import load_catalog

    cfg = Demo(tmp_path / "demo", size).pretrain_config()
    assert set(cfg.model.modalities) == {"legacysurvey_image", "desi_spectrum"}
    cutout = load_catalog().dataset("legacysurvey_dr10_south").builder_config["cutout_size"]
    assert cfg.model.modalities["legacysurvey_image"].size <= cutout
    assert cfg.model.modalities["desi_spectrum"].length == NPIX
    assert cfg.train.steps == SIZES[size].pretrain_steps
    assert cfg.data.train == [str(tmp_path / "demo" / "shards" / "train")]
    # the learning rate reaches its peak by the last step, a checkpoint is written, and the
    # simulator takes the size's footprint (medium asked for 400 fields, 100 more than it places)
    assert cfg.optim.warmup_steps <= cfg.train.steps and cfg.train.ckpt_every <= cfg.train.steps
    from mmu.sim.footprint import parse_footprint

    s = SIZES[size]
    assert parse_footprint(f"fields:{s.fields}", s.galaxies).n_fields == s.fields


def test_report_page_from_a_summary(tmp_path, monkeypatch):
    """report.html from a summary, figures stubbed: the probe table (best bold, '—' where a model
    has no result), the margin with its verdict, the stage table, and names shown as text."""
    from mmu.demo import report

    for name, png in (("_training_curve", b"curve"), ("_z_scatter", b"scatter")):
        monkeypatch.setattr(report, name, lambda *a, png=png: png)
    monkeypatch.setattr(report, "_examples", lambda *a: [("examples", b"ex")])
    monkeypatch.setattr(report, "_retrieval", lambda *a: None)  # a figure without inputs is left out
    monkeypatch.setattr(report, "_embedding_map", lambda *a: b"map")
    row = {"protocol": "linear.v1", "main_score": "r2", "n_test": 40, "comparable": True}
    tasks = {"DemoRedshiftImage.v1": {"pretrained": {**row, "value": 0.5012, "labels": "simulator truth"},
                                      "random-weights": {**row, "value": 0.31}, "raw-pca": {**row, "value": None}},
             "Demo<script>x.v1": {"pretrained": {**row, "protocol": "retrieval.v1", "main_score": "r@1", "value": 0.2}}}
    margin = {"task": "DemoRedshiftImage.v1", "protocol": "linear.v1", "a": 0.5012, "b": 0.31, "delta": 0.1912,
              "n": 40, "level": 0.95, "ci": [0.1049, 0.2833], "required_gain": 0.1, "met": True}
    summary = {"size": {"name": "small"}, "seed": 1, "stages_s": {"sim": 1.25, "eval": 10.0}, "reused": ["sim"],
               "total_s": 11.5, "results": {"pretrain": {"checkpoint": str(tmp_path / "r" / "c" / "x.pt")},
                                            "eval": {"tasks": tasks, "margin": margin, "leaderboard": {"site": "s"}}}}
    page = report.write_report(tmp_path, summary)
    text = page.read_text()
    assert "<script>x" not in text and "Demo&lt;script&gt;x.v1" in text
    cells = _table_cells(text, "probes")
    assert cells[0] == ["DemoRedshiftImage.v1", "linear.v1", "r2", "simulator truth", "0.501", "0.310", "", "40"]
    assert cells[1] == ["Demo<script>x.v1", "retrieval.v1", "r@1", "", "0.200", "—", "—", "40"]
    assert "<td><b>0.501</b></td>" in text  # the best of the row
    assert "a gain of <b>+0.191</b>" in text and "95% interval +0.105 to +0.283" in text
    assert "class='met'>met</b>" in text
    assert _table_cells(text, "stages") == [["sim", "1.2 (an earlier run; reused)"], ["eval", "10.0"],
                                            ["total", "11.5"]]
    assert text.count("data:image/png;base64,") == 4 and "Retrieval" not in text
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == [
        "embedding_map.png", "examples.png", "redshift_scatter.png", "training_curve.png"]
    assert json.loads((tmp_path / "report.json").read_text())["margin"] == margin
    summary["results"]["eval"]["margin"] = {**margin, "met": False, "delta": 0.05}
    assert "class='not-met'>not met</b>" in report.write_report(tmp_path, summary).read_text()


def test_stage_log_lines_quiet_the_library_steps_and_the_table_is_the_output():
    """Inside a stage, the library steps' info lines are held back (their warnings pass) unless
    the verbosity is debug; the stage table is what `mmu demo` prints."""
    import logging

    import mmu.logs
    from mmu.demo.run import quiet_steps, stage_table

    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(f"{record.name}:{record.getMessage()}")
    mmu_logger = logging.getLogger("mmu")
    mmu_logger.addHandler(handler)
    before = mmu.logs.get_verbosity()
    try:
        mmu.logs.set_verbosity("info")
        build_log, demo_log = logging.getLogger("mmu.engine.build"), logging.getLogger("mmu.demo.run")
        with quiet_steps():
            build_log.info("built x")
            build_log.warning("input y rejected")
            demo_log.info("[demo] build ...")
        build_log.info("after the stage")
        mmu.logs.set_verbosity("debug")
        with quiet_steps():
            build_log.info("verbose")
    finally:
        mmu_logger.removeHandler(handler)
        mmu.logs.set_verbosity(before)
    assert seen == ["mmu.engine.build:input y rejected", "mmu.demo.run:[demo] build ...",
                    "mmu.engine.build:after the stage", "mmu.engine.build:verbose"]
    table = stage_table({"stages_s": {"sim": 12.34, "build": 5.0}, "reused": ["sim"], "total_s": 17.5,
                         "report": "out/report.html"})
    assert table.splitlines() == ["", "stage         seconds", "sim              12.3  (earlier run, reused)",
                                  "build             5.0", "total            17.5", "", "report: out/report.html"]


def test_report_figures_ignore_a_global_usetex(tmp_path, monkeypatch):
    """GaiaXPy's plotter, imported with the Gaia mock, sets matplotlib's `text.usetex` globally;
    the report draws its figures with its own settings, so no LaTeX install is needed."""
    import matplotlib

    from mmu.demo import report

    matplotlib.use("Agg")
    monkeypatch.setitem(matplotlib.rcParams, "text.usetex", True)
    monkeypatch.setattr(report, "_examples", lambda *a: [])
    for name in ("_z_scatter", "_retrieval", "_embedding_map"):
        monkeypatch.setattr(report, name, lambda *a: None)
    run = tmp_path / "runs" / "demo"
    (run / "checkpoints").mkdir(parents=True)
    (run / "log.jsonl").write_text("\n".join(json.dumps({"step": s, "loss": 4.0 / s}) for s in range(1, 6)))
    summary = {"size": {"name": "tiny"}, "seed": 1, "stages_s": {"sim": 1.0}, "reused": [], "total_s": 1.0,
               "results": {"pretrain": {"checkpoint": str(run / "checkpoints" / "x.pt")}}}
    page = report.write_report(tmp_path, summary)
    assert page.read_text().count("data:image/png;base64,") == 1  # the training curve, drawn
    assert matplotlib.rcParams["text.usetex"] is True  # the caller's settings are left as they were


def test_until_stops_after_a_stage_and_the_next_run_goes_on(tmp_path, monkeypatch):
    """`mmu demo --until export` makes the data (e.g. on a CPU machine) and writes no report; the
    same command without it reuses those stages and runs the rest."""
    from mmu.cli import main
    from mmu.demo import report
    from mmu.demo.run import Demo

    ran = []
    for name, method in (("sim", "sim"), ("build", "build_all"), ("crossmatch", "crossmatch_all"),
                         ("export", "export_all"), ("pretrain", "pretrain")):
        monkeypatch.setattr(Demo, method, lambda self, n=name: ran.append(n) or {"checkpoint": "ck"})
    monkeypatch.setattr(Demo, "evaluate", lambda self, ckpt: ran.append(f"eval {ckpt}") or {})
    monkeypatch.setattr(report, "write_report", lambda out, summary: out / "report.html")
    monkeypatch.setattr("mmu.cli.demo.require_extra", lambda *a: None)
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--size", "tiny", "--until", "export", "--workers", "1"]) == 0
    assert ran == ["sim", "build", "crossmatch", "export"]
    assert sorted(p.stem for p in (out / "stages").glob("*.json")) == ["build", "crossmatch", "export", "sim"]
    assert json.loads((out / "demo.json").read_text())["report"] is None
    ran.clear()
    summary = Demo(out, "tiny", workers=1).run()
    assert ran == ["pretrain", "eval ck"] and summary["reused"] == ["sim", "build", "crossmatch", "export"]
    assert summary["report"] == str(out / "report.html")
    with pytest.raises(ValueError, match="until must be one of"):
        Demo(out, "tiny").run(until="report")
