"""The build engine at survey density and on a hub it cannot write (issue 15).

- Partitioning adapts to density: the margin cache width is a setting of its own, partitions go
  as deep as that margin allows, and a pixel denser than the byte threshold at the deepest allowed
  order raises the threshold (with a warning) instead of failing the build.
- A read-only hub is a one-line error naming the folder; an up-to-date build on it is still a
  no-op that writes nothing; a no-op `mmu build` exits quietly (no Dask teardown tracebacks).
"""
from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from mmu.engine.build import BuildError, HubNotWritable, PartitionSettings, build
from mmu.hub.layout import read_manifest
from mmu_testbuilder import write_spectra_file

NAME = "testsurvey_v1"
BOX = (150.0, 2.0, 0.1)  # ra0, dec0, side (deg): 60 rows in 0.01 deg², one or two order-8 pixels


def make_dense_raw(root: Path, files: int = 3, per_file: int = 20) -> Path:
    rng = np.random.default_rng(11)
    ra0, dec0, side = BOX
    for f in range(files):
        ids = np.arange(f * per_file, (f + 1) * per_file)
        write_spectra_file(root / f"spectra-{f}.fits", ids, ra0 + rng.uniform(0, side, per_file),
                           dec0 + rng.uniform(0, side, per_file), seed=f)
    return root


def _partition_orders(result) -> list[int]:
    return sorted(int(f.split("Norder=")[1].split("/")[0]) for fs in result.manifest.data_files.values()
                  for f in fs)


def _ids(result) -> list[str]:
    return pq.read_table(result.path / NAME / "dataset", columns=["object_id"]).column("object_id").to_pylist()


@pytest.fixture(scope="module")
def dense(tmp_path_factory, test_overlay, dask_client):
    os.environ["MMU_CATALOG"] = str(test_overlay)
    tmp = tmp_path_factory.mktemp("dense")
    raw = make_dense_raw(tmp / "raw")
    reference = build(NAME, raw, tmp / "ref", client=dask_client)
    yield tmp, raw, reference
    os.environ.pop("MMU_CATALOG", None)


def test_default_margin_is_its_own_setting_and_unchanged_for_sparse_builds(dense):
    tmp, raw, ref = dense
    p = ref.manifest.partition
    assert PartitionSettings().margin_threshold_arcsec == 128.0
    assert p.margin_order == 10 and 128 <= p.margin_threshold_arcsec < 129  # as before the setting
    assert p.margin_catalog == f"{NAME}_128arcs"
    assert p.margin_delta == p.margin_order - max(_partition_orders(ref))
    assert (ref.path / p.margin_catalog).is_dir()


def test_a_pixel_denser_than_the_byte_threshold_at_the_deepest_order_builds(dense, dask_client, tmp_path):
    """60 rows of ~1.5 KB in 0.01 deg² with an 8 kB threshold: every order-9 pixel (the deepest
    a 128-arcsec margin allows) holding more than 8 kB used to fail hats-import ("single pixel
    supplement ... exceeds threshold"); now the threshold rises to that pixel's bytes."""
    tmp, raw, ref = dense
    settings = PartitionSettings(partition_bytes=8_000)
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("mmu").addHandler(handler)
    try:
        result = build(NAME, raw, tmp_path / "hub", client=dask_client, settings=settings)
    finally:
        logging.getLogger("mmu").removeHandler(handler)
    p = result.manifest.partition
    warned = [r.getMessage() for r in records if r.levelno == logging.WARNING and "densest" in r.getMessage()]
    assert len(warned) == 1 and "margin_threshold_arcsec=128" in warned[0]
    assert p.partition_bytes > 8_000  # the threshold actually used is recorded
    assert p.highest_order == 9 and max(_partition_orders(result)) == 9
    assert result.manifest.content_revision == ref.manifest.content_revision
    assert result.manifest.rows == ref.manifest.rows
    ids = _ids(result)
    assert len(ids) == len(set(ids)) == 60
    # the partitioning really changed: more, deeper partitions than the default build
    assert len(_partition_orders(result)) > len(_partition_orders(ref))


