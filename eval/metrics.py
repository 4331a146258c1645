"""Benchmark metrics, defined here and in docs/benchmark.md alike (the docs quote these formulas).

Regression: R² = 1 − Σ(y−ŷ)² / Σ(y−ȳ)². Redshift: Δz = (ẑ−z)/(1+z), σ_NMAD = 1.4826·median|Δz −
median Δz|, outlier fraction = mean(|Δz| > 0.15), bias = median Δz. Classification: accuracy,
balanced accuracy (the unweighted mean over the classes present in the truth of each class's
recall, as scikit-learn's `balanced_accuracy_score`), macro-F1 (unweighted mean of per-class F1
over the classes present in the truth or the predictions), and PLAsTiCC's weighted log-loss
−Σ_c w_c·mean_{i∈c} ln p_ic / Σ_c w_c (Malz et al. 2019, arXiv:1809.11145, eq. 1 with the
challenge's weights) with each row divided by its sum and then clipped to [1e−15, 1 − 1e−15]
(the challenge's order), over the classes present in the truth.
Retrieval: R@k = fraction of queries whose partner ranks ≤ k (1-based), and the median rank.
"""
from __future__ import annotations

import math

import numpy as np

OUTLIER_DZ = 0.15
NMAD = 1.4826
LOGLOSS_CLIP = 1e-15
RETRIEVAL_K = (1, 5, 10)


def r2(y, yhat) -> float:
    """Coefficient of determination R² = 1 − Σ(y−ŷ)² / Σ(y−ȳ)².

    Args:
        y: True values (array-like, cast to float).
        yhat: Predicted values, same length as `y`.

    Returns:
        R² as a float; NaN when `y` is constant (zero total sum of squares).
    """
    y, yhat = np.asarray(y, float), np.asarray(yhat, float)
    ss_res = float(np.sum((y - yhat) ** 2))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    return float("nan") if ss_tot == 0 else 1.0 - ss_res / ss_tot


def delta_z(z, zhat) -> np.ndarray:
    """Normalised redshift error Δz = (ẑ − z) / (1 + z), element-wise.

    Args:
        z: True redshifts (array-like, cast to float).
        zhat: Predicted redshifts, same shape as `z`.

    Returns:
        float64 array of Δz, the shape of the broadcast inputs.
    """
    z, zhat = np.asarray(z, float), np.asarray(zhat, float)
    return (zhat - z) / (1.0 + z)


def sigma_nmad(z, zhat) -> float:
    """Normalised median absolute deviation σ_NMAD = 1.4826 · median|Δz − median Δz|.

    Args:
        z: True redshifts.
        zhat: Predicted redshifts.

    Returns:
        σ_NMAD of Δz (see `delta_z`) as a float.
    """
    dz = delta_z(z, zhat)
    return float(NMAD * np.median(np.abs(dz - np.median(dz))))


def outlier_fraction(z, zhat, threshold: float = OUTLIER_DZ) -> float:
    """Fraction of objects whose |Δz| exceeds `threshold`.

    Args:
        z: True redshifts.
        zhat: Predicted redshifts.
        threshold: Outlier cut on |Δz| (default `OUTLIER_DZ`, 0.15); strictly greater counts.

    Returns:
        The outlier fraction in [0, 1] as a float (NaN for empty input).
    """
    return float(np.mean(np.abs(delta_z(z, zhat)) > threshold))


def bias(z, zhat) -> float:
    """Redshift bias: the median of Δz (see `delta_z`).

    Args:
        z: True redshifts.
        zhat: Predicted redshifts.

    Returns:
        median Δz as a float.
    """
    return float(np.median(delta_z(z, zhat)))


def accuracy(y, yhat) -> float:
    """Fraction of predictions equal to the true labels.

    Args:
        y: True labels.
        yhat: Predicted labels, same length as `y`.

    Returns:
        Accuracy in [0, 1] as a float (NaN for empty input).
    """
    return float(np.mean(np.asarray(y) == np.asarray(yhat)))


def balanced_accuracy(y, yhat) -> float:
    """Balanced accuracy: the unweighted mean over the true classes of each class's recall.

    The classes are those present in the truth (a predicted class no object has adds nothing),
    so a model that always answers the majority class scores 1 / (number of true classes).

    Args:
        y: True labels.
        yhat: Predicted labels, same length as `y`.

    Returns:
        Balanced accuracy in [0, 1] as a float (NaN for empty input).
    """
    y, yhat = np.asarray(y), np.asarray(yhat)
    if len(y) == 0:
        return float("nan")
    return float(np.mean([np.mean(yhat[y == c] == c) for c in np.unique(y)]))


def macro_f1(y, yhat) -> float:
    """Macro-averaged F1: the unweighted mean of per-class F1 scores.

    The classes are those present in the truth or the predictions; a class with no true
    positive scores 0.

    Args:
        y: True labels.
        yhat: Predicted labels, same length as `y`.

    Returns:
        Macro-F1 in [0, 1] as a float.
    """
    y, yhat = np.asarray(y), np.asarray(yhat)
    scores = []
    for c in np.union1d(y, yhat):
        tp = np.sum((y == c) & (yhat == c))
        fp = np.sum((y != c) & (yhat == c))
        fn = np.sum((y == c) & (yhat != c))
        scores.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores))


