"""`mmu push`: publish a built hub dataset (HATS collection, card, build.json) to a Hugging Face
Hub dataset repository, after checking that it is fit to publish.

Tested against huggingface_hub 2.x (2.4.0): `HfApi.upload_folder` with explicit allow patterns,
which with `hf_xet` installed streams the files and commits in batches; a pull request is opened
first and every batch is committed to its `refs/pr/N`. The endpoint is the client's
(`HF_ENDPOINT`, read once when huggingface_hub is imported).
"""
from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

from mmu.hub.layout import MANIFEST, NotBuilt, dataset_dir, read_manifest

# What a collection is, as patterns relative to its root (plus `<name>/*` and each margin).
COLLECTION_FILES = ("README.md", "collection.properties", MANIFEST)
# Never uploaded even inside the collection's folders: hidden and temporary files, staging areas.
IGNORE_PATTERNS = [".*", "*/.*", "*.tmp", "*.tmp-*", "*.tmp.*", "*.old-*", "*/__pycache__/*",
                   "*.mmu-staging*", "*/_tmp/*"]
logger = logging.getLogger(__name__)
REPO_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")
EXIT_REFUSED = 2  # nothing was uploaded: the dataset or the arguments need fixing first
EXIT_FAILED = 1  # the upload itself failed (network, authentication, server)


class PushRefused(Exception):
    """The dataset or the arguments are not fit to publish; the message says what to do."""


@dataclass
class UploadPlan:
    """What `mmu push` would upload: source collection, target repository and revision, and the file list."""
    name: str
    collection: Path
    repo_id: str
    revision: str
    create_pr: bool
    files: list[tuple[str, int]]  # (path in repo, bytes): exactly what upload_folder sends
    skipped: list[str]  # files in the collection folder that are not uploaded
    allow_patterns: list[str]
    ignore_patterns: list[str]
    delete_patterns: list[str]
    manifest: dict = field(repr=False, default_factory=dict)

    @property
    def total_bytes(self) -> int:
        return sum(n for _, n in self.files)

    def as_dict(self) -> dict:
        return {"name": self.name, "collection": str(self.collection), "repo_id": self.repo_id,
                "revision": self.revision, "create_pr": self.create_pr,
                "files": [{"path": p, "bytes": n} for p, n in self.files], "skipped": self.skipped,
                "total_bytes": self.total_bytes, "allow_patterns": self.allow_patterns,
                "ignore_patterns": self.ignore_patterns, "delete_patterns": self.delete_patterns}


def collection_tables(collection: Path, name: str) -> list[str]:
    """The HATS catalog folder and its margin caches, from collection.properties (read by
    hats' `CollectionProperties`).

    Args:
        collection: the collection folder (HUB/NAME).
        name: the dataset name, for messages.

    Returns:
        [primary table, *margin tables]: folder names relative to `collection`.

    Raises:
        PushRefused: no collection.properties, one hats cannot read, or one that names a table
            that is not a folder of the collection.

    Example:
        >>> collection_tables(Path("hub/desi_dr1"), "desi_dr1")   # doctest: +SKIP
        ['desi_dr1', 'desi_dr1_32arcs']
    """
    from hats.catalog import CollectionProperties

    props_path = collection / "collection.properties"
    if not props_path.is_file():
        raise PushRefused(f"{collection}: no collection.properties; this is not a built hub "
                          f"dataset (rebuild it with `mmu build {name} ...`)")
    try:
        props = CollectionProperties.read_from_dir(collection)
    except ValueError as e:  # pydantic's ValidationError is a ValueError
        reason = str(e).replace("\n", " ")
        raise PushRefused(f"{props_path}: not a valid HATS collection.properties ({reason}); rebuild "
                          f"it with `mmu build {name} ...`") from None
    tables = [props.hats_primary_table_url, *(props.all_margins or [])]
    for t in tables:
        if not (collection / t).is_dir() or "/" in t or t.startswith("."):
            raise PushRefused(f"{collection}: collection.properties names table {t!r}, "
                              f"which is not a folder of the collection")
    return tables


