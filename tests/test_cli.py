"""The command line as a user runs it."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mmu.registry.catalog import load_catalog


def mmu(*args, check=True):
    out = subprocess.run([sys.executable, "-m", "mmu", *args], capture_output=True, text=True, timeout=120)
    if check:
        assert out.returncode == 0, out.stderr
    return out


def test_catalog_list_shows_every_dataset_with_its_license():
    out = mmu("catalog", "list").stdout
    for d in load_catalog().datasets:
        line = next(l for l in out.splitlines() if l.startswith(d.name + " "))
        assert d.license.id in line and d.survey in line
    listed = json.loads(mmu("catalog", "list", "--json").stdout)
    assert [d["name"] for d in listed] == [d.name for d in load_catalog().datasets]


def test_catalog_show_prints_citation_and_license():
    out = mmu("catalog", "show", "desi_dr1").stdout
    assert "@article{DESI2025DR1," in out and "CC-BY-4.0" in out and "acknowledgement" in out
    bad = mmu("catalog", "show", "nope", check=False)
    assert bad.returncode != 0 and "no dataset 'nope'" in bad.stderr


@pytest.mark.parametrize("cmd", [[], ["catalog"], ["build"], ["catalog", "list"], ["catalog", "show"]])
def test_every_command_has_help(cmd):
    out = mmu(*cmd, "--help").stdout
    assert "usage: mmu" in out and len(out.splitlines()) >= 3


def test_build_of_unknown_dataset_is_a_clear_error(tmp_path):
    out = mmu("build", "nope_v1", "--raw", str(tmp_path), "--hub", str(tmp_path / "hub"), check=False)
    assert out.returncode == 1 and "no dataset 'nope_v1'" in out.stderr
    assert not (tmp_path / "hub").exists()


def test_import_mmu_does_not_import_torch_or_dask_distributed():
    code = "import sys, mmu, mmu.model.schema, mmu.registry.catalog, mmu.engine.build, mmu.cli; " \
           "print(sorted(m for m in ('torch', 'distributed', 'mmu.pretrain', 'mmu.eval') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
