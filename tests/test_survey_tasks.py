"""The survey-label tasks (issue 19): tasks on the surveys' own label columns (DESI Redrock Z and
SPECTYPE, SDSS CLASS, PLAsTiCC true_target) that run on any build, mock or archive.

The hubs here are written by the tests: rows in the builders' column layout (DESI GALAXY / QSO /
STAR, ZWARN, primary; a Legacy Survey x DESI paired catalog; PLAsTiCC 991-994) with a valid
build.json, so the tasks' selection, filters, errors and probes are checked on several classes
whatever the simulator currently writes."""
from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from mmu.eval import metrics as M
from mmu.eval.protocols import KNN16_V1, LINEAR_V1, RETRIEVAL_V1, Split
from mmu.eval.tasks import TaskError, open_task
from mmu.hub.layout import dataset_dir
from mmu.hub.manifest import BuildManifest, PartitionRecord, RowCounts, SplitRecord, write_manifest
from mmu.model.schema import SPLITS
from mmu.registry.catalog import TaskEntry, load_catalog, parse_catalog

CATALOG = load_catalog()
SURVEY_TASKS = ["LegacySurveyDESIRedshift.v1", "DESIRedshiftSpectrum.v1", "DESISpectype.v1", "SDSSClass.v1",
                "LegacySurveyDESISpectype.v1", "PLAsTiCCClass.v1", "LegacySurveyDESIRetrieval.v1",
                "HSCLegacySurveyRetrieval.v1"]
CLASSES = ("GALAXY", "QSO", "STAR")


@pytest.fixture(autouse=True, scope="module")
def one_blas_thread():
    import sklearn.linear_model  # noqa: F401  (load the BLAS libraries before limiting them)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield


# ------------------------------------------------------------------------------- a written hub


def sky(n: int, seed: int):
    """n positions over ~80 order-4 HEALPix pixels (so every split has rows) and their splits."""
    rng = np.random.default_rng(seed)
    ra, dec = rng.uniform(0, 40, n), rng.uniform(-15, 15, n)
    return ra, dec, CATALOG.split_definition.assign(ra, dec)


def write_dataset(hub, name: str, columns, *, mock: bool, paired: dict | None = None) -> BuildManifest:
    """HUB/NAME: one parquet file per split (rows by their `split`) and a valid build.json;
    `columns` is a dict of columns or a table (whose schema keeps the modality metadata)."""
    table = columns if isinstance(columns, pa.Table) else pa.table(columns)
    d = dataset_dir(hub, name)
    d.mkdir(parents=True, exist_ok=True)
    files, rows = {}, {}
    split = np.asarray(table.column("split").to_pylist())
    for s in SPLITS:
        part = table.filter(pa.array(split == s))
        rows[s] = part.num_rows
        if part.num_rows:
            files[s] = [f"{s}/part-0.parquet"]
            (d / s).mkdir(exist_ok=True)
            pq.write_table(part, d / files[s][0])
    sd = CATALOG.splits
    revision = hashlib.sha256(repr(sorted(columns.items()) if isinstance(columns, dict) else table.to_pylist())
                              .encode()).hexdigest()
    m = BuildManifest(
        name=name, survey=name.split("_")[0], release="t", builder="test", builder_version="1", config={},
        schema_version="1", code_version="test", engine_version="test", build_key="k" * 64,
        content_revision=revision, mock=mock, mock_seed=1 if mock else None,
        split=SplitRecord(method=sd.method, order=sd.order, seed=sd.seed, fractions=dict(sd.fractions), hash=sd.hash),
        rows=RowCounts(total=table.num_rows, **rows), inputs=[],
        partition=PartitionRecord(partition_bytes=1, row_group_bytes=1, compression_level=1, highest_order=4,
                                  margin_delta=0, margin_order=4, margin_threshold_arcsec=10,
                                  margin_catalog="none"),
        modalities={}, data_files=files, created="2026-11-27T00:00:00Z", **(paired or {}))
    write_manifest(d, m)
    return m


def modality(n: int, present=None) -> pa.Array:
    """A modality struct column (only its validity matters to `open_task`)."""
    present = np.ones(n, bool) if present is None else np.asarray(present, bool)
    return pa.array([{"flux": [1.0, 2.0]} if p else None for p in present],
                    pa.struct([pa.field("flux", pa.list_(pa.float32()))]))