def plan_upload(hub: str | Path, name: str, repo_id: str, revision: str = "main",
                create_pr: bool = False) -> UploadPlan:
    """What `upload_folder` will send, computed with the client's own filter and folder walk.

    Args:
        hub: the hub directory.
        name: the dataset.
        repo_id: the target repository, ORG/NAME.
        revision: the branch (or refs/pr/N) to commit to.
        create_pr: open a pull request against main instead.

    Returns:
        The `UploadPlan`: files with their sizes, skipped files, the patterns passed to
        `HfApi.upload_folder`, and the manifest (as JSON data).

    Raises:
        NotBuilt: the dataset is not built in `hub`.
        PushRefused: its collection.properties is missing or invalid.

    Example:
        >>> plan_upload("hub", "desi_dr1", "my-org/desi_dr1").total_bytes   # doctest: +SKIP
    """
    from huggingface_hub.utils import DEFAULT_IGNORE_PATTERNS, filter_repo_objects

    from mmu.hub.card import manifest_data

    collection = dataset_dir(hub, name).resolve()
    manifest = manifest_data(read_manifest(hub, name))
    tables = collection_tables(collection, name)
    allow = [*COLLECTION_FILES, *[f"{t}/*" for t in tables]]
    ignore = list(IGNORE_PATTERNS)
    every = {p.relative_to(collection).as_posix(): p for p in sorted(collection.glob("**/*")) if p.is_file()}
    chosen = list(filter_repo_objects(every.keys(), allow_patterns=allow,
                                      ignore_patterns=ignore + DEFAULT_IGNORE_PATTERNS))
    files = [(p, every[p].stat().st_size) for p in chosen]
    skipped = [p for p in every if p not in set(chosen)]
    return UploadPlan(name, collection, repo_id, revision, create_pr, files, skipped, allow, ignore,
                      [f"{t}/*" for t in tables], manifest)


# -------------------------------------------------------------------------------------------------
# checks


def check_repo_id(repo_id: str) -> None:
    """Refuse a repository id the Hub would not accept.

    Args:
        repo_id: ORG/NAME.

    Raises:
        PushRefused: not ORG/NAME of letters, digits, '-', '_', '.' (no '..' or '--').

    Example:
        >>> check_repo_id("my-org/desi_dr1")
    """
    if not REPO_ID_RE.match(repo_id) or ".." in repo_id or "--" in repo_id:
        raise PushRefused(f"--repo {repo_id!r}: expected ORG/NAME (letters, digits, '-', '_', '.'), "
                          f"e.g. my-org/desi_dr1")


def check_publishable(manifest: dict, repo_id: str, *, allow_rejections: bool, allow_mock: bool) -> None:
    """Refuse a build that should not be published as it is.

    Args:
        manifest: the build manifest (typed or its JSON dict).
        repo_id: the target repository.
        allow_rejections: publish even though the build rejected raw inputs.
        allow_mock: publish mock data (the repository name must still say "mock").

    Raises:
        PushRefused: rejected inputs without `allow_rejections`; mock data without
            `allow_mock` or to a repository whose name does not say mock.
    """
    from mmu.hub.card import manifest_data

    manifest = manifest_data(manifest)
    name = manifest.get("name", "?")
    rejected = manifest.get("rejected_inputs") or []
    if rejected and not allow_rejections:
        first = "; ".join(f"{r['input']}: {r['reason']}" for r in rejected[:3])
        more = f" (and {len(rejected) - 3} more)" if len(rejected) > 3 else ""
        raise PushRefused(
            f"{name}: the build rejected {len(rejected)} raw input(s): {first}{more}. Fix or remove them "
            f"and rebuild, or pass --allow-rejections to publish without them (they stay listed in "
            f"build.json and on the card)")
    if manifest.get("mock"):
        repo_name = repo_id.split("/")[-1]
        if not allow_mock:
            raise PushRefused(
                f"{name} was built from mock data (`mmu sim`, seed {manifest.get('mock_seed')}), not "
                f"survey data. To publish it on purpose, pass --allow-mock and a repository whose name "
                f"says mock, e.g. --repo {repo_id.split('/')[0]}/{repo_name}-mock")
        if "mock" not in repo_name.lower():
            raise PushRefused(
                f"{name} is mock data: the repository name must say so (got {repo_id!r}; e.g. "
                f"{repo_id.split('/')[0]}/{repo_name}-mock), so nobody mistakes it for survey data")


