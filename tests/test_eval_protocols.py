"""The frozen protocols on embeddings made here (random projections of a known signal): probe
selection never sees test rows, label fractions never fit on more than their fraction, kNN
matches scikit-learn, retrieval ranks, determinism, and unknown protocols are refused."""
from __future__ import annotations

import numpy as np
import pytest

from mmu.eval import protocols as P
from mmu.registry.catalog import TaskEntry


def make_task(type="regression", **kw):
    base = dict(name="Toy.v1", dataset="toy_v1", dataset_revision="r" * 64, modality="spectrum",
                input_prefix="toy", target="z", split_hash="s" * 64, type=type,
                main_score={"regression": "r2", "classification": "macro_f1", "retrieval": "r@1"}[type],
                higher_is_better=True, protocols=["linear.v1"])
    if type == "classification":
        base["metrics"] = ["accuracy", "macro_f1", "weighted_log_loss"]
    if type == "retrieval":
        base.update(modality="image+spectrum", input_columns=["toy_image", "toy_spectrum"],
                    protocols=["retrieval.v1"])
    base.update(kw)
    return TaskEntry(**base)


def signal_splits(n=(300, 80, 80), dim=24, seed=0, classes=None, noise=0.3):
    """y = a known signal; x = a random projection of [signal, nuisance] plus noise."""
    rng = np.random.default_rng(seed)
    proj = rng.normal(size=(4, dim))
    out = {}
    for split, k in zip(("train", "val", "test"), n):
        latent = rng.normal(size=(k, 4))
        x = (latent @ proj + noise * rng.normal(size=(k, dim))).astype(np.float32)
        y = latent[:, 0] + 0.5 * latent[:, 1]
        if classes:
            edges = np.quantile(y, np.linspace(0, 1, len(classes) + 1)[1:-1])
            y = np.asarray(classes, dtype=object)[np.digitize(y, edges)]
            y = y.astype(str)
        ids = np.array([f"{split}-{i:05d}" for i in range(k)])
        out[split] = P.Split(ids, y, x)
    return out


MARK = 1e6


@pytest.fixture(autouse=True, scope="module")
def one_blas_thread():
    """The machine is shared: oversubscribed BLAS threads make lbfgs 20x slower."""
    import sklearn.linear_model  # noqa: F401  (load the BLAS libraries before limiting them)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield


