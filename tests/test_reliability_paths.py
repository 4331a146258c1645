"""Paths never escape their folders, and an output that cannot be written is one line (issue 16,
items 7 and 8).

- a dataset name is a plain name (`mmu.hub.layout.check_name`): `mmu export-wds`, `mmu eval embed`
  and `mmu crossmatch` refuse `../hub0/x`, `/data/hub/x` and `hub/x` with exit 2 and a hint, and
  read nothing outside --hub;
- the shards an export's index.json lists lie inside the export folder (no absolute name, no
  `..`, no symbolic link out of it): the trainer refuses the index, naming it and the entry, before
  it opens any shard;
- a read-only --out (export-wds, eval embed) or --hub (crossmatch, whose output is the hub) is
  refused before any work with one line, exit 1; a read-only embedding cache costs only a warning.

The damaged or foreign checkpoint given to `mmu eval run|embed` and the malformed or `!!python`
config of `mmu pretrain` (item 8) are in tests/test_reliability_trust.py.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mmu.hub.layout import UnsafePath
from mmu_testbuilder import write_spectra_file
from test_cli_errors import one_line_error, run

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def built(tmp_path_factory, test_overlay, dask_client):
    """HUB holds testsurvey_v1 and othersurvey_v1 (60 objects each, the same sky, all in the train
    split); OTHER is a second hub beside it holding a copy of testsurvey_v1 (what a traversal
    would reach)."""
    from mmu.engine.build import build

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MMU_CATALOG", str(test_overlay))
        tmp = tmp_path_factory.mktemp("paths")
        rng = np.random.default_rng(0)
        ra, dec = rng.uniform(10, 12, 60), rng.uniform(-1, 1, 60)
        write_spectra_file(tmp / "raw" / "spectra-a.fits", np.arange(60), ra, dec, seed=1)
        write_spectra_file(tmp / "raw" / "other-b.fits", np.arange(60) + 1000, ra + 0.1 / 3600, dec, seed=2)
        for name in ("testsurvey_v1", "othersurvey_v1"):
            result = build(name, tmp / "raw", tmp / "hub", client=dask_client)
            assert result.manifest.rows.train == 60 and len(result.manifest.data_files["train"]) > 1
        shutil.copytree(tmp / "hub" / "testsurvey_v1", tmp / "other" / "testsurvey_v1")
        (tmp / "empty_hub").mkdir()
        yield tmp


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture
def checkpoint(tmp_path_factory):
    pytest.importorskip("torch")
    from mmu.eval.baselines import random_weights_checkpoint
    from mmu.pretrain.config import parse_config

    tmp = tmp_path_factory.mktemp("ckpt")
    cfg = {"name": "toy", "model": {"embed_dim": 16, "modalities": {
        "image": {"encoder": "tiny_convnet", "channels": 4, "size": 16},
        "spectrum": {"encoder": "tiny_spectrum", "length": 128}}},
        "data": {"train": ["x"], "batch_size": 8}, "train": {"steps": 1, "device": "cpu"},
        "run": {"dir": str(tmp / "run")}}
    return random_weights_checkpoint(parse_config(cfg), tmp / "ckpt")


# --- item 7: a dataset name is a name, never a path -------------------------------------------------


@pytest.mark.parametrize("form", ["relative", "absolute"])
def test_export_of_a_path_for_a_name_reads_nothing_outside_the_hub(built, form, capsys, monkeypatch):
    monkeypatch.chdir(built)
    name = "../other/testsurvey_v1" if form == "relative" else str(built / "other" / "testsurvey_v1")
    hint = "`testsurvey_v1 --hub ../other`" if form == "relative" else f"`testsurvey_v1 --hub {built / 'other'}`"
    code, _, err = run(capsys, "export-wds", name, "--hub", "empty_hub", "--out", "shards", "--workers", 1)
    line = one_line_error(err)
    assert code == 2
    assert line == f"error: dataset name {name!r} is a path, not a name: name a dataset by its folder in the hub, " \
                   f"e.g. {hint}"
    assert not (built / "shards").exists()  # before: exported the other hub's rows, index.json saying "../other/.."


def test_eval_embed_of_a_path_for_a_name_is_refused(built, checkpoint, tmp_path, capsys):
    name = str(built / "other" / "testsurvey_v1")
    code, _, err = run(capsys, "eval", "embed", "--checkpoint", checkpoint, "--dataset", name, "--hub",
                       built / "empty_hub", "--out", tmp_path / "e.parquet", "--column", "spectrum",
                       "--cache", "none")
    line = one_line_error(err)
    assert code == 2 and f"dataset name {name!r} is a path, not a name" in line
    assert f"`testsurvey_v1 --hub {built / 'other'}`" in line
    assert not (tmp_path / "e.parquet").exists()  # before: embedded the other hub's rows


def test_crossmatch_of_dataset_folders_given_as_paths_says_to_pass_names(built, capsys):
    hub = built / "hub"
    before = listing(hub)
    code, _, err = run(capsys, "crossmatch", hub / "testsurvey_v1", hub / "othersurvey_v1", "--hub", hub,
                       "--name", "pair", "--workers", 1)
    line = one_line_error(err)
    assert code == 2  # before: a FileNotFoundError on a doubled path, after the match had run
    assert f"dataset name '{hub / 'testsurvey_v1'}' is a path, not a name" in line
    assert f"e.g. `testsurvey_v1 --hub {hub}`" in line
    assert listing(hub) == before


@pytest.mark.parametrize("name", ["../escaped", "/tmp/escaped", "Bad-Name"])
def test_crossmatch_output_name_is_a_plain_name(built, name, capsys):
    hub = built / "hub"
    before = listing(hub)
    code, _, err = run(capsys, "crossmatch", "testsurvey_v1", "othersurvey_v1", "--hub", hub, "--name", name)
    line = one_line_error(err)
    assert code == 2  # before: exit 1 (a failed command), not a usage error
    assert line.startswith(f"error: --name {name!r}")
    assert ("is a path, not a name" in line) == ("/" in name)
    assert listing(hub) == before and not (built / "escaped").exists()


def test_a_hub_dataset_name_is_checked_once_for_every_reader(tmp_path):
    """`dataset_dir` is where every reader of a hub dataset starts (read_manifest, catalog_dir)."""
    from mmu.hub.layout import catalog_dir, check_name, dataset_dir, read_manifest

    assert dataset_dir(tmp_path, "desi_dr1") == tmp_path / "desi_dr1"
    for bad in ["../x", "/etc", "a/b", "..", ".", "", "a b", "x" * 81, "a\\b"]:
        for reader in (dataset_dir, catalog_dir, read_manifest):
            with pytest.raises(UnsafePath, match="is a path, not a name|is not allowed"):
                reader(tmp_path, bad)
    assert check_name("ls_desi.v2") == "ls_desi.v2"


# --- item 7: the shards an index lists lie inside its export ----------------------------------------


def tiny_config() -> dict:
    import yaml

    from mmu.pretrain.config import config_dir

    return yaml.safe_load((config_dir() / "tiny_cpu.yaml").read_text())


@pytest.fixture
def export(tmp_path):
    pytest.importorskip("torch")
    from mmu.pretrain.synthetic import columns_of, write_synthetic_export

    write_synthetic_export(tmp_path / "train", columns_of(tiny_config()), n_samples=16, n_shards=2, seed=1)
    return tmp_path / "train"


def _rename_first_shard(export: Path, name: str) -> None:
    index = json.loads((export / "index.json").read_text())
    index["shards"][0]["name"] = name
    (export / "index.json").write_text(json.dumps(index))


@pytest.mark.parametrize("name", ["/etc/passwd", "../../../../../../etc/passwd", "sub/../../x.tar"])
def test_an_index_naming_a_shard_outside_its_export_is_refused(export, name):
    from mmu.pretrain import data as D

    _rename_first_shard(export, name)
    with pytest.raises(UnsafePath) as info:
        D.Export(export)  # before: listed /etc/passwd as a shard, which the trainer opened
    msg = str(info.value)
    assert msg.startswith(f"{export / 'index.json'}: shards[0].name {name!r} is not a file name in the export")
    assert "export it again with `mmu export-wds`" in msg and "\n" not in msg


def test_a_shard_that_is_a_symlink_out_of_its_export_is_refused(export, tmp_path):
    from mmu.pretrain import data as D

    first, second = sorted(export.glob("shard-*.tar"))
    outside = tmp_path / "elsewhere.tar"
    shutil.move(first, outside)
    first.symlink_to(outside)
    with pytest.raises(UnsafePath) as info:
        D.Export(export)
    assert str(info.value).startswith(f"{export / 'index.json'}: shards[0].name '{first.name}' resolves to "
                                      f"{outside.resolve()} (through a symbolic link): every file it names must "
                                      f"lie inside {export}")
    first.unlink()
    first.symlink_to(second.name)  # a link that stays inside the export is fine
    assert len(D.Export(export).shards("train")) == 2


def test_pretrain_on_an_index_naming_a_shard_outside_is_one_line(export, tmp_path, capsys):
    import yaml

    from mmu.pretrain.synthetic import tiny_variant

    _rename_first_shard(export, "/etc/passwd")
    cfg = tiny_variant(tiny_config(), train=[str(export)], val=[str(export)], run_dir=str(tmp_path / "run"), steps=2)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    code, _, err = run(capsys, "pretrain", "--config", tmp_path / "c.yaml")
    line = one_line_error(err)
    assert code == 2 and line.startswith(f"error: {export / 'index.json'}: shards[0].name '/etc/passwd'")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_export_refuses_a_manifest_naming_data_outside_the_dataset(built, tmp_path, capsys):
    hub = tmp_path / "hub"
    shutil.copytree(built / "hub" / "testsurvey_v1", hub / "testsurvey_v1")
    manifest = json.loads((hub / "testsurvey_v1" / "build.json").read_text())
    manifest["data_files"]["train"][1] = "../../../../outside.parquet"
    (hub / "testsurvey_v1" / "build.json").write_text(json.dumps(manifest))
    code, _, err = run(capsys, "export-wds", "testsurvey_v1", "--hub", hub, "--out", tmp_path / "shards")
    line = one_line_error(err)
    # the typed manifest refuses it when build.json is read, for every reader (export, eval, tasks)
    assert code == 1
    assert line.startswith(f"error: {hub / 'testsurvey_v1' / 'build.json'}: not a valid build.json")
    assert ("data_files.train[1] = '../../../../outside.parquet' is not a relative path inside the dataset "
            "folder") in line and not (tmp_path / "shards").exists()


# --- item 8: an output that cannot be written --------------------------------------------------------

DROP_DAC = ["setpriv", "--inh-caps=-dac_override,-dac_read_search",
            "--bounding-set=-dac_override,-dac_read_search"]


def read_only(folder: Path) -> list[str]:
    """chmod `folder` read-only; the command prefix under which it really is (root bypasses file
    permissions: drop that capability with setpriv); skip where it stays writable."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o555)
    prefix = DROP_DAC if os.geteuid() == 0 and shutil.which("setpriv") else []
    probe = subprocess.run([*prefix, sys.executable, "-c", f"import os, sys; sys.exit(os.access({str(folder)!r}, "
                            "os.W_OK))"], capture_output=True)
    if probe.returncode != 0:
        folder.chmod(0o755)
        pytest.skip(f"{folder} stays writable (root without setpriv)")
    return prefix