def validate_card(collection: Path, manifest: dict, plan_files: list[str] | None = None) -> list[str]:
    """Offline card checks (the Hub's own validator needs the network): it loads as a
    `DatasetCard`, its `DatasetCardData` survives a round trip, and its YAML agrees with the
    Parquet files: features (read as `datasets` reads them) equal those derived from the files'
    schema, every data file exists (and is uploaded), every partition of the catalog is in
    exactly one split, row counts match.

    Args:
        collection: the collection folder holding README.md.
        manifest: the build manifest (typed or its JSON dict).
        plan_files: the paths that will be uploaded; None skips that check.

    Returns:
        The problems found, one sentence each; empty when the card is fit to publish.

    Example:
        >>> validate_card(Path("hub/desi_dr1"), read_manifest("hub", "desi_dr1"))   # doctest: +SKIP
        []
    """
    from mmu.hub.card import manifest_data

    manifest = manifest_data(manifest)
    path = collection / "README.md"
    if not path.is_file():
        return [f"{path}: no dataset card"]
    meta, problems = _card_metadata_problems(path)
    if problems:
        return problems
    seen, problems = _data_files_problems(collection, meta, manifest, plan_files)
    if problems:
        return problems
    return _content_problems(collection, meta, manifest, seen)


def _card_metadata_problems(path: Path) -> tuple[dict, list[str]]:
    """The card's YAML as a dict, and what is wrong with it on its own: it must load as a
    `DatasetCard`, survive a round trip, and carry license, name, configs and dataset_info."""
    from huggingface_hub import DatasetCard, DatasetCardData

    try:
        card = DatasetCard.load(path)
    except Exception as e:  # noqa: BLE001 - any parse failure is the finding
        return {}, [f"{path}: does not load as a DatasetCard: {e}"]
    meta = card.data.to_dict()
    problems = []
    if DatasetCardData(**meta).to_dict() != meta:
        problems.append("card metadata changes in a DatasetCardData round trip")
    if DatasetCard(str(card)).data.to_dict() != meta:
        problems.append("card metadata changes when the card is rendered and parsed again")
    for key in ("license", "pretty_name", "configs", "dataset_info"):
        if key not in meta:
            problems.append(f"card YAML has no {key!r}")
    if meta.get("license") == "other" and not (meta.get("license_name") and meta.get("license_link")):
        problems.append("license 'other' needs license_name and license_link")
    return meta, problems


def _data_files_problems(collection: Path, meta: dict, manifest: dict,
                         plan_files: list[str] | None) -> tuple[dict[str, str], list[str]]:
    """{data file: split} as the card lists them, and what is wrong with that list: globs, files
    that don't exist (or won't be uploaded), a file in two splits, a partition in none, a list that
    differs from build.json's."""
    from mmu.model.schema import SPLITS

    configs = meta["configs"]
    if not isinstance(configs, list) or len(configs) != 1 or not configs[0].get("data_files"):
        return {}, [f"card YAML: expected one config with data_files, got {configs!r:.200}"]
    listed: dict[str, list[str]] = {}
    for entry in configs[0]["data_files"]:
        paths = entry.get("path")
        listed[entry.get("split")] = [paths] if isinstance(paths, str) else list(paths or [])
    problems = []
    unknown = sorted(set(listed) - set(SPLITS))
    if unknown:
        problems.append(f"card YAML lists unknown split(s) {unknown}")
    uploaded = set(plan_files) if plan_files is not None else None
    seen: dict[str, str] = {}
    for split, paths in listed.items():
        for p in paths:
            if any(c in p for c in "*?["):
                problems.append(f"data_files of {split!r}: glob {p!r}; the card lists files explicitly")
            elif not (collection / p).is_file():
                problems.append(f"data_files of {split!r}: {p} does not exist in {collection}")
            elif uploaded is not None and p not in uploaded:
                problems.append(f"data_files of {split!r}: {p} is not among the uploaded files")
            if p in seen:
                problems.append(f"{p} is listed in splits {seen[p]!r} and {split!r}")
            seen[p] = split
    manifest_files = {s: list(v) for s, v in (manifest.get("data_files") or {}).items() if v}
    if manifest_files != listed:
        problems.append("card data_files differ from build.json data_files")
    partitions = sorted(q.relative_to(collection).as_posix()
                        for q in (collection / manifest["name"] / "dataset").glob("Norder=*/Dir=*/Npix=*.parquet"))
    missing = [p for p in partitions if p not in seen]
    if missing:
        problems.append(f"{len(missing)} partition file(s) are in no split, e.g. {missing[0]}")
    return seen, problems


