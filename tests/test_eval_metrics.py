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
    # class a: mean(ln .8, ln .4); class b: ln(1 / (1 + 1e-15)) after clipping and renormalising
    la = (math.log(0.8) + math.log(0.4)) / 2
    lb = math.log(1 / (1 + 1e-15))
    expected = -(2 * la + 1 * lb) / 3
    assert M.weighted_log_loss(y, proba, ["a", "b"], {"a": 2.0, "b": 1.0}) == pytest.approx(expected, rel=1e-12)
    # a zero probability of the true class costs -ln(1e-15 / (1 + 1e-15)) = 34.5388 (clipped, finite)
    assert M.weighted_log_loss(["b"], [[1.0, 0.0]], ["a", "b"]) == pytest.approx(
        -math.log(1e-15 / (1 + 1e-15)), rel=1e-12)
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