def test_a_smaller_margin_lets_partitions_go_deeper(dense, dask_client, tmp_path):
    tmp, raw, ref = dense
    settings = PartitionSettings.from_overrides({"partition_bytes": 8_000, "margin_threshold_arcsec": 16})
    result = build(NAME, raw, tmp_path / "hub", client=dask_client, settings=settings)
    p = result.manifest.partition
    assert p.margin_order == 13 and 16 <= p.margin_threshold_arcsec < 32
    assert p.highest_order == 10  # PartitionSettings.highest_order caps it below the margin order - 1
    assert max(_partition_orders(result)) > 9
    assert p.margin_delta == 13 - max(_partition_orders(result))
    assert result.manifest.build_key != ref.manifest.build_key
    assert result.manifest.content_revision == ref.manifest.content_revision
    import lsdb
    cat = lsdb.open_catalog(result.path)
    assert cat.margin is not None and len(cat.compute()) == 60


def test_partition_settings_are_checked_by_name():
    with pytest.raises(BuildError, match="unknown setting.*margin_arcsec"):
        PartitionSettings.from_overrides({"margin_arcsec": 16})
    with pytest.raises(BuildError, match="margin_threshold_arcsec must be"):
        PartitionSettings(margin_threshold_arcsec=0)
    with pytest.raises(BuildError, match="highest_order must be"):
        PartitionSettings(highest_order=30)
    with pytest.raises(BuildError, match="writer must be 'mmu' or 'hats-import' \\(got 'bogus'\\)"):
        PartitionSettings.from_overrides({"writer": "bogus"})


# ---------------------------------------------------------------------------------------------
# a hub that cannot be written


def _read_only(path: Path) -> None:
    for d, _dirs, files in os.walk(path):
        for name in files:
            os.chmod(Path(d) / name, stat.S_IRUSR | stat.S_IRGRP)
        os.chmod(d, stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP)


def _writable(path: Path) -> None:
    for d, _dirs, files in os.walk(path):
        os.chmod(d, stat.S_IRWXU)
        for name in files:
            os.chmod(Path(d) / name, stat.S_IRUSR | stat.S_IWUSR)


@pytest.fixture
def read_only(tmp_path):
    """Make folders read-only for the test (restored after); skipped where chmod cannot stop the
    test's user from writing (root)."""
    made = []

    def make(path: Path) -> Path:
        _read_only(path)
        made.append(path)
        if os.access(path, os.W_OK):
            pytest.skip("this user writes into read-only folders (root): chmod cannot test it")
        return path

    yield make
    for p in made:
        _writable(p)