def _content_problems(collection: Path, meta: dict, manifest: dict, seen: dict[str, str]) -> list[str]:
    """The card against the files' content: one Parquet schema, features (read as `datasets`
    reads them) equal to the schema's, row counts per split equal to build.json's and the card's."""
    import pyarrow.parquet as pq

    from mmu.hub.card import read_card_features
    from mmu.model.schema import SPLITS, hf_features, modalities_of

    problems = []
    schema = None
    rows = {s: 0 for s in SPLITS}
    for p, split in seen.items():
        meta_p = pq.read_metadata(collection / p)
        s = meta_p.schema.to_arrow_schema()
        if schema is None:
            schema = s
        elif not s.remove_metadata().equals(schema.remove_metadata()):
            problems.append(f"{p}: Parquet schema differs from the other data files")
        rows[split] += meta_p.num_rows
    if schema is None:
        return ["card lists no data files"]
    expected = hf_features(schema, modalities_of(schema))
    try:
        declared = read_card_features(meta)
    except ValueError as e:
        return [f"card dataset_info.features do not parse as datasets Features: {e}"]
    if declared != expected:
        diff = sorted(k for k in set(declared) | set(expected) if declared.get(k) != expected.get(k))
        problems.append(f"card features differ from the Parquet schema in column(s) {diff}")
    for split, n in rows.items():
        want = (manifest.get("rows") or {}).get(split)
        if want is not None and n != want:
            problems.append(f"split {split!r}: the data files hold {n} rows, build.json says {want}")
    for s in meta["dataset_info"].get("splits") or []:
        if s.get("num_examples") is not None and s["num_examples"] != rows.get(s.get("name")):
            problems.append(f"card split {s.get('name')!r} says {s['num_examples']} examples, "
                            f"the files hold {rows.get(s.get('name'))}")
    return problems


# -------------------------------------------------------------------------------------------------
# the command


def load_line(repo_id: str, revision: str | None) -> str:
    """The `datasets.load_dataset(...)` call that streams the train split of a pushed repository.

    Args:
        repo_id: the Hub dataset repository, ORG/NAME.
        revision: the revision pushed to; left out of the call when None or "main".

    Returns:
        The Python call as a string, to print for the user.
    """
    rev = f", revision={revision!r}" if revision and revision != "main" else ""
    return f'datasets.load_dataset("{repo_id}", split="train", streaming=True{rev})'


def prepare(args) -> UploadPlan:
    """Every local check of `mmu push`, before anything is sent.

    Args:
        args: the parsed `mmu push` arguments (see `configure_push_parser`).

    Returns:
        The checked `UploadPlan`.

    Raises:
        PushRefused: a bad repository id or revision, a build unfit to publish, or a card that
            does not validate (the message says what to do).
        NotBuilt: the dataset is not built in the hub.
    """
    check_repo_id(args.repo)
    revision = args.revision or "main"
    if args.create_pr and revision != "main":
        raise PushRefused(f"--create-pr opens a pull request against main; it cannot be combined with "
                          f"--revision {revision} (to add to an open pull request N, use --revision refs/pr/N)")
    plan = plan_upload(args.hub, args.name, args.repo, revision, args.create_pr)
    if plan.manifest.get("name") != args.name:
        raise PushRefused(f"{plan.collection}/{MANIFEST} is for {plan.manifest.get('name')!r}, not {args.name!r}")
    check_publishable(plan.manifest, args.repo, allow_rejections=args.allow_rejections,
                      allow_mock=args.allow_mock)
    problems = validate_card(plan.collection, plan.manifest, [p for p, _ in plan.files])
    if problems:
        raise PushRefused(f"{plan.collection}/README.md does not validate:\n"
                          + "\n".join(f"  - {p}" for p in problems)
                          + f"\nrebuild the card with `mmu build {args.name} ...`")
    return plan


