"""`mmu eval submit RESULTS --leaderboard REPO`: validate a result set, then add it to a leaderboard
as a commit on a branch of a git repository, or as a pull request on a Hub dataset repository
(`hf://datasets/OWNER/NAME`). Also `mmu eval lock` (what a build's publisher publishes) and
`mmu eval add-lock` (a maintainer trusting a published lock on the board).

The submitted file is never the source of the truth it is scored against. The test labels, the id
sets and whether the build is mock come from one of (docs/reliability.md, "The board"):

- the task's catalog lock file (`lock:` in catalog.yaml; every mock task has one);
- a lock the board trusts, `locks/<content revision>.json` in the board's repository, added by a
  maintainer (`add_lock`) from the lock a build's publisher published (`make_lock`);
- the dataset itself (`submit(..., hub=HUB)`): the labels and id sets recomputed from the hub's
  build at the result's revision.

A result whose (task, content revision) none of them covers is refused.

Validation (every problem is reported, nothing is written when there is one): the results
schema (strict `model` and `environment` blocks); the task block and its `entry` equal
catalog.yaml's; dataset revisions and split hashes equal the catalog's (a task without a pinned
revision runs on any build that a lock or the hub covers); the id sets and test labels equal the
trusted ones; `mock` and `build` recomputed from the task and the build; `comparable` results
only; named protocols with their frozen settings, and `protocol.selected` recomputed with the
protocol's frozen rule; the predictions' hash; every metric recomputed from the included test
predictions and equal to the claimed one; `near_pretraining` consistent (its ids are test ids,
as many as its count, the harness's radius); names that cannot traverse paths; files only under
`results/<model>/`; an existing entry never overwritten without `--replace`; baseline results
only from `mmu eval baselines`, confirmed by a maintainer's re-run (`--verified-by`).
"""
from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from pydantic import ValidationError

from mmu.eval import metrics as M
from mmu.eval.protocols import KNN, LinearProbe, ProtocolError, Retrieval, get_protocol, linear_penalty
from mmu.eval.results import (
    FORMATS,
    NEAR_RADIUS_ARCSEC,
    Result,
    build_of,
    read_results,
    result_filename,
    safe_name,
    sha256_ids,
    sha256_json,
)

RESULTS_DIR = "results"
LOCKS_DIR = "locks"
SUBMISSION = "submission.json"
LOCK_FORMAT = "mmu-lock/1"  # what `mmu eval lock` writes (a build's publisher publishes it)
LOCK_FORMATS = (LOCK_FORMAT, "mmu-mock-lock/1")
BOARD_LOCK_FORMAT = "mmu-board-lock/1"  # locks/<content revision>.json on a board
log = logging.getLogger(__name__)


class SubmitError(ValueError):
    """A submission refused (every problem listed), or a leaderboard that cannot be written."""


def labels_sha256(predictions: dict) -> str | None:
    """sha256 of a result's (test id, label) pairs sorted by id; None for retrieval (no labels)."""
    if "y" not in predictions:
        return None
    pairs = sorted(zip(map(str, predictions["ids"]), predictions["y"], strict=False), key=lambda p: p[0])
    return sha256_json(pairs)


# ------------------------------------------------------------------------------------- locks


def lock_entries(hub: Path, tasks) -> dict:
    """What a lock file pins for `tasks` on a built hub: each dataset's content revision, rows,
    inputs' revisions and whether it is a mock build, each task's id sets per split and
    test-label hash (what `validate` checks results against). A task is opened at the hub's
    revision of its dataset.

    Args:
        hub: the hub folder.
        tasks: catalog task entries (`mmu.registry.catalog.TaskEntry`).

    Returns:
        {"datasets": {name: {content_revision, rows, inputs_revisions, mock}}, "tasks": {name:
        {dataset, content_revision, splits: {split: {count, ids_sha256}}, test_labels_sha256}}}.

    Raises:
        ValueError: a paired dataset built with other prefixes than the task names.
        FileNotFoundError: a task's dataset is not built in `hub`.
    """
    from mmu.eval.tasks import open_task
    from mmu.hub.layout import read_manifest

    out = {"datasets": {}, "tasks": {}}
    for t in tasks:
        m = read_manifest(hub, t.hub_name)
        if t.paired:
            got = list(m.prefixes or [])
            if got and got != t.paired.prefixes:
                raise ValueError(f"{t.hub_name}: prefixes {got} are not the task's {t.paired.prefixes}")
        out["datasets"][t.hub_name] = {"content_revision": m.content_revision, "rows": m.rows.model_dump(),
                                       "inputs_revisions": m.inputs_revisions, "mock": bool(m.mock)}
        d = open_task(t.model_copy(update={"dataset_revision": m.content_revision}), hub)
        labels = None
        if t.type != "retrieval":
            ys = [str(v) if t.type == "classification" else float(v) for v in d.y["test"]]
            labels = sha256_json(sorted(zip(map(str, d.ids["test"]), ys, strict=False), key=lambda p: p[0]))
        out["tasks"][t.name] = {"dataset": t.hub_name, "content_revision": m.content_revision,
                                "splits": {s: {"count": int(len(d.ids[s])), "ids_sha256": sha256_ids(d.ids[s])}
                                           for s in ("train", "val", "test")},
                                "test_labels_sha256": labels}
    return out