def desi_columns(n: int = 900, seed: int = 1, spectype=None):
    """Rows in the DESI builder's layout: GALAXY / QSO / STAR, ~10% ZWARN != 0, ~20% secondary."""
    rng = np.random.default_rng(seed)
    ra, dec, split = sky(n, seed)
    spectype = rng.choice(CLASSES, n, p=[0.6, 0.25, 0.15]) if spectype is None else np.asarray(spectype)
    z = np.where(spectype == "STAR", rng.normal(0, 1e-4, n), np.where(spectype == "QSO", rng.uniform(0.5, 3, n),
                                                                   rng.uniform(0.01, 1.2, n)))
    return {"object_id": [f"desi:{i}" for i in range(n)], "ra": ra, "dec": dec, "split": split,
            "spectrum": modality(n), "z": z, "zwarn": np.where(rng.random(n) < 0.1, 4, 0).astype(np.int64),
            "spectype": spectype.astype(str), "primary": rng.random(n) > 0.2}


@pytest.fixture
def hub(tmp_path):
    return tmp_path / "hub"


def task(name: str, **update) -> TaskEntry:
    t = CATALOG.task(name)
    return t.model_copy(update=update) if update else t


def expected_rows(cols, split, *keep):
    mask = np.asarray(cols["split"]) == split
    for k in keep:
        mask &= np.asarray(k)
    return sorted(np.asarray(cols["object_id"])[mask].tolist())


# ------------------------------------------------------------------------------- the catalog


def test_the_survey_label_tasks_are_registered_unpinned_and_free_of_the_simulator():
    mock_only = {d.name for d in CATALOG.datasets if d.mock_only}
    for name in SURVEY_TASKS:
        t = CATALOG.task(name)
        assert not t.mock and t.dataset_revision is None and t.sim is None and t.lock is None, name
        inputs = t.paired.inputs if t.paired else [t.dataset]
        assert not set(inputs) & mock_only, (name, inputs)
        assert t.protocols and t.split_hash == CATALOG.splits.hash
    for name in ("LegacySurveyDESIRedshift.v1", "LegacySurveyDESISpectype.v1", "LegacySurveyDESIRetrieval.v1"):
        p = CATALOG.task(name).paired
        assert (p.name, p.inputs, p.prefixes) == ("ls_dr10_desi_dr1", ["legacysurvey_dr10_south", "desi_dr1"],
                                                  ["legacysurvey", "desi"])
    assert CATALOG.task("DESISpectype.v1").main_score == "balanced_accuracy"
    assert CATALOG.task("SDSSClass.v1").main_score == "balanced_accuracy"
    plasticc = CATALOG.task("PLAsTiCCClass.v1")
    assert plasticc.class_weights == {"15": 2.0, "64": 2.0, "99": 2.0}
    assert {"weighted_log_loss", "balanced_accuracy"} <= set(plasticc.metric_names)
    retrieval = CATALOG.task("LegacySurveyDESIRetrieval.v1")
    assert {"r@1", "r@10"} <= set(retrieval.metric_names)
    for name in SURVEY_TASKS:
        if CATALOG.task(name).type != "retrieval":
            assert "linear.v1" in CATALOG.task(name).protocols and "knn16.v1" in CATALOG.task(name).protocols


def builder_columns(dataset: str) -> set[str]:
    """The columns a survey's builder writes (its modality columns and `extra_columns`)."""
    from mmu.engine.builder import get_builder

    entry = CATALOG.dataset(dataset)
    b = get_builder(entry.builder).from_options(entry.builder_config)
    return set(b.modalities()) | {f.name for f in b.extra_columns()}


@pytest.mark.parametrize("name", SURVEY_TASKS)
def test_survey_task_columns_are_what_the_builders_write(name):
    """Every label, filter and input column is one the survey's own builder writes, so the task
    runs on an archive build as on a mock one (prefixed as `mmu crossmatch --prefixes` does)."""
    from mmu.eval.tasks import filter_columns

    t = CATALOG.task(name)
    have = {"object_id", "ra", "dec", "split"}
    if t.paired:
        for ds, prefix in zip(t.paired.inputs, t.paired.prefixes, strict=True):
            have |= {f"{prefix}_{c}" for c in builder_columns(ds)}
        have |= {f"{prefix}_match_dist_arcsec" for prefix in t.paired.prefixes[1:]}  # added by the crossmatch
    else:
        have |= builder_columns(t.dataset)
    needed = {t.target, *filter_columns(t), *t.columns}
    assert needed <= have, sorted(needed - have)


