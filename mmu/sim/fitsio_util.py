"""Deterministic FITS and file writing shared by the survey writers.

No timestamps, no clock-seeded dither, no checksums (astropy stamps the checksum comment with
the current date); every primary header carries the mock marker (MMUMOCK, MMUSEED, MMUSIMV).
Files are written to a temporary name and renamed, so a killed run never leaves half a file.
"""
from __future__ import annotations

import gzip
import io
import os
from pathlib import Path

import numpy as np

from mmu.sim.config import SIMULATOR_VERSION


def mock_cards(seed: int) -> list[tuple]:
    return [
        ("MMUMOCK", True, "mock data written by the mmu mock observatory"),
        ("MMUSEED", int(seed), "mmu sim seed"),
        ("MMUSIMV", SIMULATOR_VERSION, "mmu simulator version"),
    ]


def primary_hdu(seed: int, cards: list[tuple] = ()):
    from astropy.io import fits

    hdu = fits.PrimaryHDU()
    for key, value, comment in list(cards) + mock_cards(seed):
        hdu.header[key] = (value, comment)
    return hdu


def write_atomic(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def write_hdulist(path: Path, hdus) -> int:
    from astropy.io import fits

    buf = io.BytesIO()
    fits.HDUList(list(hdus)).writeto(buf, output_verify="exception")
    data = buf.getvalue()
    write_atomic(path, data)
    return len(data)


def write_gzip_text(path: Path, text: str) -> int:
    """gzip with mtime 0 and no file name in the header: same text, same bytes."""
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=6) as gz:
        gz.write(text.encode())
    data = buf.getvalue()
    write_atomic(Path(path), data)
    return len(data)


def table_hdu(columns: list[tuple], name: str, units: dict | None = None):
    """A BinTableHDU from (name, fits_format, array) triples, in the given column order."""
    from astropy.io import fits

    cols = []
    units = units or {}
    for col_name, fmt, array in columns:
        array = np.asarray(array)
        if array.dtype == object:
            array = array.astype(str)
        cols.append(fits.Column(name=col_name, format=fmt, array=array, unit=units.get(col_name)))
    hdu = fits.BinTableHDU.from_columns(cols, name=name)
    return hdu
