"""Build reliability (issue 16): one build per dataset at a time, unique temporary names,
environment faults fail the build and are redone by the rerun (bad inputs stay rejections),
fault injection at every stage, staging left by a kill is cleaned, and `--rehash`."""
from __future__ import annotations

import errno
import importlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
import types
from pathlib import Path

import pyarrow.parquet as real_pq
import pytest
from astropy.io import fits

import mmu.engine.build as engine
from mmu.engine.build import BuildError, BuildLocked, build, dataset_lock, environment_fault, standardize_input
from mmu.engine.builder import get_builder
from mmu.hub.layout import read_manifest
from test_build import SLOW_OVERLAY, make_raw

NAME = "testsurvey_v1"
REMOVE_LEFTOVERS = engine._remove_leftovers


HATS_PIPELINE = importlib.import_module("hats_import.pipeline")  # the package shadows it by a function
REAL_PIPELINE = HATS_PIPELINE.pipeline_with_client


@pytest.fixture(scope="module")
def reference(tmp_path_factory, test_overlay, dask_client):
    """An uninterrupted build of the standard raw files: the content every faulted build must reach."""
    os.environ["MMU_CATALOG"] = str(test_overlay)
    tmp = tmp_path_factory.mktemp("reference")
    raw = make_raw(tmp / "raw")
    manifest = build(NAME, raw, tmp / "hub", client=dask_client).manifest
    yield raw, manifest
    os.environ.pop("MMU_CATALOG", None)


def _staging(hub: Path) -> list[Path]:
    return sorted((hub / ".mmu-staging").glob(f"{NAME}-*"))


def _assert_same_as(reference_manifest, hub: Path) -> None:
    m = read_manifest(hub, NAME)
    assert m.content_revision == reference_manifest.content_revision
    assert m.rows == reference_manifest.rows
    assert not m.rejected_inputs
    assert not _staging(hub), "staging left behind after a successful build"


# ---------------------------------------------------------------------------------------------
# item 1: locks and unique temporary names


def test_a_held_lock_fails_the_second_build_naming_its_holder(with_overlay, reference, dask_client, tmp_path):
    raw, _ = reference
    hub = tmp_path / "hub"
    with dataset_lock(hub, NAME):
        with pytest.raises(BuildLocked, match=rf"another build of {NAME} holds the lock \(pid {os.getpid()} "
                                              rf"on host {socket.gethostname()}, since \d{{4}}-"):
            build(NAME, raw, hub, client=dask_client)
    assert not (hub / NAME).exists()
    assert not (hub / ".mmu-staging" / f"{NAME}.lock").exists(), "the lock outlived its holder"


def test_two_builds_started_together_one_builds_the_other_is_refused(with_overlay, reference, tmp_path,
                                                                     dask_client):
    raw, ref = reference
    overlay = tmp_path / "slow.yaml"
    overlay.write_text(SLOW_OVERLAY)  # slow inputs: the two builds surely overlap
    with_overlay_env = os.environ.get("MMU_CATALOG")
    os.environ["MMU_CATALOG"] = str(overlay)
    try:
        hub = tmp_path / "hub"
        results: dict[int, object] = {}
        go = threading.Barrier(2)

        def run(k):
            go.wait()
            try:
                results[k] = build("testsurvey_slow_v1", raw, hub, client=dask_client)
            except BaseException as e:  # noqa: BLE001 - the test inspects it
                results[k] = e

        threads = [threading.Thread(target=run, args=(k,)) for k in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
    finally:
        os.environ["MMU_CATALOG"] = with_overlay_env
    errors = [r for r in results.values() if isinstance(r, BaseException)]
    built = [r for r in results.values() if not isinstance(r, BaseException)]
    assert len(built) == 1 and len(errors) == 1, results
    assert isinstance(errors[0], BuildLocked), repr(errors[0])
    assert "another build of testsurvey_slow_v1 holds the lock" in str(errors[0])
    assert f"pid {os.getpid()}" in str(errors[0])
    assert built[0].manifest.content_revision == ref.content_revision


def test_a_stale_lock_of_a_dead_process_is_taken_over(with_overlay, reference, dask_client, tmp_path):
    raw, ref = reference
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = tmp_path / "hub" / ".mmu-staging" / f"{NAME}.lock"
    lock.parent.mkdir(parents=True)
    lock.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "since": "2026-01-01T00:00:00Z"}))
    result = build(NAME, raw, tmp_path / "hub", client=dask_client)
    assert result.manifest.content_revision == ref.content_revision
    assert not lock.exists()
    # a live holder on another host is never taken over: its pid cannot be checked from here
    lock.write_text(json.dumps({"pid": dead.pid, "host": "elsewhere.example", "since": "T"}))
    with pytest.raises(BuildLocked, match=f"pid {dead.pid} on host elsewhere.example"):
        build(NAME, raw, tmp_path / "hub", client=dask_client)