@pytest.mark.parametrize("bad, message", [
    (dict(mock=True, sim={"seed": 1}, lock="x.lock"), "dataset_revision"),
    (dict(target_map={"1": "2"}), "target_map"),
])
def test_task_schema_rules_for_survey_and_mock_tasks(bad, message):
    base = dict(name="T.v1", dataset="d", modality="spectrum", target="z", split_hash="h", type="regression",
                main_score="r2", higher_is_better=True, protocols=["linear.v1"])
    assert TaskEntry(**base).dataset_revision is None  # a survey-label task pins no revision
    with pytest.raises(ValidationError, match=message):
        TaskEntry(**{**base, **bad})


def test_a_survey_label_task_may_not_read_the_simulators_truth():
    import copy

    import yaml

    from mmu.registry.catalog import CatalogError, default_catalog_path

    raw = yaml.safe_load(default_catalog_path().read_text())
    t = copy.deepcopy(next(t for t in raw["tasks"] if t["name"] == "LegacySurveyDESIRedshift.v1"))
    t["paired"]["inputs"].append("sim_truth_v1")
    t["paired"]["prefixes"].append("sim_truth")
    raw["tasks"].append({**t, "name": "LeakyRedshift.v1"})
    with pytest.raises(CatalogError, match=r"LeakyRedshift.v1 is a survey-label task.*\['sim_truth_v1'\]"):
        parse_catalog(raw)


# ------------------------------------------------------------------------------- opening on a build


@pytest.mark.parametrize("mock", [True, False], ids=["mock-build", "archive-build"])
def test_desi_spectype_rows_labels_and_build_on_any_build(hub, mock):
    cols = desi_columns()
    m = write_dataset(hub, "desi_dr1", cols, mock=mock)
    data = open_task(task("DESISpectype.v1"), hub)
    good = (np.asarray(cols["zwarn"]) == 0) & np.asarray(cols["primary"])
    for s in SPLITS:  # the filters, computed independently; the test rows lie in the sky's test split
        assert sorted(data.ids[s].tolist()) == expected_rows(cols, s, good)
        lab = dict(zip(cols["object_id"], cols["spectype"], strict=True))
        assert [lab[i] for i in data.ids[s]] == data.y[s].tolist()
    ra_dec = data.radec["test"]
    assert set(CATALOG.split_definition.assign(ra_dec[:, 0], ra_dec[:, 1])) == {"test"}
    assert set(data.y["train"]) == set(CLASSES)
    assert data.comparable and data.not_comparable == []  # no pinned revision: any build compares
    assert data.build == {"kind": "mock" if mock else "archive", "dataset": "desi_dr1",
                          "content_revision": m.content_revision, "inputs_revisions": None}


def test_desi_redshift_keeps_good_galaxy_redshifts_only(hub):
    cols = desi_columns()
    write_dataset(hub, "desi_dr1", cols, mock=True)
    data = open_task(task("DESIRedshiftSpectrum.v1"), hub)
    good = (np.asarray(cols["zwarn"]) == 0) & np.asarray(cols["primary"]) & (np.asarray(cols["spectype"]) == "GALAXY")
    z = dict(zip(cols["object_id"], cols["z"], strict=True))
    for s in SPLITS:
        assert sorted(data.ids[s].tolist()) == expected_rows(cols, s, good)
        np.testing.assert_array_equal(data.y[s], [z[i] for i in data.ids[s]])


def paired_columns(n: int = 900, seed: int = 2):
    """A Legacy Survey x DESI paired catalog as `mmu crossmatch` writes it (prefixed columns)."""
    desi = desi_columns(n, seed)
    rng = np.random.default_rng(seed + 1)
    out = {k: desi[k] for k in ("object_id", "ra", "dec", "split")}
    out["legacysurvey_image"] = modality(n, rng.random(n) > 0.05)  # a few cutouts missing
    out["legacysurvey_brick_primary"] = rng.random(n) > 0.1
    for k in ("spectrum", "z", "zwarn", "spectype", "primary"):
        out[f"desi_{k}"] = desi[k]
    return out


PAIRED_MANIFEST = {"paired": True, "inputs_datasets": ["legacysurvey_dr10_south", "desi_dr1"],
                   "inputs_revisions": ["a" * 64, "b" * 64], "prefixes": ["legacysurvey", "desi"],
                   "method": "nearest", "radius_arcsec": 1.0}


