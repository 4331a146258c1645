"""Shared fixtures: a Dask client for in-process builds and the engine test dataset overlay."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

TEST_OVERLAY = """\
datasets:
  - name: testsurvey_v1
    survey: testsurvey
    release: v1
    description: engine test dataset (tests/mmu_testbuilder.py)
    modalities: [spectrum]
    builder: "mmu_testbuilder:TestSpectra"
    builder_config: {chunk_rows: 7}
    raw: {archive: local, pattern: "spectra-*.fits", docs: tests/mmu_testbuilder.py}
    license: {id: MIT, url: "https://opensource.org/license/mit"}
    citation: ["@misc{mmutest, title={engine test dataset}}"]
    homepage: local
  - name: othersurvey_v1
    survey: othersurvey
    release: v1
    description: a second engine test dataset, for cross-matching
    modalities: [spectrum]
    builder: "mmu_testbuilder:TestSpectra"
    builder_config: {survey: othersurvey, glob: "other-*.fits"}
    raw: {archive: local, pattern: "other-*.fits", docs: tests/mmu_testbuilder.py}
    license: {id: CC-BY-4.0, url: "https://creativecommons.org/licenses/by/4.0/"}
    citation: ["@misc{mmuother, title={second engine test dataset}}"]
    homepage: local
  - name: galsurvey_v1
    survey: galsurvey
    release: v1
    description: engine test galaxies with Tractor-style shapes (host association)
    modalities: [spectrum]
    builder: "mmu_testbuilder:TestSpectra"
    builder_config: {survey: galsurvey, glob: "gal-*.fits", with_shape: true}
    raw: {archive: local, pattern: "gal-*.fits", docs: tests/mmu_testbuilder.py}
    license: {id: MIT, url: "https://opensource.org/license/mit"}
    citation: ["@misc{mmugal, title={test galaxies}}"]
    homepage: local
"""


@pytest.fixture(scope="session")
def test_overlay(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("catalog") / "overlay.yaml"
    path.write_text(TEST_OVERLAY)
    return path


@pytest.fixture
def with_overlay(test_overlay, monkeypatch):
    """MMU_CATALOG points at the test overlay (for in-process and subprocess builds)."""
    monkeypatch.setenv("MMU_CATALOG", str(test_overlay))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(TESTS), str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    from mmu.registry.catalog import load_catalog
    return load_catalog()


@pytest.fixture(scope="session")
def dask_client():
    """One in-process Dask client shared by the tests that build (fast to start)."""
    from dask.distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                           dashboard_address=None, silence_logs=40)
    client = Client(cluster)
    yield client
    client.close()
    cluster.close()


@pytest.fixture(scope="module")
def process_client():
    """A Dask client whose one worker is a separate process (one thread), for the tests that
    measure what the driver process alone allocates (tests/test_*_driver.py)."""
    from dask.distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        yield client


# --- survey builders (tests/test_builder_*.py) -------------------------------------------------
SIM_ARGS = dict(galaxies=250, transients=40, seed=7, footprint="fields:2")


@pytest.fixture(scope="session")
def sim_raw(tmp_path_factory) -> Path:
    """One small mock universe (`mmu.sim.simulate`, ~15 s) shared by every builder test."""
    from mmu.sim import simulate

    out = tmp_path_factory.mktemp("sim") / "raw"
    simulate(out, progress=False, **SIM_ARGS)
    return out


@pytest.fixture
def torch_one_thread():
    """torch on one CPU thread for the test (float sums in one order; no oversubscription)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
