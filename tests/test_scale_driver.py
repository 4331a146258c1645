"""The driver of `mmu crossmatch` holds task graphs and counts, never rows (issue 15).

Catalog-only HATS catalogs (ids, positions, splits, with margin caches) of 10k and 100k rows are
matched with the workers in a separate process; the driver's peak Python allocation (tracemalloc)
must not grow with the rows. Before the partition-by-partition matcher the driver computed both
catalogs' ids, positions and every match into pandas, and the peak grew about tenfold.
"""
from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mmu.pairing.crossmatch import _Input, match_pairs

BOX = (150.0, 152.0, 1.0, 3.0)  # ra0, ra1, dec0, dec1: the same HEALPix pixels at every size


def write_catalog(hub: Path, name: str, ra, dec, ids, seed: int, order: int = 4) -> None:
    """A hub-layout HATS collection (HUB/NAME/NAME + a margin cache) of ids, positions, splits."""
    import lsdb

    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"object_id": pd.array(ids.astype(str), dtype="string[pyarrow]"), "ra": ra, "dec": dec,
                       "split": rng.choice(["train", "val", "test"], len(ra), p=[0.8, 0.1, 0.1])})
    cat = lsdb.from_dataframe(df, catalog_name=name, ra_column="ra", dec_column="dec", lowest_order=order,
                              highest_order=order, margin_threshold=20.0)
    cat.to_hats(hub / name, as_collection=True)


