"""One override syntax, `KEY=VALUE` with a dotted key and a YAML value, read by one parser
(`mmu.overrides`) in every command that takes overrides: `mmu sim`, `mmu pretrain`,
`mmu eval baselines`."""
from __future__ import annotations

import pytest

from mmu.cli import main
from mmu.overrides import OverrideError, apply_overrides, parse_overrides, parse_value


@pytest.mark.parametrize("text, value", [
    ("100", 100), ("3e-4", 3e-4), ("1e5", 1e5), ("0.5", 0.5), ("true", True), ("false", False),
    ("null", None), ("", None), ("[a, b]", ["a", "b"]), ("[1,2]", [1, 2]), ("{g: 1, r: 2}", {"g": 1, "r": 2}),
    ("shards/train", "shards/train"), ("'007'", "007"), ('"x y"', "x y"), ("a: b: c", "a: b: c"),
    ('{"SNIa": 0.5}', {"SNIa": 0.5}),  # the JSON that `mmu sim --set` read before is YAML too
])
def test_values_are_read_as_yaml(text, value):
    assert parse_value(text) == value and type(parse_value(text)) is type(value)


def test_dotted_keys_nest_and_a_later_item_wins():
    got = parse_overrides(["train.steps=100", "data.train=[a,b]", "train.lr=1e-3", "train.steps=7"])
    assert got == {"train": {"steps": 7, "lr": 1e-3}, "data": {"train": ["a", "b"]}}


@pytest.mark.parametrize("item, message", [
    ("train.steps", "expected key=value, e.g. train.steps=100"),
    ("=3", "the key before '=' is empty"),
    (" =3", "the key before '=' is empty"),
    ("a..b=1", "is not a dotted key (a part is '')"),
    ("a.=1", "is not a dotted key"),
    ("a b=1", "is not a dotted key"),
])
def test_malformed_items_are_named_in_the_error(item, message):
    with pytest.raises(OverrideError) as e:
        parse_overrides([item])
    assert message in str(e.value) and repr(item) in str(e.value)


def test_a_value_is_not_a_section():
    with pytest.raises(OverrideError, match="'a' is a value \\(1\\), not a section"):
        parse_overrides(["a=1", "a.b=2"])
    with pytest.raises(OverrideError, match="'train.steps' is a value"):
        apply_overrides({"train": {"steps": 5}}, ["train.steps.x=1"])


def test_apply_replaces_at_the_path_and_leaves_the_input_alone():
    data = {"model": {"a": 1, "b": 2}, "train": {"steps": 5}}
    got = apply_overrides(data, ["model={c: 3}", "train.steps=9", "run.dir=out"])
    assert got == {"model": {"c": 3}, "train": {"steps": 9}, "run": {"dir": "out"}}
    assert data == {"model": {"a": 1, "b": 2}, "train": {"steps": 5}}


# --- the same parser in every command --------------------------------------------------------

@pytest.fixture
def captured_sim(monkeypatch):
    import mmu.sim

    seen = {}

    def fake_simulate(out, **kw):
        seen.update(kw)
        return {"counts": {"galaxies": 1, "fields_or_cells": 1, "stars": 0, "qsos": 0, "desi_spectra": 0,
                           "desi_targets": 0, "sdss_spectra": 0, "transients": 0},
                "files": {"total_files": 0, "total_bytes": 0, "legacysurvey_bricks": 0}, "seed": 0}

    monkeypatch.setattr(mmu.sim, "simulate", fake_simulate)
    return seen


def test_sim_reads_overrides_with_the_shared_parser(captured_sim, tmp_path, capsys):
    items = ["zeropoint_rms_mag=5e-2", "psf_fwhm_arcsec=[1.4, 1.3, 1.2, 1.1]",
             "transient_class_fractions={SNIa: 0.5, SNII: 0.5}", "crop_pad_pix=32"]
    assert main(["sim", "--out", str(tmp_path), "--set", *items[:2], "--set", *items[2:]]) == 0
    # before: JSON, so the unquoted mapping stayed a string
    assert captured_sim["config"] == parse_overrides(items) == {
        "zeropoint_rms_mag": 0.05, "psf_fwhm_arcsec": [1.4, 1.3, 1.2, 1.1],
        "transient_class_fractions": {"SNIa": 0.5, "SNII": 0.5}, "crop_pad_pix": 32}