def _snapshot(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")}


def test_an_up_to_date_build_on_a_read_only_hub_is_a_noop_that_writes_nothing(dense, dask_client, read_only,
                                                                              tmp_path):
    tmp, raw, ref = dense
    hub = tmp_path / "hub"
    first = build(NAME, raw, hub, client=dask_client)
    # a fresh checksum cache must be written by nobody: remove the staging folder altogether
    import shutil
    shutil.rmtree(hub / ".mmu-staging", ignore_errors=True)
    read_only(hub)
    before = _snapshot(hub)
    again = build(NAME, raw, hub, client=dask_client)
    assert again.up_to_date and again.manifest.build_key == first.manifest.build_key
    assert _snapshot(hub) == before
    assert not (hub / ".mmu-staging").exists()


def test_a_build_into_a_read_only_hub_is_one_error_naming_the_folder(dense, dask_client, read_only, tmp_path):
    tmp, raw, ref = dense
    hub = tmp_path / "hub"
    hub.mkdir()
    read_only(hub)
    with pytest.raises(HubNotWritable, match=rf"{hub}.*not writable.*chmod"):
        build(NAME, raw, hub, client=dask_client)
    assert not (hub / NAME).exists()
    # a hub under a read-only folder (cannot be created)
    with pytest.raises(HubNotWritable, match=rf"{hub / 'sub'}.*cannot be created"):
        build(NAME, raw, hub / "sub", client=dask_client)


def test_read_only_hub_paths_by_injection(dense, dask_client, tmp_path, monkeypatch):
    """The same two paths where chmod cannot make a folder read-only (root): the engine is told
    the hub is not writable, and must neither write nor fail an up-to-date check."""
    import mmu.engine.build as engine

    tmp, raw, ref = dense
    hub = tmp_path / "hub"
    build(NAME, raw, hub, client=dask_client)
    (hub / ".mmu-staging" / "sha256-cache.json").unlink()  # an up-to-date check must not write it back
    monkeypatch.setattr(engine, "hub_writable", lambda hub: False)
    before = _snapshot(hub)
    again = build(NAME, raw, hub, client=dask_client)
    assert again.up_to_date and _snapshot(hub) == before
    other = tmp_path / "other"
    with pytest.raises(HubNotWritable, match=rf"hub folder {other} is not writable.*{NAME} needs building"):
        build(NAME, raw, tmp_path / "other", client=dask_client)
    assert not (tmp_path / "other" / NAME).exists()


def _mmu(*args, env=None):
    return subprocess.run([sys.executable, "-m", "mmu", *args], capture_output=True, text=True, timeout=300,
                          env=env)


def _unwritable_folder(tmp_path: Path) -> Path | None:
    """A folder this process cannot write into: a read-only one where chmod works, else (root) a
    new folder under sysfs, which nobody may create; None where neither is available."""
    ro = tmp_path / "ro"
    ro.mkdir()
    _read_only(ro)
    if not os.access(ro, os.W_OK):
        return ro
    _writable(ro)
    sysfs = Path("/sys/mmu-test-hub")
    try:
        sysfs.mkdir()
    except OSError:
        return sysfs
    sysfs.rmdir()
    return None


def test_cli_unwritable_hub_is_one_line_and_noop_exits_quietly(with_overlay, tmp_path):
    raw = make_dense_raw(tmp_path / "raw", files=2, per_file=4)
    hub = tmp_path / "hub"
    args = ["build", NAME, "--raw", str(raw), "--hub", str(hub), "--workers", "1", "--no-progress"]
    first = _mmu(*args)
    assert first.returncode == 0, first.stderr
    again = _mmu(*args)  # a no-op: no traceback from the Dask teardown
    assert again.returncode == 0, again.stderr
    assert again.stderr.strip().splitlines() == [line for line in again.stderr.strip().splitlines()
                                                 if "up to date" in line], again.stderr
    folder = _unwritable_folder(tmp_path)
    try:
        if folder is None:
            pytest.skip("no folder this user cannot write")
        failed = _mmu(*args[:5], str(folder), *args[6:])
        assert failed.returncode == 1
        lines = failed.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and str(folder) in lines[0], failed.stderr
        assert "writable" in lines[0] or "cannot be created" in lines[0]
    finally:
        if folder is not None and folder.exists():
            _writable(folder)


# ---------------------------------------------------------------------------------------------
# worker faults at scale


def test_a_worker_killed_while_reading_an_input_is_reported_with_that_input(dense, dask_client, tmp_path,
                                                                           monkeypatch):
    """A worker that dies (out of memory: the nanny kills it, Dask gives up after its retries and
    raises KilledWorker) is reported with the input its task was reading, and nothing is recorded
    for that input, so the rerun reads it again."""
    from types import SimpleNamespace

    from distributed.scheduler import KilledWorker

    import mmu.engine.build as engine

    tmp, raw, ref = dense
    real = engine.standardize_input

    def dies_on_one_input(builder_ref, options, item, out_dir, split):
        if item.key == "spectra-1.fits":
            raise KilledWorker(f"standardize_input-{item.key}", SimpleNamespace(address="tcp://127.0.0.1:1"), 3)
        return real(builder_ref, options, item, out_dir, split)

    monkeypatch.setattr(engine, "standardize_input", dies_on_one_input)
    hub = tmp_path / "hub"
    with pytest.raises(BuildError) as info:
        build(NAME, raw, hub, client=dask_client)
    message = str(info.value)
    assert "input spectra-1.fits" in message and str(raw / "spectra-1.fits") in message
    assert "worker reading it died" in message and "memory" in message
    assert len(message.splitlines()) == 1
    import json
    done = {json.loads(p.read_text())["key"] for p in hub.glob(".mmu-staging/*/standardized/*.json")}
    assert done == {"spectra-0.fits", "spectra-2.fits"}  # the others finished and are kept
    monkeypatch.setattr(engine, "standardize_input", real)
    again = build(NAME, raw, hub, client=dask_client)
    assert again.manifest.content_revision == ref.manifest.content_revision


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # a scheduler and two worker processes on a loaded machine: about a minute
def test_kill_9_of_a_dask_worker_mid_build_loses_and_duplicates_nothing(with_overlay, tmp_path, dask_client):
    import signal
    import time

    from test_build import SLOW_OVERLAY, make_raw

    raw = make_raw(tmp_path / "raw")
    reference = build(NAME, raw, tmp_path / "ref", client=dask_client).manifest
    overlay = tmp_path / "slow.yaml"
    overlay.write_text(SLOW_OVERLAY)
    env = {**os.environ, "MMU_CATALOG": str(overlay)}
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    quiet = dict(env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs = [subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                               "--port", str(port), "--no-dashboard"], **quiet)]
    try:
        for _ in range(2):
            procs.append(subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", address,
                                           "--nthreads", "1", "--nworkers", "1", "--no-dashboard"], **quiet))
        from dask.distributed import Client
        with Client(address, timeout="60s") as c:
            c.wait_for_workers(2, timeout=120)
            worker_pids = list(c.run(os.getpid).values())
        hub = tmp_path / "hub"
        args = [sys.executable, "-m", "mmu", "build", "testsurvey_slow_v1", "--raw", str(raw), "--hub", str(hub),
                "--scheduler", address, "--no-progress"]
        proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.time() + 180
        while time.time() < deadline and proc.poll() is None:
            if list(hub.glob(".mmu-staging/*/standardized/*.json")):  # standardize has begun
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the build finished before a worker could be killed"
        os.kill(worker_pids[0], signal.SIGKILL)  # the worker process running tasks, not its nanny
        out, _ = proc.communicate(timeout=300)
        if proc.returncode != 0:  # the cluster may give up on the killed worker's task: one line, then a rerun
            assert "error:" in out and "Traceback" not in out, out
            rerun = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
            assert rerun.returncode == 0, rerun.stdout + rerun.stderr
        m = read_manifest(hub, "testsurvey_slow_v1")
        assert m.content_revision == reference.content_revision
        assert m.rows == reference.rows
        ids = _ids_of(hub / "testsurvey_slow_v1")
        assert len(ids) == len(set(ids)) == reference.rows.total
        rerun = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
        assert rerun.returncode == 0 and "up to date" in rerun.stderr, rerun.stderr
    finally:
        for p in procs:
            os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            p.wait(timeout=60)