def make_pair(hub: Path, n: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    ra, dec = rng.uniform(*BOX[:2], n), rng.uniform(*BOX[2:], n)
    write_catalog(hub, "left", ra, dec, np.arange(n), seed)
    off = rng.normal(0, 0.3 / 3600, (2, n))
    write_catalog(hub, "right", ra + off[0] / np.cos(np.radians(dec)), dec + off[1], np.arange(n) + 10**9, seed + 1)


def driver_peak(hub: Path, client) -> tuple[int, dict]:
    import dask

    inputs = [_Input("left", "l", None), _Input("right", "r", None)]
    out = hub / "pairs"
    with dask.config.set(scheduler=client):
        tracemalloc.start()
        tracemalloc.reset_peak()
        stats, _ = match_pairs(hub, inputs, 1.0, "nearest", 4.0, ("shape_r", "shape_e1", "shape_e2"),
                               False, out, primary_only=True)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak, stats


@pytest.mark.slow  # about 2 minutes on a loaded 2-core machine
def test_driver_peak_allocation_does_not_grow_with_rows(tmp_path, process_client):
    # warm-up: imports, numba compilation of the pixel alignment and LSDB planning are fixed costs
    make_pair(tmp_path / "warm", 1_000)
    driver_peak(tmp_path / "warm", process_client)
    peaks = {}
    for n in (10_000, 100_000):
        make_pair(tmp_path / str(n), n)
        peak, stats = driver_peak(tmp_path / str(n), process_client)
        # the matching really ran on these rows (0.3" scatter, 1" radius: nearly all match)
        assert stats["left_rows"] == n and stats["rows"] > 0.97 * n
        peaks[n] = peak
    assert peaks[100_000] <= 1.5 * peaks[10_000], peaks


def global_chain(cats: list[pd.DataFrame], radius: float) -> dict:
    """The chain policy computed on whole catalogs with astropy (the reference): nearest within
    `radius` of the anchor, the closest left object keeps a shared right object, the next member is
    matched to this member's position (the previous anchor where it is missing)."""
    from astropy import units as u
    from astropy.coordinates import SkyCoord, match_coordinates_sky

    left = cats[0]
    anchor = left[["ra", "dec"]].to_numpy().copy()
    out = {oid: [] for oid in left["object_id"]}
    for right in cats[1:]:
        idx, d2d, _ = match_coordinates_sky(SkyCoord(anchor[:, 0] * u.deg, anchor[:, 1] * u.deg),
                                            SkyCoord(right["ra"].to_numpy() * u.deg, right["dec"].to_numpy() * u.deg))
        d = d2d.to_value(u.arcsec)
        cand = pd.DataFrame({"anchor": left["object_id"].to_numpy(), "rid": right["object_id"].to_numpy()[idx],
                             "dist": d, "row": np.arange(len(left)), "ridx": idx})[d < radius]
        kept = cand.sort_values(["rid", "dist", "anchor"]).drop_duplicates("rid", keep="first")
        hit = {r.anchor: r.rid for r in kept.itertuples()}
        for oid in out:
            out[oid].append(hit.get(oid))
        rows, ridx = kept["row"].to_numpy(), kept["ridx"].to_numpy()
        anchor[rows] = right[["ra", "dec"]].to_numpy()[ridx]
    return {k: tuple(v) for k, v in out.items() if all(x is not None for x in v)}


def _pixel(ra, dec, order):
    from hats.pixel_math.spatial_index import compute_spatial_index

    return np.asarray(compute_spatial_index(np.atleast_1d(ra), np.atleast_1d(dec))) >> 2 * (29 - order)


def _border_points(rng, n, order):
    """Points on order-`order` pixel borders inside the test box (by bisection)."""
    out = []
    while len(out) < n:
        p = np.array([rng.uniform(150.1, 153.9), rng.uniform(0.1, 3.9)])
        q = p + rng.normal(0, 0.05, 2)
        if _pixel(p[0], p[1], order)[0] == _pixel(q[0], q[1], order)[0]:
            continue
        a, b = p, q
        for _ in range(40):
            mid = (a + b) / 2
            a, b = (mid, b) if _pixel(mid[0], mid[1], order)[0] == _pixel(a[0], a[1], order)[0] else (a, mid)
        out.append(a)
    return np.array(out)


def test_chain_per_pixel_equals_the_global_policy_across_many_borders(tmp_path, dask_client):
    """Three catalogs over 4 x 4 deg of order-6 pixels (about 60 borders), with contested right
    objects (left twins 0.5" apart) everywhere: the per-pixel result equals the global one."""
    import dask
    import pyarrow.parquet as pq

    rng = np.random.default_rng(7)
    n = 6000
    ra, dec = rng.uniform(150, 154, n), rng.uniform(0, 4, n)
    cos = np.cos(np.radians(dec))
    twins = rng.random(n) < 0.3  # a second left object 0.5" away claims the same right neighbour
    ra2, dec2 = ra[twins] + 0.5 / 3600 / cos[twins], dec[twins]
    # and 150 contests across pixel borders: a right object on the border, two left claimants
    # 0.3" and 0.4" from it on either side (the closer one, in the other pixel, must win)
    border = _border_points(rng, 150, 6)
    bcos = np.cos(np.radians(border[:, 1]))
    ra = np.r_[ra, border[:, 0] - 0.3 / 3600 / bcos]
    dec = np.r_[dec, border[:, 1]]
    ra2, dec2 = np.r_[ra2, border[:, 0] + 0.4 / 3600 / bcos], np.r_[dec2, border[:, 1]]
    n, cos = len(ra), np.cos(np.radians(dec))
    lra, ldec = np.r_[ra, ra2], np.r_[dec, dec2]
    cats = [pd.DataFrame({"object_id": np.arange(len(lra)).astype(str), "ra": lra, "dec": ldec})]
    pos = np.c_[ra, dec]
    pos[-150:] = border
    for k, scatter in enumerate((0.3, 0.3), start=1):
        off = rng.normal(0, scatter / 3600, (n, 2))
        pos = np.c_[pos[:, 0] + off[:, 0] / cos, pos[:, 1] + off[:, 1]]
        keep = rng.random(n) < 0.9
        cats.append(pd.DataFrame({"object_id": (np.flatnonzero(keep) + k * 10**7).astype(str),
                                  "ra": pos[keep, 0], "dec": pos[keep, 1]}))
    hub = tmp_path / "hub"
    for name, cat, seed in zip(("a", "b", "c"), cats, (1, 2, 3)):
        write_catalog(hub, name, cat["ra"].to_numpy(), cat["dec"].to_numpy(), cat["object_id"].to_numpy(),
                      seed, order=6)
    inputs = [_Input("a", "a", None), _Input("b", "b", None), _Input("c", "c", None)]
    with dask.config.set(scheduler=dask_client):
        stats, left_files = match_pairs(hub, inputs, 1.0, "nearest", 4.0, (), False, hub / "pairs")
    assert len(left_files) >= 16
    got = pd.concat([pq.read_table(f).to_pandas() for f in (hub / "pairs").rglob("part-*.parquet")])
    got = {r.object_id: (r.b_object_id, r.c_object_id) for r in got.itertuples()}
    expected = global_chain(cats, 1.0)
    assert got == expected
    # the border contests really cross pixels, and the claimant across the border wins them
    straddle = _pixel(lra[n - 150:n], ldec[n - 150:n], 6) != _pixel(lra[-150:], ldec[-150:], 6)
    assert straddle.sum() >= 100
    near_wins = sum(str(i) in got for i in range(n - 150, n))
    far_wins = sum(str(i) in got for i in range(len(lra) - 150, len(lra)))
    assert near_wins >= 40 and far_wins >= 10
    assert stats["rows"] == len(expected) and stats["many_to_one_dropped"]["b"] >= 0.2 * twins.sum()


def test_slurm_configuration_example_in_docs_builds_a_job_script():
    """docs/scale.md's dask-jobqueue block runs as written and makes the job script it promises
    (nothing is submitted)."""
    import re

    import dask_jobqueue  # noqa: F401  (a [test] dependency: the example must really run)

    text = (Path(__file__).resolve().parents[1] / "docs" / "scale.md").read_text()
    block = re.search(r"```python\n(from dask_jobqueue import SLURMCluster.*?)```", text, re.S).group(1)
    namespace: dict = {}
    exec(compile(block.replace("print(", "str("), "docs/scale.md", "exec"), namespace)
    cluster = namespace["cluster"]
    try:
        script = cluster.job_script()
        assert "#SBATCH -p regular" in script and "#SBATCH -A m4000" in script
        assert "#SBATCH --cpus-per-task=4" in script and "#SBATCH --constraint=cpu" in script
        assert "--nworkers 4" in script and "--nthreads 1" in script and "--memory-limit 8.00GiB" in script
        assert "export MALLOC_MMAP_THRESHOLD_=16777216" in script
        assert cluster.scheduler_address.startswith("tcp://")
    finally:
        cluster.close()
