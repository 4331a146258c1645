"""Throughput of the content revision's serial step: `SortedRevision` streaming sorted Parquet
parts (what `_stream_revision` does on a worker) vs `content_revision` over Python lists (the
driver path), on the same rows in the same run.

    python benchmarks/revision_stream.py --rows 4000000 --part-rows 1000000
"""
import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mmu.engine.build import _stream_revision
from mmu.model.hashing import content_revision


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=4_000_000)
    ap.add_argument("--part-rows", type=int, default=1_000_000)
    ap.add_argument("--driver-rows", type=int, default=1_000_000, help="rows for the driver-path comparison")
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    # Legacy-Survey-like ids: "<brickid>-<objid>" (~15 bytes), sorted
    ids = np.sort(np.char.add(np.char.add(rng.integers(10**9, 2 * 10**9, a.rows).astype("U10"), "-"),
                              np.arange(a.rows).astype("U7")))
    digests = rng.bytes(32 * a.rows)
    with tempfile.TemporaryDirectory() as d:
        paths = []
        for k, s in enumerate(range(0, a.rows, a.part_rows)):
            e = min(a.rows, s + a.part_rows)
            t = pa.table({"object_id": pa.array(ids[s:e].tolist(), pa.string()),
                          "digest": pa.Array.from_buffers(pa.binary(32), e - s,
                                                          [None, pa.py_buffer(digests[32 * s:32 * e])])})
            paths.append(str(Path(d) / f"part-{k:06d}.parquet"))
            pq.write_table(t, paths[-1], compression="zstd", compression_level=1)
        size = sum(os.path.getsize(p) for p in paths)
        t0 = time.perf_counter()
        rev, rows = _stream_revision(paths)
        stream_s = time.perf_counter() - t0
        n = min(a.driver_rows, a.rows)
        lst, dig = ids[:n].tolist(), [digests[32 * i:32 * i + 32] for i in range(n)]
        t0 = time.perf_counter()
        content_revision(lst, dig)
        driver_s = time.perf_counter() - t0
    hashed = sum(len(x.encode()) + 33 for x in ids[:100_000]) / 100_000
    print(f"rows={rows} parts={len(paths)} parquet_MB={size / 2**20:.0f} bytes_hashed_per_row={hashed:.1f}")
    print(f"stream (worker): {stream_s:.2f} s = {rows / stream_s / 1e6:.2f} M rows/s "
          f"-> {1e9 / (rows / stream_s) / 60:.1f} min per 1e9 rows")
    print(f"driver (lists):  {driver_s:.2f} s for {n} rows = {n / driver_s / 1e6:.2f} M rows/s; "
          f"stream/driver speed ratio {(rows / stream_s) / (n / driver_s):.1f}x")
    print(f"revision {rev[:16]}")


if __name__ == "__main__":
    main()