def test_temporary_names_stay_unique_for_the_same_input(with_overlay, reference, tmp_path, catalog_split):
    """The old `tmp.with_suffix(".parquet")` made every attempt at one input write the same file."""
    raw, _ = reference
    builder = get_builder("mmu_testbuilder:TestSpectra").from_options({})
    item = builder.list_inputs(raw)[0]
    out = tmp_path / "std"
    out.mkdir()
    seen: list[str] = []
    real_writer = real_pq.ParquetWriter
    # every attempt opens its writer before any finishes: none can find another's finished marker
    # (on a loaded machine a thread started late would otherwise see it and return at once)
    together = threading.Barrier(4, timeout=120)

    class Recording(real_writer):
        def __init__(self, where, *a, **kw):
            seen.append(Path(where).name)
            together.wait()
            super().__init__(where, *a, **kw)

    errors = []

    def run():
        try:
            standardize_input("mmu_testbuilder:TestSpectra", {}, item, str(out), catalog_split)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    proxy = types.SimpleNamespace(**{k: getattr(real_pq, k) for k in dir(real_pq) if not k.startswith("__")})
    proxy.ParquetWriter = Recording
    engine_pq, engine.pq = engine.pq, proxy
    try:
        threads = [threading.Thread(target=run) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        engine.pq = engine_pq
    assert not errors, errors
    assert len(seen) == 4 and len(set(seen)) == 4, seen
    stem = re.escape(engine._safe_key(item.key))
    assert all(re.fullmatch(rf"\.{stem}\.[0-9a-f]{{8}}\.parquet", n) for n in seen), seen
    marker = json.loads(next(out.glob("*.json")).read_text())
    assert marker["rows"] == 12 and not list(out.glob(".*")), "temporary files left behind"


@pytest.fixture
def catalog_split(with_overlay):
    return with_overlay.split_definition.as_dict()


# ---------------------------------------------------------------------------------------------
# item 2: only inputs can be bad


def _failing_pq(match: str, err: BaseException):
    """pyarrow.parquet as the engine sees it, except that writing rows of the input whose
    temporary file name contains `match` raises `err` (the disk filled up mid-write)."""
    class Writer(real_pq.ParquetWriter):
        def __init__(self, where, *a, **kw):
            self.fail = match in Path(where).name
            super().__init__(where, *a, **kw)

        def write_table(self, *a, **kw):
            if self.fail:
                raise err
            return super().write_table(*a, **kw)

    proxy = types.SimpleNamespace(**{k: getattr(real_pq, k) for k in dir(real_pq) if not k.startswith("__")})
    proxy.ParquetWriter = Writer
    return proxy


def test_a_full_disk_fails_the_build_and_the_rerun_restores_every_row(with_overlay, reference, dask_client,
                                                                     tmp_path, monkeypatch):
    raw, ref = reference
    hub = tmp_path / "hub"
    monkeypatch.setattr(engine, "pq", _failing_pq("spectra-3", OSError(errno.ENOSPC, "No space left on device")))
    with pytest.raises(BuildError, match=r"input field3/spectra-3.fits: environment fault while standardizing "
                                         r"\(No space left on device\)"):
        build(NAME, raw, hub, client=dask_client)
    assert not (hub / NAME).exists()
    [staging] = _staging(hub)
    markers = {json.loads(p.read_text())["key"] for p in (staging / "standardized").glob("*.json")}
    assert "field3/spectra-3.fits" not in markers, "an environment fault left a (rejection) marker"
    assert not list((staging / "standardized").glob(".*")), "temporary files left behind"
    monkeypatch.setattr(engine, "pq", real_pq)  # space freed
    again = build(NAME, raw, hub, client=dask_client)
    assert not again.up_to_date
    _assert_same_as(ref, hub)


def test_bad_inputs_stay_rejections_and_environment_faults_are_told_apart(tmp_path):
    assert environment_fault(OSError(errno.ENOSPC, "No space left on device")) == "No space left on device"
    assert environment_fault(PermissionError(errno.EACCES, "Permission denied"))
    assert environment_fault(OSError(errno.EIO, "Input/output error"))
    assert environment_fault(MemoryError())
    # the de-duplication's P2P shuffle (above DRIVER_ROWS): a full spill disk, a worker lost mid-shuffle
    from distributed.shuffle._exceptions import P2POutOfDiskError, ShuffleClosedError
    assert environment_fault(P2POutOfDiskError()).startswith("No space left on device (the Dask shuffle's spill")
    assert "Dask cluster failure (ShuffleClosedError" in environment_fault(ShuffleClosedError("shuffle 1 closed"))
    assert environment_fault(OSError("Error writing file: No space left on device"))  # pyarrow text
    wrapped = ValueError("could not write")
    wrapped.__cause__ = OSError(errno.EDQUOT, "Disk quota exceeded")
    assert environment_fault(wrapped)
    from distributed.client import FutureCancelledError
    from distributed.comm.core import CommClosedError
    from distributed.scheduler import KilledWorker
    for lost in (KilledWorker("standardize_input-1", "tcp://w:1", 3), CommClosedError("lost scheduler"),
                 FutureCancelledError("standardize_input-1", "scheduler-restart")):
        assert "Dask cluster" in environment_fault(lost)

        def stage(lost=lost):
            raise lost
        with pytest.raises(BuildError, match=r"x: environment fault during standardize \(Dask cluster failure"):
            engine._stage("standardize", "x", stage)
    with pytest.raises(KeyError):  # any other error is not wrapped: it is a bug to see in full
        engine._stage("standardize", "x", lambda: {}["k"])
    # a truncated or corrupt file is the input's fault
    bad = tmp_path / "truncated.fits"
    bad.write_bytes(b"SIMPLE  =                    T" + b"\0" * 100)
    with pytest.raises(Exception) as info:  # noqa: PT011 - whatever astropy raises for it
        fits.open(bad)[1]
    assert environment_fault(info.value) is None
    assert environment_fault(OSError("Empty or corrupt FITS file")) is None
    assert environment_fault(FileNotFoundError(errno.ENOENT, "No such file")) is None
    assert environment_fault(ValueError("bad header")) is None


def test_a_rejection_marker_of_an_environment_fault_is_redone(with_overlay, reference, dask_client, tmp_path):
    """Hubs staged by the old engine hold ENOSPC 'rejections': the rerun must not reuse them."""
    raw, ref = reference
    hub = tmp_path / "hub"
    real = engine._standardize_all
    planted = {}

    def plant_then_run(client, entry, builder, inputs, std_dir, split_def, *rest):
        stem = engine._safe_key("field1/spectra-1.fits")
        (std_dir / f"{stem}.json").write_text(json.dumps({
            "key": "field1/spectra-1.fits", "rejected": "OSError: [Errno 28] No space left on device",
            "rows": 0, "row_rejections": []}))
        planted["yes"] = True
        return real(client, entry, builder, inputs, std_dir, split_def, *rest)

    engine._standardize_all = plant_then_run
    try:
        build(NAME, raw, hub, client=dask_client)
    finally:
        engine._standardize_all = real
    assert planted
    _assert_same_as(ref, hub)


# ---------------------------------------------------------------------------------------------
# item 3: an environment fault at each stage, then a clean rerun: the same content


def _fail_call(n: int, err: BaseException, after: bool):
    """A pipeline_with_client whose `n`-th call (1: the catalog import, 2: the margin cache)
    raises `err`, before doing its work or after it."""
    real = REAL_PIPELINE
    calls = []

    def pipeline(args, client):
        calls.append(args)
        if len(calls) == n and not after:
            raise err
        out = real(args, client)
        if len(calls) == n:
            raise err
        return out
    return pipeline


def _fail_after(fn, err: BaseException):
    def failing(*args, **kwargs):
        fn(*args, **kwargs)
        raise err
    return failing


def _fail_before(err: BaseException):
    def failing(*args, **kwargs):
        raise err
    return failing


@pytest.mark.parametrize("writer", ["mmu", "hats-import"])
@pytest.mark.parametrize("stage", ["standardize", "partition", "margin", "swap"])
def test_an_environment_fault_at_each_stage_then_a_rerun_gives_the_same_content(
        stage, writer, with_overlay, reference, dask_client, tmp_path, monkeypatch):
    """Partition and margin faults: for the one-pass writer, a full disk once the partitions are
    written (while finishing the catalog's metadata) and a MemoryError in a margin task; for
    hats-import, the same in its catalog and margin pipelines."""
    from mmu.engine import hats_writer
    from mmu.engine.build import PartitionSettings

    if writer != "mmu" and stage in ("standardize", "swap"):
        pytest.skip("the same code for both writers")
    settings = PartitionSettings(writer=writer)
    hp = HATS_PIPELINE
    raw, ref = reference
    hub = tmp_path / "hub"
    real_finish, real_margin = hats_writer._finish, hats_writer.write_margin
    if stage == "standardize":
        monkeypatch.setattr(engine, "pq", _failing_pq("spectra-0", OSError(errno.EIO, "Input/output error")))
    elif stage == "partition" and writer == "mmu":
        monkeypatch.setattr(hats_writer, "_finish", _fail_after(real_finish, OSError(errno.ENOSPC, "No space left")))
    elif stage == "margin" and writer == "mmu":
        monkeypatch.setattr(hats_writer, "write_margin", _fail_before(MemoryError()))
    elif stage == "partition":
        monkeypatch.setattr(hp, "pipeline_with_client", _fail_call(1, OSError(errno.ENOSPC, "No space left"), True))
    elif stage == "margin":
        monkeypatch.setattr(hp, "pipeline_with_client", _fail_call(2, MemoryError(), False))
    else:
        def no_permission(new, target):
            raise PermissionError(errno.EACCES, "Permission denied", str(target))
        monkeypatch.setattr(engine, "replace_dir", no_permission)
    where = {"standardize": "while standardizing", "partition": "during partition", "margin": "during partition",
             "swap": "during install"}[stage]
    with pytest.raises(BuildError, match=f"environment fault {where}"):
        build(NAME, raw, hub, client=dask_client, settings=settings)
    assert not (hub / NAME / "build.json").exists()
    assert not (hub / ".mmu-staging" / f"{NAME}.lock").exists(), "a failed build kept its lock"
    monkeypatch.setattr(engine, "pq", real_pq)
    monkeypatch.setattr(hp, "pipeline_with_client", _fail_call(0, None, False))  # the real one
    monkeypatch.setattr(hats_writer, "_finish", real_finish)
    monkeypatch.setattr(hats_writer, "write_margin", real_margin)
    from mmu.hub import layout
    monkeypatch.setattr(engine, "replace_dir", layout.replace_dir)
    again = build(NAME, raw, hub, client=dask_client, settings=settings)
    assert not again.up_to_date
    _assert_same_as(ref, hub)


# ---------------------------------------------------------------------------------------------
# item 4: staging left by a kill between the swap and the clean-up


def test_staging_left_by_a_kill_after_the_swap_is_removed_by_the_next_run(with_overlay, reference,
                                                                          dask_client, tmp_path, monkeypatch):
    raw, ref = reference
    hub = tmp_path / "hub"
    # the build "dies" right after the swap: its clean-up never runs
    monkeypatch.setattr(engine, "_remove_leftovers", lambda hub, name: None)
    build(NAME, raw, hub, client=dask_client)
    assert _staging(hub), "the simulated kill left no staging to clean"
    old_copy = hub / f".{NAME}.old-0123abcd"  # a swapped-out copy whose removal was cut short
    (old_copy / "x").mkdir(parents=True)
    other = hub / ".mmu-staging" / "othersurvey_v1-0123456789abcdef"  # another dataset's: kept
    other.mkdir(parents=True)
    monkeypatch.setattr(engine, "_remove_leftovers", REMOVE_LEFTOVERS)
    again = build(NAME, raw, hub, client=dask_client)
    assert again.up_to_date
    assert not _staging(hub) and not old_copy.exists()
    assert other.is_dir()
    assert read_manifest(hub, NAME).content_revision == ref.content_revision


# ---------------------------------------------------------------------------------------------
# item 5: --rehash


def test_rehash_sees_a_file_changed_in_place_with_its_mtime_restored(with_overlay, dask_client, tmp_path):
    raw = make_raw(tmp_path / "raw", per_field=4)
    hub = tmp_path / "hub"
    first = build(NAME, raw, hub, client=dask_client)
    f = raw / "field2" / "spectra-2.fits"
    st = f.stat()
    with fits.open(f, mode="update") as h:  # same size: one flux value changes
        h["SPECTRA"].data["FLUX"][1, 5] += 1.0
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # as `rsync -t` of a same-size file leaves it
    assert f.stat().st_size == st.st_size and f.stat().st_mtime_ns == st.st_mtime_ns
    trusted = build(NAME, raw, hub, client=dask_client)
    assert trusted.up_to_date, "without --rehash the (path, size, mtime) cache is trusted"
    rehashed = build(NAME, raw, hub, client=dask_client, rehash=True)
    assert not rehashed.up_to_date
    assert rehashed.manifest.build_key != first.manifest.build_key
    assert rehashed.manifest.content_revision != first.manifest.content_revision
    assert rehashed.manifest.rows == first.manifest.rows
    # the cache now holds the new digest: a plain rerun agrees
    assert build(NAME, raw, hub, client=dask_client).up_to_date


def test_cli_build_accepts_rehash():
    from mmu.cli.main import make_parser
    args = make_parser().parse_args(["build", NAME, "--raw", "r", "--hub", "h", "--rehash"])
    assert args.rehash is True
    args = make_parser().parse_args(["build", NAME, "--raw", "r", "--hub", "h"])
    assert args.rehash is False
