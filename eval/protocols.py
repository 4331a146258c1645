"""Named, frozen evaluation protocols: `linear.v1`, `knn16.v1`, `knn64-astroclip.v1`, `retrieval.v1`.

A protocol is a frozen dataclass registered under its name; its `spec()` (every setting) is
written into each result and checked by `submit`, so a submission cannot tune k or the penalty
grid on the test split. A released protocol never changes: a changed setting is a new name.

Isolation: every fit and every selection below receives train / val arrays only; test arrays
enter exactly once, in the final `predict`, after the selection is done.
"""
from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import asdict, dataclass, field

import numpy as np

from mmu.eval import metrics as M

_PROTOCOLS: dict[str, Protocol] = {}


class ProtocolError(ValueError):
    """A protocol is unknown, misconfigured, or does not apply to a task."""
    pass


def register(p: Protocol) -> Protocol:
    """Register a frozen protocol under its name.

    Args:
        p: The protocol instance; `p.name` becomes its registry key.

    Returns:
        `p` itself, so a module-level constant can be defined and registered in one line.

    Raises:
        ValueError: A protocol of that name is already registered (a changed setting needs a new name).
    """
    if p.name in _PROTOCOLS:
        raise ValueError(f"protocol {p.name!r} is already registered; a new setting needs a new name")
    _PROTOCOLS[p.name] = p
    return p


def get_protocol(name: str) -> Protocol:
    """Look up a registered protocol by name.

    Args:
        name: The protocol's name, e.g. "linear.v1".

    Returns:
        The registered `Protocol` instance.

    Raises:
        ProtocolError: No protocol of that name is registered; the message lists the known names.
    """
    try:
        return _PROTOCOLS[name]
    except KeyError:
        raise ProtocolError(f"unknown protocol {name!r}; only the named, frozen protocols are allowed: "
                            f"{', '.join(sorted(_PROTOCOLS))}") from None


def protocols() -> dict[str, Protocol]:
    """All registered protocols.

    Returns:
        A copy of the registry, mapping each name to its `Protocol` instance.
    """
    return dict(_PROTOCOLS)


@dataclass
class Split:
    """One split of a task: object ids, targets, and embeddings (x2: the second modality of a
    retrieval task)."""

    ids: np.ndarray
    y: np.ndarray
    x: np.ndarray
    x2: np.ndarray | None = None

    def take(self, rows) -> Split:
        return Split(self.ids[rows], self.y[rows], self.x[rows], None if self.x2 is None else self.x2[rows])

    def __len__(self):
        return len(self.ids)


@dataclass
class Outcome:
    """What a protocol's `run` returns for one task.

    Attributes:
        metrics: Metric name -> value on the test split.
        predictions: Test ids, targets and per-fit predictions (or retrieval ranks).
        selected: Settings chosen on train/val (e.g. the penalty and the val scores of its grid).
        label_fractions: Per label-fraction results (linear probe only), or None.
    """
    metrics: dict
    predictions: dict
    selected: dict = field(default_factory=dict)
    label_fractions: dict | None = None


@dataclass(frozen=True)
class Protocol:
    """Base class of the named, frozen evaluation protocols.

    Subclasses are frozen dataclasses whose fields are every setting of the protocol.

    Attributes:
        name: The registered name, e.g. "knn16.v1".
    """
    name: str

    def spec(self) -> dict:
        return asdict(self)

    def spec_sha256(self) -> str:
        return hashlib.sha256(json.dumps(self.spec(), sort_keys=True).encode()).hexdigest()


# ---------------------------------------------------------------------------------------- device