def make_lock(hub: Path, tasks, skip_unrunnable: bool = False) -> dict:
    """The lock a build's publisher publishes (`mmu eval lock`): `lock_entries` of `tasks` on
    `hub`, with the format, the time and the mmu version that computed it.

    Args:
        hub: the hub folder.
        tasks: catalog task entries.
        skip_unrunnable: leave out (with a warning naming the reason) a task that cannot be
            opened on this hub (its dataset not built, a label column missing, too few rows);
            the lock's ``skipped`` lists them. Otherwise the first such task raises.

    Raises:
        ValueError, FileNotFoundError: as `lock_entries` (a `TaskError` is a ValueError).
    """
    from importlib import metadata

    try:
        version = metadata.version("mmu-hub")
    except metadata.PackageNotFoundError:
        version = None
    entries, skipped = {"datasets": {}, "tasks": {}}, {}
    for t in tasks:
        try:
            one = lock_entries(Path(hub), [t])
        except (ValueError, FileNotFoundError) as e:
            if not skip_unrunnable:
                raise
            log.warning("not locking %s: %s", t.name, e)
            skipped[t.name] = str(e)
            continue
        entries["datasets"].update(one["datasets"])
        entries["tasks"].update(one["tasks"])
    return {"format": LOCK_FORMAT, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "mmu_version": version, "machine": {"system": platform.system(), "machine": platform.machine(),
                                                "python": platform.python_version()},
            **entries, **({"skipped": skipped} if skipped else {})}


