"""TESSVarClass.v1 and .v2 (issue 20): TESS light curve -> the simulated star's variability class.
v2 (mmu-sim 1.3, its halo horizontal branch in the instability strip) adds RR Lyrae and
supersedes v1 (mmu-sim 1.2, no RR Lyrae); each pins its own simulation and lock.

Real TESS has no class label, so this is a mock task: the label is the simulator's truth
(`sim_truth_stars_v1.var_class`), reached only through the paired catalog `mock_tess_truth_v1`
(tess_spoc x sim_truth_stars_v1 by position), never through a column of tess_spoc. Fast: the
catalog entry, that neither the TESS files nor the tess_spoc rows carry the class, and the task's
row selection on a written paired hub. Slow: a star-rich mock -> tess_spoc + sim_truth_stars_v1
-> crossmatch -> `mmu eval`'s run_tasks with the star config's random-weights model.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mmu.eval.tasks import open_task
from mmu.registry.catalog import load_catalog
from test_survey_tasks import sky, write_dataset

REPO = Path(__file__).absolute().parents[1]
STAR_CONFIG = REPO / "pretrain" / "configs" / "stars_trimodal.yaml"
CATALOG = load_catalog()
CLASSES = ("constant", "eclipsing_binary", "rotator")
PAIRED = {"inputs_datasets": ["tess_spoc", "sim_truth_stars_v1"], "inputs_revisions": ["a" * 64, "b" * 64],
          "prefixes": ["tess", "sim_truth"], "method": "nearest", "radius_arcsec": 1.0}


def test_the_task_is_a_mock_task_reading_the_binned_light_curve_and_the_paired_truth():
    t = CATALOG.task("TESSVarClass.v1")
    assert t.mock and t.dataset == "tess_spoc" and t.type == "classification"
    assert t.main_score == "balanced_accuracy" and t.higher_is_better
    assert t.paired.name == "mock_tess_truth_v1" and t.paired.inputs == ["tess_spoc", "sim_truth_stars_v1"]
    assert t.paired.prefixes == ["tess", "sim_truth"] and t.target == "sim_truth_var_class"
    assert t.columns == ["tess_binned_lightcurve"] and t.modality == "lightcurve"
    assert t.lock == "benchmarks/mock-stars-v1.lock" and t.sim["config"]["tess_r_limit"] > 15
    # the star config trains the very column the task reads
    from mmu.pretrain.config import load_config

    assert "tess_binned_lightcurve" in load_config(STAR_CONFIG).model.modalities


def test_v2_reads_the_same_columns_on_the_rr_lyrae_simulation_and_supersedes_v1():
    from mmu.eval.tasks import tasks
    from mmu.sim.config import SIMULATOR_VERSION

    v1, v2 = CATALOG.task("TESSVarClass.v1"), CATALOG.task("TESSVarClass.v2")
    assert v1.superseded_by == "TESSVarClass.v2" and v2.superseded_by is None
    # v1 stays as released: mmu-sim 1.2 and its own lock
    assert v1.sim["simulator_version"] == "mmu-sim 1.2" and v1.lock == "benchmarks/mock-stars-v1.lock"
    assert "star_halo_hb_fraction" not in v1.sim["config"]
    same = ("dataset", "input_prefix", "modality", "input_columns", "target", "split_hash", "type", "main_score",
            "higher_is_better", "metrics", "protocols", "mock")
    assert {k: getattr(v2, k) for k in same} == {k: getattr(v1, k) for k in same}
    assert v2.paired.name == "mock_tess_truth_v2" and v2.paired.inputs == v1.paired.inputs
    assert v2.paired.prefixes == v1.paired.prefixes
    assert v2.sim["simulator_version"] == SIMULATOR_VERSION == "mmu-sim 1.3"
    assert v2.lock == "benchmarks/mock-stars-v2.lock" and v2.sim["config"]["star_halo_hb_fraction"] > 0.03
    names = [t.name for t in tasks()]  # what `mmu eval run` runs by default
    assert "TESSVarClass.v2" in names and "TESSVarClass.v1" not in names


def test_the_v2_lock_pins_the_catalog_entry_and_a_test_split_with_room_for_rr_lyrae():
    import json

    t = CATALOG.task("TESSVarClass.v2")
    lock = json.loads((REPO / t.lock).read_text())
    assert lock["benchmark"] == "mock-stars-v2" and "--lock mock-stars-v2" in lock["command"]
    assert lock["sim"] == t.sim and lock["sim"]["simulator_version"] == "mmu-sim 1.3"
    assert lock["datasets"]["mock_tess_truth_v2"]["content_revision"] == t.dataset_revision
    assert lock["tasks"]["TESSVarClass.v2"]["content_revision"] == t.dataset_revision
    splits = lock["tasks"]["TESSVarClass.v2"]["splits"]
    assert all(splits[s]["count"] >= n for s, n in t.min_per_split.items())
    assert sum(v["count"] for v in splits.values()) == lock["datasets"]["mock_tess_truth_v2"]["rows"]["total"]
    assert list(lock["tasks"]) == ["TESSVarClass.v2"]  # v1 keeps its own lock, unchanged
    assert json.loads((REPO / "benchmarks/mock-stars-v1.lock").read_text())["sim"] == CATALOG.task(
        "TESSVarClass.v1").sim


def test_neither_the_tess_files_nor_the_tess_rows_carry_the_class(tmp_path):
    from astropy.io import fits

    from mmu.builders.tess import Tess, TessConfig
    from mmu.sim import tess as sim_tess
    from test_builder_helpers import read_all

    star = pd.DataFrame({"tic_id": [27182818], "ra": [0.0], "dec": [-50.0], "tmag": [11.0],
                         "var_class": ["eclipsing_binary"], "period": [2.5], "amplitude": [0.2]})
    sim_tess.write_tess(star, tmp_path, np.random.default_rng(0), sectors=(2,))
    [path] = tmp_path.rglob("*_lc.fits")
    with fits.open(path) as h:
        text = " ".join(f"{k} {v}" for hdu in h for k, v in hdu.header.items()).lower()
        names = [c.lower() for c in h["LIGHTCURVE"].columns.names]
    assert "eclipsing" not in text and "binary" not in text and not any("class" in n for n in names)
    b = Tess(TessConfig())
    table, _ = read_all(b, b.list_inputs(tmp_path)[0])
    assert not [c for c in table.column_names if "class" in c or c in ("period", "amplitude", "var_class")]


def _binned(n: int) -> pa.Array:
    lc = {"time": [59000.0, 59000.1], "band": ["tess-t"] * 2, "flux": [1.0, 2.0], "flux_err": [0.1, 0.1],
          "mask": [False, False]}
    return pa.array([lc] * n)


@pytest.mark.parametrize("name, paired, classes", [
    ("TESSVarClass.v1", "mock_tess_truth_v1", CLASSES),
    ("TESSVarClass.v2", "mock_tess_truth_v2", CLASSES + ("rrlyrae",))])
def test_the_labels_are_the_paired_truths_and_a_hub_without_the_truth_cannot_run_it(tmp_path, name, paired, classes):
    hub = tmp_path / "hub"
    n = 900
    rng = np.random.default_rng(2)
    ra, dec, split = sky(n, 2)
    label = rng.choice(classes, n, p=[0.6, 0.1, 0.3] if len(classes) == 3 else [0.5, 0.1, 0.3, 0.1])
    write_dataset(hub, paired, {
        "object_id": [str(1_000_000 + i) for i in range(n)], "ra": ra, "dec": dec, "split": split,
        "tess_binned_lightcurve": _binned(n), "tess_tic_id": np.arange(1_000_000, 1_000_000 + n),
        "sim_truth_var_class": label}, mock=True, paired=PAIRED)
    data = open_task(CATALOG.task(name), hub)
    want = dict(zip(map(str, range(1_000_000, 1_000_000 + n)), label, strict=True))
    for s in ("train", "val", "test"):
        assert data.y[s].tolist() == [want[i] for i in data.ids[s]]
        assert len(data.ids[s]) == int(np.sum(np.asarray(split) == s))
    assert not data.comparable  # not the canonical build: its revision is not the pinned one
    # tess_spoc alone (no paired truth): the task has nothing to read
    alone = tmp_path / "hub_without_truth"
    write_dataset(alone, "tess_spoc", {"object_id": ["1"], "ra": [1.0], "dec": [1.0], "split": ["train"],
                                       "binned_lightcurve": _binned(1)}, mock=True)
    with pytest.raises(FileNotFoundError, match=f"'{paired}' is not built in hub .* holds: tess_spoc"):
        open_task(CATALOG.task(name), alone)


# ---------------------------------------------------------------- end to end on a small star mock

SIM = dict(galaxies=120, transients=0, seed=1, footprint="fields:8",  # fields in train, val and test
           config={"stars_per_deg2": 30000, "star_r_range": [12.0, 16.5], "tess_r_limit": 16.5,
                   "hsc_field_fraction": 0.0, "qso_per_deg2": 0.0})


def _features(lc: dict) -> list[float]:
    good = ~np.asarray(lc["mask"])
    f, e = np.asarray(lc["flux"], float)[good], np.asarray(lc["flux_err"], float)[good]
    med = np.median(f)
    lo, hi = np.percentile(f, [1, 99])
    return [np.log10(np.std(f) / med), np.log10((hi - lo) / med), np.log10(np.median(e) / med)]


@pytest.mark.slow
def test_tess_var_class_runs_end_to_end_on_a_small_star_mock(tmp_path, dask_client, torch_one_thread, monkeypatch):
    """sim -> tess_spoc + sim_truth_stars_v1 -> crossmatch -> run_tasks with the star config's
    model at initialisation: a result with the task's metrics, its labels the truth's var_class
    of each TIC star. The small mock has fewer rows than the canonical one's `min_per_split`."""
    import mmu.eval.run as R
    from mmu.engine.build import build
    from mmu.eval.baselines import random_weights_checkpoint
    from mmu.eval.embed import CheckpointEmbedder
    from mmu.pairing.crossmatch import crossmatch
    from mmu.pretrain.config import load_config
    from mmu.sim import simulate
    from test_builder_helpers import hub_table

    raw, hub = tmp_path / "raw", tmp_path / "hub"
    simulate(raw, progress=False, workers=1, **SIM)
    for name in ("tess_spoc", "sim_truth_stars_v1"):
        build(name, raw, hub, client=dask_client)
    task = CATALOG.task("TESSVarClass.v1")
    assert "var_class" not in hub_table(hub / "tess_spoc").column_names
    crossmatch(task.paired.inputs, hub, task.paired.name, prefixes=task.paired.prefixes,
               radius_arcsec=task.paired.radius_arcsec, client=dask_client)
    small = task.model_copy(update={"min_per_split": {"train": 20, "val": 1, "test": 2}})
    data = open_task(small, hub)
    truth = pd.read_parquet(raw / "sim_truth" / "stars.parquet").dropna(subset=["tic_id"])
    by_tic = dict(zip(truth["tic_id"].astype(int).astype(str), truth["var_class"], strict=True))
    for s in ("train", "val", "test"):
        assert len(data.ids[s]) and data.y[s].tolist() == [by_tic[i] for i in data.ids[s]]
    assert {"constant", "rotator"} <= set(data.y["train"])
    # the binned series carries the class: three hand-made features of it (fractional rms, 1-99
    # percentile range, median relative error) and a logistic regression tell the test stars apart
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score

    lcs = {}
    for f in sorted((hub / task.hub_name).rglob("Npix=*.parquet")):
        if "margin" not in str(f):
            t = pq.read_table(f, columns=["object_id", "tess_binned_lightcurve"])
            lcs.update(zip(t.column("object_id").to_pylist(), t.column("tess_binned_lightcurve").to_pylist(),
                           strict=True))
    X = {s: np.array([_features(lcs[i]) for i in data.ids[s]]) for s in ("train", "test")}
    clf = LogisticRegression(class_weight="balanced", max_iter=2000).fit(X["train"], data.y["train"])
    chance = 1 / len(set(data.y["test"]))
    assert set(data.y["test"]) == {"constant", "rotator"} and chance == 0.5
    assert balanced_accuracy_score(data.y["test"], clf.predict(X["test"])) >= 0.8  # 0.85 on this mock

    monkeypatch.setattr(R, "catalog_tasks", lambda names: [small])
    cfg = load_config(STAR_CONFIG, [f"run.dir={tmp_path / 'run'}", "train.device=cpu"])
    emb = CheckpointEmbedder(random_weights_checkpoint(cfg, tmp_path / "ckpt"), device="cpu")
    results = R.run_tasks(emb, hub, tmp_path / "results", model=R.model_block(emb, name="random"),
                          task_names=["TESSVarClass.v1"])
    assert [(r["task"]["name"], r["protocol"]["name"]) for r in results] == [
        ("TESSVarClass.v1", "linear.v1"), ("TESSVarClass.v1", "knn16.v1")]
    for r in results:
        assert 0.0 <= r["metrics"]["balanced_accuracy"] <= 1.0 and set(r["metrics"]) >= set(task.metric_names)
        assert r["embedding"]["columns"] == {"tess_binned_lightcurve": "tess_binned_lightcurve"}


