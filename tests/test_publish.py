"""`mmu push`: the upload plan, the refusals, offline behaviour, and real uploads by the
huggingface_hub client (2.x) in a subprocess against the recording endpoint in hf_endpoint.py."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from hf_endpoint import HubEndpoint
from mmu_testbuilder import write_spectra_file

NAME = "testsurvey_v1"
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def built(tmp_path_factory, dask_client, test_overlay) -> Path:
    """One small build (3 inputs, 60 rows over the whole sky) shared by this module's tests."""
    from mmu.engine.build import build
    from mmu.registry.catalog import load_catalog

    root = tmp_path_factory.mktemp("built")
    rng = np.random.default_rng(7)
    for k in range(3):
        ra = rng.uniform(0, 360, 20)
        dec = np.degrees(np.arcsin(rng.uniform(-1, 1, 20)))
        write_spectra_file(root / "raw" / f"spectra-{k}.fits", np.arange(20) + 100 * k, ra, dec, seed=k)
    build(NAME, root / "raw", root / "hub", client=dask_client,
          catalog=load_catalog(overlays=[test_overlay]))
    return root / "hub"


@pytest.fixture
def hub(built, tmp_path) -> Path:
    """A private copy of the built hub, free to edit."""
    shutil.copytree(built, tmp_path / "hub")
    return tmp_path / "hub"


def collection_files(hub: Path) -> list[str]:
    root = hub / NAME
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def mmu(*args, env=None, timeout=120):
    return subprocess.run([sys.executable, "-m", "mmu", *args], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=REPO)


def push_inproc(capsys, *args) -> tuple[int, str, str]:
    from mmu.hub.publish import main

    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def edit_manifest(hub: Path, **changes) -> None:
    path = hub / NAME / "build.json"
    m = json.loads(path.read_text())
    m.update(changes)
    path.write_text(json.dumps(m))


# -------------------------------------------------------------------------------------------------


def test_build_manifest_fields_are_documented(built):
    """docs/schema.md's build.json table (mmu.hub.schemadoc.MANIFEST_FIELDS) matches a real manifest."""
    from mmu.hub.schemadoc import MANIFEST_FIELDS, MANIFEST_OPTIONAL

    m = json.loads((built / NAME / "build.json").read_text())
    found = set(m)
    for key in ("split", "rows", "partition"):
        found |= {f"{key}.{k}" for k in m[key]}
    found |= {f"inputs[].{k}" for i in m["inputs"] for k in i}
    found |= {f"inputs[].files[].{k}" for i in m["inputs"] for f in i["files"] for k in f}
    m2 = {"rejected_inputs": [{"input": "x", "reason": "y"}]}  # this build rejected nothing
    found |= {f"rejected_inputs[].{k}" for r in m2["rejected_inputs"] for k in r}
    assert found == set(MANIFEST_FIELDS) - MANIFEST_OPTIONAL


def test_dry_run_lists_exactly_the_collection(hub, capsys):
    expected = collection_files(hub)
    assert {"README.md", "build.json", "collection.properties"} <= set(expected)
    root = hub / NAME
    junk = [".mmu-staging/std/x.parquet", "README.md.tmp-1a2b", ".build.json.tmp-3c4d", "notes.txt",
            "raw/spectra-0.fits", f"{NAME}/dataset/Norder=4/Dir=0/.Npix=1.parquet.tmp",
            f"{NAME}/_tmp/part.parquet", f"{NAME}/dataset/Norder=4/Dir=0/Npix=1.parquet.tmp-9",
            ".git/config", ".cache/huggingface/upload/x.metadata"]
    for j in junk:
        (root / j).parent.mkdir(parents=True, exist_ok=True)
        (root / j).write_bytes(b"junk")
    (hub / ".mmu-staging").mkdir(exist_ok=True)
    (hub / ".mmu-staging" / "other.parquet").write_bytes(b"x")
    r = mmu("push", NAME, "--hub", str(hub), "--repo", "org/testsurvey_v1", "--dry-run", "--json")
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    assert [f["path"] for f in plan["files"]] == expected  # exactly, in upload_folder's order
    assert set(junk) <= set(plan["skipped"])
    assert plan["revision"] == "main" and plan["repo_id"] == "org/testsurvey_v1"
    assert all(f["bytes"] == (root / f["path"]).stat().st_size for f in plan["files"])

    rc, out, err = push_inproc(capsys, NAME, "--hub", str(hub), "--repo", "org/testsurvey_v1",
                               "--dry-run", "--create-pr")
    assert rc == 0, err
    assert "dry run: nothing uploaded" in out and "pull request against main" in out
    listed = [line.split()[1] for line in out.splitlines() if line.strip().startswith("upload ")]
    assert listed == expected
    assert 'datasets.load_dataset("org/testsurvey_v1"' in out