def load_lock(path: Path) -> dict | None:
    """A lock file's content, or None when there is no such file."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None


def _lock_path(task) -> Path:
    from mmu.registry.catalog import default_catalog_path

    return default_catalog_path().parent / task.lock


@dataclass
class Pin:
    """What the board scores a result against, from a source it trusts (never the result).

    Attributes:
        source: where it comes from, for messages ("catalog lock X", "board lock locks/R.json",
            "hub H").
        splits: split -> {"ids_sha256", optionally "count"}.
        test_labels_sha256: the test labels' hash (None for retrieval).
        mock: whether the build is a mock build (None: the source does not say).
        inputs_revisions: the build's inputs' revisions (False: the source does not say).
    """
    source: str
    splits: dict
    test_labels_sha256: str | None
    mock: bool | None
    inputs_revisions: list | None | bool = False


def _pin_from_lock(lock: dict, task, revision: str | None, source: str) -> Pin | None:
    entry = (lock.get("tasks") or {}).get(task.name)
    if not isinstance(entry, dict):
        return None
    if entry.get("content_revision") not in (None, revision):
        return None  # the lock pins another build of the dataset
    ds = (lock.get("datasets") or {}).get(task.hub_name) or {}
    if lock.get("dataset") == task.hub_name:  # a board lock: one dataset per file
        ds = lock
    if ds and ds.get("content_revision") not in (None, revision):
        return None
    mock = ds.get("mock")
    if mock is None and lock.get("format") == "mmu-mock-lock/1":
        mock = True
    return Pin(source, entry.get("splits") or {}, entry.get("test_labels_sha256"), mock,
               ds.get("inputs_revisions", False) if ds else False)


def board_locks(files: dict[str, bytes]) -> dict[str, dict]:
    """{content revision: lock} of the trusted locks on a board (`locks/<revision>.json`)."""
    out = {}
    for name, data in files.items():
        parts = name.split("/")
        if len(parts) == 2 and parts[0] == LOCKS_DIR and parts[1].endswith(".json"):
            try:
                lock = json.loads(data)
            except ValueError:
                log.warning("%s: not JSON; ignored", name)
                continue
            if isinstance(lock, dict) and lock.get("format") == BOARD_LOCK_FORMAT:
                out[parts[1][:-len(".json")]] = lock
    return out


class _HubPins:
    """Pins recomputed from a hub's own build of each task's dataset (`submit --hub`)."""

    def __init__(self, hub: Path):
        self.hub = Path(hub)
        self.cache: dict = {}

    def pin(self, task, revision: str | None) -> tuple[Pin | None, str | None]:
        from mmu.hub.layout import read_manifest

        try:
            m = read_manifest(self.hub, task.hub_name)
        except (FileNotFoundError, ValueError) as e:
            return None, f"--hub {self.hub}: {task.hub_name} is not readable there ({e})"
        if m.content_revision != revision:
            return None, (f"--hub {self.hub} holds {task.hub_name} at revision {m.content_revision[:16]}, "
                          f"not the result's {str(revision)[:16]}")
        if task.name not in self.cache:
            try:
                self.cache[task.name] = lock_entries(self.hub, [task])
            except Exception as e:  # noqa: BLE001 -- any failure to open the task is a refusal, named
                self.cache[task.name] = f"--hub {self.hub}: cannot open {task.name} there ({type(e).__name__}: {e})"
        got = self.cache[task.name]
        if isinstance(got, str):
            return None, got
        return _pin_from_lock(got, task, revision, f"hub {self.hub}"), None


def trusted_pin(task, revision: str | None, locks: dict[str, dict], hub: _HubPins | None) -> tuple[Pin | None, str]:
    """The trusted id sets and labels of `task` on the build `revision`, and a problem when none.

    Order: the task's catalog lock (the only source for a mock task); a lock the board trusts for
    that revision; the hub given to `submit`.
    """
    if task.lock:
        lock = load_lock(_lock_path(task))
        if lock is None and task.mock:
            return None, f"lock file {task.lock} not found; cannot check the mock revision"
        pin = _pin_from_lock(lock, task, revision, f"catalog lock {task.lock}") if lock else None
        if pin is not None:
            return pin, ""
        if task.mock:
            return None, f"{task.lock} pins nothing for {task.name}"
    board = locks.get(str(revision))
    if board is not None:
        pin = _pin_from_lock(board, task, revision, f"board lock {LOCKS_DIR}/{revision}.json")
        if pin is not None:
            return pin, ""
    if hub is not None:
        pin, why = hub.pin(task, revision)
        if pin is not None:
            return pin, ""
        hub_why = f"; {why}" if why else ""
    else:
        hub_why = ""
    return None, (f"no trusted test labels for {task.name} on {task.hub_name} revision {str(revision)[:16]}: "
                  f"the board holds no lock of that build for the task and --hub was not given{hub_why}. "
                  f"Either a maintainer adds that build's published lock (`mmu eval lock --hub HUB -o LOCK` "
                  f"by its publisher, then `mmu eval add-lock LOCK --leaderboard BOARD --added-by NAME`), "
                  f"or submit with --hub HUB holding that build, so the labels are read from the dataset itself")


# ------------------------------------------------------------------------------- recompute


def recompute(res: dict) -> list[str]:
    """Problems found by recomputing every claimed metric from the included predictions.

    Args:
        res: one results file's content.

    Returns:
        One sentence per problem ([] when every metric, the main score and the predictions'
        hash agree).
    """
    t, preds = res["task"], res["predictions"]
    problems = []
    if sha256_json(preds) != res["predictions_sha256"]:
        problems.append("predictions_sha256 does not match the predictions")
    if t["type"] == "retrieval":
        got = M.compute("retrieval", t["metrics"], preds)
        return problems + _compare("metrics", res["metrics"], got)
    fits = preds.get("fits") or {}
    if "main" not in fits:
        return problems + ["predictions have no 'main' fit"]

    def block(fit):
        if t["type"] == "regression":
            return {"y": np.asarray(preds["y"], float), "pred": fit["pred"]}
        return {"y": np.asarray(preds["y"]).astype(str), "classes": preds["classes"], "proba": fit["proba"]}

    problems += _compare("metrics", res["metrics"],
                         M.compute(t["type"], t["metrics"], block(fits["main"]), t["class_weights"]))
    if res["main_score"].get("value") != res["metrics"].get(t["main_score"]):
        problems.append("main_score.value is not metrics[main_score]")
    for f, entry in (res.get("label_fractions") or {}).items():
        for m in t["metrics"]:
            vals = []
            for seed in entry["seeds"]:
                fit = fits.get(f"f{f}-s{seed}")
                vals.append(None if fit is None else
                            M.compute(t["type"], [m], block(fit), t["class_weights"])[m])
            claimed = entry["metrics"][m]
            problems += _compare(f"label_fractions[{f}].{m}", {"values": claimed["values"]},
                                 {"values": vals})
            from mmu.eval.protocols import summarise
            problems += _compare(f"label_fractions[{f}].{m}", {k: claimed.get(k) for k in ("mean", "std")},
                                 summarise(vals))
    return problems


def _compare(where, claimed: dict, got: dict) -> list[str]:
    out = []
    for k, v in got.items():
        c = claimed.get(k)
        if isinstance(v, list):
            same = isinstance(c, list) and len(c) == len(v) and all(M.close(a, b) for a, b in zip(c, v, strict=True))
            if not same:
                out.append(f"{where}.{k}: claimed {c}, recomputed {v}")
        elif not M.close(c, v):
            out.append(f"{where}.{k}: claimed {c}, recomputed {v} from the predictions")
    return out


def check_selected(proto, task, res: dict) -> list[str]:
    """Problems of a result's ``protocol.selected``, recomputed with the protocol's frozen rule
    from what the result includes: the linear probe's penalty from its grid's val scores (the
    grid itself the frozen one) and its fit rows (train + val); the kNN's k and reference rows;
    the retrieval gallery's size. The val scores themselves cannot be recomputed (the board has
    no val embeddings)."""
    sel, n = res["protocol"]["selected"], {s: res["splits"][s]["count"] for s in ("train", "val", "test")}

    def differs(key, want):
        return [] if sel.get(key) == want else [f"protocol.selected.{key} is {sel.get(key)!r}; the frozen rule of "
                                                 f"{proto.name} gives {want!r}"]
    if isinstance(proto, LinearProbe):
        expected_keys = {"penalty", "grid", "val_scores", "fit_rows"}
        grid = list(proto.ridge_alphas if task.type == "regression" else proto.logistic_cs)
        out = differs("grid", grid)
        scores = sel.get("val_scores")
        if not isinstance(scores, list) or len(scores) != len(grid) or \
                not all(s is None or isinstance(s, (int, float)) for s in scores):
            out.append(f"protocol.selected.val_scores must hold one score (or null) per penalty of the grid "
                       f"({len(grid)})")
        else:
            out += differs("penalty", linear_penalty(grid, scores, task.higher_is_better))
        out += differs("fit_rows", n["train"] + n["val"])
    elif isinstance(proto, KNN):
        expected_keys = {"k", "reference_rows"}
        out = differs("reference_rows", n["train"] + n["val"]) + differs("k", min(proto.k, n["train"] + n["val"]))
    elif isinstance(proto, Retrieval):
        expected_keys = {"gallery"}
        want = min(proto.gallery_size, n["test"])
        out = differs("gallery", want)
        if len(res["predictions"].get("ids") or []) != want:
            out.append(f"the retrieval gallery holds {len(res['predictions'].get('ids') or [])} objects; "
                       f"{proto.name} takes {want} of the {n['test']} test objects")
    else:
        return [f"protocol {proto.name}: the board has no rule to check its selected settings"]
    extra = set(sel) - expected_keys
    if extra:
        out.append(f"protocol.selected has keys {sorted(extra)} that {proto.name} does not select")
    return out


def check_near(res: dict) -> list[str]:
    """Problems of ``near_pretraining``: the harness's radius; a count equal to the number of
    listed test ids, each one a test object, none twice; no count (null) only with a reason and
    no ids. A ``/1`` file with a count above 0 names no ids and is refused."""
    near = res["near_pretraining"]
    ids = near.get("ids") or []
    out = []
    if near["radius_arcsec"] != NEAR_RADIUS_ARCSEC:
        out.append(f"near_pretraining.radius_arcsec {near['radius_arcsec']} is not the harness's {NEAR_RADIUS_ARCSEC}")
    if near["count"] is None:
        if ids:
            out.append("near_pretraining lists ids but no count")
        if not near.get("reason"):
            out.append("near_pretraining.count is null without a reason")
        return out
    if near["count"] != len(ids):
        out.append(f"near_pretraining.count {near['count']} but {len(ids)} test ids listed as near the "
                   f"pretraining sky (a mmu-eval-result/1 file names none: re-run with this version)")
    if len(set(ids)) != len(ids):
        out.append("near_pretraining.ids lists an id twice")
    test_ids = res["predictions"].get("ids") or []
    if res["task"]["type"] != "retrieval":  # retrieval predictions hold the gallery only
        outside = set(ids) - set(map(str, test_ids))
        if outside:
            out.append(f"near_pretraining.ids holds {len(outside)} id(s) that are not test objects, e.g. "
                       f"{sorted(outside)[0]!r}")
    if near["count"] > res["splits"]["test"]["count"]:
        out.append(f"near_pretraining.count {near['count']} exceeds the {res['splits']['test']['count']} test objects")
    return out


# -------------------------------------------------------------------------------- validate


def validate(results: list[tuple[Path, dict]], catalog=None, board: dict | None = None,
             locks: dict[str, dict] | None = None, hub: Path | None = None) -> list[str]:
    """Every problem of a result set ([] = valid).

    Args:
        results: (path, content) of each results file, as `mmu.eval.results.read_results` gives.
        catalog: the catalog to check against (default: `load_catalog()`).
        board: {(task name, content revision): labels_sha256} of the results already on the board.
        locks: {content revision: lock} the board trusts (`board_locks`).
        hub: a hub holding the results' builds: their labels and id sets are recomputed there.

    Returns:
        One sentence per problem, each naming its file.
    """
    from mmu.registry.catalog import TaskEntry, load_catalog

    catalog = catalog or load_catalog()
    locks = locks or {}
    hub_pins = _HubPins(hub) if hub is not None else None
    problems = []
    if not results:
        return [f"no results files ({' or '.join(FORMATS)} JSON) found"]
    shas = {r["model"].get("sha256") for _, r in results if isinstance(r.get("model"), dict)}
    if len(shas) > 1:
        problems.append(f"the results come from {len(shas)} different models; submit one model at a time")
    seen = set()
    for path, res in results:
        where = path.name
        try:
            Result.model_validate(res)
        except ValidationError as e:
            err = e.errors()[0]
            problems.append(f"{where}: not a valid results file: {'.'.join(map(str, err['loc']))}: {err['msg']}")
            continue
        t = res["task"]
        try:
            task = catalog.task(t["name"])
        except KeyError:
            problems.append(f"{where}: task {t['name']!r} is not in catalog.yaml")
            continue
        pinned_revision = task.dataset_revision is not None
        checks = [("dataset_revision", task.dataset_revision), ("split_hash", task.split_hash),
                  ("split_hash_used", task.split_hash), ("type", task.type), ("main_score", task.main_score),
                  ("higher_is_better", task.higher_is_better), ("class_weights", task.class_weights),
                  ("metrics", task.metric_names), ("dataset", task.dataset), ("hub_dataset", task.hub_name),
                  ("mock", task.mock)]
        if pinned_revision:
            checks.append(("dataset_revision_used", task.dataset_revision))
        elif not t.get("dataset_revision_used"):
            problems.append(f"{where}: task.dataset_revision_used is missing: which build did {task.name} run on?")
        for key, ours in checks:
            if t.get(key) != ours:
                problems.append(f"{where}: task.{key} {str(t.get(key))[:40]!r} differs from catalog.yaml's "
                                f"{str(ours)[:40]!r} for {task.name}")
        try:
            entry = TaskEntry.model_validate(t["entry"]).model_dump(mode="json")
        except ValidationError:
            entry = t["entry"]
        if entry != task.model_dump(mode="json"):
            problems.append(f"{where}: task.entry differs from catalog.yaml's entry for {task.name}")
        main = res["main_score"]
        if main["name"] != task.main_score or main["higher_is_better"] != task.higher_is_better:
            problems.append(f"{where}: main_score is {main['name']!r} "
                            f"({'higher' if main['higher_is_better'] else 'lower'} is better); catalog.yaml's "
                            f"is {task.main_score!r} ({'higher' if task.higher_is_better else 'lower'} is better)")
        if task.split_hash != catalog.splits.hash:
            problems.append(f"{where}: task {task.name} pins split hash {task.split_hash[:16]}, not the catalog's")
        if task.superseded_by:
            problems.append(f"{where}: task {task.name} is superseded by {task.superseded_by}")
        if not res["comparable"] or res["not_comparable"]:
            problems.append(f"{where}: not comparable ({'; '.join(res['not_comparable']) or 'flag false'}); "
                            f"the public board takes only results on the canonical revisions")
        p = res["protocol"]
        try:
            proto = get_protocol(p["name"])
            if p["spec"] != json.loads(json.dumps(proto.spec())) or p["spec_sha256"] != proto.spec_sha256():
                problems.append(f"{where}: protocol {p['name']} settings differ from the frozen ones")
            if p["name"] not in task.protocols:
                problems.append(f"{where}: task {task.name} is not evaluated with {p['name']} "
                                f"(its protocols: {task.protocols})")
            problems += [f"{where}: {m}" for m in check_selected(proto, task, res)]
        except ProtocolError as e:
            problems.append(f"{where}: {e}")
        key = (task.name, p["name"])
        if key in seen:
            problems.append(f"{where}: a second result for {task.name} / {p['name']}")
        seen.add(key)
        try:
            safe_name(task.name, "task name")
            safe_name(p["name"], "protocol name")
        except ValueError as e:
            problems.append(f"{where}: {e}")
        preds = res["predictions"]
        if task.type != "retrieval":
            if sha256_ids(preds.get("ids", [])) != res["splits"]["test"]["ids_sha256"]:
                problems.append(f"{where}: predictions are not for the recorded test id set")
            if len(preds.get("ids", [])) != res["splits"]["test"]["count"]:
                problems.append(f"{where}: {len(preds.get('ids', []))} predictions for "
                                f"{res['splits']['test']['count']} test objects")
        problems += [f"{where}: {m}" for m in recompute(res)]
        problems += [f"{where}: {m}" for m in check_near(res)]
        lab = labels_sha256(preds)
        revision = t.get("dataset_revision_used")
        pin, why = trusted_pin(task, revision, locks, hub_pins)
        if pin is None:
            problems.append(f"{where}: {why}")
        else:
            problems += [f"{where}: {m}" for m in _against_pin(res, task, pin, lab, revision)]
        if board and lab and board.get((task.name, revision)) not in (None, lab):
            problems.append(f"{where}: test labels differ from those of the results already on the board "
                            f"for {task.name}")
    return problems


def _against_pin(res: dict, task, pin: Pin, lab: str | None, revision: str | None) -> list[str]:
    out = []
    for s, info in pin.splits.items():
        got = res["splits"].get(s, {})
        if got.get("ids_sha256") != info.get("ids_sha256"):
            out.append(f"{s} id set differs from the one the {pin.source} pins")
        elif "count" in info and got.get("count") != info["count"]:
            out.append(f"{s} count {got.get('count')} differs from the {pin.source}'s {info['count']}")
    if task.type != "retrieval":
        if pin.test_labels_sha256 is None and not task.mock:
            out.append(f"the {pin.source} pins no test labels for {task.name}")
        elif pin.test_labels_sha256 not in (None, lab):
            out.append(f"test labels differ from the ones the {pin.source} pins")
    mock = True if task.mock else pin.mock
    if mock is None:
        out.append(f"the {pin.source} does not say whether build {str(revision)[:16]} is a mock build")
        return out
    if res["mock"] != mock:
        out.append(f"mock is {res['mock']}; {task.name} on this build is {'a mock' if mock else 'an archive'} result "
                   f"(from the task and the {pin.source})")
    b = build_of(res)
    kind = "mock" if mock else "archive"
    if b["kind"] != kind:
        out.append(f"build.kind is {b['kind']!r}; the {pin.source} says {kind!r}")
    if b["dataset"] != task.hub_name:
        out.append(f"build.dataset is {b['dataset']!r}, not {task.name}'s dataset {task.hub_name!r}")
    if b["content_revision"] != revision:
        out.append(f"build.content_revision {str(b['content_revision'])[:16]} is not the revision used "
                   f"{str(revision)[:16]}")
    if res.get("build") is not None and pin.inputs_revisions is not False and \
            (b["inputs_revisions"] or None) != (pin.inputs_revisions or None):
        out.append(f"build.inputs_revisions differ from the {pin.source}'s")
    return out


def verify_against(results, rerun_dir: Path, tolerance: float = 1e-4) -> list[str]:
    """Problems of a maintainer's re-run check: every main score reproduced within `tolerance`
    by the same model ([] when all agree).

    Args:
        results: the submission's (path, content) pairs.
        rerun_dir: the maintainer's own results folder for the same model.
        tolerance: the largest accepted difference of a main score.
    """
    rerun = {(r["task"]["name"], r["protocol"]["name"]): r for _, r in read_results(rerun_dir)}
    problems = []
    for path, res in results:
        other = rerun.get((res["task"]["name"], res["protocol"]["name"]))
        if other is None:
            problems.append(f"{path.name}: no re-run result in {rerun_dir}")
            continue
        if other["model"]["sha256"] != res["model"]["sha256"]:
            problems.append(f"{path.name}: the re-run used another model")
        a, b = res["main_score"]["value"], other["main_score"]["value"]
        if (a is None) != (b is None) or (a is not None and abs(a - b) > tolerance):
            problems.append(f"{path.name}: re-run gives {b}, submission claims {a}")
    return problems


# ---------------------------------------------------------------------------------- targets


def _git(repo: Path, *args, check=True) -> subprocess.CompletedProcess:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, env=env)
    if check and out.returncode != 0:
        raise SubmitError(f"git {' '.join(args)} failed in {repo}: {out.stderr.strip()}")
    return out


def board_files_git(repo: Path, ref: str = "HEAD", roots: tuple[str, ...] = (RESULTS_DIR,)) -> dict[str, bytes]:
    """Every file under `roots` (default results/) at `ref` of a git leaderboard (working tree not
    needed); {} when the ref does not exist (an empty board)."""
    out = _git(repo, "ls-tree", "-r", "--name-only", ref, "--", *roots, check=False)
    if out.returncode != 0:
        return {}
    files = {}
    for name in out.stdout.splitlines():
        blob = subprocess.run(["git", "-C", str(repo), "show", f"{ref}:{name}"], capture_output=True)
        files[name] = blob.stdout
    return files


def board_labels(files: dict[str, bytes]) -> dict[tuple[str, str | None], str]:
    """{(task name, content revision): labels_sha256} of the first result of each task on each
    build among a board's files."""
    out = {}
    for name, data in files.items():
        if name.startswith(RESULTS_DIR + "/") and name.endswith(".json") and not name.endswith(SUBMISSION):
            try:
                r = json.loads(data)
                lab = labels_sha256(r["predictions"]) if r["task"]["type"] != "retrieval" else None
                if lab:
                    out.setdefault((r["task"]["name"], build_of(r)["content_revision"]), lab)
            except (ValueError, KeyError, TypeError, AttributeError):
                continue
    return out


