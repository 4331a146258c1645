"""`mmu eval submit RESULTS --leaderboard REPO`: validate a result set, then add it to a leaderboard
as a commit on a branch of a git repository, or as a pull request on a Hub dataset repository
(`hf://datasets/OWNER/NAME`).

Validation (every problem is reported, nothing is written when there is one): the results
schema; task versions, dataset revisions and split hashes equal catalog.yaml (and, for mock
tasks, the lock file's pinned id sets and labels); `comparable` results only; named protocols
with their frozen settings; the predictions' hash; every metric recomputed from the included
test predictions and equal to the claimed one; the test labels equal those of every result of
the task already on the board; names that cannot traverse paths; files only under
`results/<model>/`; an existing entry never overwritten without `--replace`; baseline results
only from `mmu eval baselines`, confirmed by a maintainer's re-run (`--verified-by`).
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import tempfile
import time
from pathlib import Path, PurePosixPath

import numpy as np
from pydantic import ValidationError

from mmu.eval import metrics as M
from mmu.eval.protocols import ProtocolError, get_protocol
from mmu.eval.results import Result, read_results, result_filename, safe_name, sha256_ids, sha256_json

RESULTS_DIR = "results"
SUBMISSION = "submission.json"
log = logging.getLogger(__name__)


class SubmitError(ValueError):
    """A submission refused (every problem listed), or a leaderboard that cannot be written."""


def labels_sha256(predictions: dict) -> str | None:
    """sha256 of a result's (test id, label) pairs sorted by id; None for retrieval (no labels)."""
    if "y" not in predictions:
        return None
    pairs = sorted(zip(map(str, predictions["ids"]), predictions["y"], strict=False), key=lambda p: p[0])
    return sha256_json(pairs)


def lock_entries(hub: Path, tasks) -> dict:
    """What a lock file pins for `tasks` on a built hub: each dataset's content revision and rows,
    each task's id sets per split and test-label hash (what `validate` checks a mock task's
    results against). A task is opened at the hub's revision of its dataset.

    Args:
        hub: the hub folder.
        tasks: catalog task entries (`mmu.registry.catalog.TaskEntry`).

    Returns:
        {"datasets": {name: {content_revision, rows, inputs_revisions}}, "tasks": {name:
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
                                       "inputs_revisions": m.inputs_revisions}
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


def load_lock(path: Path) -> dict | None:
    """A lock file's content, or None when there is no such file."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None


def _lock_path(task) -> Path:
    from mmu.registry.catalog import default_catalog_path

    return default_catalog_path().parent / task.lock


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


def validate(results: list[tuple[Path, dict]], catalog=None, board: dict | None = None) -> list[str]:
    """Every problem of a result set ([] = valid).

    Args:
        results: (path, content) of each results file, as `mmu.eval.results.read_results` gives.
        catalog: the catalog to check against (default: `load_catalog()`).
        board: {task name: labels_sha256} of the results already on the leaderboard.

    Returns:
        One sentence per problem, each naming its file.
    """
    from mmu.registry.catalog import load_catalog

    catalog = catalog or load_catalog()
    problems = []
    if not results:
        return ["no results files (mmu-eval-result/1 JSON) found"]
    shas = {r["model"].get("sha256") for _, r in results if isinstance(r.get("model"), dict)}
    if len(shas) > 1:
        problems.append(f"the results come from {len(shas)} different models; submit one model at a time")
    seen = set()
    for path, res in results:
        where = path.name
        try:
            Result.model_validate(res)
        except ValidationError as e:
            problems.append(f"{where}: not a valid results file: {e.errors()[0]['loc']}: {e.errors()[0]['msg']}")
            continue
        t = res["task"]
        try:
            task = catalog.task(t["name"])
        except KeyError:
            problems.append(f"{where}: task {t['name']!r} is not in catalog.yaml")
            continue
        for key, ours in (("dataset_revision", task.dataset_revision), ("split_hash", task.split_hash),
                          ("dataset_revision_used", task.dataset_revision), ("split_hash_used", task.split_hash),
                          ("type", task.type), ("main_score", task.main_score),
                          ("higher_is_better", task.higher_is_better), ("class_weights", task.class_weights),
                          ("metrics", task.metric_names), ("dataset", task.dataset), ("hub_dataset", task.hub_name)):
            if t.get(key) != ours:
                problems.append(f"{where}: task.{key} {str(t.get(key))[:40]!r} differs from catalog.yaml's "
                                f"{str(ours)[:40]!r} for {task.name}")
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
        lab = labels_sha256(preds)
        if task.mock:
            lock = load_lock(_lock_path(task))
            pinned = ((lock or {}).get("tasks") or {}).get(task.name)
            if lock is None:
                problems.append(f"{where}: lock file {task.lock} not found; cannot check the mock revision")
            elif pinned is None:
                problems.append(f"{where}: {task.lock} pins nothing for {task.name}")
            else:
                for s, info in pinned.get("splits", {}).items():
                    if res["splits"].get(s, {}).get("ids_sha256") != info.get("ids_sha256"):
                        problems.append(f"{where}: {s} id set differs from the one {task.lock} pins")
                if task.type != "retrieval" and pinned.get("test_labels_sha256") not in (None, lab):
                    problems.append(f"{where}: test labels differ from the ones {task.lock} pins")
        if board and lab and board.get(task.name) not in (None, lab):
            problems.append(f"{where}: test labels differ from those of the results already on the board "
                            f"for {task.name}")
    return problems


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