def mmu(prefix: list[str], *args, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "MMU_CACHE": str(cwd / "cache"), **(env or {})}
    return subprocess.run([*prefix, sys.executable, "-m", "mmu", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def ro(tmp_path):
    folder = tmp_path / "ro"
    yield folder
    if folder.exists():
        folder.chmod(0o755)


def test_export_into_a_read_only_folder_is_one_line(built, ro, tmp_path):
    prefix = read_only(ro)
    out = mmu(prefix, "export-wds", "testsurvey_v1", "--hub", built / "hub", "--out", ro / "shards", "--workers", 1,
              cwd=tmp_path)
    assert out.returncode == 1, out.stderr
    assert one_line_error(out.stderr) == (f"error: --out {ro / 'shards'}: cannot write there: {ro} is not writable "
                                          "(permission denied); choose a writable --out or fix the folder's "
                                          "permissions")
    assert listing(ro) == []


def test_export_over_an_export_whose_folder_is_read_only_is_one_line(built, ro, tmp_path):
    (ro / "shards").mkdir(parents=True)
    (ro / "shards" / "index.json").write_text("{}")  # an earlier export, writable, in a read-only folder
    prefix = read_only(ro)
    out = mmu(prefix, "export-wds", "testsurvey_v1", "--hub", built / "hub", "--out", ro / "shards", "--overwrite",
              "--workers", 1, cwd=tmp_path)
    assert out.returncode == 1, out.stderr
    line = one_line_error(out.stderr)
    assert line.startswith(f"error: --out {ro / 'shards'}: cannot write the export: it is made in {ro} and "
                           f"renamed into place, and {ro} refuses writes (Permission denied)")
    assert listing(ro) == ["shards", "shards/index.json"]  # the earlier export is untouched


def test_crossmatch_into_a_read_only_hub_is_one_line_before_any_work(built, ro, tmp_path):
    for name in ("testsurvey_v1", "othersurvey_v1"):
        shutil.copytree(built / "hub" / name, ro / name)
    before = listing(ro)
    prefix = read_only(ro)
    out = mmu(prefix, "crossmatch", "testsurvey_v1", "othersurvey_v1", "--hub", ro, "--name", "pair",
              "--workers", 1, cwd=tmp_path)
    assert out.returncode == 1, out.stderr
    assert one_line_error(out.stderr) == (f"error: --hub {ro}: cannot write there: {ro} is not writable (permission "
                                          "denied); choose a writable --hub or fix the folder's permissions")
    assert "matched" not in out.stderr + out.stdout  # refused before matching, not after
    assert listing(ro) == before


def test_eval_embed_into_a_read_only_folder_is_one_line(built, checkpoint, ro, tmp_path):
    prefix = read_only(ro)
    out = mmu(prefix, "eval", "embed", "--checkpoint", checkpoint, "--dataset", "testsurvey_v1", "--hub",
              built / "hub", "--out", ro / "e.parquet", "--column", "spectrum", cwd=tmp_path)
    assert out.returncode == 1, out.stderr
    assert one_line_error(out.stderr) == (f"error: --out {ro / 'e.parquet'}: cannot write there: {ro} is not "
                                          "writable (permission denied); choose a writable --out or fix the "
                                          "folder's permissions")
    assert "embedded" not in out.stderr  # refused before embedding, not after


def test_eval_embed_with_a_read_only_cache_warns_and_writes_its_output(built, checkpoint, ro, tmp_path):
    prefix = read_only(ro)
    out = mmu(prefix, "eval", "embed", "--checkpoint", checkpoint, "--dataset", "testsurvey_v1", "--hub",
              built / "hub", "--out", tmp_path / "e.parquet", "--column", "spectrum", "--split", "train",
              "--cache", ro, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert f"the embedding cache {ro / 'embeddings'} cannot be written (Permission denied)" in out.stderr
    assert "Traceback" not in out.stderr
    from mmu.eval.embed import read_embeddings

    ids, emb, _ = read_embeddings(tmp_path / "e.parquet")
    assert len(ids) == 60 and emb.shape == (60, 16)  # every row of the split, embedded
    assert listing(ro) == []


def test_an_out_under_a_file_is_a_usage_error_before_any_work(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("keep me")
    (tmp_path / "hub").mkdir()
    code, _, err = run(capsys, "export-wds", "ls_desi", "--hub", tmp_path / "hub", "--out",
                       tmp_path / "notes.txt" / "shards")
    assert code == 2
    assert one_line_error(err) == (f"error: --out {tmp_path / 'notes.txt' / 'shards'} lies under "
                                   f"{tmp_path / 'notes.txt'}, which is a file: give a folder path")
    assert (tmp_path / "notes.txt").read_text() == "keep me"