def entry_files(results, model: str, verified: dict | None) -> dict[str, bytes]:
    """The files a submission adds: results/<model>/<task>__<protocol>.json and submission.json.

    Raises:
        ValueError: a model, task or protocol name that is not a safe path component.
        SubmitError: a file that would land outside results/<model>/.
    """
    model = safe_name(model, "model name")
    base = PurePosixPath(RESULTS_DIR) / model
    files = {}
    for _, res in results:
        name = safe_name(result_filename(res["task"]["name"], res["protocol"]["name"]), "results file name")
        path = base / name
        if path.parent != base or ".." in path.parts:
            raise SubmitError(f"{path}: outside the model's own folder {base}")
        files[str(path)] = (json.dumps(res, indent=1, sort_keys=True) + "\n").encode()
    first = results[0][1]["model"]
    meta = {"model": model, "kind": first["kind"], "baseline": first.get("baseline"),
            "sha256": first["sha256"], "verified": bool(verified), "verification": verified,
            "submitted": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "files": sorted(PurePosixPath(p).name for p in files)}
    files[str(base / SUBMISSION)] = (json.dumps(meta, indent=1, sort_keys=True) + "\n").encode()
    return files


def commit_git(repo: Path, files: dict[str, bytes], branch: str, message: str, base: str = "HEAD",
               roots: tuple[str, ...] = (RESULTS_DIR,)) -> str:
    """Commit `files` to `branch` of a git repository through a temporary worktree (the
    repository's own working tree is never touched); the branch starts at `base` if new. Every
    file must lie under one of `roots` (default results/).

    Returns:
        The new commit's sha.

    Raises:
        SubmitError: not a git repository, a path outside `roots`, a git failure, or nothing
        to commit (the branch already holds exactly these files).
    """
    if _git(repo, "rev-parse", "--git-dir", check=False).returncode != 0:
        raise SubmitError(f"{repo} is not a git repository (create one with `git init {repo}`)")
    exists = _git(repo, "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}", check=False).returncode == 0
    has_base = _git(repo, "rev-parse", "--verify", "--quiet", base, check=False).returncode == 0
    with tempfile.TemporaryDirectory(prefix="mmu-submit-") as tmp:
        wt = Path(tmp) / "wt"
        if exists:
            _git(repo, "worktree", "add", str(wt), branch)
        elif has_base:
            _git(repo, "worktree", "add", "-b", branch, str(wt), base)
        else:  # an empty repository: start the branch at an empty root commit (any git version;
            # `worktree add --orphan` needs git >= 2.42)
            empty_tree = subprocess.run(["git", "-C", str(repo), "mktree"], input="", capture_output=True,
                                        text=True, check=True).stdout.strip()
            ident = ["-c", "user.name=mmu eval submit", "-c", "user.email=mmu-eval@localhost"]
            root = _git(repo, *ident, "commit-tree", empty_tree, "-m", "Start the leaderboard").stdout.strip()
            _git(repo, "update-ref", f"refs/heads/{branch}", root)
            _git(repo, "worktree", "add", str(wt), branch)
        try:
            for rel, data in files.items():
                target = (wt / rel).resolve()
                if not any(target.is_relative_to((wt / r).resolve()) for r in roots):
                    raise SubmitError(f"{rel}: outside {'/, '.join(roots)}/")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
            _git(wt, "add", "--", *files)
            # the same results again (only submission.json's timestamp would differ): refuse
            results_only = [p for p in files if not p.endswith(SUBMISSION)] or list(files)
            if _git(wt, "diff", "--cached", "--quiet", "--", *results_only, check=False).returncode == 0:
                raise SubmitError(f"branch {branch} already holds exactly these files; nothing to commit")
            ident = ["-c", "user.name=mmu eval submit", "-c", "user.email=mmu-eval@localhost"]
            if _git(wt, "config", "user.email", check=False).stdout.strip():
                ident = []
            _git(wt, *ident, "commit", "-q", "-m", message)
            sha = _git(wt, "rev-parse", "HEAD").stdout.strip()
        finally:
            _git(repo, "worktree", "remove", "--force", str(wt), check=False)
    return sha