def _ids_of(path: Path) -> list[str]:
    return pq.read_table(path / path.name / "dataset", columns=["object_id"]).column("object_id").to_pylist()


def test_small_builds_run_on_threads_and_asked_for_workers_on_processes():
    from mmu.engine.cluster import local_workers

    assert local_workers(50 * 2**20, None) is False  # a small build: threads of the command's process
    assert local_workers(3 * 2**30, None) is True  # a big one: worker processes
    assert local_workers(10, 1) is True  # --workers K always means K worker processes


_READS: list[str] = []
_WRITES: list[int] = []


def _recording_read(self, item):
    _READS.append(item.key)
    return _ORIGINAL_READ(self, item)


def _recording_write_partition(number, order, pixel, rows, *args, **kwargs):
    from mmu.engine import hats_writer

    _WRITES.append(rows)
    return hats_writer._write_partition_unpatched(number, order, pixel, rows, *args, **kwargs)


def test_big_inputs_and_big_partitions_run_first(test_overlay, tmp_path, monkeypatch):
    """Stage 1 reads the inputs largest first and stage 2 writes the partitions with the most rows
    first, so that a stage ends on small tasks on every worker instead of one worker reading the
    biggest input while the others wait. One worker thread runs tasks in Dask's priority order;
    the build's rows and revision do not depend on it (the same as the input-order build)."""
    global _ORIGINAL_READ
    from dask.distributed import Client, LocalCluster

    from mmu.engine import hats_writer
    from mmu_testbuilder import TestSpectra

    monkeypatch.setenv("MMU_CATALOG", str(test_overlay))
    rows = [3, 30, 8, 20, 1]  # spectra-0 .. spectra-4: files of growing size in this order: 4, 0, 2, 3, 1
    for f, n in enumerate(rows):  # each file in its own part of the sky: one partition per file
        ra = 20.0 + 60.0 * f + np.linspace(0, 0.05, n)
        write_spectra_file(tmp_path / "raw" / f"spectra-{f}.fits", np.arange(100 * f, 100 * f + n), ra,
                           np.full(n, 5.0), seed=f)
    _ORIGINAL_READ = TestSpectra.read
    monkeypatch.setattr(TestSpectra, "read", _recording_read)
    monkeypatch.setattr(hats_writer, "_write_partition_unpatched", hats_writer.write_partition, raising=False)
    monkeypatch.setattr(hats_writer, "write_partition", _recording_write_partition)
    _READS.clear()
    _WRITES.clear()
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None,
                      silence_logs=40) as cluster, Client(cluster) as client:
        result = build(NAME, tmp_path / "raw", tmp_path / "hub", client=client)
    sizes = {f"spectra-{f}.fits": (tmp_path / "raw" / f"spectra-{f}.fits").stat().st_size for f in range(5)}
    assert _READS == sorted(sizes, key=lambda k: -sizes[k]) == [f"spectra-{f}.fits" for f in (1, 3, 2, 0, 4)]
    assert _WRITES == sorted(rows, reverse=True)
    assert result.manifest.rows.total == sum(rows)
    assert sorted(_ids(result)) == sorted(f"{100 * f + i}" for f, n in enumerate(rows) for i in range(n))