def test_paired_tasks_record_their_inputs_and_refuse_comparison_with_a_truth_pairing(hub):
    cols = paired_columns()
    write_dataset(hub, "ls_dr10_desi_dr1", cols, mock=True, paired=PAIRED_MANIFEST)
    data = open_task(task("LegacySurveyDESIRedshift.v1"), hub)
    good = (np.asarray(cols["desi_zwarn"]) == 0) & np.asarray(cols["desi_primary"]) \
        & (np.asarray(cols["desi_spectype"]) == "GALAXY") & np.asarray(cols["legacysurvey_brick_primary"]) \
        & np.asarray(cols["legacysurvey_image"].is_valid())
    for s in SPLITS:
        assert sorted(data.ids[s].tolist()) == expected_rows(cols, s, good)
    assert data.comparable
    assert data.build == {"kind": "mock", "dataset": "ls_dr10_desi_dr1",
                          "content_revision": data.manifest.content_revision, "inputs_revisions": ["a" * 64, "b" * 64]}
    # the same rows cross-matched with the simulator's truth as a third input: not comparable
    write_dataset(hub, "ls_dr10_desi_dr1", cols, mock=True, paired={
        **PAIRED_MANIFEST, "inputs_datasets": ["legacysurvey_dr10_south", "desi_dr1", "sim_truth_v1"],
        "inputs_revisions": ["a" * 64, "b" * 64, "c" * 64], "prefixes": ["legacysurvey", "desi", "sim_truth"]})
    data = open_task(task("LegacySurveyDESIRedshift.v1"), hub)
    assert not data.comparable and "sim_truth_v1" in data.not_comparable[0]


def test_a_mock_task_still_pins_its_revision(hub):
    cols = desi_columns()
    m = write_dataset(hub, "desi_dr1", cols, mock=True)
    pinned = task("DESISpectype.v1", mock=True, dataset_revision="f" * 64, sim={"seed": 1}, lock="x.lock")
    data = open_task(pinned, hub)
    assert not data.comparable and "content revision" in data.not_comparable[0]
    assert open_task(pinned.model_copy(update={"dataset_revision": m.content_revision}), hub).comparable


def test_plasticc_class_99_and_the_challenge_weights(hub):
    n = 600
    rng = np.random.default_rng(5)
    ra, dec, split = sky(n, 5)
    codes = np.array([15, 42, 64, 90, 991, 992, 993, 994])
    target = rng.choice(codes, n)
    write_dataset(hub, "plasticc_2018", {"object_id": [str(i) for i in range(n)], "ra": ra, "dec": dec,
                                         "split": split, "lightcurve": modality(n),
                                         "true_target": target.astype(np.int32)}, mock=False)
    data = open_task(task("PLAsTiCCClass.v1"), hub)
    assert set(data.y["train"]) == {"15", "42", "64", "90", "99"}  # 991-994 scored as the challenge's 99
    want = {i: ("99" if c > 990 else str(c)) for i, c in zip(map(str, range(n)), target, strict=True)}
    assert [want[i] for i in data.ids["test"]] == data.y["test"].tolist()
    t = data.task
    # a model that puts all its weight on the true class of each row but class 99: loss only from 99
    classes = sorted(set(data.y["train"]))
    y = data.y["test"]
    proba = np.array([[1.0 if (c == v and v != "99") else 0.0 for c in classes] for v in y])
    proba[y == "99", classes.index("15")] = 1.0
    got = M.compute(t.type, t.metric_names, {"y": y, "classes": classes, "proba": proba}, t.class_weights)
    # classes present: 15, 64, 99 weigh 2, 42 and 90 weigh 1; class 99 costs ln(1e15) per row
    assert got["weighted_log_loss"] == pytest.approx(2 * -np.log(1e-15) / (2 + 1 + 2 + 1 + 2), rel=1e-6)
    assert got["balanced_accuracy"] == pytest.approx(4 / 5)


# ------------------------------------------------------------------------------- bad input


def test_a_build_without_the_label_column(hub):
    cols = desi_columns()
    del cols["spectype"]
    write_dataset(hub, "desi_dr1", cols, mock=False)
    with pytest.raises(TaskError, match=r"^DESISpectype.v1: the archive build \w+ of desi_dr1 .* has no label "
                                        r"column 'spectype'"):
        open_task(task("DESISpectype.v1"), hub)


def test_a_filter_that_leaves_no_test_rows(hub):
    cols = desi_columns()
    cols["zwarn"] = np.where(np.asarray(cols["split"]) == "test", 4, cols["zwarn"])  # every test redshift bad
    write_dataset(hub, "desi_dr1", cols, mock=True)
    n_test = int(np.sum(np.asarray(cols["split"]) == "test"))
    n_primary = int(np.sum((np.asarray(cols["split"]) == "test") & np.asarray(cols["primary"])))
    with pytest.raises(TaskError, match=rf"^DESISpectype.v1: the filters leave no test rows in the mock build .*"
                                        rf"test rows: {n_test}; .*`primary`: {n_primary}; `zwarn == 0`: 0"):
        open_task(task("DESISpectype.v1"), hub)