def parse_hf(url: str) -> str:
    """hf://datasets/OWNER/NAME -> OWNER/NAME.

    Raises:
        SubmitError: any other form.
    """
    rest = url[len("hf://"):]
    if not rest.startswith("datasets/") or rest.count("/") != 2:
        raise SubmitError(f"{url}: a Hub leaderboard is hf://datasets/OWNER/NAME")
    return rest[len("datasets/"):]


def submit(results_path: Path, leaderboard: str, *, model: str | None = None, replace: bool = False,
           branch: str | None = None, verified_by: Path | None = None, hub: Path | None = None) -> dict:
    """Validate a result set (`validate`: nothing is written when there is a problem), then add
    it to a leaderboard: a commit on a branch of a git repository, or a pull request on a Hub
    dataset repository.

    Args:
        results_path: one model's results folder (or one file).
        leaderboard: a git repository path, or hf://datasets/OWNER/NAME.
        model: the entry name (default: the results' model name).
        replace: overwrite this model's entries already on the board.
        branch: git branch to commit to (default submit/<model>).
        verified_by: a maintainer's re-run of the same model; required for baselines, and marks
            the entry verified when it reproduces every main score.
        hub: a hub holding the results' builds; for a task whose labels neither its catalog lock
            nor a lock on the board pins, the test labels and id sets are read from it.

    Returns:
        {"branch", "commit", "files"} for git, {"pull_request", "files"} for the Hub.

    Raises:
        SubmitError: every problem found, or a board that cannot be read or written.

    Example:
        >>> submit(Path("results/my-model"), "board")  # doctest: +SKIP
        {'branch': 'submit/my-model', 'commit': '3f2a...', 'files': [...]}
    """
    results = read_results(Path(results_path))
    if not results:
        raise SubmitError(f"{results_path}: no results files ({' or '.join(FORMATS)})")
    name = model if model is not None else results[0][1].get("model", {}).get("name", "")
    try:
        safe_name(name, "model name")
    except ValueError as e:
        raise SubmitError(str(e)) from None
    hf = leaderboard.startswith("hf://")
    if hf:
        existing = _hf_files(parse_hf(leaderboard))
    else:
        existing = board_files_git(Path(leaderboard), roots=(RESULTS_DIR, LOCKS_DIR))
    if hub is not None and not Path(hub).is_dir():
        raise SubmitError(f"--hub {hub}: no such hub folder")
    problems = validate(results, board=board_labels({k: v for k, v in existing.items()
                                                     if not k.startswith(f"{RESULTS_DIR}/{name}/")}),
                        locks=board_locks(existing), hub=hub)
    verification = None
    if results[0][1].get("model", {}).get("kind") == "baseline" and verified_by is None:
        problems.append("baseline results are accepted only from a maintainer's re-run of "
                        "`mmu eval baselines` (--verified-by RERUN_DIR)")
    if verified_by is not None:
        vp = verify_against(results, Path(verified_by))
        problems += vp
        verification = {"rerun": str(verified_by), "tolerance": 1e-4} if not vp else None
    files = entry_files(results, name, verification) if not problems else {}
    clash = [p for p in files if p in existing and not p.endswith(SUBMISSION)]
    if clash and not replace:
        problems.append(f"the leaderboard already has {len(clash)} of these entries (e.g. {clash[0]}); "
                        f"pass --replace to overwrite them")
    if problems:
        raise SubmitError("submission refused:\n  " + "\n  ".join(problems))
    message = f"Add {name}: {len(results)} result(s)"
    if hf:
        url = _hf_pull_request(parse_hf(leaderboard), files, message)
        log.info("opened %s", url)
        return {"pull_request": url, "files": sorted(files)}
    branch = branch or f"submit/{name}"
    sha = commit_git(Path(leaderboard), files, branch, message)
    log.info("committed %d file(s) to branch %s of %s (%s)", len(files), branch, leaderboard, sha[:12])
    return {"branch": branch, "commit": sha, "files": sorted(files)}