def probe_device() -> str | None:
    """The torch device the ridge and kNN probes run on, or None for the CPU reference path.

    None (the default without a GPU): scikit-learn's Ridge and a numpy kNN, as they always were.
    "cuda" (the default with a GPU): ridge (one eigendecomposition for the whole penalty grid) and
    kNN in torch on the GPU, the same numbers within float rounding. `MMU_PROBE_DEVICE` overrides:
    "sklearn" (the reference path), "cuda", or "cpu" (the torch path on the CPU, which the tests
    compare with scikit-learn). Logistic regression stays on scikit-learn everywhere.

    Raises:
        ProtocolError: `MMU_PROBE_DEVICE` is set to something else.
    """
    import os

    forced = os.environ.get("MMU_PROBE_DEVICE")
    if forced:
        if forced not in ("sklearn", "cpu", "cuda"):
            raise ProtocolError(f"MMU_PROBE_DEVICE must be sklearn, cpu or cuda, got {forced!r}")
        return None if forced == "sklearn" else forced
    try:
        import torch
    except ImportError:
        return None
    return "cuda" if torch.cuda.is_available() else None


class RidgePath:
    """Ridge regression for a whole grid of penalties from one eigendecomposition, in torch
    (float64) on any device: for standardised features X (n x d, centred here) and targets y,
    w(alpha) = V diag(1 / (lambda + alpha)) V^T X^T y with X^T X = V diag(lambda) V^T, and the
    intercept mean(y) - mean(X) w. The same solution scikit-learn's `Ridge(alpha,
    fit_intercept=True)` finds, for every alpha at the cost of one fit.

    Example:
        >>> path = RidgePath(x_train, y_train, device="cuda")          # doctest: +SKIP
        >>> preds = path.predict(x_val, alphas=[0.1, 1.0, 10.0])         # [3, n_val]
    """

    def __init__(self, x, y, device: str = "cpu"):
        import torch

        self.torch, self.device = torch, device
        x = torch.as_tensor(np.asarray(x), device=device).double()
        y = torch.as_tensor(np.asarray(y, float), device=device).double()
        self.x_mean, self.y_mean = x.mean(0), y.mean()
        xc = x - self.x_mean
        self.lam, self.v = torch.linalg.eigh(xc.T @ xc)
        self.vb = self.v.T @ (xc.T @ (y - self.y_mean))

    def coef(self, alpha: float):
        w = self.v @ (self.vb / (self.lam.clamp_min(0) + alpha))
        return w, self.y_mean - self.x_mean @ w

    def predict(self, q, alphas) -> np.ndarray:
        """float64 [len(alphas), len(q)] predictions of the fits at each alpha."""
        q = self.torch.as_tensor(np.asarray(q), device=self.device).double()
        out = []
        for a in alphas:
            w, b = self.coef(float(a))
            out.append(q @ w + b)
        return self.torch.stack(out).cpu().numpy()


# ---------------------------------------------------------------------------------------- linear


class _Scaler:
    """Standardisation with statistics of the fitting rows only (zero-variance dims: scale 1)."""

    def __init__(self, x):
        self.mean = x.mean(0)
        sd = x.std(0)
        self.scale = np.where(sd > 0, sd, 1.0)

    def __call__(self, x):
        return (x - self.mean) / self.scale


def linear_penalty(grid, val_scores: list, higher_is_better: bool):
    """The linear probe's frozen selection rule: the penalty of `grid` with the best val score in
    the task's direction, the first of the grid on a tie; None when no score is finite.
    `LinearProbe.select` uses it, and the board re-applies it to a submitted result."""
    sign = 1 if higher_is_better else -1
    finite = [(sign * s, -k) for k, s in enumerate(val_scores) if s is not None]
    return None if not finite else grid[-max(finite)[1]]