def test_a_class_in_test_absent_from_train(hub):
    cols = desi_columns()
    split = np.asarray(cols["split"])
    spectype = np.asarray(cols["spectype"]).copy()
    spectype[(split != "test") & (spectype == "STAR")] = "GALAXY"  # stars only in test
    cols["spectype"] = spectype
    write_dataset(hub, "desi_dr1", cols, mock=True)
    with pytest.raises(TaskError, match=r"^DESISpectype.v1: class\(es\) \{'STAR': \d+\} \(test rows\) are in test "
                                        r"but absent from train .*train has \['GALAXY', 'QSO'\]"):
        open_task(task("DESISpectype.v1"), hub)


def test_one_class_only_as_the_galaxy_only_mock_gives(hub):
    cols = desi_columns(spectype=np.full(900, "GALAXY"))
    write_dataset(hub, "desi_dr1", cols, mock=True)
    with pytest.raises(TaskError, match=r"^DESISpectype.v1: train holds one class only \('GALAXY'"):
        open_task(task("DESISpectype.v1"), hub)


def test_too_few_rows_for_min_per_split(hub):
    cols = desi_columns(n=120)
    write_dataset(hub, "desi_dr1", cols, mock=True)
    with pytest.raises(TaskError, match=r"^DESISpectype.v1: too few rows after the filters .*min_per_split"):
        open_task(task("DESISpectype.v1"), hub)


# ------------------------------------------------------------------------------- probes


def embedded(data, signal: float, seed: int = 0, dim: int = 16) -> dict[str, Split]:
    """Embeddings holding the class (a one-hot times `signal`) plus unit noise."""
    rng = np.random.default_rng(seed)
    classes = sorted(set(data.y["train"]))
    out = {}
    for s in SPLITS:
        onehot = np.asarray([[c == v for c in classes] for v in data.y[s]], float)
        x = rng.normal(size=(len(data.ids[s]), dim))
        x[:, :len(classes)] += signal * onehot
        out[s] = Split(data.ids[s], data.y[s], x.astype(np.float32))
    return out


def test_probes_score_balanced_accuracy_with_label_fractions(hub):
    write_dataset(hub, "desi_dr1", desi_columns(n=2000, seed=3), mock=True)
    data = open_task(task("DESISpectype.v1"), hub)
    t = data.task
    good = LINEAR_V1.run(t, embedded(data, 4.0), t.metric_names)
    assert good.metrics["balanced_accuracy"] > 0.9
    assert set(good.label_fractions) == {"0.01", "0.1", "1"}
    for f, entry in good.label_fractions.items():
        assert set(entry["metrics"]) == {"balanced_accuracy", "accuracy", "macro_f1"}, f
    assert good.label_fractions["1"]["metrics"]["balanced_accuracy"]["mean"] > 0.9
    # noise only: a chance-level score, 1/3 in expectation for three classes
    noise = KNN16_V1.run(t, embedded(data, 0.0), t.metric_names)
    assert abs(noise.metrics["balanced_accuracy"] - 1 / 3) < 0.15
    # recomputed from the predictions, as `submit` does
    p = good.predictions
    again = M.compute(t.type, t.metric_names,
                      {"y": p["y"], "classes": p["classes"], "proba": p["fits"]["main"]["proba"]})
    assert again["balanced_accuracy"] == pytest.approx(good.metrics["balanced_accuracy"])


def test_retrieval_reports_r1_and_r10_in_both_directions(hub):
    cols = paired_columns(n=1500, seed=4)
    write_dataset(hub, "ls_dr10_desi_dr1", cols, mock=True, paired=PAIRED_MANIFEST)
    data = open_task(task("LegacySurveyDESIRetrieval.v1"), hub)
    t = data.task
    rng = np.random.default_rng(0)
    test = data.ids["test"]
    shared = rng.normal(size=(len(test), 32))
    splits = {s: Split(data.ids[s], data.y[s], np.zeros((len(data.ids[s]), 0), np.float32)) for s in SPLITS}
    splits["test"] = Split(test, data.y["test"], (shared + 0.3 * rng.normal(size=shared.shape)).astype(np.float32),
                           (shared + 0.3 * rng.normal(size=shared.shape)).astype(np.float32))
    out = RETRIEVAL_V1.run(t, splits, t.metric_names)
    for d in ("legacysurvey_image->desi_spectrum", "desi_spectrum->legacysurvey_image"):
        assert out.metrics[f"r@1[{d}]"] > 0.8 and out.metrics[f"r@10[{d}]"] >= out.metrics[f"r@1[{d}]"]
    assert out.metrics["r@10"] == pytest.approx(np.mean([out.metrics[f"r@10[{d}]"] for d in (
        "legacysurvey_image->desi_spectrum", "desi_spectrum->legacysurvey_image")]))