# ----------------------------------------------------------------------------- add a lock


def board_lock_files(lock: dict, catalog=None, added_by: str = "", checked_hub: str | None = None,
                     existing: dict[str, dict] | None = None) -> dict[str, bytes]:
    """The board files that trust a published lock: one ``locks/<content revision>.json`` per
    dataset of the lock, holding the dataset's revision, rows, inputs' revisions, whether it is
    a mock build, the lock's pins of the catalog tasks on it, who added it and when.

    Args:
        lock: a lock file's content (`make_lock`; format mmu-lock/1).
        catalog: the catalog naming the tasks (default `load_catalog()`).
        added_by: the maintainer trusting it (required).
        checked_hub: the hub it was checked against, if any.
        existing: {revision: board lock} already on the board; a task pinned there differently
            is refused, one pinned identically is kept.

    Raises:
        SubmitError: every problem of the lock (format, unknown or mock tasks, a task on another
            dataset or revision than the lock says, missing hashes, a conflict with the board).
    """
    from mmu.registry.catalog import load_catalog

    catalog = catalog or load_catalog()
    existing = existing or {}
    problems = []
    if not added_by or not added_by.strip():
        problems.append("say who trusts this lock (--added-by NAME)")
    if not isinstance(lock, dict) or lock.get("format") != LOCK_FORMAT:
        raise SubmitError(f"not a build lock: format {lock.get('format') if isinstance(lock, dict) else None!r}, "
                          f"expected {LOCK_FORMAT!r} (made by `mmu eval lock --hub HUB -o LOCK`)")
    datasets, tasks = lock.get("datasets") or {}, lock.get("tasks") or {}
    if not tasks:
        problems.append("the lock pins no task")
    per_rev: dict[str, dict] = {}
    for name, entry in sorted(tasks.items()):
        try:
            task = catalog.task(name)
        except KeyError:
            problems.append(f"task {name!r} is not in catalog.yaml")
            continue
        if task.mock:
            problems.append(f"{name} is a mock task: its catalog lock {task.lock} pins it, not a board lock")
            continue
        ds = datasets.get(entry.get("dataset")) if isinstance(entry, dict) else None
        if not isinstance(entry, dict) or entry.get("dataset") != task.hub_name or ds is None:
            problems.append(f"{name}: the lock's entry is not on the task's dataset {task.hub_name}")
            continue
        rev = entry.get("content_revision")
        if not isinstance(rev, str) or rev != ds.get("content_revision") or not safe_rev(rev):
            problems.append(f"{name}: content revision {rev!r} is not the lock's revision of {task.hub_name}")
            continue
        if task.dataset_revision is not None and rev != task.dataset_revision:
            problems.append(f"{name} is pinned to revision {task.dataset_revision[:16]} in catalog.yaml, not "
                            f"{rev[:16]}")
            continue
        if not isinstance(ds.get("mock"), bool):
            problems.append(f"{task.hub_name}: the lock does not say whether the build is mock (`mock`)")
            continue
        splits = entry.get("splits") or {}
        if set(splits) != {"train", "val", "test"} or not all(
                isinstance(v, dict) and isinstance(v.get("ids_sha256"), str) for v in splits.values()):
            problems.append(f"{name}: the lock needs the ids_sha256 of train, val and test")
            continue
        if task.type != "retrieval" and not isinstance(entry.get("test_labels_sha256"), str):
            problems.append(f"{name}: the lock pins no test_labels_sha256")
            continue
        board = per_rev.setdefault(rev, dict(existing.get(rev) or {
            "format": BOARD_LOCK_FORMAT, "dataset": task.hub_name, "content_revision": rev,
            "rows": ds.get("rows"), "inputs_revisions": ds.get("inputs_revisions"), "mock": ds["mock"],
            "tasks": {}, "added": []}))
        if board.get("mock") != ds["mock"] or (board.get("inputs_revisions") or None) != (ds.get("inputs_revisions")
                                                                                       or None):
            problems.append(f"{task.hub_name} revision {rev[:16]}: the board's lock says otherwise about the build "
                            f"(mock, inputs' revisions)")
            continue
        pin = {"dataset": task.hub_name, "content_revision": rev, "splits": splits,
               "test_labels_sha256": entry.get("test_labels_sha256")}
        old = (board.get("tasks") or {}).get(name)
        if old is not None and old != pin:
            problems.append(f"{name} on revision {rev[:16]}: the board already pins other id sets or labels "
                            f"(locks/{rev}.json)")
            continue
        board["tasks"] = {**board.get("tasks", {}), name: pin}
    if problems:
        raise SubmitError("lock refused:\n  " + "\n  ".join(problems))
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    files = {}
    for rev, board in per_rev.items():
        board["added"] = [*board.get("added", []), {
            "by": added_by, "time": stamp, "lock_created": lock.get("created"), "mmu_version": lock.get("mmu_version"),
            "tasks": sorted(n for n in tasks if (board["tasks"].get(n) or {}).get("content_revision") == rev),
            "checked_against_hub": checked_hub}]
        files[f"{LOCKS_DIR}/{rev}.json"] = (json.dumps(board, indent=1, sort_keys=True) + "\n").encode()
    return files


