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
    from mmu.catalog import load_catalog
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