def test_push_commits_the_collection_and_opens_pull_requests(hub, tmp_path):
    expected = collection_files(hub)
    with HubEndpoint(token="hf_test_token") as server:
        env = {**os.environ, **server.client_env(tmp_path / "hf-home")}
        r = mmu("push", NAME, "--hub", str(hub), "--repo", "org/testsurvey_v1", env=env)
        assert r.returncode == 0, r.stderr
        assert 'datasets.load_dataset("org/testsurvey_v1", split="train", streaming=True)' in r.stdout
        files = server.files("org/testsurvey_v1", "main")
        assert sorted(set(files) - {".gitattributes"}) == expected
        for path in expected:
            assert files[path] == (hub / NAME / path).read_bytes(), path
        [commit] = server.commits("org/testsurvey_v1")
        assert commit.revision == "main" and commit.summary.startswith(f"mmu push {NAME}")
        manifest = json.loads((hub / NAME / "build.json").read_text())
        assert manifest["content_revision"] in commit.description
        assert {"whoami", "create_repo", "validate_yaml", "preupload", "commit"} <= set(server.routes())
        assert all(q.headers.get("authorization") == "Bearer hf_test_token" for q in server.requests)
        assert not server.unhandled()

        # a pull request: opened through the discussions routes, committed to refs/pr/1
        r = mmu("push", NAME, "--hub", str(hub), "--repo", "org/testsurvey_v1-pr", "--create-pr",
                "--private", env=env)
        assert r.returncode == 0, r.stderr
        assert "/discussions/1" in r.stdout and "revision='refs/pr/1'" in r.stdout
        repo = server.repo("org/testsurvey_v1-pr")
        assert repo.private
        assert [c.revision for c in server.commits("org/testsurvey_v1-pr")] == ["refs/pr/1"]
        assert sorted(set(server.files("org/testsurvey_v1-pr", "refs/pr/1")) - {".gitattributes"}) == expected
        assert set(server.files("org/testsurvey_v1-pr", "main")) == {".gitattributes"}
        assert {"create_discussion", "discussion"} <= set(server.routes())
        # more commits to the open pull request: only the changed file travels
        card = hub / NAME / "README.md"
        card.write_text(card.read_text() + "\nRebuilt with more care.\n")
        r = mmu("push", NAME, "--hub", str(hub), "--repo", "org/testsurvey_v1-pr", "--revision",
                "refs/pr/1", env=env)
        assert r.returncode == 0, r.stderr
        second = server.commits("org/testsurvey_v1-pr")[-1]
        assert second.revision == "refs/pr/1" and second.added == ["README.md"]
        assert len(server.repo("org/testsurvey_v1-pr").discussions) == 1

        # a branch: created from main, then committed to
        r = mmu("push", NAME, "--hub", str(hub), "--repo", "org/testsurvey_v1", "--revision", "rebuild",
                env=env)
        assert r.returncode == 0, r.stderr
        assert "revision='rebuild'" in r.stdout
        assert "create_branch" in server.routes()
        assert set(server.files("org/testsurvey_v1", "rebuild")) == set(files)
        assert not server.unhandled()


