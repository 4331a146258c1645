"""The build engine on a test builder: hub format, splits, rejections, no-op reruns, resumption,
and the same content from a real Dask distributed cluster."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from astropy.io import fits

from mmu.engine.build import BuildError, PartitionSettings, build
from mmu.hub.layout import NotBuilt, read_manifest
from mmu.hub.manifest import MANIFEST_FORMAT_VERSION, BuildManifest, load_manifest_file
from mmu.model.splits import SplitDefinition
from mmu_testbuilder import NPIX, write_spectra_file

FIELDS = [(10.0, 5.0), (40.0, -20.0), (200.0, 30.0), (300.0, 60.0), (120.0, -70.0), (359.5, 0.5)]


def make_raw(root: Path, per_field: int = 12, bad: bool = False) -> Path:
    """Spectra files in several fields; `bad` adds one corrupt file, one missing a column, and
    bad rows (NaN ra, unmasked NaN flux, all-zero ivar, a duplicated id)."""
    rng = np.random.default_rng(1)
    k = 0
    for f, (ra0, dec0) in enumerate(FIELDS):
        ra = (ra0 + rng.normal(0, 0.5, per_field)) % 360
        dec = np.clip(dec0 + rng.normal(0, 0.5, per_field), -89, 89)
        write_spectra_file(root / f"field{f}" / f"spectra-{f}.fits", np.arange(k, k + per_field), ra, dec, seed=f)
        k += per_field
    if bad:
        (root / "field0" / "spectra-corrupt.fits").write_bytes(b"SIMPLE  =                    T" + b"\0" * 100)
        write_spectra_file(root / "field1" / "spectra-nomag.fits", [900, 901], [41.0, 41.1], [-20.0, -20.1],
                           drop_column="MAG")
        ids = [1000, 1001, 1002, 1003, 1003]
        ra = np.array([200.1, np.nan, 200.2, 200.3, 200.4])
        write_spectra_file(root / "field2" / "spectra-badrows.fits", ids, ra, [30.0] * 5, nan_flux_row=2,
                           zero_ivar_row=0)
    return root


@pytest.fixture(scope="module")
def built(tmp_path_factory, test_overlay, dask_client):
    os.environ["MMU_CATALOG"] = str(test_overlay)
    tmp = tmp_path_factory.mktemp("build")
    raw = make_raw(tmp / "raw", bad=True)
    (raw / "mmu-sim.json").write_text(json.dumps({"mock": True, "seed": 42, "simulator_version": "t"}))
    result = build("testsurvey_v1", raw, tmp / "hub", client=dask_client)
    yield tmp, raw, result
    os.environ.pop("MMU_CATALOG", None)


@contextlib.contextmanager
def mmu_log():
    """The messages logged under `mmu` inside the block."""
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    logging.getLogger("mmu").addHandler(handler)
    try:
        yield lines
    finally:
        logging.getLogger("mmu").removeHandler(handler)


def test_manifest_counts_inputs_rejections_and_splits(built):
    tmp, raw, result = built
    m = result.manifest
    good = 12 * len(FIELDS) + 1  # field files, plus the one good row of the bad-rows file
    assert m.rows.total == good
    assert m.rows.train + m.rows.val + m.rows.test == good
    assert len(m.inputs) == len(FIELDS) + 3
    assert all(len(f.sha256) == 64 for i in m.inputs for f in i.files)
    reasons = {r.input: r.reason for r in m.rejected_inputs}
    assert set(reasons) == {"field0/spectra-corrupt.fits", "field1/spectra-nomag.fits"}
    assert "MAG" in reasons["field1/spectra-nomag.fits"]
    rows = {(r.row, r.object_id): r for r in m.rejected_rows}
    assert set(rows) == {(0, "1000"), (1, "1001"), (2, "1002"), (4, "1003")}
    assert "ivar" in rows[(0, "1000")].reason
    assert rows[(1, "1001")].column == "ra"
    assert "flux" in rows[(2, "1002")].column
    assert "duplicate" in rows[(4, "1003")].reason
    assert m.mock is True and m.mock_seed == 42
    assert m.split.hash == SplitDefinition().hash
    assert m.format_version == MANIFEST_FORMAT_VERSION


def test_build_json_is_written_and_read_in_one_shape(built):
    """build.json on disk is the typed manifest's JSON: the keys of the old untyped file plus
    `format_version`; reading it back gives the same model."""
    tmp, raw, result = built
    data = json.loads((result.path / "build.json").read_text())
    assert data["format_version"] == MANIFEST_FORMAT_VERSION
    assert "paired" not in data and "match" not in data  # optional keys absent, not null
    assert data["mock_seed"] == 42 and data["simulator_version"] == "t"
    on_disk = read_manifest(tmp / "hub", "testsurvey_v1")
    assert on_disk.to_json() == data
    assert "total" in result.manifest.timings_s and "total" not in data["timings_s"]


def test_a_hub_built_before_format_version_still_loads(built, tmp_path):
    """A build.json in the old shape (no `format_version`) reads as version 1, field for field."""
    tmp, raw, result = built
    old = json.loads((result.path / "build.json").read_text())
    del old["format_version"]
    (tmp_path / "old_v1").mkdir()
    (tmp_path / "old_v1" / "build.json").write_text(json.dumps(old))
    m = read_manifest(tmp_path, "old_v1")
    assert m.format_version == 1
    assert m.content_revision == result.manifest.content_revision
    assert m.rows == result.manifest.rows and m.data_files == result.manifest.data_files
    assert [r.object_id for r in m.rejected_rows] == [r.object_id for r in result.manifest.rejected_rows]
    assert m.source_datasets == ["testsurvey_v1"] and m.source_revisions == [m.content_revision]


def test_bad_manifests_are_clear_errors(built, tmp_path):
    tmp, raw, result = built
    data = json.loads((result.path / "build.json").read_text())
    path = tmp_path / "build.json"
    path.write_text(json.dumps({**data, "format_version": MANIFEST_FORMAT_VERSION + 1}))
    v = MANIFEST_FORMAT_VERSION
    with pytest.raises(ValueError, match=rf"format version {v + 1} is not one this mmu reads \(1\.\.{v}\); upgrade"):
        load_manifest_file(path)
    broken = {k: v for k, v in data.items() if k != "content_revision"}
    path.write_text(json.dumps({**broken, "rows": {"total": "many"}}))
    with pytest.raises(ValueError, match=r"build.json: not a valid build.json .*content_revision.*") as e:
        load_manifest_file(path)
    assert "rows.total" in str(e.value)
    path.write_text(json.dumps({**data, "surveyy": "typo"}))
    with pytest.raises(ValueError, match="surveyy"):
        load_manifest_file(path)
    with pytest.raises(NotBuilt, match="mmu build nope_v1"):
        read_manifest(tmp_path, "nope_v1")


def test_card_loads_with_datasets_typed_and_streaming(built):
    datasets = pytest.importorskip("datasets")
    from datasets import List

    tmp, raw, result = built
    path = str(result.path)
    card = (result.path / "README.md").read_text()
    assert "MOCK DATA" in card.split("---", 2)[2].strip().splitlines()[0]
    m = result.manifest
    for split in ("train", "val", "test"):
        if not getattr(m.rows, split):
            continue
        ds = datasets.load_dataset(path, split=split)
        assert ds.num_rows == getattr(m.rows, split)
        assert set(ds["split"]) == {split}
        assert ds.features["spectrum"]["flux"] == List(datasets.Value("float32"), length=NPIX)
        streamed = [r["object_id"] for r in datasets.load_dataset(path, split=split, streaming=True)]
        assert sorted(streamed) == sorted(ds["object_id"])


def test_values_carried_exactly(built):
    tmp, raw, result = built
    table = pq.read_table(result.path / "testsurvey_v1" / "dataset")
    with fits.open(raw / "field3" / "spectra-3.fits") as h:
        d = h["SPECTRA"].data
        wave = h["WAVE"].data
        row = d[4]
        oid = str(row["ID"])
    i = table.column("object_id").to_pylist().index(oid)
    spec = table.column("spectrum")[i].as_py()
    np.testing.assert_array_equal(np.asarray(spec["flux"], np.float32), row["FLUX"])
    np.testing.assert_array_equal(np.asarray(spec["lambda"], np.float32), wave)
    assert not any(spec["mask"])
    assert table.column("ra")[i].as_py() == row["RA"]
    assert table.schema.field("spectrum").type.field("lambda").metadata[b"unit"] == b"Angstrom"


def test_lsdb_opens_catalog_and_margin(built):
    lsdb = pytest.importorskip("lsdb")
    tmp, raw, result = built
    cat = lsdb.open_catalog(str(result.path))
    df = cat.compute()
    assert len(df) == result.manifest.rows.total
    assert cat.margin is not None
    assert result.manifest.partition.margin_threshold_arcsec >= 10


def test_split_is_a_function_of_position_and_partitions_never_mix(built):
    tmp, raw, result = built
    split = SplitDefinition()
    for s, files in result.manifest.data_files.items():
        for f in files:
            t = pq.read_table(result.path / f, columns=["ra", "dec", "split"])
            assert set(t.column("split").to_pylist()) == {s}
            expected = split.assign(t.column("ra").to_numpy(), t.column("dec").to_numpy())
            assert list(expected) == t.column("split").to_pylist()


def test_rerun_is_a_noop(built, dask_client):
    tmp, raw, result = built
    before = (result.path / "build.json").stat().st_mtime_ns
    with mmu_log() as lines:
        again = build("testsurvey_v1", raw, tmp / "hub", client=dask_client)
    assert again.up_to_date and again.manifest.build_key == result.manifest.build_key
    assert any("up to date" in line for line in lines)
    assert (result.path / "build.json").stat().st_mtime_ns == before


def test_strict_fails_on_rejections(built, dask_client, tmp_path):
    tmp, raw, result = built
    with pytest.raises(BuildError, match="--strict"):
        build("testsurvey_v1", raw, tmp_path / "hub", client=dask_client, strict=True)
    assert not (tmp_path / "hub" / "testsurvey_v1").exists()


def test_content_revision_ignores_layout_but_tracks_values(built, dask_client, tmp_path):
    tmp, raw, result = built
    small = PartitionSettings(partition_bytes=12_000)
    other = build("testsurvey_v1", raw, tmp_path / "hub", client=dask_client, settings=small)
    assert other.manifest.build_key != result.manifest.build_key
    assert other.manifest.content_revision == result.manifest.content_revision
    npart = lambda r: sum(len(v) for v in r.manifest.data_files.values())  # noqa: E731
    assert npart(other) > npart(result)
    # change one flux value in one input: a new revision
    raw2 = tmp_path / "raw2"
    make_raw(raw2)
    first = build("testsurvey_v1", raw2, tmp_path / "hub2", client=dask_client)
    with fits.open(raw2 / "field0" / "spectra-0.fits", mode="update") as h:
        h["SPECTRA"].data["FLUX"][3, 7] += 1.0
    second = build("testsurvey_v1", raw2, tmp_path / "hub2", client=dask_client)
    assert second.manifest.content_revision != first.manifest.content_revision
    assert second.manifest.rows == first.manifest.rows


def test_no_inputs_is_a_clear_error(with_overlay, tmp_path, dask_client):
    (tmp_path / "raw").mkdir()
    with pytest.raises(BuildError, match="no raw inputs"):
        build("testsurvey_v1", tmp_path / "raw", tmp_path / "hub", client=dask_client)


def _mmu(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "mmu", *args], start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def _revision(hub: Path, name: str) -> BuildManifest:
    return read_manifest(hub, name)


SLOW_OVERLAY = """\
datasets:
  - name: testsurvey_slow_v1
    survey: testsurvey
    release: v1
    description: the engine test dataset, read slowly so a test can kill the build mid-way
    modalities: [spectrum]
    builder: "mmu_testbuilder:TestSpectra"
    builder_config: {chunk_rows: 3, sleep_s: 0.4}
    raw: {archive: local, pattern: "spectra-*.fits", docs: tests/mmu_testbuilder.py}
    license: {id: MIT, url: "https://opensource.org/license/mit"}
    citation: ["@misc{mmutest, title={engine test dataset}}"]
    homepage: local