def print_plan(plan: UploadPlan, endpoint: str, out=None) -> None:
    """Print the dry-run report of `plan` (sizes in dask's `format_bytes` units, e.g. 1.21 kiB)."""
    from dask.utils import format_bytes

    out = out or sys.stdout
    m = plan.manifest
    where = "a new pull request against main" if plan.create_pr else f"revision {plan.revision}"
    print("dry run: nothing uploaded", file=out)
    print(f"  dataset   {plan.name} ({plan.collection}): {m['rows']['total']} rows, content revision "
          f"{m['content_revision'][:12]}{', MOCK DATA' if m.get('mock') else ''}", file=out)
    print(f"  target    {endpoint}/datasets/{plan.repo_id} ({where})", file=out)
    print(f"  files     {len(plan.files)} ({format_bytes(plan.total_bytes)}); stale files under "
          f"{', '.join(plan.delete_patterns)} in the repository are deleted", file=out)
    for p, n in plan.files:
        print(f"    upload  {p}  ({format_bytes(n)})", file=out)
    if plan.skipped:
        print(f"  not uploaded (not part of the collection): {len(plan.skipped)}", file=out)
        for p in plan.skipped:
            print(f"    skip    {p}", file=out)
    print(f"  then use  {load_line(plan.repo_id, None if plan.create_pr else plan.revision)}", file=out)


def upload(plan: UploadPlan, *, private: bool) -> dict:
    """Create the repository (and branch) if needed and upload the plan's files with
    `HfApi.upload_folder`; progress goes to this module's logger.

    Args:
        plan: from `plan_upload` (checked by `prepare`).
        private: create the repository private (an existing public one stays public, with a
            warning).

    Returns:
        {"commit", "commit_url", "pr_url", "revision"} of the commit made.

    Raises:
        PushRefused: no Hugging Face token.
        huggingface_hub.errors.HfHubHTTPError, OSError: the Hub refused or could not be reached.

    Example:
        >>> upload(prepare(args), private=False)["commit_url"]   # doctest: +SKIP
    """
    from huggingface_hub import HfApi, constants, get_token

    if get_token() is None:
        raise PushRefused("no Hugging Face token: run `hf auth login` or set HF_TOKEN to a token with "
                          "write access to " + plan.repo_id.split("/")[0])
    api = HfApi(endpoint=constants.ENDPOINT)
    who = api.whoami()
    logger.info("pushing %s to %s/datasets/%s as %s", plan.name, constants.ENDPOINT, plan.repo_id,
                who.get("name"))
    api.create_repo(plan.repo_id, repo_type="dataset", private=private, exist_ok=True)
    if private:
        info = api.repo_info(plan.repo_id, repo_type="dataset")
        if not info.private:
            logger.warning("%s already exists and is public; --private does not change that", plan.repo_id)
    if plan.revision != "main" and not plan.revision.startswith("refs/"):
        api.create_branch(plan.repo_id, repo_type="dataset", branch=plan.revision, exist_ok=True)
    m = plan.manifest
    description = textwrap.dedent(f"""\
        Published with `mmu push` from a local build of {plan.name}.

        - content revision: {m['content_revision']}
        - build key: {m['build_key']}
        - rows: {m['rows']['total']} (train {m['rows']['train']}, val {m['rows']['val']}, test {m['rows']['test']})
        - builder {m['builder']} v{m['builder_version']}, mmu {m['code_version']}, schema {m['schema_version']}
        - mock data: {f'yes, seed {m.get("mock_seed")}' if m.get('mock') else 'no'}
        - rejected inputs: {len(m.get('rejected_inputs') or [])}""")
    info = api.upload_folder(
        repo_id=plan.repo_id, repo_type="dataset", folder_path=str(plan.collection),
        revision=None if plan.create_pr else plan.revision, create_pr=plan.create_pr,
        allow_patterns=plan.allow_patterns, ignore_patterns=list(plan.ignore_patterns),
        delete_patterns=plan.delete_patterns,
        commit_message=f"mmu push {plan.name} (content revision {m['content_revision'][:12]})",
        commit_description=description)
    return {"commit": info.oid, "commit_url": info.commit_url, "pr_url": info.pr_url,
            "revision": info.pr_revision or plan.revision}