# ------------------------------------------------------------------------------- mmu eval run


def test_a_default_run_leaves_out_tasks_the_hub_cannot_serve_and_says_why(hub, monkeypatch, caplog):
    """`run_tasks` over every current task on a hub holding only desi_dr1: the tasks on other
    datasets are skipped with a warning naming the reason; the DESI survey-label tasks run."""
    import logging

    import mmu.eval.run as R

    monkeypatch.delenv("MMU_CATALOG", raising=False)
    cols = desi_columns(n=2000, seed=6)
    write_dataset(hub, "desi_dr1", cols, mock=True)
    label = dict(zip(cols["object_id"], cols["spectype"], strict=True))
    rng = np.random.default_rng(0)

    def fake_embed_split(embedder, files, dataset, revision, split, column, *a, **kw):
        ids = sorted(pq.read_table(files[0], columns=["object_id"]).column("object_id").to_pylist())
        x = rng.normal(size=(len(ids), 8)).astype(np.float32)
        x[:, :3] += 4 * np.asarray([[label[i] == c for c in CLASSES] for i in ids], np.float32)
        return np.asarray(ids), x, {"key": f"{dataset}/{split}/{column}", "preprocessing": "p"}

    class Embedder:
        columns = {"desi_spectrum": "spectrum"}
        kind, sha256 = "checkpoint", "0" * 64

    monkeypatch.setattr(R, "embed_split", fake_embed_split)
    run_log = logging.getLogger("mmu.eval.run")
    run_log.addHandler(caplog.handler)  # whatever an earlier CLI test did to propagation
    try:
        with caplog.at_level(logging.WARNING, logger="mmu.eval.run"):
            results = R.run_tasks(Embedder(), hub, None, model={"name": "m", "kind": "checkpoint",
                                                                "sha256": "0" * 64})
    finally:
        run_log.removeHandler(caplog.handler)
    ran = {(r["task"]["name"], r["protocol"]["name"]) for r in results}
    assert ran == {("DESISpectype.v1", "linear.v1"), ("DESISpectype.v1", "knn16.v1"),
                   ("DESIRedshiftSpectrum.v1", "linear.v1"), ("DESIRedshiftSpectrum.v1", "knn16.v1"),
                   ("DESIRedshiftSpectrum.v1", "knn64-astroclip.v1")}
    skipped = {r.getMessage().split(":")[0] for r in caplog.records}
    assert {"skipping SDSSClass.v1", "skipping MockRedshiftSpectrum.v1"} <= skipped
    assert any("sdss_dr17" in r.getMessage() and "not built" in r.getMessage() for r in caplog.records)
    spectype = next(r for r in results if r["task"]["name"] == "DESISpectype.v1")
    assert spectype["metrics"]["balanced_accuracy"] > 0.9 and spectype["task"]["dataset_revision"] is None
    # named, a task the hub cannot serve is an error, not a skip
    with pytest.raises(Exception, match="sdss_dr17"):
        R.run_tasks(Embedder(), hub, None, model={"name": "m", "kind": "checkpoint", "sha256": "0" * 64},
                    task_names=["SDSSClass.v1"])


# ------------------------------------------------------------------------------- HSC x Legacy Survey (image+image)

HSC_LS_MANIFEST = {"paired": True, "inputs_datasets": ["legacysurvey_dr10_south", "hsc_pdr3_wide"],
                   "inputs_revisions": ["a" * 64, "d" * 64], "prefixes": ["legacysurvey", "hsc"],
                   "method": "nearest", "radius_arcsec": 1.0}