def test_push_through_lfs_with_a_pull_request(hub, tmp_path):
    """The legacy path (no hf_xet): validate-yaml, LFS batch + PUT + verify, commit ?create_pr=1."""
    with HubEndpoint(upload_mode="lfs", lfs_threshold=4096) as server:
        env = {**os.environ, **server.client_env(tmp_path / "hf-home")}
        r = mmu("push", NAME, "--hub", str(hub), "--repo", "org/testsurvey_v1", "--create-pr", env=env)
        assert r.returncode == 0, r.stderr
        assert {"validate_yaml", "lfs_batch", "lfs_upload", "lfs_verify"} <= set(server.routes())
        [commit] = server.commits("org/testsurvey_v1")
        assert commit.revision == "refs/pr/1"
        lfs = {p for p, (_, oid) in server.repo("org/testsurvey_v1").head("refs/pr/1").tree.items() if oid}
        big = {p for p in collection_files(hub) if (hub / NAME / p).stat().st_size >= 4096}
        assert lfs == big and big
        files = server.files("org/testsurvey_v1", "refs/pr/1")
        assert all(files[p] == (hub / NAME / p).read_bytes() for p in collection_files(hub))
        assert not server.unhandled()


def _snapshot(path: Path) -> dict:
    return {p.as_posix(): (p.stat().st_size, p.stat().st_mtime_ns) for p in Path(path).rglob("*")}


def test_offline_fails_at_once_and_writes_nothing(hub, tmp_path):
    before = _snapshot(hub)
    home = tmp_path / "hf-home"
    with HubEndpoint() as server:
        env = {**os.environ, **server.client_env(home), "HF_HUB_OFFLINE": "1"}
        t0 = time.perf_counter()
        r = mmu("push", NAME, "--hub", str(hub), "--repo", "org/testsurvey_v1", env=env)
        assert r.returncode == 1
        assert "offline mode is on (HF_HUB_OFFLINE=1)" in r.stderr and "Nothing was uploaded" in r.stderr
        assert time.perf_counter() - t0 < 20
        assert server.requests == []
    # an endpoint nobody answers: one clear line, no retries for minutes
    env = {**env, "HF_HUB_OFFLINE": "0", "HF_ENDPOINT": server.url}  # the server is stopped now
    t0 = time.perf_counter()
    r = mmu("push", NAME, "--hub", str(hub), "--repo", "org/testsurvey_v1", env=env)
    assert r.returncode == 1 and "cannot reach the Hub" in r.stderr, r.stderr
    assert time.perf_counter() - t0 < 30
    assert _snapshot(hub) == before
    assert not home.exists() or not any(home.rglob("*"))


def test_refusals_say_what_to_do(hub, capsys):
    base = ("push", NAME, "--hub", str(hub), "--dry-run")
    import mmu.hub.publish as publish

    def run(*args):
        return push_inproc(capsys, *base[1:], *args)

    rc, _, err = run("--repo", "just-a-name")
    assert rc == 2 and "expected ORG/NAME" in err
    rc, _, err = run("--repo", "org/x", "--create-pr", "--revision", "dev")
    assert rc == 2 and "--create-pr opens a pull request against main" in err
    rc, _, err = push_inproc(capsys, "nosuch_v1", "--hub", str(hub), "--repo", "org/x", "--dry-run")
    assert rc == 2 and "not built" in err and "mmu build nosuch_v1" in err

    edit_manifest(hub, rejected_inputs=[{"input": "f0/spectra-bad.fits", "reason": "OSError: no SIMPLE card"}])
    rc, _, err = run("--repo", "org/testsurvey_v1")
    assert rc == 2 and "rejected 1 raw input(s): f0/spectra-bad.fits" in err and "--allow-rejections" in err
    assert run("--repo", "org/testsurvey_v1", "--allow-rejections")[0] == 0

    edit_manifest(hub, rejected_inputs=[], mock=True, mock_seed=42)
    rc, _, err = run("--repo", "org/testsurvey_v1")
    assert rc == 2 and "mock data" in err and "seed 42" in err and "--allow-mock" in err
    rc, _, err = run("--repo", "org/testsurvey_v1", "--allow-mock")
    assert rc == 2 and "repository name must say so" in err and "org/testsurvey_v1-mock" in err
    assert run("--repo", "org/testsurvey_v1-mock", "--allow-mock")[0] == 0
    edit_manifest(hub, mock=False, mock_seed=None)

    # the card: a feature that disagrees with the Parquet schema, then a missing data file
    card = hub / NAME / "README.md"
    good = card.read_text()
    card.write_text(good.replace("- name: mag\n    dtype: float32", "- name: mag\n    dtype: float64"))
    rc, _, err = run("--repo", "org/testsurvey_v1")
    assert rc == 2 and "does not validate" in err and "features differ" in err and "['mag']" in err
    card.write_text(good)
    victim = json.loads((hub / NAME / "build.json").read_text())["data_files"]["train"][0]
    (hub / NAME / victim).unlink()
    rc, _, err = run("--repo", "org/testsurvey_v1")
    assert rc == 2 and f"{victim} does not exist" in err
    card.write_text("---\nlicense: [unclosed\n---\n")
    rc, _, err = run("--repo", "org/testsurvey_v1")
    assert rc == 2 and "does not validate" in err
    assert publish.validate_card(hub / NAME, json.loads((hub / NAME / "build.json").read_text()))