def test_an_up_to_date_build_starts_no_cluster(dense, dask_client, tmp_path, monkeypatch):
    """With every raw file's checksum cached, the no-op check needs no Dask cluster at all (and
    so prints nothing of one); leftovers of a killed build are still removed."""
    import mmu.engine.build as engine

    tmp, raw, ref = dense
    hub = tmp_path / "hub"
    build(NAME, raw, hub, client=dask_client)
    leftover = hub / ".mmu-staging" / f"{NAME}-0123456789abcdef"
    leftover.mkdir()

    def no_cluster(*args, **kwargs):
        raise AssertionError("an up-to-date build started a Dask cluster")

    monkeypatch.setattr(engine, "dask_client", no_cluster)
    again = build(NAME, raw, hub)
    assert again.up_to_date and again.manifest.build_key == ref.manifest.build_key
    assert not leftover.exists()
    # a changed raw file is not a no-op: that needs the cluster
    (raw / "spectra-2.fits").touch()
    with pytest.raises(AssertionError, match="started a Dask cluster"):
        build(NAME, raw, hub)


OOM_OVERLAY = """\
datasets:
  - name: testsurvey_oom_v1
    survey: testsurvey
    release: v1
    description: the engine test dataset; reading spectra-1.fits needs more memory than a worker has
    modalities: [spectrum]
    builder: "mmu_testbuilder:TestSpectra"
    builder_config: {hog_mb: 1500, hog_input: spectra-1.fits}
    raw: {archive: local, pattern: "spectra-*.fits", docs: tests/mmu_testbuilder.py}
    license: {id: MIT, url: "https://opensource.org/license/mit"}
    citation: ["@misc{mmutest, title={engine test dataset}}"]
    homepage: local
"""