def hsc_ls_table(n: int = 400, seed: int = 7):
    """A Legacy Survey x HSC paired catalog as `mmu crossmatch legacysurvey_dr10_south hsc_pdr3_wide`
    writes it: real image structs with modality metadata, HSC grizy 8x8 at 0.168", LS griz 6x6 at
    0.262". Each object has one g,r,i,z flux per band (`sed`); every pixel of a band holds its flux
    divided by the pixel count, so a band's pixel sum is the same in both surveys."""
    from mmu.model.schema import ImageSpec, dataset_schema, image_array

    rng = np.random.default_rng(seed)
    ra, dec, split = sky(n, seed)
    sed = rng.lognormal(0.0, 1.0, (n, 4)).astype(np.float32)
    specs = {"legacysurvey_image": ImageSpec(("g", "r", "i", "z"), 6, 6),
             "hsc_image": ImageSpec(tuple(f"hsc-{b}" for b in "grizy"), 8, 8)}
    ls_flux = np.broadcast_to((sed / 36)[:, :, None, None], (n, 4, 6, 6)).copy()
    hsc_flux = np.concatenate([np.broadcast_to((sed / 64)[:, :, None, None], (n, 4, 8, 8)),
                               rng.normal(5.0, 1.0, (n, 1, 8, 8))], axis=1).astype(np.float32)  # y: not in LS
    present = {"legacysurvey_image": np.ones(n, bool), "hsc_image": rng.random(n) > 0.05}  # a few HSC cutouts lost
    images = {}
    for col, flux, scale in (("legacysurvey_image", ls_flux, 0.262), ("hsc_image", hsc_flux, 0.168)):
        c = flux.shape[1]
        full = image_array(specs[col], flux, np.ones_like(flux), np.zeros(flux.shape, bool),
                           np.full((n, c), 1.0), scale)
        images[col] = pa.StructArray.from_arrays(full.flatten(), fields=list(full.type),
                                                 mask=pa.array(~present[col]))
    brick_primary = rng.random(n) > 0.1
    extra = [pa.field("legacysurvey_brick_primary", pa.bool_()), pa.field("hsc_match_dist_arcsec", pa.float64())]
    schema = dataset_schema(specs, extra)
    cols = {"object_id": [f"ls:{i}" for i in range(n)], "ra": ra, "dec": dec, "split": split, **images,
            "legacysurvey_brick_primary": brick_primary, "hsc_match_dist_arcsec": rng.uniform(0, 0.5, n)}
    table = pa.table({f.name: cols.get(f.name, pa.nulls(n, f.type)) for f in schema}, schema=schema)
    return table, brick_primary & present["hsc_image"], sed


class ImageEncoders:
    """A model with one image encoder per named column: the embedding of an image is the pixel sum
    of its first four bands (an HSC encoder that reads five bands drops y; an LS one reads four)."""

    kind, sha256 = "checkpoint", "1" * 64

    def __init__(self, channels: dict[str, int]):
        self.channels = channels
        self.columns = {c: "image" for c in channels}
        self.calls = []

    def describe(self):
        return {"name": "two-encoders"}

    def preprocessing_id(self, column):
        return f"sum-{column}"

    def embed(self, samples, column, which):
        self.calls.append((column, samples[0][column]["flux"].shape))
        flux = np.stack([s[column]["flux"] for s in samples])
        assert flux.shape[1] == self.channels[column], (column, flux.shape)  # this encoder's own survey
        return flux[:, :4].sum(axis=(2, 3)).astype(np.float32)


def test_hsc_legacy_survey_retrieval_is_an_image_plus_image_task():
    t = CATALOG.task("HSCLegacySurveyRetrieval.v1")
    assert (t.modality, t.type, t.columns, t.filters) == (
        "image+image", "retrieval", ["hsc_image", "legacysurvey_image"], ["legacysurvey_brick_primary"])
    assert (t.paired.name, t.paired.inputs, t.paired.prefixes) == (
        "ls_dr10_hsc_pdr3", ["legacysurvey_dr10_south", "hsc_pdr3_wide"], ["legacysurvey", "hsc"])
    assert t.dataset == "legacysurvey_dr10_south" and t.protocols == ["retrieval.v1"]
    base = t.model_dump()
    for cols in (["legacysurvey_image", "legacysurvey_image"], ["legacysurvey_image", "desi_spectrum"]):
        with pytest.raises(ValidationError, match="image\\+image task"):
            TaskEntry(**{**base, "input_columns": cols})
    with pytest.raises(ValidationError, match="image\\+image task"):
        TaskEntry(**{**base, "type": "classification", "input_columns": ["hsc_image"], "main_score": "accuracy",
                     "metrics": [], "protocols": ["linear.v1"]})