def safe_rev(rev: str) -> bool:
    """Whether a content revision is a hex sha256 (it names a file on the board)."""
    return len(rev) == 64 and all(c in "0123456789abcdef" for c in rev)


def add_lock(lock_path: Path, leaderboard: str, *, added_by: str, hub: Path | None = None,
             branch: str | None = None) -> dict:
    """A maintainer trusts a build's published lock: ``locks/<content revision>.json`` added to a
    leaderboard (a commit on a branch of a git board, for the maintainer to merge; a pull request
    on a Hub board). With `hub`, the lock is first recomputed on that hub (the maintainer's own
    copy of the build) and refused unless every pin agrees.

    Args:
        lock_path: the lock file (`mmu eval lock`).
        leaderboard: a git repository path, or hf://datasets/OWNER/NAME.
        added_by: the maintainer's name, recorded in the board's lock.
        hub: a hub holding the locked builds, to check the lock against.
        branch: git branch to commit to (default lock/<first revision, 12 hex>).

    Returns:
        {"branch", "commit", "files"} for git, {"pull_request", "files"} for the Hub.

    Raises:
        SubmitError: the lock is unreadable or refused (every problem listed), or disagrees with
            `hub`.
    """
    from mmu.registry.catalog import load_catalog

    try:
        lock = json.loads(Path(lock_path).read_text())
    except (OSError, ValueError) as e:
        raise SubmitError(f"{lock_path}: not a readable JSON lock ({e})") from None
    if hub is not None and isinstance(lock, dict) and lock.get("tasks"):
        cat = load_catalog()
        try:
            names = [cat.task(n) for n in lock["tasks"]]
            ours = lock_entries(Path(hub), names)
        except (KeyError, ValueError, FileNotFoundError) as e:
            raise SubmitError(f"{lock_path}: cannot recompute it on --hub {hub} ({e})") from None
        bad = sorted(n for n in lock["tasks"] if ours["tasks"].get(n) != lock["tasks"][n])
        bad += sorted(d for d in lock.get("datasets") or {} if d in ours["datasets"] and any(
            ours["datasets"][d].get(k) != lock["datasets"][d].get(k)
            for k in ("content_revision", "inputs_revisions", "mock")))
        if bad:
            raise SubmitError(f"{lock_path}: disagrees with the build in {hub} for {', '.join(bad)}; not trusted")
    hf = leaderboard.startswith("hf://")
    existing = _hf_files(parse_hf(leaderboard)) if hf else board_files_git(Path(leaderboard), roots=(LOCKS_DIR,))
    files = board_lock_files(lock, added_by=added_by, checked_hub=str(hub) if hub else None,
                             existing=board_locks(existing))
    revs = sorted(PurePosixPath(f).stem for f in files)
    message = f"Trust the lock of {', '.join(r[:12] for r in revs)} (added by {added_by})"
    if hf:
        url = _hf_pull_request(parse_hf(leaderboard), files, message)
        return {"pull_request": url, "files": sorted(files)}
    branch = branch or f"lock/{revs[0][:12]}"
    sha = commit_git(Path(leaderboard), files, branch, message, roots=(LOCKS_DIR,))
    log.info("committed %s to branch %s of %s (%s); merge it to trust the lock", ", ".join(sorted(files)), branch,
             leaderboard, sha[:12])
    return {"branch": branch, "commit": sha, "files": sorted(files)}