@pytest.mark.parametrize("lock_name, task_name, want_sets", [
    ("mock-stars-v1.lock", "TESSVarClass.v1", ["hsc_field_fraction=0.0", "qso_per_deg2=0.0",
                                               "star_r_range=[12.0, 16.5]", "stars_per_deg2=30000",
                                               "tess_r_limit=16.5"]),
    ("mock-stars-v2.lock", "TESSVarClass.v2", ["hsc_field_fraction=0.0", "qso_per_deg2=0.0",
                                               "star_halo_hb_fraction=0.9", "star_r_range=[12.0, 16.5]",
                                               "stars_per_deg2=90000", "tess_r_limit=16.5"])])
def test_the_lock_script_simulates_the_pinned_star_sim_and_refuses_another(tmp_path, monkeypatch, lock_name,
                                                                           task_name, want_sets):
    """benchmarks/eval_mock_lock.py runs `mmu sim` with the task's `sim` (its `config` as --set
    KEY=VALUE), and refuses a WORK/raw simulated with other parameters, naming them."""
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("eval_mock_lock", REPO / "benchmarks" / "eval_mock_lock.py")
    L = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(L)
    tasks = L.mock_tasks(lock_name)
    assert [t.name for t in tasks] == [task_name]
    sim = tasks[0].sim
    calls = []

    def fake_sh(*args):  # what `mmu sim` would record in RAW/mmu-sim.json; builds are not run here
        calls.append([str(a) for a in args])
        if args[0] == "sim":
            (tmp_path / "raw").mkdir(exist_ok=True)
            (tmp_path / "raw" / "mmu-sim.json").write_text(json.dumps({
                "seed": sim["seed"], "simulator_version": sim["simulator_version"],
                "parameters": {"galaxies": sim["galaxies"], "transients": sim["transients"],
                               "footprint": sim["footprint"], "config": dict(sim["config"])}}))

    monkeypatch.setattr(L, "sh", fake_sh)
    L.make_hub(tmp_path, tasks, workers=1)
    cmd = calls[0]
    assert cmd[:2] == ["sim", "--out"] and cmd[cmd.index("--seed") + 1] == str(sim["seed"])
    sets = cmd[cmd.index("--set") + 1:]
    assert sets == want_sets
    assert [c[:2] for c in calls[1:]] == [["build", "sim_truth_stars_v1"], ["build", "tess_spoc"],
                                          ["crossmatch", "tess_spoc"]]
    # a WORK/raw made with another TESS limit is refused, not silently locked
    m = json.loads((tmp_path / "raw" / "mmu-sim.json").read_text())
    m["parameters"]["config"]["tess_r_limit"] = 15.0
    (tmp_path / "raw" / "mmu-sim.json").write_text(json.dumps(m))
    with pytest.raises(SystemExit, match=r"another simulation .*'tess_r_limit': \(15.0, 16.5\)"):
        L.make_hub(tmp_path, tasks, workers=1)
