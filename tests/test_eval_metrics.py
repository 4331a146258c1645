"""Each benchmark metric against a case computed by hand (the arithmetic is in the comments)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from mmu.eval import metrics as M


def test_r2_by_hand():
    # ss_res = 1; mean 2.5, ss_tot = 2.25 + 0.25 + 0.25 + 2.25 = 5 -> 1 - 1/5
    assert M.r2([1, 2, 3, 4], [1, 2, 3, 5]) == pytest.approx(0.8, abs=1e-15)
    assert math.isnan(M.r2([2, 2], [1, 3]))  # constant truth: undefined


def test_redshift_metrics_by_hand():
    z = [0.0, 1.0, 0.5, 1.0, 0.0]
    zhat = [0.1, 1.2, 0.5, 0.4, 0.0]
    # dz = (zhat - z) / (1 + z) = [0.1, 0.1, 0, -0.3, 0]; median 0
    np.testing.assert_allclose(M.delta_z(z, zhat), [0.1, 0.1, 0.0, -0.3, 0.0], atol=1e-15)
    # |dz - 0| sorted = [0, 0, 0.1, 0.1, 0.3] -> median 0.1 -> 1.4826 * 0.1
    assert M.sigma_nmad(z, zhat) == pytest.approx(0.14826, abs=1e-12)
    assert M.outlier_fraction(z, zhat) == pytest.approx(0.2)  # only |-0.3| > 0.15
    assert M.bias(z, zhat) == 0.0
    assert M.bias([0.0, 0.0, 0.0], [0.1, 0.2, 0.3]) == pytest.approx(0.2)


def test_accuracy_and_macro_f1_by_hand():
    y, yhat = ["a", "a", "b", "c"], ["a", "b", "b", "a"]
    assert M.accuracy(y, yhat) == 0.5
    # a: tp 1 fp 1 fn 1 -> 2/4; b: tp 1 fp 1 fn 0 -> 2/3; c: tp 0 -> 0; mean = (0.5 + 2/3) / 3
    assert M.macro_f1(y, yhat) == pytest.approx((0.5 + 2 / 3) / 3, abs=1e-15)


def test_weighted_log_loss_by_hand():
    y = ["a", "a", "b"]
    proba = [[0.8, 0.2], [0.4, 0.6], [0.0, 1.0]]
    # class a: mean(ln .8, ln .4); class b: ln(1 - 1e-15) (rows divided by their sums, then clipped)
    la = (math.log(0.8) + math.log(0.4)) / 2
    lb = math.log(1 - 1e-15)
    expected = -(2 * la + 1 * lb) / 3
    assert M.weighted_log_loss(y, proba, ["a", "b"], {"a": 2.0, "b": 1.0}) == pytest.approx(expected, rel=1e-12)
    # a zero probability of the true class costs -ln(1e-15) = 34.5388 (clipped, finite)
    assert M.weighted_log_loss(["b"], [[1.0, 0.0]], ["a", "b"]) == pytest.approx(-math.log(1e-15), rel=1e-12)
    # rows are scaled to sum 1 before clipping: scores (2, 6) are the probabilities (.25, .75)
    assert M.weighted_log_loss(["b"], [[2.0, 6.0]], ["a", "b"]) == pytest.approx(-math.log(0.75), rel=1e-12)
    with pytest.raises(ValueError, match="row 1 has no positive probability"):
        M.weighted_log_loss(["a", "b"], [[1.0, 0.0], [0.0, 0.0]], ["a", "b"])
    with pytest.raises(ValueError, match="no probability column"):
        M.weighted_log_loss(["z"], [[1.0, 0.0]], ["a", "b"])


def test_retrieval_scores_by_hand():
    s = M.retrieval_scores([1, 2, 6, 11])
    assert s == {"r@1": 0.25, "r@5": 0.5, "r@10": 0.75, "median_rank": 4.0}


def test_compute_dispatch_and_nan_as_none():
    out = M.compute("regression", ["r2", "bias"], {"y": [2, 2], "pred": [1, 3]})
    assert out["r2"] is None and out["bias"] == pytest.approx(0.0)
    out = M.compute("classification", ["accuracy"], {"y": ["a", "b"], "classes": ["a", "b"],
                                                     "proba": [[0.9, 0.1], [0.6, 0.4]]})
    assert out == {"accuracy": 0.5}
    out = M.compute("retrieval", ["r@1", "median_rank"],
                    {"directions": {"x->y": {"ranks": [1, 1, 3]}, "y->x": {"ranks": [1, 2, 2]}}})
    assert out["r@1[x->y]"] == pytest.approx(2 / 3) and out["r@1[y->x]"] == pytest.approx(1 / 3)
    assert out["r@1"] == pytest.approx(0.5) and out["median_rank"] == pytest.approx(1.5)
    with pytest.raises(ValueError, match="unknown metric"):
        M.compute("regression", ["rmse"], {"y": [1], "pred": [1]})


def test_paired_bootstrap_interval():
    rng = np.random.default_rng(3)
    y = rng.normal(size=300)
    good = y + rng.normal(scale=0.3, size=300)
    bad = y + rng.normal(scale=1.0, size=300)
    out = M.paired_bootstrap(y, good, bad, n_boot=500, seed=1)
    assert out["delta"] == pytest.approx(M.r2(y, good) - M.r2(y, bad))
    assert 0 < out["ci"][0] < out["delta"] < out["ci"][1]
    # the same resamples, computed naively
    r = np.random.default_rng(1)
    naive = []
    for _ in range(500):
        i = r.integers(0, 300, 300)
        naive.append(M.r2(y[i], good[i]) - M.r2(y[i], bad[i]))
    assert out["ci"] == pytest.approx(list(np.percentile(naive, [2.5, 97.5])))
    # identical predictions: no difference, a zero-width interval; swapped: mirrored
    assert M.paired_bootstrap(y, good, good, n_boot=200)["ci"] == [0.0, 0.0]
    swapped = M.paired_bootstrap(y, bad, good, n_boot=500, seed=1)
    assert swapped["ci"] == pytest.approx([-out["ci"][1], -out["ci"][0]])


def test_paired_bootstrap_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="both predictions"):
        M.paired_bootstrap([1.0, 2.0, 3.0], [1.0, 2.0], [1.0, 2.0, 3.0])


def test_balanced_accuracy_by_hand_and_against_scikit_learn():
    from sklearn.metrics import balanced_accuracy_score

    y, yhat = ["a", "a", "a", "a", "b", "c"], ["a", "a", "a", "b", "b", "a"]
    # recall a = 3/4, b = 1/1, c = 0/1 -> mean over the true classes = 1.75 / 3
    assert M.balanced_accuracy(y, yhat) == pytest.approx(1.75 / 3, abs=1e-15)
    # a predicted class no object has ("d") adds no recall term
    assert M.balanced_accuracy(["a", "b"], ["a", "d"]) == pytest.approx(0.5)
    # always answering the majority class scores 1 / (number of true classes), whatever the imbalance
    assert M.balanced_accuracy(["a"] * 98 + ["b", "c"], ["a"] * 100) == pytest.approx(1 / 3)
    rng = np.random.default_rng(7)
    for _ in range(20):
        y = rng.choice(["GALAXY", "QSO", "STAR"], size=rng.integers(5, 200), p=[0.7, 0.2, 0.1])
        yhat = np.where(rng.random(len(y)) < 0.6, y, rng.choice(["GALAXY", "QSO", "STAR"], len(y)))
        assert M.balanced_accuracy(y, yhat) == pytest.approx(balanced_accuracy_score(y, yhat), abs=1e-12)
    assert math.isnan(M.balanced_accuracy([], []))
    out = M.compute("classification", ["balanced_accuracy"], {"y": ["a", "a", "b"], "classes": ["a", "b"],
                                                              "proba": [[0.9, 0.1], [0.2, 0.8], [0.3, 0.7]]})
    assert out == {"balanced_accuracy": pytest.approx(0.75)}  # recall a 1/2, b 1/1


PLASTICC_WEIGHTS = {"15": 2.0, "64": 2.0, "99": 2.0}  # the challenge's; every other class 1


def test_plasticc_weighted_log_loss_hand_worked():
    # Malz et al. 2019 (arXiv:1809.11145) eq. 1: L = -sum_m w_m (1/N_m) sum_{n in m} ln p_nm / sum_m w_m
    y = ["15", "15", "42", "99"]
    classes = ["15", "42", "99"]
    proba = [[0.5, 0.25, 0.25], [0.25, 0.5, 0.25], [0.2, 0.6, 0.2], [0.1, 0.1, 0.8]]
    # class 15 (w 2): (ln .5 + ln .25) / 2; class 42 (w 1): ln .6; class 99 (w 2): ln .8
    # L = -(2 (ln .5 + ln .25) / 2 + ln .6 + 2 ln .8) / (2 + 1 + 2) = -ln(.125 * .6 * .64) / 5 = -ln(.048) / 5
    expected = -math.log(0.048) / 5
    assert expected == pytest.approx(0.6073108, abs=1e-7)
    assert M.weighted_log_loss(y, proba, classes, PLASTICC_WEIGHTS) == pytest.approx(expected, rel=1e-12)
    # unweighted, the same rows give the plain mean over classes of the per-class mean log-loss
    assert M.weighted_log_loss(y, proba, classes) == pytest.approx(-math.log(0.125 ** 0.5 * 0.6 * 0.8) / 3,
                                                                   rel=1e-12)


def _kaggle_weighted_log_loss(y, proba, classes, weights):
    """The challenge's scoring as its Kaggle evaluation page words it, written independently:
    each row divided by its sum, then clipped to [1e-15, 1 - 1e-15]; a one-hot truth matrix;
    per class the summed log-probability of its objects over their count, weighted."""
    p = np.asarray(proba, float)
    p = np.clip(p / p.sum(1, keepdims=True), 1e-15, 1 - 1e-15)
    onehot = (np.asarray(y)[:, None] == np.asarray(classes)[None, :]).astype(float)
    n = onehot.sum(0)
    present = n > 0
    w = np.array([weights.get(c, 1.0) for c in classes])
    per_class = (onehot * np.log(p)).sum(0)[present] / n[present]
    return -np.sum(w[present] * per_class) / np.sum(w[present])


def test_weighted_log_loss_agrees_with_the_challenge_formula():
    rng = np.random.default_rng(11)
    classes = ["6", "15", "16", "42", "52", "53", "62", "64", "65", "67", "88", "90", "92", "95", "99"]
    for _ in range(10):
        n = int(rng.integers(20, 300))
        y = rng.choice(classes, n)
        proba = rng.dirichlet(np.ones(len(classes)) * 0.5, n)
        proba[rng.random(proba.shape) < 0.05] = 0.0  # exact zeros, as a kNN's vote shares give
        proba[np.all(proba == 0, axis=1), 0] = 1.0
        ours = M.weighted_log_loss(y, proba, classes, PLASTICC_WEIGHTS)
        assert ours == pytest.approx(_kaggle_weighted_log_loss(y, proba, classes, PLASTICC_WEIGHTS), rel=1e-9)
    # the weights matter: the same predictions scored with every weight 1 differ
    assert ours != pytest.approx(_kaggle_weighted_log_loss(y, proba, classes, {}), rel=1e-6)
