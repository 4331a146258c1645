"""The one-pass HATS writer (mmu/engine/hats_writer.py) against hats-import on the same files:
the same partitions, the same rows in the same order, the same margin rows, readable by hats
(strict validation) and lsdb."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mmu.engine.build import PartitionSettings
from mmu.engine.hats_writer import align
from mmu.model.splits import SplitDefinition


def _clumps(rng, n, centres, spread):
    """`n` positions around each (ra, dec) centre, Gaussian of `spread` degrees."""
    ra, dec = [], []
    for ra0, dec0 in centres:
        d = np.clip(dec0 + rng.normal(0, spread, n), -89.999, 89.999)
        r = (ra0 + rng.normal(0, spread, n) / np.cos(np.radians(np.clip(d, -89, 89)))) % 360
        ra.append(r)
        dec.append(d)
    return np.concatenate(ra), np.concatenate(dec)


def _std_files(tmp_path, variable: bool, n_files=6, seed=0):
    """Standardized-like files: clumps across pixel borders, over RA = 0 and at the north pole;
    each file mixes clumps, written in row groups of 37 rows, rows in random order."""
    rng = np.random.default_rng(seed)
    centres = [(0.0, 0.0), (45.0, 41.8), (359.9, -30.0), (180.0, 89.9), (90.0, 19.47), (270.0, -60.0)]
    ra, dec = _clumps(rng, 300, centres, 0.6)
    order = rng.permutation(len(ra))
    ra, dec = ra[order], dec[order]
    ids = np.array([f"obj-{i:05d}" for i in range(len(ra))])
    files = []
    for k, sel in enumerate(np.array_split(np.arange(len(ra)), n_files)):
        cols = {"object_id": pa.array(ids[sel]), "ra": pa.array(ra[sel]), "dec": pa.array(dec[sel]),
                "flux": pa.array([rng.normal(size=8).astype(np.float32) for _ in sel],
                                 pa.list_(pa.float32(), 8))}
        if variable:  # a light curve of varying length
            cols["mag"] = pa.array([rng.normal(size=rng.integers(1, 60)).astype(np.float32) for _ in sel],
                                   pa.list_(pa.float32()))
        path = tmp_path / f"in{k}.parquet"
        pq.write_table(pa.table(cols), path, row_group_size=37)
        files.append(str(path))
    return files, len(ra)


def _read(dataset_dir) -> dict:
    """(order, pixel) -> table, for every partition file under a catalog's dataset/."""
    out = {}
    for f in sorted(dataset_dir.glob("Norder=*/Dir=*/Npix=*.parquet")):
        order = int(f.parent.parent.name.split("=")[1])
        out[(order, int(f.stem.split("=")[1]))] = pq.read_table(f)
    return out


def _both(tmp_path, client, files, rows, **settings):
    from mmu.engine.partition import partition

    split = SplitDefinition(order=2)
    got = {}
    for writer in ("mmu", "hats-import"):
        s = PartitionSettings(writer=writer, **settings)
        got[writer] = partition("cat", files, tmp_path / writer, client, split, s, rows)
    return got


@pytest.mark.parametrize("variable", [False, True], ids=["fixed-rows", "variable-rows"])
def test_same_catalog_and_margin_as_hats_import(tmp_path, dask_client, variable):
    import hats
    import lsdb
    from hats.io.validation import is_valid_catalog

    files, rows = _std_files(tmp_path, variable)
    # a small threshold so that the clumps split into partitions of several orders
    got = _both(tmp_path, dask_client, files, rows, partition_bytes=60 * (200 if variable else 80),
                highest_order=7, margin_threshold_arcsec=600)
    # what build.json records: the same orders and threshold (with rows of varying size, hats-import
    # sizes the fixed-width columns from the first file's mean, we size every row: within 0.1%)
    a_bytes, b_bytes = got["mmu"].pop("partition_bytes"), got["hats-import"].pop("partition_bytes")
    assert got["mmu"] == got["hats-import"] and a_bytes == pytest.approx(b_bytes, rel=1e-3)
    assert variable or a_bytes == b_bytes
    new, ref = tmp_path / "mmu" / "cat", tmp_path / "hats-import" / "cat"
    a, b = _read(new / "cat" / "dataset"), _read(ref / "cat" / "dataset")
    assert sorted(a) == sorted(b) and len({o for o, _ in a}) >= 3  # partitions of 3+ orders
    for key in b:  # the same rows, in the same order (by _healpix_29), with the same values
        assert a[key].schema.remove_metadata().equals(b[key].schema.remove_metadata()), key
        assert a[key].equals(b[key].cast(a[key].schema)), key
        assert pq.ParquetFile(new / "cat" / "dataset" / f"Norder={key[0]}" / f"Dir={key[1] // 10000 * 10000}"
                              / f"Npix={key[1]}.parquet").metadata.row_group(0).sorting_columns
    margin = got["mmu"]["name"]
    ma = _read(new / margin / "dataset")
    mb = _read(ref / margin / "dataset")
    assert sorted(ma) == sorted(mb) and len(ma) > 5
    negative = set(ma) - set(a)
    assert negative  # margins of empty-sky pixels (the negative tree) around the clumps
    for key in mb:  # the same margin rows (hats-import orders them by source partition)
        sa = ma[key].sort_by("object_id")
        sb = mb[key].sort_by("object_id")
        assert sa.equals(sb.cast(sa.schema)), key
    for path in (new / "cat", new / margin):
        assert is_valid_catalog(path, strict=True)
    cat = lsdb.open_catalog(new)
    assert cat.margin is not None and len(cat.compute()) == rows
    assert cat.margin.hc_structure.catalog_info.margin_threshold == pytest.approx(got["mmu"]["threshold"])
    props = hats.read_hats(new / "cat").catalog_info
    assert props.total_rows == rows and "mmu" in props.hats_builder


