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
    assert "total" in first.stdout and "pretrain" in first.stdout
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    # evaluated on the demo's own task overlay, against a random-weight encoder, and submitted
    tasks = summary["results"]["eval"]["tasks"]
    assert set(tasks) == {"DemoRedshiftImage.v1", "DemoLogMassImage.v1", "DemoRedshiftSpectrum.v1"}
    for t in tasks.values():
        assert set(t) == {"pretrained", "random-weights"}
        assert all(v["comparable"] and v["n_test"] > 0 for v in t.values())
    page = (out / "site" / "index.html").read_text()
    assert "not comparable with the public board" in page and "demo-pretrained" in page
    report = (out / "report.html").read_text()
    assert report.count("data:image/png;base64,") >= 3  # examples, training curve, z scatter
    assert "http://" not in report and "https://" not in report
    assert "DemoRedshiftImage.v1" in report and "not comparable with the public board" in report
    assert second.stdout.count("reusing") == 6
    # the report as a browser renders it: the probe table's rows are the demo's results
    from test_eval_leaderboard import chromium
    exe = chromium()
    dom = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                          "--no-first-run", f"--user-data-dir={tmp_path / '.chr'}", "--dump-dom",
                          (out / "report.html").as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    cells = _table_cells(dom.stdout, "probes")
    assert {r[0] for r in cells} == set(tasks)
    for name, _, pretrained, random, n_test in cells:
        assert float(pretrained) == pytest.approx(tasks[name]["pretrained"]["value"], abs=5e-4)
        assert float(random) == pytest.approx(tasks[name]["random-weights"]["value"], abs=5e-4)
        assert int(n_test) == tasks[name]["pretrained"]["n_test"]


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