"""


@pytest.mark.parametrize("kill_stage", ["standardize", "partition"])
def test_killed_build_resumes_to_the_same_content(with_overlay, tmp_path, dask_client, kill_stage):
    raw = make_raw(tmp_path / "raw")
    reference = build("testsurvey_v1", raw, tmp_path / "ref", client=dask_client).manifest
    overlay = tmp_path / "slow.yaml"
    overlay.write_text(SLOW_OVERLAY)
    env = {**os.environ, "MMU_CATALOG": str(overlay)}
    hub = tmp_path / "hub"
    proc = _mmu("build", "testsurvey_slow_v1", "--raw", str(raw), "--hub", str(hub), "--workers", "1",
                "--no-progress", env=env)
    staging = hub / ".mmu-staging"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        markers = list(staging.glob("*/standardized/*.json"))
        if kill_stage == "standardize" and 1 <= len(markers) < len(FIELDS):
            break
        if kill_stage == "partition" and list(staging.glob("*/hats/*")):
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the build finished before the test could kill it"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (hub / "testsurvey_slow_v1" / "build.json").exists()
    done_before = {p.name for p in staging.glob("*/standardized/*.json")}
    resumed = _mmu("build", "testsurvey_slow_v1", "--raw", str(raw), "--hub", str(hub), "--workers", "1",
                   "--no-progress", env=env)
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out
    m = _revision(hub, "testsurvey_slow_v1")
    assert m.content_revision == reference.content_revision
    assert m.rows == reference.rows
    ids = pq.read_table(hub / "testsurvey_slow_v1" / "testsurvey_slow_v1" / "dataset",
                        columns=["object_id"]).column("object_id").to_pylist()
    assert len(ids) == len(set(ids)) == reference.rows.total
    if kill_stage == "standardize":
        assert done_before, "no input had finished when the build was killed"
    assert not list(staging.glob("testsurvey_slow_v1-*")), "staging left behind after success"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_distributed_cluster_gives_the_same_content(with_overlay, tmp_path, dask_client):
    raw = make_raw(tmp_path / "raw", per_field=6)
    local = build("testsurvey_v1", raw, tmp_path / "local", client=dask_client).manifest
    port = _free_port()
    env = dict(os.environ)
    bindir = Path(sys.executable).parent
    dask = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
    procs = [subprocess.Popen(dask + ["--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
                              env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)]
    try:
        address = f"tcp://127.0.0.1:{port}"
        for _ in range(2):
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1",
                 "--nworkers", "1", "--no-dashboard"], env=env, start_new_session=True,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        from dask.distributed import Client
        with Client(address, timeout="60s") as c:
            c.wait_for_workers(2, timeout=60)
            worker_pids = set(c.run(os.getpid).values())
        assert len(worker_pids) == 2 and os.getpid() not in worker_pids
        hub = tmp_path / "dist"
        run = subprocess.run([sys.executable, "-m", "mmu", "build", "testsurvey_v1", "--raw", str(raw),
                              "--hub", str(hub), "--scheduler", address, "--no-progress"],
                             env=env, capture_output=True, text=True, timeout=300, cwd=bindir)
        assert run.returncode == 0, run.stdout + run.stderr
        dist = _revision(hub, "testsurvey_v1")
        assert dist.content_revision == local.content_revision
        assert dist.rows == local.rows
    finally:
        for p in procs:
            os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            p.wait(timeout=30)


def test_progress_bars_follow_the_mmu_logs_switch(monkeypatch):
    """`Progress` draws through `mmu.logs.tqdm`, so `disable_progress_bars` (``-q``,
    ``--no-progress``) turns the engine's bars off."""
    import mmu.logs
    from mmu.engine.cluster import Progress

    was = mmu.logs.progress_bars_enabled()
    try:
        mmu.logs.disable_progress_bars()
        off = Progress(3, "test: standardize")
        assert off.bar.disable
        off.close()
    finally:
        (mmu.logs.enable_progress_bars if was else mmu.logs.disable_progress_bars)()
    calls = []

    class Bar:
        def __init__(self, **kw):
            calls.append(kw)
            self.n = 0

        def update(self, n):
            self.n += n

        def close(self):
            calls.append("closed")

    monkeypatch.setattr(mmu.logs, "tqdm", Bar)
    bar = Progress(4, "x: shards", unit="shard")
    bar.update()
    bar.update(2)
    bar.close()
    assert calls == [{"total": 4, "desc": "x: shards", "unit": "shard", "leave": True}, "closed"]
    assert bar.bar.n == 3