def test_too_dense_pixel_raises_the_threshold_like_hats_import(tmp_path, dask_client):
    files, rows = _std_files(tmp_path, False, n_files=3, seed=1)
    got = _both(tmp_path, dask_client, files, rows, partition_bytes=80 * 3, highest_order=5,
                margin_threshold_arcsec=1200)
    assert got["mmu"] == got["hats-import"] and got["mmu"]["partition_bytes"] > 80 * 3
    a = _read(tmp_path / "mmu" / "cat" / "cat" / "dataset")
    b = _read(tmp_path / "hats-import" / "cat" / "cat" / "dataset")
    assert sorted(a) == sorted(b)


@pytest.mark.parametrize("seed", range(6))
def test_align_equals_hats_generate_alignment(seed):
    """The sparse alignment against hats' own, on dense histograms small enough to build."""
    from hats.pixel_math.partition_stats import generate_alignment

    rng = np.random.default_rng(seed)
    highest, lowest = 5, int(rng.integers(0, 3))
    hist = np.zeros(12 * 4**highest, np.int64)
    hot = rng.choice(len(hist), 300, replace=False)
    hist[hot] = rng.integers(1, 40, len(hot))
    hist[rng.integers(0, len(hist))] += 200  # one dense pixel
    threshold = int(rng.integers(240, 900))
    ref = generate_alignment(hist, highest_order=highest, lowest_order=lowest, threshold=threshold,
                             drop_empty_siblings=True, use_lower_order=True)
    want = sorted({(int(o), int(p), int(n)) for o, p, n in (x for x in ref if x is not None)})
    pix = np.flatnonzero(hist)
    got, _ = align(pix, hist[pix], hist[pix].astype(float), highest, lowest, threshold)
    assert got == want


def test_a_retried_margin_task_writes_the_same_file(tmp_path):
    """Dask reruns a task whose result was lost with its worker: the margin task must find its
    shards again (it used to delete them when done, and the rerun failed)."""
    from mmu.engine.hats_writer import write_margin

    shard_dir, out = tmp_path / "shards", tmp_path / "margin"
    (shard_dir / "7").mkdir(parents=True)
    rng = np.random.default_rng(3)
    for k in (2, 5):
        h = np.sort(rng.integers(0, 2**40, 30))
        pq.write_table(pa.table({"_healpix_29": h, "object_id": [f"s{k}-{i}" for i in range(30)]}),
                       shard_dir / "7" / f"{k}.parquet")
    args = (7, 3, 11, 60, str(shard_dir), str(out), {"compression": "zstd"}, 16)
    assert write_margin(*args) == 60
    f = out / "dataset" / "Norder=3" / "Dir=0" / "Npix=11.parquet"
    first = pq.read_table(f)
    assert write_margin(*args) == 60  # the rerun
    again = pq.read_table(f)
    assert again.equals(first) and np.all(np.diff(again.column("_healpix_29").to_numpy()) >= 0)
    assert pq.ParquetFile(f).metadata.num_row_groups == 4  # 16-row groups, as the catalog's
    assert not list(out.rglob("*.tmp"))


def test_route_gives_runs_of_row_groups(tmp_path):
    """Per partition, the row groups holding its rows as [first, stop) runs (few however many rows)."""
    # rows at the centres of the order-1 pixels 0..3, in 5-row blocks, row groups of 10 rows
    import cdshealpix.nested as cds

    from mmu.engine.hats_writer import PixelRanges, route

    lon, lat = cds.healpix_to_lonlat(np.arange(4, dtype=np.uint64), 1)
    centres = {p: (lon.deg[p], lat.deg[p]) for p in range(4)}
    layout = [0, 0, 1, 1, 2, 2, 3, 3, 1, 3]  # the pixel of each 5-row block
    ra = np.concatenate([np.full(5, centres[p][0]) for p in layout])
    dec = np.concatenate([np.full(5, centres[p][1]) for p in layout])
    path = tmp_path / "f.parquet"
    pq.write_table(pa.table({"ra": ra, "dec": dec}), path, row_group_size=10)
    got = {p: (n, runs) for p, n, runs in route(str(path), PixelRanges([(1, p) for p in range(4)], 1))}
    assert got == {0: (10, [(0, 1)]), 1: (15, [(1, 2), (4, 5)]), 2: (10, [(2, 3)]), 3: (15, [(3, 5)])}