@dataclass(frozen=True)
class LinearProbe(Protocol):
    """Linear probe: ridge regression or logistic regression on standardised embeddings.

    The penalty is selected on val from a fixed grid (`ridge_alphas` for regression,
    `logistic_cs` for classification) with a probe fitted on train; the probe is then refitted on
    train + val at that penalty and scored once on test. It also reports label-efficiency results:
    for each of `fractions`, stratified (classification) subsamples of train and val per seed,
    penalty reselection, and a train-only fit scored on test (mean ± std over `seeds`).

    Raises:
        ProtocolError: From `run`, for a task that is not regression or classification, or when no
            penalty of the grid gives a finite val score.
    """
    ridge_alphas: tuple = tuple(float(10.0 ** e) for e in range(-3, 5))
    logistic_cs: tuple = tuple(float(10.0 ** e) for e in range(-3, 3))
    max_iter: int = 1000
    fractions: tuple = (0.01, 0.1, 1.0)
    seeds: tuple = (0, 1, 2, 3, 4)

    def _fit(self, kind, x, y, penalty, classes):
        from sklearn.linear_model import LogisticRegression, Ridge

        scaler = _Scaler(x)
        device = probe_device()
        if kind == "regression" and device is not None:
            path = RidgePath(scaler(x), y, device=device)
            return lambda q: {"pred": path.predict(scaler(q), [penalty])[0]}
        if kind == "regression":
            from scipy.linalg import LinAlgWarning

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", LinAlgWarning)  # the grid's smallest penalties on
                model = Ridge(alpha=penalty).fit(scaler(x), y)  # collinear features: val decides
            return lambda q: {"pred": model.predict(scaler(q)).astype(float)}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence warnings at the extremes of the grid
            model = LogisticRegression(C=penalty, max_iter=self.max_iter).fit(scaler(x), y)

        def predict(q):
            p = np.zeros((len(q), len(classes)))
            cols = [classes.index(str(c)) for c in model.classes_]
            p[:, cols] = model.predict_proba(scaler(q))
            return {"proba": p}
        return predict

    def select(self, task, train: Split, val: Split, classes) -> tuple[float, list]:
        """The penalty whose train-fitted probe scores best on val (main score, its direction)."""
        grid = self.ridge_alphas if task.type == "regression" else self.logistic_cs
        scores = []
        device = probe_device()
        if task.type == "regression" and device is not None:  # the whole grid from one fit
            scaler = _Scaler(train.x)
            val_preds = RidgePath(scaler(train.x), train.y, device).predict(scaler(val.x), grid)
            outs = ({"pred": p} for p in val_preds)
        else:
            outs = (self._fit(task.type, train.x, train.y, penalty, classes)(val.x) for penalty in grid)
        for out in outs:
            s = M.compute(task.type, [task.main_score], _pred_block(val.y, out, classes),
                          task.class_weights)[task.main_score]
            scores.append(s)
        best = linear_penalty(grid, scores, task.higher_is_better)
        if best is None:
            raise ProtocolError(f"{task.name}: no penalty of the grid gave a finite val score")
        return float(best), scores

    def run(self, task, splits: dict[str, Split], metric_names: list[str]) -> Outcome:
        if task.type not in ("regression", "classification"):
            raise ProtocolError(f"{self.name} does not apply to {task.type} task {task.name}")
        train, val, test = splits["train"], splits["val"], splits["test"]
        classes = _classes(task, splits)
        penalty, grid_scores = self.select(task, train, val, classes)
        both = Split(np.concatenate([train.ids, val.ids]), np.concatenate([train.y, val.y]),
                     np.concatenate([train.x, val.x]))
        main = self._fit(task.type, both.x, both.y, penalty, classes)(test.x)
        fits = {"main": _values(main)}
        metrics = M.compute(task.type, metric_names, _pred_block(test.y, main, classes), task.class_weights)
        fractions = {}
        for f in self.fractions:
            fractions[_fkey(f)], fits_f = self._fraction(task, f, train, val, test, classes, metric_names)
            fits.update(fits_f)
        preds = {"ids": test.ids.tolist(), "y": _labels(test.y), **({"classes": classes} if classes else {}),
                 "fits": fits}
        return Outcome(metrics, preds, {"penalty": penalty, "grid": list(self.ridge_alphas if task.type == "regression"
                                                                         else self.logistic_cs),
                                        "val_scores": grid_scores, "fit_rows": len(both)}, fractions)

    def _fraction(self, task, f, train, val, test, classes, metric_names):
        seeds = self.seeds if f < 1 else self.seeds[:1]  # the full set is the same for every seed
        entry = {"seeds": list(seeds), "n_train": [], "n_val": [], "penalty": [], "nan_reason": None,
                 "metrics": {m: {"values": []} for m in metric_names}}
        fits = {}
        for seed in seeds:
            rng = np.random.default_rng([seed, round(f * 1e6)])
            tr, why_tr = subsample(train.y, f, rng, task.type == "classification")
            va, why_va = subsample(val.y, f, rng, task.type == "classification")
            why = why_tr or why_va
            if why:
                entry["nan_reason"] = entry["nan_reason"] or f"seed {seed}: {why}"
                for m in metric_names:
                    entry["metrics"][m]["values"].append(None)
                entry["n_train"].append(len(tr))
                entry["n_val"].append(len(va))
                entry["penalty"].append(None)
                continue
            sub_tr, sub_va = train.take(tr), val.take(va)
            penalty, _ = self.select(task, sub_tr, sub_va, classes)
            out = self._fit(task.type, sub_tr.x, sub_tr.y, penalty, classes)(test.x)  # train only
            fits[f"f{_fkey(f)}-s{seed}"] = _values(out)
            m = M.compute(task.type, metric_names, _pred_block(test.y, out, classes), task.class_weights)
            for name in metric_names:
                entry["metrics"][name]["values"].append(m[name])
            entry["n_train"].append(len(tr))
            entry["n_val"].append(len(va))
            entry["penalty"].append(penalty)
        for name in metric_names:
            entry["metrics"][name].update(summarise(entry["metrics"][name]["values"]))
        return entry, fits


