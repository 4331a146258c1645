"""`mmu demo --size tiny` end to end, as the README's main command runs it, and its resumption."""
from __future__ import annotations

import json
import subprocess
import sys

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
    assert second.stdout.count("reusing") == 6
