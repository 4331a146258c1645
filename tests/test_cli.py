"""The command line as a user runs it: one style for every command (help, --version, exit codes,
one-line errors, -v/-q)."""
from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys

import pytest

import mmu
import mmu.logs
from mmu.cli import main, make_parser
from mmu.registry.catalog import load_catalog


def mmu_run(*args, check=True):
    out = subprocess.run([sys.executable, "-m", "mmu", *args], capture_output=True, text=True, timeout=120)
    if check:
        assert out.returncode == 0, out.stderr
    return out


def run(capsys, *args):
    """`mmu ARGS` in this process: (exit status, stdout, stderr)."""
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(err: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err


@pytest.fixture(autouse=True)
def _restore_verbosity():
    yield
    mmu.logs.set_verbosity("info")
    mmu.logs.enable_progress_bars()


def test_catalog_list_shows_every_dataset_with_its_license():
    out = mmu_run("catalog", "list").stdout
    for d in load_catalog().datasets:
        line = next(row for row in out.splitlines() if row.startswith(d.name + " "))
        assert d.license.id in line and d.survey in line
    listed = json.loads(mmu_run("catalog", "list", "--json").stdout)
    assert [d["name"] for d in listed] == [d.name for d in load_catalog().datasets]


def test_catalog_show_prints_citation_and_license():
    out = mmu_run("catalog", "show", "desi_dr1").stdout
    assert "@article{DESI2025DR1," in out and "CC-BY-4.0" in out and "acknowledgement" in out
    bad = mmu_run("catalog", "show", "nope", check=False)
    assert bad.returncode == 2 and "no dataset 'nope'" in bad.stderr
    assert_one_line_error(bad.stderr)


def _leaf_parsers(p: argparse.ArgumentParser, path=()):
    subs = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, p
    for a in subs:
        for name, child in a.choices.items():
            yield from _leaf_parsers(child, (*path, name))


LEAVES = [path for path, _ in _leaf_parsers(make_parser())]


def test_the_tree_has_every_command():
    for cmd in [("sim",), ("fetch",), ("build",), ("crossmatch",), ("export-wds",), ("demo",), ("pretrain",),
                ("push",), ("docs", "schema"), ("catalog", "list"), ("catalog", "show"), ("catalog", "cite"),
                ("eval", "embed"), ("eval", "run"), ("eval", "submit"), ("eval", "leaderboard"),
                ("eval", "baselines")]:
        assert cmd in LEAVES, cmd


@pytest.mark.parametrize("path", LEAVES, ids=[" ".join(p) for p in LEAVES])
def test_every_command_has_help_with_an_example_and_the_global_options(path, capsys):
    with pytest.raises(SystemExit) as e:
        main([*path, "--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0
    assert out.startswith(f"usage: mmu {' '.join(path)}"), out[:80]
    assert "example" in out, f"`mmu {' '.join(path)} --help` has no example"
    example = out[out.index("example"):]
    assert f"mmu {path[-1]}" in example or f"mmu {' '.join(path)}" in example, example
    for opt in ("-v, --verbose", "-q, --quiet", "--no-progress"):
        assert opt in out, opt


def test_eval_run_help_explains_checkpoint_which_and_device(capsys):
    with pytest.raises(SystemExit):
        main(["eval", "run", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--checkpoint CHECKPOINT a checkpoint written by `mmu pretrain`" in out
    assert "'projection' (default), the shared contrastive space" in out and "'backbone'" in out
    assert "--device DEVICE torch device to embed on: cpu, cuda" in out


@pytest.mark.parametrize("cmd", [[], ["eval"], ["catalog"], ["docs"]])
def test_no_subcommand_prints_help_to_stderr_and_exits_2(cmd, capsys):
    code, out, err = run(capsys, *cmd)
    assert code == 2 and out == ""
    assert err.startswith("usage: mmu" + "".join(" " + c for c in cmd) + " "), err
    assert len(err.splitlines()) > 5  # the whole help, not only the usage line


def test_no_subcommand_exits_2_from_the_console_too():
    out = mmu_run("eval", check=False)
    assert out.returncode == 2 and out.stderr.startswith("usage: mmu eval") and out.stdout == ""


def test_version():
    out = mmu_run("--version")
    assert out.stdout.strip() == f"mmu {mmu.__version__}"


@pytest.mark.parametrize("cmd", [
    ["build", "nope_v1", "--raw", "{tmp}", "--hub", "{tmp}/hub"],
    ["fetch", "nope_v1", "--raw", "{tmp}/raw"],
    ["catalog", "show", "nope_v1"],
    ["export-wds", "nope_v1", "--hub", "{tmp}/hub", "--out", "{tmp}/shards"],
    ["crossmatch", "nope_v1", "desi_dr1", "--hub", "{tmp}/hub", "--name", "pair"],
])
def test_an_unknown_dataset_is_a_usage_error_in_every_command(cmd, tmp_path, capsys):
    code, _, err = run(capsys, *[c.format(tmp=tmp_path) for c in cmd])
    assert code == 2, err
    assert "'nope_v1'" in err
    assert_one_line_error(err)
    assert not (tmp_path / "hub").exists()


def test_build_of_unknown_dataset_is_a_clear_error_from_the_console(tmp_path):
    out = mmu_run("build", "nope_v1", "--raw", str(tmp_path), "--hub", str(tmp_path / "hub"), check=False)
    assert out.returncode == 2 and "no dataset 'nope_v1'" in out.stderr
    assert_one_line_error(out.stderr)
    assert not (tmp_path / "hub").exists()


def test_a_bad_option_is_a_usage_error():
    out = mmu_run("build", "desi_dr1", "--raw", "r", "--hub", "h", "--no-such-option", check=False)
    assert out.returncode == 2 and "unrecognized arguments: --no-such-option" in out.stderr


def test_an_unexpected_error_is_one_line_and_v_shows_the_traceback(tmp_path, capsys, monkeypatch):
    import mmu.registry.catalog as C

    def broken(*a, **k):
        raise RuntimeError("the disk fell off")

    monkeypatch.setattr(C, "load_catalog", broken)
    code, _, err = run(capsys, "catalog", "list")
    assert code == 1 and "error: the disk fell off" in err
    assert_one_line_error(err)
    with pytest.raises(RuntimeError, match="disk fell off"):
        main(["catalog", "list", "-v"])


@pytest.mark.parametrize("flags, level, bars", [
    ([], logging.INFO, True),
    (["-q"], logging.WARNING, False),
    (["--quiet"], logging.WARNING, False),
    (["-v"], logging.DEBUG, True),
    (["--no-progress"], logging.INFO, False),
])
@pytest.mark.parametrize("where", ["before", "after"])
def test_verbosity_switch_before_or_after_the_command(flags, level, bars, where, capsys):
    args = [*flags, "catalog", "list"] if where == "before" else ["catalog", "list", *flags]
    code, out, _ = run(capsys, *args)
    assert code == 0 and "desi_dr1" in out  # the command's own output is never silenced
    assert mmu.logs.get_verbosity() == level
    assert mmu.logs.progress_bars_enabled() is bars


def test_quiet_silences_info_messages_but_not_warnings(capsys):
    def noisy(args):
        logging.getLogger("mmu.cli.catalog").info("an info line")
        logging.getLogger("mmu.cli.catalog").warning("a warning line")
        return 0

    parser = make_parser()
    args = parser.parse_args(["-q", "catalog", "list"])
    args.func = noisy
    from mmu.cli.common import dispatch

    assert dispatch(args) == 0
    err = capsys.readouterr().err
    assert "a warning line" in err and "an info line" not in err


def test_verbose_and_quiet_together_is_a_usage_error(capsys):
    code, _, err = run(capsys, "-v", "catalog", "list", "-q")
    assert code == 2 and "contradict" in err


def test_import_mmu_does_not_import_torch_or_dask_distributed():
    code = "import sys, mmu, mmu.model.schema, mmu.registry.catalog, mmu.engine.build, mmu.cli; " \
           "mmu.cli.make_parser(); " \
           "print(sorted(m for m in ('torch', 'distributed', 'sklearn', 'galsim') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_progress_bars_only_on_a_terminal_and_never_when_off():
    import io

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    assert mmu.logs.tqdm(range(3), file=io.StringIO()).disable is True  # a log file, a pipe
    assert not mmu.logs.tqdm(range(3), file=Terminal()).disable
    mmu.logs.disable_progress_bars()
    assert mmu.logs.tqdm(range(3), file=Terminal()).disable is True