def summarise(values: list) -> dict:
    """mean ± std (population) over seeds; None (NaN) when any seed is NaN."""
    if not values or any(v is None for v in values):
        return {"mean": None, "std": None}
    return {"mean": float(np.mean(values)), "std": float(np.std(values))}


def subsample(y, fraction: float, rng, stratified: bool) -> tuple[np.ndarray, str | None]:
    """Rows of a `fraction` subsample, never more than floor(fraction * n) of them; stratified
    (floor per class) for classes. Returns (rows, reason) with a reason when it cannot work."""
    n = len(y)
    if fraction >= 1:
        return np.arange(n), None
    if not stratified:
        k = int(np.floor(fraction * n))
        if k < 2:
            return np.arange(0), f"{fraction:g} of {n} rows leaves {k} (< 2)"
        return np.sort(rng.choice(n, k, replace=False)), None
    ys = np.asarray(y).astype(str)
    rows = []
    for c in np.unique(ys):
        members = np.flatnonzero(ys == c)
        k = int(np.floor(fraction * len(members)))
        if k < 1:
            return np.arange(0), (f"class {str(c)!r} has {len(members)} rows; a {fraction:g} stratified "
                                  f"subsample keeps none (at least one per class is required)")
        rows.append(rng.choice(members, k, replace=False))
    return np.sort(np.concatenate(rows)), None


def _fkey(f: float) -> str:
    return f"{f:g}"


def _classes(task, splits) -> list[str] | None:
    if task.type != "classification":
        return None
    return sorted({str(v) for s in splits.values() for v in s.y})


def _labels(y) -> list:
    return [str(v) for v in y] if y.dtype.kind in "OUS" else [float(v) for v in y]


def _values(out: dict) -> dict:
    return {k: np.asarray(v, float).tolist() for k, v in out.items()}


def _pred_block(y, out: dict, classes) -> dict:
    if "proba" in out:
        return {"y": y, "classes": classes, "proba": out["proba"]}
    return {"y": y, "pred": out["pred"]}


# ---------------------------------------------------------------------------------------- kNN