def board_files_git(repo: Path, ref: str = "HEAD") -> dict[str, bytes]:
    """Every file under results/ at `ref` of a git leaderboard (working tree not needed);
    {} when the ref does not exist (an empty board)."""
    out = _git(repo, "ls-tree", "-r", "--name-only", ref, "--", RESULTS_DIR, check=False)
    if out.returncode != 0:
        return {}
    files = {}
    for name in out.stdout.splitlines():
        blob = subprocess.run(["git", "-C", str(repo), "show", f"{ref}:{name}"], capture_output=True)
        files[name] = blob.stdout
    return files


def board_labels(files: dict[str, bytes]) -> dict[str, str]:
    """{task name: labels_sha256} of the first result of each task among a board's files."""
    out = {}
    for name, data in files.items():
        if name.endswith(".json") and not name.endswith(SUBMISSION):
            try:
                r = json.loads(data)
                lab = labels_sha256(r["predictions"]) if r["task"]["type"] != "retrieval" else None
                if lab:
                    out.setdefault(r["task"]["name"], lab)
            except (ValueError, KeyError, TypeError):
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


def commit_git(repo: Path, files: dict[str, bytes], branch: str, message: str, base: str = "HEAD") -> str:
    """Commit `files` to `branch` of a git repository through a temporary worktree (the
    repository's own working tree is never touched); the branch starts at `base` if new.

    Returns:
        The new commit's sha.

    Raises:
        SubmitError: not a git repository, a path outside results/, a git failure, or nothing
        to commit (the branch already holds exactly these results).
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
                if not target.is_relative_to((wt / RESULTS_DIR).resolve()):
                    raise SubmitError(f"{rel}: outside {RESULTS_DIR}/")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
            _git(wt, "add", "--", *files)
            # the same results again (only submission.json's timestamp would differ): refuse
            results_only = [p for p in files if not p.endswith(SUBMISSION)] or list(files)
            if _git(wt, "diff", "--cached", "--quiet", "--", *results_only, check=False).returncode == 0:
                raise SubmitError(f"the entry on branch {branch} already holds exactly these results; "
                                  f"nothing to commit")
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
           branch: str | None = None, verified_by: Path | None = None) -> dict:
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
        raise SubmitError(f"{results_path}: no mmu-eval-result/1 results files")
    name = model if model is not None else results[0][1].get("model", {}).get("name", "")
    try:
        safe_name(name, "model name")
    except ValueError as e:
        raise SubmitError(str(e)) from None
    hf = leaderboard.startswith("hf://")
    if hf:
        existing = _hf_files(parse_hf(leaderboard))
    else:
        existing = board_files_git(Path(leaderboard))
    problems = validate(results, board=board_labels({k: v for k, v in existing.items()
                                                     if not k.startswith(f"{RESULTS_DIR}/{name}/")}))
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
        names = [f for f in api.list_repo_files(repo_id, repo_type="dataset") if f.startswith(RESULTS_DIR + "/")]
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
