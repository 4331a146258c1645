"""Parquet settings for big rows (spectra, image cutouts): CPU to write and read back, and size.

Takes rows from a hub partition file (or any Parquet file), writes them in memory with each set
of settings (best of 3, row groups of 64 rows) and reads them back. What chose the standardized
files' settings (`mmu.engine.build.std_write_kwargs`: hats' settings with lz4) over the zstd 1 with
Arrow's default dictionaries they had before (docs/scale.md, "Stage 2 in one pass").

    python benchmarks/std_write_settings.py HUB/desi_dr1/desi_dr1/dataset/Norder=7/Dir=0/Npix=108956.parquet
"""
from __future__ import annotations

import argparse
import io
import os
import time

import pyarrow as pa
import pyarrow.parquet as pq


def measure(table: pa.Table, label: str, repeat: int, **kwargs) -> dict:
    best, data = float("inf"), b""
    for _ in range(repeat):
        sink = io.BytesIO()
        c0 = time.process_time()
        pq.write_table(table, sink, row_group_size=64, **kwargs)
        best = min(best, time.process_time() - c0)
        data = sink.getvalue()
    read = float("inf")
    for _ in range(repeat):
        c0 = time.process_time()
        pq.read_table(pa.BufferReader(data))
        read = min(read, time.process_time() - c0)
    row = {"settings": label, "write_ms_per_row": round(best * 1e3 / table.num_rows, 3),
           "read_ms_per_row": round(read * 1e3 / table.num_rows, 3), "mb": round(len(data) / 1e6, 1)}
    print(f"{label:58s} write {row['write_ms_per_row']:6.3f} ms/row  read {row['read_ms_per_row']:6.3f} ms/row"
          f"  {row['mb']:7.1f} MB", flush=True)
    return row


def hats_kwargs(schema: pa.Schema, **extra) -> dict:
    from hats.io import file_io

    kwargs = file_io.get_parquet_write_table_kwargs(schema, write_table_kwargs=extra)
    kwargs.pop("row_group_size", None)
    return kwargs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("parquet", help="a Parquet file of big rows, e.g. a hub partition")
    p.add_argument("--rows", type=int, default=400)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    t = pq.read_table(args.parquet)
    t = t.drop_columns([c for c in ("_healpix_29",) if c in t.column_names]).slice(0, args.rows).combine_chunks()
    print(f"{t.num_rows} rows, {t.nbytes / 1e6:.1f} MB in memory; load {os.getloadavg()[0]:.2f}")
    measure(t, "zstd 1, Arrow's default dictionaries (standardized, before)", args.repeat,
            compression="zstd", compression_level=1)
    measure(t, "zstd 1, no dictionary", args.repeat, compression="zstd", compression_level=1, use_dictionary=False)
    measure(t, "lz4, no dictionary", args.repeat, compression="lz4", use_dictionary=False)
    measure(t, "uncompressed, no dictionary", args.repeat, compression="none", use_dictionary=False)
    measure(t, "hats' settings, lz4 (standardized, now)", args.repeat, **hats_kwargs(t.schema, compression="lz4"))
    measure(t, "hats' settings, zstd 1", args.repeat, **hats_kwargs(t.schema, compression="zstd", compression_level=1))
    measure(t, "hats' settings, zstd 3 (hub partitions)", args.repeat,
            **hats_kwargs(t.schema, compression="zstd", compression_level=3))
    print(f"load {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