@pytest.mark.slow  # a scheduler and a worker process that is really killed for memory: about a minute
def test_a_worker_out_of_memory_is_reported_with_the_input_it_was_reading(with_overlay, tmp_path):
    """A real out-of-memory kill: `dask worker --memory-limit 700MB`, whose nanny terminates it when
    reading one input takes 1.5 GiB. The build fails with one line naming that input and memory,
    the other inputs are finished and kept, and nothing is recorded for the input that failed."""
    import json
    import signal
    import time

    from test_build import make_raw

    raw = make_raw(tmp_path / "raw")
    overlay = tmp_path / "oom.yaml"
    overlay.write_text(OOM_OVERLAY)
    env = {**os.environ, "MMU_CATALOG": str(overlay)}
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    # give up on the first death instead of retrying the input on restarted workers three more times
    sched_env = {**env, "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "0"}
    quiet = dict(start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs = [subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                               "--port", str(port), "--no-dashboard"], env=sched_env, **quiet)]
    try:
        procs.append(subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", address,
                                       "--nthreads", "1", "--nworkers", "1", "--memory-limit", "700MB",
                                       "--no-dashboard"], env=env, **quiet))
        from dask.distributed import Client
        with Client(address, timeout="60s") as c:
            c.wait_for_workers(1, timeout=120)
        hub = tmp_path / "hub"
        t0 = time.time()
        out = subprocess.run([sys.executable, "-m", "mmu", "build", "testsurvey_oom_v1", "--raw", str(raw),
                              "--hub", str(hub), "--scheduler", address, "--no-progress"],
                             env=env, capture_output=True, text=True, timeout=400)
        assert out.returncode != 0, out.stdout + out.stderr
        errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "Traceback" not in out.stderr, out.stderr
        assert "worker reading it died" in errors[0], errors[0]
        assert "out of memory" in errors[0] and "--memory-limit" in errors[0], errors[0]
        # the input being read is named; an input queued on the same worker when it died may be
        # charged too (Dask counts every task the dead worker held), and is then named as well
        named = [line for line in out.stderr.splitlines() if "could not be standardized" in line]
        assert any("input field1/spectra-1.fits (" in line for line in named), out.stderr
        done = {json.loads(p.read_text())["key"] for p in hub.glob(".mmu-staging/*/standardized/*.json")}
        assert "field1/spectra-1.fits" not in done  # nothing recorded: a rerun reads it again
        assert time.time() - t0 < 400
    finally:
        for p in procs:
            os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            p.wait(timeout=60)


def test_catalog_partition_settings_are_valid_and_image_margins_hold_host_association():
    """Every catalog entry's `partition:` block is a valid `PartitionSettings`; the 32" margin
    cache of the big-row surveys (images, DESI spectra) still holds the demo's host association
    at 10" (the first member of a host chain needs a margin of at least twice the radius:
    mmu/pairing/crossmatch.py)."""
    from mmu.registry.catalog import load_catalog

    os.environ.pop("MMU_CATALOG", None)
    catalog = load_catalog()
    margins = {}
    for d in catalog.datasets:
        s = PartitionSettings.from_overrides(d.partition)
        margins[d.name] = (s.margin_threshold_arcsec, s.margin_order)
    assert margins["legacysurvey_dr10_south"] == (32, 12) and margins["hsc_pdr3_wide"] == (32, 12)
    assert margins["desi_dr1"] == (32, 12)  # its spectra are ~125 kB rows: the same reason
    assert margins["sim_truth_v1"] == (128.0, 10)  # catalogs keep the default
    from mmu.engine.partition import _mindist_arcsec
    assert _mindist_arcsec(12) >= 2 * 10