def test_card_validates_offline(built):
    from mmu.hub.publish import plan_upload, validate_card

    plan = plan_upload(built, NAME, "org/x")
    assert validate_card(plan.collection, plan.manifest, [p for p, _ in plan.files]) == []


def test_no_token_is_a_clear_refusal(hub, capsys, monkeypatch):
    import huggingface_hub

    import mmu.hub.publish as publish

    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    plan = publish.plan_upload(hub, NAME, "org/x")
    with pytest.raises(publish.PushRefused, match="no Hugging Face token"):
        publish.upload(plan, private=False)


def test_collection_properties_are_read_by_hats(hub):
    """collection.properties is read with hats' CollectionProperties: any of its list separators,
    and a clear refusal for a file hats cannot read or one naming a table that is not there."""
    from mmu.hub.publish import PushRefused, collection_tables

    root = hub / NAME
    props = root / "collection.properties"
    good = props.read_text()
    margin = next(p.name for p in root.iterdir() if p.is_dir() and p.name.startswith(f"{NAME}_"))
    assert collection_tables(root, NAME) == [NAME, margin]
    shutil.copytree(root / margin, root / "extra_margin")
    props.write_text(good.replace(f"all_margins={margin}", f"all_margins={margin},extra_margin"))
    assert collection_tables(root, NAME) == [NAME, margin, "extra_margin"]
    props.write_text(good.replace(f"all_margins={margin}", f"all_margins={margin} missing_margin"))
    with pytest.raises(PushRefused, match="names table 'missing_margin', which is not a folder"):
        collection_tables(root, NAME)
    props.write_text("\n".join(line for line in good.splitlines() if not line.startswith("hats_primary_table_url")))
    with pytest.raises(PushRefused, match="not a valid HATS collection.properties .*hats_primary_table_url"):
        collection_tables(root, NAME)
    props.unlink()
    with pytest.raises(PushRefused, match="no collection.properties"):
        collection_tables(root, NAME)


def test_card_is_a_datasetcard_whose_dataset_info_datasets_reads(built):
    """The card is written through huggingface_hub's DatasetCard and datasets' DatasetInfosDict:
    the typed features and split sizes read back, through datasets' own reader, to the Parquet
    schema and the manifest's counts."""
    import pyarrow.parquet as pq
    from datasets.info import DatasetInfosDict
    from huggingface_hub import DatasetCard

    from mmu.hub.card import CARD_KEYS, read_card_features
    from mmu.model.schema import hf_features, modalities_of

    root = built / NAME
    manifest = json.loads((root / "build.json").read_text())
    card = DatasetCard.load(root / "README.md")
    meta = card.data.to_dict()
    header = yaml.safe_load((root / "README.md").read_text().split("---\n")[1])
    assert header == meta and list(header) == [k for k in CARD_KEYS if k in meta]
    assert meta["license"] == "mit" and "license_name" not in meta
    info = DatasetInfosDict.from_dataset_card_data(card.data)["default"]
    schema = pq.read_schema(root / manifest["data_files"]["train"][0])
    assert info.features == hf_features(schema, modalities_of(schema)) == read_card_features(meta)
    assert {s: info.splits[s].num_examples for s in info.splits} == {
        s: manifest["rows"][s] for s in ("train", "val", "test") if manifest["data_files"][s]}
    assert {s: info.splits[s].num_bytes for s in info.splits} == {
        s: manifest["split_bytes"][s] for s in info.splits}
    assert card.text.lstrip().startswith(f"# {NAME}") and "## Citation" in card.text
    with pytest.raises(ValueError, match="no dataset_info"):
        read_card_features({"license": "mit"})