def test_sim_override_errors_are_usage_errors(captured_sim, tmp_path, capsys):
    assert main(["sim", "--out", str(tmp_path), "--set", "zeropoint_rms_mag"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --set: override 'zeropoint_rms_mag': expected key=value") and not captured_sim


def test_sim_unknown_parameter_is_a_usage_error(tmp_path, capsys):
    assert main(["sim", "--out", str(tmp_path / "raw"), "--set", "no_such_parameter=1"]) == 2
    err = capsys.readouterr().err
    assert "unknown simulation parameter(s) ['no_such_parameter']" in err and "Traceback" not in err
    assert not (tmp_path / "raw").exists()


@pytest.fixture
def captured_training(monkeypatch):
    import mmu.pretrain.train as T

    seen = {}

    def fake_run_training(cfg, resume=False):
        seen["cfg"] = cfg
        return {"checkpoint": None}

    monkeypatch.setattr(T, "run_training", fake_run_training)
    return seen


@pytest.mark.parametrize("spelling", ["--set", "positional", "mixed"])
def test_pretrain_takes_the_same_overrides_with_or_without_set(spelling, captured_training, capsys):
    from mmu.pretrain.config import config_dir

    args = ["pretrain", "--config", str(config_dir() / "tiny_cpu.yaml")]
    items = ["data.train=[a,b]", "train.steps=100", "optim.lr=3e-4"]
    if spelling == "--set":
        args += ["--set", *items]
    elif spelling == "positional":
        args += items  # the spelling before `--set`, kept
    else:
        args += [items[0], "--set", *items[1:]]
    assert main(args) == 0
    cfg = captured_training["cfg"]
    assert cfg.data.train == ["a", "b"] and cfg.train.steps == 100 and cfg.optim.lr == 3e-4


def test_pretrain_bad_override_or_config_is_a_usage_error(captured_training, tmp_path, capsys):
    from mmu.pretrain.config import config_dir

    assert main(["pretrain", "--config", str(config_dir() / "tiny_cpu.yaml"), "--set", "train.steps"]) == 2
    assert "expected key=value" in capsys.readouterr().err
    assert main(["pretrain", "--config", str(tmp_path / "none.yaml")]) == 2
    assert "no such config" in capsys.readouterr().err
    assert "cfg" not in captured_training


def test_eval_baselines_takes_the_same_overrides(monkeypatch, tmp_path, capsys):
    import mmu.eval.baselines as B
    from mmu.pretrain.config import config_dir

    seen = {}
    monkeypatch.setattr(B, "run_baselines", lambda cfg, *a, **k: seen.update(cfg=cfg, **k) or [])
    base = ["eval", "baselines", "--config", str(config_dir() / "tiny_cpu.yaml"), "--hub", str(tmp_path),
            "--out", str(tmp_path / "out")]
    assert main([*base, "--set", "data.train=[a,b]", "train.steps=100", "--set", "optim.lr=3e-4"]) == 0
    cfg = seen["cfg"]
    assert cfg.data.train == ["a", "b"] and cfg.train.steps == 100 and cfg.optim.lr == 3e-4
    assert seen["device"] is None  # a GPU when there is one
    assert main([*base, "--device", "cpu", "--epochs", "2", "--batch-size", "16"]) == 0
    assert seen["device"] == "cpu" and seen["supervised_epochs"] == 2 and seen["supervised_batch_size"] == 16
    assert main([*base, "--set", "=1"]) == 2
    assert "the key before '=' is empty" in capsys.readouterr().err


def test_python_m_entry_points_take_the_same_options(tmp_path, capsys, captured_training):
    """`python -m mmu.sim` and `python -m mmu.pretrain` (what torchrun runs) parse like `mmu sim|pretrain`."""
    from mmu.pretrain import cli as pretrain_cli
    from mmu.pretrain.config import config_dir
    from mmu.sim import cli as sim_cli

    assert sim_cli.main(["--out", str(tmp_path / "raw"), "-q", "--set", "z_max"]) == 2
    assert "error: --set: override 'z_max': expected key=value" in capsys.readouterr().err
    assert pretrain_cli.main(["--config", str(config_dir() / "tiny_cpu.yaml"), "train.steps=3", "--set",
                              "data.batch_size=4", "--no-progress"]) == 0
    cfg = captured_training["cfg"]
    assert cfg.train.steps == 3 and cfg.data.batch_size == 4


# --- mmu build --set: the partitioning settings ------------------------------------------------------

def test_build_set_reaches_the_partition_settings(monkeypatch, tmp_path):
    import mmu.engine.build as engine

    seen = {}

    def fake_build(name, raw, hub, **kw):
        seen.update(kw, name=name)
        return True

    monkeypatch.setattr(engine, "build", fake_build)
    assert main(["build", "desi_dr1", "--raw", str(tmp_path), "--hub", str(tmp_path / "hub"),
                 "--set", "margin_threshold_arcsec=16", "compression_level=5"]) == 0
    s = seen["settings"]
    assert (s.margin_threshold_arcsec, s.compression_level, s.margin_order) == (16, 5, 13)
    assert main(["build", "desi_dr1", "--raw", str(tmp_path), "--hub", str(tmp_path / "hub")]) == 0
    assert seen["settings"] is None  # the defaults


@pytest.mark.parametrize("item, message", [
    ("no_such=1", "unknown setting(s) no_such"),
    ("margin_threshold_arcsec=0", "margin_threshold_arcsec must be a number in 0.1..3600"),
    ("highest_order", "expected key=value"),
])
def test_build_set_errors_are_usage_errors(item, message, tmp_path, capsys):
    assert main(["build", "desi_dr1", "--raw", str(tmp_path), "--hub", str(tmp_path / "hub"), "--set", item]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --set: ") and message in err and "Traceback" not in err
    assert not (tmp_path / "hub").exists()