def configure_push_parser(p: argparse.ArgumentParser) -> None:
    """Add the `mmu push` arguments and description to `p`.

    Args:
        p: the parser (or subparser) to configure.
    """
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.description = textwrap.dedent("""\
        Upload a built dataset (HUB/NAME: its HATS catalog, margin cache, dataset card and
        build.json, nothing else) to a Hugging Face Hub dataset repository.

        Refuses (exit 2, nothing uploaded): a build with rejected raw inputs (unless
        --allow-rejections); a build from mock data (unless --allow-mock and a repository name that
        says mock); a card that does not validate against the Parquet files. Needs a token
        (`hf auth login` or HF_TOKEN) and the network; the endpoint is HF_ENDPOINT (default
        https://huggingface.co). With HF_HUB_OFFLINE=1 it stops at once.

        example:  mmu push desi_dr1 --hub ./hub --repo my-org/desi_dr1 --dry-run""")
    p.add_argument("name", help="dataset name (a folder of the hub)")
    p.add_argument("--hub", required=True, help="hub directory holding HUB/NAME")
    p.add_argument("--repo", required=True, help="Hub dataset repository, ORG/NAME")
    p.add_argument("--revision", default=None, help="branch to commit to (created from main if new; "
                                                    "default main), or refs/pr/N to add to a pull request")
    p.add_argument("--create-pr", action="store_true", help="open a pull request against main instead "
                                                            "of committing to it")
    p.add_argument("--private", action="store_true", help="create the repository private")
    p.add_argument("--dry-run", action="store_true", help="check and list what would be uploaded where")
    p.add_argument("--json", action="store_true", help="with --dry-run: print the plan as JSON")
    p.add_argument("--allow-rejections", action="store_true",
                   help="publish even though the build rejected some raw inputs")
    p.add_argument("--allow-mock", action="store_true",
                   help="publish a mock-data build (the repository name must say mock)")


def run_push(args) -> int:
    """Run `mmu push`: check the build, then print the plan (`--dry-run`) or upload it.

    Args:
        args: the parsed `mmu push` arguments (see `configure_push_parser`).

    Returns:
        The exit status: 0 on success, `EXIT_REFUSED` when a check refuses the build or the upload,
        `EXIT_FAILED` when offline mode is on or the upload fails.
    """
    from dask.utils import format_bytes
    from huggingface_hub import constants

    if not args.dry_run and constants.is_offline_mode():
        print(f"error: offline mode is on (HF_HUB_OFFLINE=1): `mmu push` needs {constants.ENDPOINT}. "
              f"Nothing was uploaded or written. Unset HF_HUB_OFFLINE, or use --dry-run to check the "
              f"dataset and see the upload plan.", file=sys.stderr)
        return EXIT_FAILED
    try:
        plan = prepare(args)
    except (PushRefused, NotBuilt) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_REFUSED
    if args.dry_run:
        if args.json:
            print(json.dumps({**plan.as_dict(), "endpoint": constants.ENDPOINT}, indent=2))
        else:
            print_plan(plan, constants.ENDPOINT)
        return 0
    try:
        result = upload(plan, private=args.private)
    except PushRefused as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_REFUSED
    except Exception as e:  # noqa: BLE001 - network and server errors end the command with a reason
        print(f"error: upload of {args.name} to {args.repo} at {constants.ENDPOINT} failed: "
              f"{_reason(e)}", file=sys.stderr)
        return EXIT_FAILED
    print(f"uploaded {len(plan.files)} files ({format_bytes(plan.total_bytes)}) to {args.repo} "
          f"at {result['revision']}: {result['commit_url']}")
    if result["pr_url"]:
        print(f"pull request: {result['pr_url']} (merge it to publish on main)")
    print(f"use it:  {load_line(args.repo, result['revision'])}")
    return 0


def _reason(e: Exception) -> str:
    from huggingface_hub.errors import HfHubHTTPError

    if isinstance(e, HfHubHTTPError):
        status = e.response.status_code if e.response is not None else "?"
        hint = {401: " (is the token valid? `hf auth whoami`)",
                403: " (does the token have write access to this organization?)"}.get(status, "")
        server = getattr(e, "server_message", None) or ""
        return f"HTTP {status}: {str(e).splitlines()[0]} {server}".rstrip() + hint
    transport = tuple(t for t in (getattr(http_module(), "TransportError", None), OSError) if t)
    if isinstance(e, transport):
        return f"cannot reach the Hub ({type(e).__name__}: {e})"
    return f"{type(e).__name__}: {e}"


def http_module():
    """The HTTP client module huggingface_hub raises network errors from (httpx2 for 2.x), or None."""
    try:
        import httpx2 as http  # what huggingface_hub 2.x uses
    except ImportError:
        try:
            import httpx as http
        except ImportError:
            return None
    return http


def main(argv: list[str] | None = None) -> int:
    """Run `mmu push` as a standalone command.

    Args:
        argv: the command-line arguments (default: `sys.argv[1:]`).

    Returns:
        The exit status (see `run_push`).
    """
    p = argparse.ArgumentParser(prog="mmu push")
    configure_push_parser(p)
    return run_push(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
