"""Helpers shared by the builder tests (no tests here): raw trees built from the shared mock
universe plus hand-written bad files, reading a built hub back, and the two-client open check."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from mmu.engine.builder import Rejection


def link_tree(sim_raw: Path, dst: Path, *subdirs: str) -> Path:
    """A raw root holding hard links to `subdirs` of the mock universe (and its mmu-sim.json)."""
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copy(sim_raw / "mmu-sim.json", dst / "mmu-sim.json")
    for sub in subdirs:
        for src in (sim_raw / sub).rglob("*"):
            if src.is_file():
                target = dst / src.relative_to(sim_raw)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.link(src, target)
    return dst


def read_all(builder, item):
    """(concatenated tables or None, rejections) of one raw input."""
    tables, rejections = [], []
    for part in builder.read(item):
        (rejections if isinstance(part, Rejection) else tables).append(part)
    return (pa.concat_tables(tables) if tables else None), rejections


def hub_table(path: Path) -> pa.Table:
    """Every row of a built dataset (margin cache excluded), read with plain pyarrow."""
    name = Path(path).name
    files = sorted((Path(path) / name / "dataset").rglob("Npix=*.parquet"))
    return pa.concat_tables([pq.read_table(f) for f in files])


def assert_opens(path: Path, rows: int):
    """The dataset opens with `datasets.load_dataset` and `lsdb.open_catalog`, all rows present."""
    import datasets
    import lsdb

    ds = datasets.load_dataset(str(path))
    assert sum(len(s) for s in ds.values()) == rows
    assert len(lsdb.open_catalog(str(path)).compute()) == rows
    assert hub_table(path).num_rows == rows
    assert json.loads((Path(path) / "build.json").read_text())["rows"]["total"] == rows