class SpyProbe(P.LinearProbe):
    """linear.v1 that records every array it fits on or predicts, and in which phase."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        object.__setattr__(self, "log", [])
        object.__setattr__(self, "phase", ["final"])

    def select(self, *a, **kw):
        self.phase.append("select")
        try:
            return super().select(*a, **kw)
        finally:
            self.phase.pop()

    def _fit(self, kind, x, y, penalty, classes):
        self.log.append(("fit", self.phase[-1], len(x), bool((x[:, -1] >= MARK).any())))
        predict = super()._fit(kind, x, y, penalty, classes)

        def spy(q):
            self.log.append(("predict", self.phase[-1], len(q), bool((q[:, -1] >= MARK).any())))
            return predict(q)
        return spy


def marked(splits):
    """Test rows carry a marker in their last dimension, so any array holding one is visible."""
    t = splits["test"]
    x = t.x.copy()
    x[:, -1] = MARK
    return {**splits, "test": P.Split(t.ids, t.y, x)}


@pytest.mark.parametrize("kind", ["regression", "classification"])
def test_linear_selection_never_sees_test_rows(kind):
    classes = ["a", "b", "c"] if kind == "classification" else None
    splits = marked(signal_splits(classes=classes))
    probe = SpyProbe("spy.v1", fractions=(0.1,), seeds=(0,))
    out = probe.run(make_task(kind), splits, make_task(kind).metric_names)
    assert out.metrics[make_task(kind).main_score] is not None
    for op, phase, n, has_test in probe.log:
        if op == "fit" or phase == "select":
            assert not has_test, (op, phase, n)  # would fail if selection or fitting saw test rows
    test_predicts = [e for e in probe.log if e[0] == "predict" and e[3]]
    assert test_predicts and all(p == "final" for _, p, _, _ in test_predicts)
    # the selection is a function of train + val only: other test rows, same choice
    other = signal_splits(classes=classes, seed=0)
    rng = np.random.default_rng(5)
    t = other["test"]
    other["test"] = P.Split(t.ids, rng.permutation(t.y), rng.normal(size=t.x.shape).astype(np.float32))
    again = P.LINEAR_V1.run(make_task(kind), other, make_task(kind).metric_names)
    first = P.LINEAR_V1.run(make_task(kind), signal_splits(classes=classes), make_task(kind).metric_names)
    assert again.selected == first.selected
    assert again.label_fractions["0.1"]["penalty"] == first.label_fractions["0.1"]["penalty"]


def test_selection_matches_an_independent_train_to_val_choice():
    from sklearn.linear_model import Ridge
    from sklearn.metrics import r2_score

    s = signal_splits(noise=3.0, n=(60, 200, 200), dim=40)
    scores = []
    for a in P.LINEAR_V1.ridge_alphas:
        mu, sd = s["train"].x.mean(0), s["train"].x.std(0)
        m = Ridge(alpha=a).fit((s["train"].x - mu) / sd, s["train"].y)
        scores.append(r2_score(s["val"].y, m.predict((s["val"].x - mu) / sd)))
    out = P.LINEAR_V1.run(make_task(), s, ["r2"])
    assert out.selected["penalty"] == P.LINEAR_V1.ridge_alphas[int(np.argmax(scores))]
    np.testing.assert_allclose(out.selected["val_scores"], scores, rtol=1e-9)
    assert out.selected["fit_rows"] == 60 + 200  # refit on train + val


@pytest.mark.parametrize("kind", ["regression", "classification"])
def test_label_fractions_never_fit_on_more_than_their_fraction(kind):
    classes = ["a", "b"] if kind == "classification" else None
    splits = signal_splits(n=(400, 120, 60), classes=classes)
    probe = SpyProbe("spy.v1", fractions=(0.1,), seeds=(0, 1))
    task = make_task(kind)
    out = probe.run(task, splits, task.metric_names)
    entry = out.label_fractions["0.1"]
    assert entry["nan_reason"] is None
    assert all(n <= 40 for n in entry["n_train"]) and all(n <= 12 for n in entry["n_val"])
    fits = [n for op, phase, n, _ in probe.log if op == "fit"]
    main_fits = fits[:len(P.LINEAR_V1.ridge_alphas if kind == "regression" else P.LINEAR_V1.logistic_cs) + 1]
    fraction_fits = fits[len(main_fits):]
    assert fraction_fits and max(fraction_fits) <= 40  # never the full val added back (40 + 12 or 400)
    assert main_fits[-1] == 520
    # each seed draws a different subsample; the metrics summarise the seeds
    m = entry["metrics"][task.main_score]
    assert len(m["values"]) == 2 and m["mean"] == pytest.approx(np.mean(m["values"]))


def test_stratified_fraction_without_a_class_is_nan_with_reason():
    splits = signal_splits(n=(300, 60, 60), classes=["a", "b", "c"])
    tr = splits["train"]
    y = tr.y.copy()
    y[:5] = "rare"  # 5 rows: a 1% stratified subsample keeps none of them
    splits["train"] = P.Split(tr.ids, y, tr.x)
    task = make_task("classification")
    out = P.LinearProbe("t.v1", fractions=(0.01,), seeds=(0,)).run(task, splits, task.metric_names)
    e = out.label_fractions["0.01"]
    assert e["metrics"]["macro_f1"]["mean"] is None
    assert e["metrics"]["macro_f1"]["values"] == [None]
    assert "at least one per class" in e["nan_reason"]


def test_subsample_sizes():
    rng = np.random.default_rng(0)
    rows, why = P.subsample(np.arange(1000.0), 0.01, rng, False)
    assert why is None and len(rows) == 10 and len(set(rows)) == 10
    y = np.array(["a"] * 95 + ["b"] * 5)
    rows, why = P.subsample(y, 0.2, rng, True)
    assert why is None and sorted(y[rows].tolist()) == ["a"] * 19 + ["b"]


@pytest.mark.parametrize("proto", [P.KNN16_V1, P.KNN64_ASTROCLIP_V1])
def test_knn_matches_scikit_learn(proto):
    from sklearn.neighbors import KNeighborsRegressor
    from sklearn.preprocessing import StandardScaler

    s = signal_splits(n=(200, 50, 40))
    out = proto.run(make_task(protocols=[proto.name]), s, ["r2"])
    ref_x = np.concatenate([s["train"].x, s["val"].x]).astype(np.float64)
    ref_y = np.concatenate([s["train"].y, s["val"].y])
    q = s["test"].x.astype(np.float64)
    if proto.space == "cosine":
        ref_x = ref_x / np.linalg.norm(ref_x, axis=1, keepdims=True)
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
    else:
        sc = StandardScaler().fit(ref_x)
        ref_x, q = sc.transform(ref_x), sc.transform(q)
    sk = KNeighborsRegressor(n_neighbors=proto.k, weights="distance", algorithm="brute").fit(ref_x, ref_y)
    np.testing.assert_allclose(out.predictions["fits"]["main"]["pred"], sk.predict(q), rtol=1e-4, atol=1e-5)
    assert out.selected["k"] == proto.k


def test_knn_classification_probabilities_and_disjoint_splits():
    s = signal_splits(n=(200, 50, 40), classes=["x", "y"])
    task = make_task("classification", protocols=["knn16.v1"])
    out = P.KNN16_V1.run(task, s, task.metric_names)
    proba = np.asarray(out.predictions["fits"]["main"]["proba"])
    np.testing.assert_allclose(proba.sum(1), 1.0)
    assert out.metrics["accuracy"] > 0.7
    s["test"] = P.Split(s["train"].ids[:40], s["test"].y, s["test"].x)
    with pytest.raises(P.ProtocolError, match="also in train"):
        P.KNN16_V1.run(task, s, task.metric_names)


def test_retrieval_ranks_and_gallery():
    rng = np.random.default_rng(1)
    n = 30
    a = rng.normal(size=(n, 8)).astype(np.float32)
    ids = np.array([f"o{i}" for i in range(n)])
    task = make_task("retrieval")
    perfect = {"test": P.Split(ids, np.zeros(n), a, a.copy())}
    out = P.Retrieval("r.v1", gallery_size=20).run(task, perfect, task.metric_names)
    assert out.metrics["r@1"] == 1.0 and out.metrics["median_rank"] == 1.0
    assert len(out.predictions["ids"]) == 20
    import hashlib
    assert out.predictions["ids"] == sorted(ids, key=lambda i: hashlib.sha256(i.encode()).hexdigest())[:20]
    # b = a with rows 0 and 1 swapped: those two queries rank their partner 2nd
    np.testing.assert_array_equal(P.partner_ranks(a[:5], a[[1, 0, 2, 3, 4]])[:2] >= 2, True)
    assert P.partner_ranks(a[:5], a[:5]).tolist() == [1] * 5


def test_deterministic_and_named_only():
    s = signal_splits(classes=["a", "b", "c"])
    task = make_task("classification")
    a = P.LINEAR_V1.run(task, s, task.metric_names)
    b = P.LINEAR_V1.run(task, s, task.metric_names)
    assert a.metrics == b.metrics and a.predictions == b.predictions
    assert a.label_fractions == b.label_fractions
    with pytest.raises(P.ProtocolError, match="named, frozen"):
        P.get_protocol("knn8.v1")
    with pytest.raises(ValueError, match="already registered"):
        P.register(P.KNN("knn16.v1", k=8))
    assert set(P.protocols()) == {"linear.v1", "knn16.v1", "knn64-astroclip.v1", "retrieval.v1"}
    assert P.KNN16_V1.spec() == {"name": "knn16.v1", "k": 16, "weighting": "distance", "space": "cosine"}


# ------------------------------------------------------------- the torch (GPU) probe path, on CPU


def test_ridge_path_matches_scikit_learn_at_every_penalty():
    """One eigendecomposition gives the fit scikit-learn's Ridge finds, for every penalty of the
    grid (intercept included), on standardised features as linear.v1 uses them."""
    from sklearn.linear_model import Ridge

    s = signal_splits(n=(400, 100, 100), dim=32, seed=3)
    scaler = P._Scaler(s["train"].x.astype(np.float64))
    xt, xq = scaler(s["train"].x.astype(np.float64)), scaler(s["test"].x.astype(np.float64))
    alphas = P.LINEAR_V1.ridge_alphas
    path = P.RidgePath(xt, s["train"].y, device="cpu")
    got = path.predict(xq, alphas)
    for a, row in zip(alphas, got):
        want = Ridge(alpha=a).fit(xt, s["train"].y).predict(xq)
        np.testing.assert_allclose(row, want, rtol=1e-8, atol=1e-8)


def test_nearest_torch_equals_the_numpy_knn():
    rng = np.random.default_rng(5)
    ref = rng.normal(size=(500, 16)).astype(np.float32)
    q = rng.normal(size=(60, 16)).astype(np.float32)
    i_np, d_np = P.nearest(ref, q, 16)
    i_t, d_t = P.nearest_torch(ref, q, 16, device="cpu", chunk=25)
    np.testing.assert_array_equal(i_t, i_np)
    np.testing.assert_allclose(d_t, d_np, rtol=1e-6)


@pytest.mark.parametrize("proto", ["linear.v1", "knn16.v1"])
def test_torch_probe_path_gives_the_reference_results(proto, monkeypatch):
    """linear.v1 and knn16.v1 through the torch path (what runs on a GPU; here on the CPU) score
    as the scikit-learn / numpy reference path does: same selected penalty, same metrics."""
    task = make_task(protocols=[proto])
    s = signal_splits(n=(300, 80, 80), dim=24, seed=1)
    monkeypatch.setenv("MMU_PROBE_DEVICE", "sklearn")
    ref = P.get_protocol(proto).run(task, s, ["r2", "sigma_nmad"])
    monkeypatch.setenv("MMU_PROBE_DEVICE", "cpu")
    got = P.get_protocol(proto).run(task, s, ["r2", "sigma_nmad"])
    assert got.selected.get("penalty") == ref.selected.get("penalty")
    for m in ("r2", "sigma_nmad"):
        assert got.metrics[m] == pytest.approx(ref.metrics[m], rel=1e-4, abs=1e-6)  # sklearn fits in float32
    np.testing.assert_allclose(got.predictions["fits"]["main"]["pred"], ref.predictions["fits"]["main"]["pred"],
                               rtol=1e-4, atol=1e-5)


def test_probe_device_refuses_an_unknown_setting(monkeypatch):
    monkeypatch.setenv("MMU_PROBE_DEVICE", "tpu")
    with pytest.raises(P.ProtocolError, match="MMU_PROBE_DEVICE"):
        P.probe_device()