def l2_normalise(x):
    """Scale each row to unit Euclidean norm.

    Args:
        x: Array-like [n, d]; cast to float32.

    Returns:
        float32 [n, d] array of the rows divided by their L2 norms (norms below 1e-12 are clamped
        to 1e-12, so all-zero rows stay zero).
    """
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def nearest(ref, query, k: int, chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest reference rows (Euclidean) of each query row: (indices, distances), ties
    broken by reference index."""
    ref, query = np.asarray(ref, np.float32), np.asarray(query, np.float32)
    k = min(k, len(ref))
    rn = (ref.astype(np.float64) ** 2).sum(1)
    idx = np.empty((len(query), k), np.int64)
    dist = np.empty((len(query), k))
    for s in range(0, len(query), chunk):
        q = query[s:s + chunk]
        d2 = np.maximum(rn[None] + (q.astype(np.float64) ** 2).sum(1)[:, None] - 2.0 * (q @ ref.T), 0)
        part = np.argpartition(d2, k - 1, axis=1)[:, :k] if k < len(ref) else np.tile(np.arange(len(ref)), (len(q), 1))
        pd = np.take_along_axis(d2, part, 1)
        order = np.lexsort((part, pd), axis=1)
        idx[s:s + chunk] = np.take_along_axis(part, order, 1)
        dist[s:s + chunk] = np.sqrt(np.take_along_axis(pd, order, 1))
    return idx, dist


def nearest_torch(ref, query, k: int, device: str = "cuda", chunk: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """`nearest` in torch on `device` (a GPU): the same squared distances (float32 products,
    float64 norms), the k smallest by `torch.topk`, then ordered by (distance, reference index)."""
    import torch

    ref_t = torch.as_tensor(np.asarray(ref, np.float32), device=device)
    k = min(k, len(ref_t))
    rn = (ref_t.double() ** 2).sum(1)
    idx = np.empty((len(query), k), np.int64)
    dist = np.empty((len(query), k))
    for s in range(0, len(query), chunk):
        q = torch.as_tensor(np.asarray(query[s:s + chunk], np.float32), device=device)
        d2 = (rn[None] + (q.double() ** 2).sum(1)[:, None] - 2.0 * (q @ ref_t.T).double()).clamp_min(0)
        pd, part = torch.topk(d2, k, dim=1, largest=False)
        pd, part = pd.cpu().numpy(), part.cpu().numpy()
        order = np.lexsort((part, pd), axis=1)
        idx[s:s + len(q)] = np.take_along_axis(part, order, 1)
        dist[s:s + len(q)] = np.sqrt(np.take_along_axis(pd, order, 1))
    return idx, dist


def distance_weights(dist, eps: float = 1e-12):
    """1/d, as scikit-learn's weights='distance'; a row with an exact match uses only those."""
    exact = dist < eps
    w = 1.0 / np.maximum(dist, eps)
    return np.where(exact.any(1, keepdims=True), exact.astype(float), w)


@dataclass(frozen=True)
class KNN(Protocol):
    """k-nearest-neighbour probe: test rows are predicted from their k nearest train + val rows.

    Regression predicts the (distance-)weighted mean target; classification the weighted class
    votes, normalised to probabilities. `space` "cosine" L2-normalises the embeddings;
    "standardized" z-scores them with the reference (train + val) statistics.

    Attributes:
        k: Number of neighbours (capped at the number of reference rows).
        weighting: "distance" (1/d, as scikit-learn) or anything else for uniform weights.
        space: "cosine" or "standardized".

    Raises:
        ProtocolError: From `run`, for a task that is not regression or classification, or when
            test objects also appear in train/val.
    """
    k: int = 16
    weighting: str = "distance"
    space: str = "cosine"  # "cosine": L2-normalised; "standardized": z-scored with reference stats

    def run(self, task, splits: dict[str, Split], metric_names: list[str]) -> Outcome:
        if task.type not in ("regression", "classification"):
            raise ProtocolError(f"{self.name} does not apply to {task.type} task {task.name}")
        train, val, test = splits["train"], splits["val"], splits["test"]
        ref_x = np.concatenate([train.x, val.x])
        ref_y = np.concatenate([train.y, val.y])
        overlap = set(test.ids.tolist()) & set(np.concatenate([train.ids, val.ids]).tolist())
        if overlap:  # splits are disjoint by construction; a query is never its own reference
            raise ProtocolError(f"{task.name}: {len(overlap)} test objects also in train/val")
        if self.space == "cosine":
            ref, q = l2_normalise(ref_x), l2_normalise(test.x)
        else:
            sc = _Scaler(ref_x.astype(np.float64))
            ref, q = sc(ref_x).astype(np.float32), sc(test.x).astype(np.float32)
        device = probe_device()
        idx, dist = nearest(ref, q, self.k) if device is None else nearest_torch(ref, q, self.k, device)
        w = distance_weights(dist) if self.weighting == "distance" else np.ones_like(dist)
        classes = _classes(task, splits)
        if task.type == "regression":
            out = {"pred": (w * ref_y.astype(float)[idx]).sum(1) / w.sum(1)}
        else:
            lab = np.asarray(ref_y).astype(str)[idx]
            proba = np.zeros((len(q), len(classes)))
            for j, c in enumerate(classes):
                proba[:, j] = (w * (lab == c)).sum(1)
            out = {"proba": proba / proba.sum(1, keepdims=True)}
        metrics = M.compute(task.type, metric_names, _pred_block(test.y, out, classes), task.class_weights)
        preds = {"ids": test.ids.tolist(), "y": _labels(test.y), **({"classes": classes} if classes else {}),
                 "fits": {"main": _values(out)}}
        return Outcome(metrics, preds, {"k": min(self.k, len(ref)), "reference_rows": len(ref)})


# ---------------------------------------------------------------------------------------- retrieval


def gallery_order(ids) -> np.ndarray:
    """Rows ordered by sha256(object_id): the gallery is a prefix of this order."""
    keys = [hashlib.sha256(str(i).encode()).hexdigest() for i in ids]
    return np.argsort(np.asarray(keys), kind="stable")


def partner_ranks(a, b) -> np.ndarray:
    """1-based rank of b[i] among all b for query a[i] by cosine; ties count against the query."""
    sim = l2_normalise(a) @ l2_normalise(b).T
    true = np.diag(sim)
    return 1 + (sim >= true[:, None]).sum(1) - 1


@dataclass(frozen=True)
class Retrieval(Protocol):
    """Cross-modal retrieval on the test split, in both directions between the task's two columns.

    The gallery is the first `gallery_size` test objects in sha256(object_id) order; each query's
    partner is ranked among the gallery by cosine similarity.

    Attributes:
        gallery_size: Maximum number of test objects in the gallery.
        top: How many nearest gallery ids to keep per query in the predictions.

    Raises:
        ProtocolError: From `run`, for a task that is not a retrieval task.
    """
    gallery_size: int = 1000
    top: int = 10

    def run(self, task, splits: dict[str, Split], metric_names: list[str]) -> Outcome:
        if task.type != "retrieval":
            raise ProtocolError(f"{self.name} applies to retrieval tasks, not {task.type} task {task.name}")
        test = splits["test"]
        rows = gallery_order(test.ids)[:self.gallery_size]
        g = test.take(rows)
        a_name, b_name = task.columns
        dirs = {}
        for (src, dst, qa, qb) in ((a_name, b_name, g.x, g.x2), (b_name, a_name, g.x2, g.x)):
            ranks = partner_ranks(qa, qb)
            sim = l2_normalise(qa) @ l2_normalise(qb).T
            top = np.argsort(-sim, axis=1, kind="stable")[:, :self.top]
            dirs[f"{src}->{dst}"] = {"ranks": ranks.tolist(), f"top{self.top}": g.ids[top].tolist()}
        metrics = M.compute("retrieval", metric_names, {"directions": dirs})
        return Outcome(metrics, {"ids": g.ids.tolist(), "directions": dirs}, {"gallery": len(g)})


LINEAR_V1 = register(LinearProbe("linear.v1"))
KNN16_V1 = register(KNN("knn16.v1", k=16, weighting="distance", space="cosine"))
KNN64_ASTROCLIP_V1 = register(KNN("knn64-astroclip.v1", k=64, weighting="distance", space="standardized"))
RETRIEVAL_V1 = register(Retrieval("retrieval.v1", gallery_size=1000, top=10))