def _hf_api():
    try:
        from huggingface_hub import HfApi
        from huggingface_hub.errors import OfflineModeIsEnabled  # noqa: F401
    except ImportError as e:
        raise SubmitError(f"hf:// leaderboards need huggingface_hub ({e})") from None
    return HfApi()


def _hf_errors():
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    from mmu.hub.publish import http_module

    http = http_module()  # huggingface_hub 2.x raises httpx2's errors for network failures
    extra = [http.HTTPError] if http is not None else []
    return (OfflineModeIsEnabled, HfHubHTTPError, OSError, *extra)


def _hf_files(repo_id: str) -> dict[str, bytes]:
    api = _hf_api()
    try:
        names = [f for f in api.list_repo_files(repo_id, repo_type="dataset")
                 if f.startswith((RESULTS_DIR + "/", LOCKS_DIR + "/"))]
        from huggingface_hub import hf_hub_download
        return {n: Path(hf_hub_download(repo_id, n, repo_type="dataset")).read_bytes()
                for n in names if n.endswith(".json")}
    except _hf_errors() as e:
        raise SubmitError(f"cannot reach the Hub leaderboard {repo_id} ({type(e).__name__}: {e}); "
                          f"nothing was written. Offline? Submit to a git leaderboard instead.") from None


def _hf_pull_request(repo_id: str, files: dict[str, bytes], message: str) -> str:
    from huggingface_hub import CommitOperationAdd

    api = _hf_api()
    ops = [CommitOperationAdd(path_in_repo=p, path_or_fileobj=data) for p, data in files.items()]
    try:
        info = api.create_commit(repo_id, ops, commit_message=message, repo_type="dataset", create_pr=True)
    except _hf_errors() as e:
        raise SubmitError(f"could not open a pull request on {repo_id} ({type(e).__name__}: {e}); "
                          f"nothing was written") from None
    return info.pr_url or info.commit_url