ENTRY_MARGIN_OVERLAY = """\
datasets:
  - name: testsurvey_v1
    survey: testsurvey
    release: v1
    description: the engine test dataset with its own margin setting
    modalities: [spectrum]
    builder: "mmu_testbuilder:TestSpectra"
    builder_config: {chunk_rows: 7}
    partition: {margin_threshold_arcsec: 16}
    raw: {archive: local, pattern: "spectra-*.fits", docs: tests/mmu_testbuilder.py}
    license: {id: MIT, url: "https://opensource.org/license/mit"}
    citation: ["@misc{mmutest, title={engine test dataset}}"]
    homepage: local
"""


def test_a_catalog_entry_s_partition_settings_are_its_build_defaults(dense, dask_client, tmp_path, monkeypatch):
    """`partition:` in a catalog entry sets that dataset's defaults: the build records the entry's
    margin; the same data, same content revision, another build key. `mmu build --set` goes over
    the entry's settings instead of replacing them."""
    from mmu.registry.catalog import load_catalog

    tmp, raw, ref = dense
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(ENTRY_MARGIN_OVERLAY)
    monkeypatch.setenv("MMU_CATALOG", str(overlay))
    result = build(NAME, raw, tmp_path / "hub", client=dask_client, catalog=load_catalog())
    p = result.manifest.partition
    assert p.margin_order == 13 and 16 <= p.margin_threshold_arcsec < 17
    assert ref.manifest.partition.margin_order == 10
    assert result.manifest.content_revision == ref.manifest.content_revision
    assert result.manifest.build_key != ref.manifest.build_key

    import mmu.engine.build as engine
    from mmu.cli import main

    seen = {}
    monkeypatch.setattr(engine, "build", lambda name, raw, hub, **kw: seen.update(kw) or True)
    assert main(["build", NAME, "--raw", str(raw), "--hub", str(tmp_path / "h2"), "--set", "compression_level=5"]) == 0
    s = seen["settings"]
    assert (s.margin_threshold_arcsec, s.compression_level) == (16, 5)

    bad = tmp_path / "bad.yaml"
    bad.write_text(ENTRY_MARGIN_OVERLAY.replace("margin_threshold_arcsec: 16", "margin_arcsec: 16"))
    monkeypatch.setenv("MMU_CATALOG", str(bad))
    with pytest.raises(BuildError, match=r"catalog entry testsurvey_v1: partition .*unknown setting\(s\) margin_arc"):
        build(NAME, raw, tmp_path / "h3", client=dask_client, catalog=load_catalog())


def test_private_worker_processes_get_a_fixed_mmap_threshold(monkeypatch):
    """Dask's nanny fixes glibc's trim threshold, which also stops glibc from raising its mmap
    threshold: every array of 128 KiB or more became a fresh, page-faulted mmap (a third of a
    DESI build's worker CPU was system time). mmu's private worker processes start with a fixed
    mmap threshold as well, and keep Dask's trim threshold; a threshold the user set wins."""
    from mmu.engine.cluster import WORKER_MMAP_THRESHOLD, close_client, make_client, worker_environ

    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    client, cluster = make_client(workers=1)
    try:
        env = client.run(lambda: (os.environ.get("MALLOC_MMAP_THRESHOLD_"), os.environ.get("MALLOC_TRIM_THRESHOLD_")))
    finally:
        close_client(client, cluster)
    assert list(env.values()) == [(str(WORKER_MMAP_THRESHOLD), "65536")]
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "1048576")  # inherited by the workers as it is
    assert "MALLOC_MMAP_THRESHOLD_" not in worker_environ()