def test_hsc_legacy_survey_pairs_open_on_a_paired_hub(hub):
    table, good, _ = hsc_ls_table()
    write_dataset(hub, "ls_dr10_hsc_pdr3", table, mock=True, paired=HSC_LS_MANIFEST)
    data = open_task(task("HSCLegacySurveyRetrieval.v1"), hub)
    cols = table.to_pydict()
    for s in SPLITS:
        assert sorted(data.ids[s].tolist()) == expected_rows(cols, s, good)
    assert data.comparable and len(data.ids["test"]) >= 5
    assert data.build["inputs_revisions"] == ["a" * 64, "d" * 64]


def run_hsc_ls(hub, embedder, **kw):
    from mmu.eval.run import run_tasks

    return run_tasks(embedder, hub, None, model={"name": "m", "kind": "checkpoint", "sha256": "1" * 64},
                     task_names=["HSCLegacySurveyRetrieval.v1"], **kw)


@pytest.mark.parametrize("model_columns, column_map", [
    ({"hsc_image": 5, "legacysurvey_image": 4}, None),  # model columns named as the dataset's
    ({"enc_ls": 4, "enc_hsc": 5}, {"hsc_image": "enc_hsc", "legacysurvey_image": "enc_ls"}),  # --column-map
], ids=["same-names", "column-map"])
def test_a_model_with_two_image_encoders_embeds_each_survey_with_its_own(hub, model_columns, column_map):
    table, good, sed = hsc_ls_table()
    write_dataset(hub, "ls_dr10_hsc_pdr3", table, mock=True, paired=HSC_LS_MANIFEST)
    emb = ImageEncoders(model_columns)
    [res] = run_hsc_ls(hub, emb, column_map=column_map)
    hsc_col, ls_col = (column_map or {"hsc_image": "hsc_image", "legacysurvey_image": "legacysurvey_image"}).values()
    assert {(c, s) for c, s in emb.calls} == {(hsc_col, (5, 8, 8)), (ls_col, (4, 6, 6))}
    assert res["embedding"]["columns"] == {"hsc_image": hsc_col, "legacysurvey_image": ls_col}
    n_test = int((good & (np.asarray(table.column("split").to_pylist()) == "test")).sum())
    assert res["protocol"]["name"] == "retrieval.v1"
    # both encoders give each galaxy its g,r,i,z fluxes: the partner is always the nearest
    for d in ("hsc_image->legacysurvey_image", "legacysurvey_image->hsc_image"):
        assert res["metrics"][f"r@1[{d}]"] == 1.0 and res["metrics"][f"median_rank[{d}]"] == 1.0
    assert res["metrics"]["r@1"] == 1.0 and n_test >= 5
    # the same model on a shuffled LS side: pairs no longer agree, and R@1 says so
    emb2 = ImageEncoders(model_columns)
    real = emb2.embed
    emb2.embed = lambda samples, column, which: (np.random.default_rng(0).permutation(real(samples, column, which))
                                                 if column == ls_col else real(samples, column, which))
    [res2] = run_hsc_ls(hub, emb2, column_map=column_map)
    assert res2["metrics"]["r@1"] < 0.5


def test_a_model_with_one_image_column_cannot_run_hsc_legacy_survey_retrieval(hub, caplog):
    import logging

    from mmu.eval.embed import map_columns
    from mmu.eval.run import run_tasks

    table, _, _ = hsc_ls_table(n=200)
    write_dataset(hub, "ls_dr10_hsc_pdr3", table, mock=True, paired=HSC_LS_MANIFEST)
    for one in ({"image": 4}, {"legacysurvey_image": 4}):
        with pytest.raises(KeyError) as e:
            run_hsc_ls(hub, ImageEncoders(one))
        msg = e.value.args[0]
        assert "\n" not in msg and msg.startswith("HSCLegacySurveyRetrieval.v1 (image+image)")
        assert "cannot embed both" in msg and "--column-map hsc_image=MODEL_COLUMN" in msg
    # a single image column still reads a single-image task's column by kind
    assert map_columns({"image": "image"}, ["legacysurvey_image"], "image") == {"legacysurvey_image": "image"}
    # run over every task, it is skipped with that reason (not raised), as retrieval is for PCA
    run_log = logging.getLogger("mmu.eval.run")
    run_log.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger="mmu.eval.run"), pytest.raises(Exception, match="no task"):
            run_tasks(ImageEncoders({"image": 4}), hub, None, model={"name": "m"})
    finally:
        run_log.removeHandler(caplog.handler)
    assert any(r.getMessage().startswith("skipping HSCLegacySurveyRetrieval.v1: HSCLegacySurveyRetrieval.v1 "
                                         "(image+image)") for r in caplog.records)