def weighted_log_loss(y, proba, classes, weights: dict | None = None) -> float:
    """PLAsTiCC's weighted multi-class log-loss (Malz et al. 2019, arXiv:1809.11145, eq. 1):
    −Σ_c w_c·mean_{i∈c} ln p_ic / Σ_c w_c over the classes c present in the truth.

    As the challenge scored it: each row is first divided by its sum, then clipped to
    [1e−15, 1 − 1e−15], so a zero probability of the true class costs ln(1e15) = 34.54.

    Args:
        y: True labels.
        proba: [n, len(classes)] non-negative scores; `proba[i, j]` is for `classes[j]`.
        classes: The column labels (compared as strings).
        weights: Class (as a string) -> w_c; a class not named weighs 1. The challenge's are
            2 for classes 15, 64 and 99.

    Returns:
        The loss as a float (lower is better).

    Raises:
        ValueError: A true class has no column, or a row's scores sum to zero.
    """
    y = np.asarray(y)
    classes = [str(c) for c in classes]
    p = np.asarray(proba, float)
    total = p.sum(1, keepdims=True)
    if np.any(~(total > 0)):
        raise ValueError(f"weighted log-loss: row {int(np.flatnonzero(~(total[:, 0] > 0))[0])} has no "
                         f"positive probability (its scores sum to {float(total[~(total > 0)][0])})")
    p = np.clip(p / total, LOGLOSS_CLIP, 1.0 - LOGLOSS_CLIP)
    col = {c: j for j, c in enumerate(classes)}
    num = den = 0.0
    for c in np.unique(y.astype(str)):
        if c not in col:
            raise ValueError(f"class {c!r} of the truth has no probability column (columns: {classes})")
        rows = y.astype(str) == c
        w = float((weights or {}).get(c, 1.0))
        num += w * float(np.mean(np.log(p[rows, col[c]])))
        den += w
    return -num / den


def retrieval_scores(ranks) -> dict:
    """R@1/5/10 and the median rank from the 1-based ranks of each query's partner."""
    ranks = np.asarray(ranks, float)
    out = {f"r@{k}": float(np.mean(ranks <= k)) for k in RETRIEVAL_K}
    out["median_rank"] = float(np.median(ranks))
    return out


REGRESSION = {"r2": r2, "sigma_nmad": sigma_nmad, "outlier_fraction": outlier_fraction, "bias": bias}
CLASSIFICATION = {"accuracy": accuracy, "balanced_accuracy": balanced_accuracy, "macro_f1": macro_f1,
                  "weighted_log_loss": None}
RETRIEVAL = ("r@1", "r@5", "r@10", "median_rank")
KNOWN = set(REGRESSION) | set(CLASSIFICATION) | set(RETRIEVAL)


def compute(task_type: str, metrics: list[str], predictions: dict, class_weights: dict | None = None) -> dict:
    """Metrics of one set of test predictions (the structure `mmu.eval.protocols` writes and
    `submit` recomputes from): regression {"y", "pred"}, classification {"y", "classes",
    "proba"}, retrieval {"directions": {name: {"ranks"}}}."""
    unknown = [m for m in metrics if m not in KNOWN]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; known: {sorted(KNOWN)}")
    if task_type == "regression":
        y, pred = np.asarray(predictions["y"], float), np.asarray(predictions["pred"], float)
        return {m: _finite(REGRESSION[m](y, pred)) for m in metrics}
    if task_type == "classification":
        y = np.asarray(predictions["y"]).astype(str)
        classes = [str(c) for c in predictions["classes"]]
        proba = np.asarray(predictions["proba"], float)
        yhat = np.asarray(classes, dtype=object)[np.argmax(proba, 1)].astype(str)
        out = {}
        for m in metrics:
            if m == "weighted_log_loss":
                out[m] = _finite(weighted_log_loss(y, proba, classes, class_weights))
            else:
                out[m] = _finite(CLASSIFICATION[m](y, yhat))
        return out
    if task_type == "retrieval":
        out = {}
        per_dir = {d: retrieval_scores(v["ranks"]) for d, v in predictions["directions"].items()}
        for m in metrics:
            vals = [s[m] for s in per_dir.values()]
            out[m] = float(np.mean(vals))
            for d, s in per_dir.items():
                out[f"{m}[{d}]"] = s[m]
        return out
    raise ValueError(f"unknown task type {task_type!r}")


def _finite(v: float) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def close(a, b, rel: float = 1e-9, abs_: float = 1e-12) -> bool:
    """Equality of a claimed and a recomputed metric (both may be None = NaN)."""
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(float(a), float(b), rel_tol=rel, abs_tol=abs_)


def paired_bootstrap(y, pred_a, pred_b, metric: str = "r2", n_boot: int = 2000, seed: int = 0,
                     level: float = 0.95) -> dict:
    """The difference metric(a) − metric(b) of two regressors' predictions of the same test
    objects, with a percentile confidence interval from resampling the objects (the same
    resample for both, so their shared test-set noise cancels). Resamples whose metric is
    undefined (a constant truth) are dropped and counted."""
    fn = REGRESSION[metric]
    y, a, b = (np.asarray(v, float) for v in (y, pred_a, pred_b))
    if not (len(y) == len(a) == len(b)) or len(y) < 2:
        raise ValueError(f"paired bootstrap needs >= 2 objects with both predictions; got {len(y)}, "
                         f"{len(a)}, {len(b)}")
    rng = np.random.default_rng(seed)
    deltas = []
    for _ in range(n_boot):
        i = rng.integers(0, len(y), len(y))
        d = fn(y[i], a[i]) - fn(y[i], b[i])
        if np.isfinite(d):
            deltas.append(d)
    if not deltas:
        raise ValueError("paired bootstrap: the metric is undefined on every resample")
    lo, hi = np.percentile(deltas, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return {"metric": metric, "a": float(fn(y, a)), "b": float(fn(y, b)), "delta": float(fn(y, a) - fn(y, b)),
            "ci": [float(lo), float(hi)], "level": level, "n": int(len(y)), "n_boot": n_boot,
            "n_undefined": n_boot - len(deltas), "seed": seed}
