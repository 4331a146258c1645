"""Errors a user meets on the command line are one `error: ...` line with the right exit status:
a --hub that is a file (issue 21 #5), a mistyped dataset name (#6), a missing extra (issue 14)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mmu.cli import main


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


HUB_COMMANDS = {
    "build": ["build", "desi_dr1", "--raw", "{tmp}/raw", "--hub", "{hub}"],
    "crossmatch": ["crossmatch", "desi_dr1", "legacysurvey_dr10_south", "--hub", "{hub}", "--name", "pair"],
    "export-wds": ["export-wds", "ls_desi", "--hub", "{hub}", "--out", "{tmp}/shards"],
    "eval run": ["eval", "run", "--checkpoint", "{tmp}/model.pt", "--hub", "{hub}", "--out", "{tmp}/results"],
    "push": ["push", "desi_dr1", "--hub", "{hub}", "--repo", "org/desi_dr1", "--dry-run"],
}


@pytest.mark.parametrize("under", [False, True], ids=["hub-is-a-file", "hub-under-a-file"])
@pytest.mark.parametrize("command", sorted(HUB_COMMANDS))
def test_a_hub_that_is_a_file_is_one_line(command, under, tmp_path, capsys):
    (tmp_path / "raw").mkdir()
    (tmp_path / "model.pt").write_bytes(b"not a checkpoint")
    hub_file = tmp_path / "hub.txt"
    hub_file.write_text("I am a file")
    hub = hub_file / "inner" if under else hub_file
    args = [a.format(tmp=tmp_path, hub=hub) for a in HUB_COMMANDS[command]]
    code, _, err = run(capsys, *args)
    line = one_line_error(err)
    assert code == 2
    assert f"--hub {hub}" in line and "a hub is a folder" in line
    assert hub_file.read_text() == "I am a file"


def test_a_hub_that_is_a_file_from_the_console(tmp_path):
    (tmp_path / "hub").write_text("")
    out = subprocess.run([sys.executable, "-m", "mmu", "build", "desi_dr1", "--raw", str(tmp_path), "--hub",
                          str(tmp_path / "hub")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stderr.startswith(f"error: --hub {tmp_path / 'hub'} is a file")
    assert "Traceback" not in out.stderr and "FileExistsError" not in out.stderr


def fake_hub(tmp_path, names):
    hub = tmp_path / "hub"
    for n in names:
        (hub / n).mkdir(parents=True)
        (hub / n / "build.json").write_text(json.dumps({"name": n}))
    (hub / "notes").mkdir()  # a folder without build.json is not a dataset
    return hub


def test_export_of_a_mistyped_name_suggests_the_nearest_built_one(tmp_path, capsys):
    hub = fake_hub(tmp_path, ["ls_desi", "desi_dr1", "legacysurvey_dr10_south"])
    code, _, err = run(capsys, "export-wds", "ls_desy", "--hub", hub, "--out", tmp_path / "shards")
    line = one_line_error(err)
    assert code == 2
    assert "did you mean 'ls_desi'?" in line
    assert "The hub holds: desi_dr1, legacysurvey_dr10_south, ls_desi." in line
    assert "mmu build ls_desy" not in line  # the old, wrong hint for a paired catalog
    assert not (tmp_path / "shards").exists()


def test_a_name_near_nothing_lists_the_hub_and_both_ways_to_make_it(tmp_path, capsys):
    hub = fake_hub(tmp_path, ["desi_dr1"])
    code, _, err = run(capsys, "export-wds", "zz_top", "--hub", hub, "--out", tmp_path / "shards")
    line = one_line_error(err)
    assert code == 2 and "did you mean" not in line and "The hub holds: desi_dr1." in line
    assert "`mmu build zz_top --raw RAW" in line and "`mmu crossmatch A B --hub" in line
    code, _, err = run(capsys, "export-wds", "x", "--hub", tmp_path / "empty", "--out", tmp_path / "shards")
    assert code == 2 and "The hub holds no built datasets." in err


def test_crossmatch_of_a_dataset_the_hub_lacks_is_a_usage_error(tmp_path, capsys):
    hub = fake_hub(tmp_path, ["desi_dr1", "legacysurvey_dr10_south"])
    code, _, err = run(capsys, "crossmatch", "legacysurvey_dr10_suoth", "desi_dr1", "--hub", hub, "--name", "p")
    assert code == 2 and "did you mean 'legacysurvey_dr10_south'?" in one_line_error(err)
    assert not (hub / "p").exists()


# --- extras ------------------------------------------------------------------------------------

EXTRA_COMMANDS = [
    ("build", "hats_import", ["build", "desi_dr1", "--raw", "{tmp}", "--hub", "{tmp}/hub"]),
    ("build", "hats_import", ["fetch", "desi_dr1", "--raw", "{tmp}/raw", "--limit", "1"]),
    ("build", "distributed", ["crossmatch", "a_v1", "b_v1", "--hub", "{tmp}/hub", "--name", "p"]),
    ("build", "hats_import", ["export-wds", "ls_desi", "--hub", "{tmp}/hub", "--out", "{tmp}/shards"]),
    ("sim", "galsim", ["sim", "--out", "{tmp}/raw", "--galaxies", "10"]),
    ("train", "torch", ["pretrain", "--config", "pretrain/configs/tiny_cpu.yaml"]),
    ("eval", "sklearn", ["eval", "run", "--checkpoint", "c.pt", "--hub", "{tmp}/hub", "--out", "{tmp}/r"]),
    ("eval", "sklearn", ["eval", "baselines", "--config", "c.yaml", "--hub", "{tmp}/hub", "--out", "{tmp}/r"]),
    ("eval", "torch", ["eval", "embed", "--checkpoint", "c.pt", "--dataset", "d", "--hub", "{tmp}/hub",
                       "--out", "{tmp}/e.parquet", "--column", "x"]),
    ("demo", "galsim", ["demo", "--out", "{tmp}/demo"]),
    ("demo", "torch", ["demo", "--out", "{tmp}/demo"]),
]


@pytest.mark.parametrize("extra, module, cmd", EXTRA_COMMANDS,
                         ids=[f"{c[2][0]}-without-{c[1]}" for c in EXTRA_COMMANDS])
def test_a_missing_extra_is_one_line_naming_it(extra, module, cmd, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, module, None)  # `import module` fails, find_spec says None
    code, _, err = run(capsys, *[c.format(tmp=tmp_path) for c in cmd])
    line = one_line_error(err)
    assert code == 1
    assert f"needs the [{extra}] extra (missing: {module}" in line and f"pip install 'mmu-hub[{extra}]'" in line
    assert f"mmu {cmd[0]}" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing was started


def test_a_missing_extra_in_a_fresh_process(tmp_path):
    """As a user without torch sees it: a meta-path finder makes `import torch` fail."""
    code = ("import sys, importlib.abc\n"
            "class Hide(importlib.abc.MetaPathFinder):\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] in ('torch', 'timm'):\n"
            "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
            "sys.meta_path.insert(0, Hide())\n"
            "from mmu.cli import main\n"
            "sys.exit(main(sys.argv[1:]))\n")
    out = subprocess.run([sys.executable, "-c", code, "pretrain", "--config", "pretrain/configs/tiny_cpu.yaml"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1, out.stderr
    assert one_line_error(out.stderr) == ("error: mmu pretrain needs the [train] extra (missing: torch, timm): "
                                          "pip install 'mmu-hub[train]'")
