"""Shared pieces of the survey builders: opening FITS files with clear rejections, checking
HDUs and columns, the common columns of a row chunk, and resumable archive downloads."""
from __future__ import annotations

import contextlib
import contextvars
import http.client
import os
import time
import urllib.error
import urllib.request
import warnings
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pyarrow as pa

from mmu.engine.builder import InputRejected


@contextlib.contextmanager
def open_fits(path: str | Path, memmap: bool = False, what: str = "") -> Iterator:
    """`astropy.io.fits.open`, turning unreadable or truncated files into `InputRejected`.

    All headers are read up front (`lazy_load_hdus=False`) so that a truncated file is caught
    before any row is produced, not half-way through it.
    """
    from astropy.io import fits
    from astropy.utils.exceptions import AstropyUserWarning

    name = Path(path).name
    hint = what or "re-download it from the archive"
    size = os.path.getsize(path)
    if not name.endswith(".gz") and size % 2880:  # FITS files are whole 2880-byte blocks
        raise InputRejected(f"{name}: file is truncated ({size} bytes is not a whole number of "
                            f"2880-byte FITS blocks); {hint}")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", AstropyUserWarning)
            hdul = fits.open(path, memmap=memmap, lazy_load_hdus=False)
    except (OSError, ValueError, TypeError, IndexError) as e:
        raise InputRejected(f"{name}: not a readable FITS file ({e}); {hint}") from None
    truncated = [str(w.message) for w in caught if "truncated" in str(w.message)]
    if truncated:
        hdul.close()
        raise InputRejected(f"{name}: file is truncated ({truncated[0]}); {hint}")
    try:
        yield hdul
    finally:
        hdul.close()


def require_hdu(hdul, hdu: str, path: str | Path, hint: str = ""):
    names = [h.name for h in hdul]
    if hdu not in names:
        raise InputRejected(f"{Path(path).name}: HDU {hdu!r} missing (found {names})"
                            + (f"; {hint}" if hint else ""))
    return hdul[hdu]


def require_columns(data, columns: Iterable[str], path: str | Path, hdu: str, hint: str = ""):
    have = {c.upper() for c in data.columns.names}
    missing = [c for c in columns if c.upper() not in have]
    if missing:
        raise InputRejected(f"{Path(path).name}: HDU {hdu!r} missing column(s) {missing}"
                            + (f"; {hint}" if hint else ""))


def has_column(data, column: str) -> bool:
    return column.upper() in {c.upper() for c in data.columns.names}


def column_or_null(data, column: str, arrow_type: pa.DataType, n: int) -> pa.Array:
    """A FITS table column as Arrow (strings stripped), or nulls when the file lacks it."""
    if data is None or not has_column(data, column):
        return pa.nulls(n, arrow_type)
    values = np.asarray(data[column])
    if values.dtype.kind in "SU":
        return pa.array([str(v).strip() for v in values.astype(str)], arrow_type)
    if values.dtype.byteorder not in ("=", "|"):
        values = values.astype(values.dtype.newbyteorder("="))
    return pa.array(values).cast(arrow_type)


def native(a) -> np.ndarray:
    """A numpy array in native byte order (FITS data is big-endian)."""
    a = np.asarray(a)
    return a.astype(a.dtype.newbyteorder("=")) if a.dtype.byteorder not in ("=", "|") else a


def common_columns(object_id: list[str], ra, dec, survey: str, release: str) -> dict[str, pa.Array]:
    n = len(object_id)
    return {"object_id": pa.array(object_id, pa.string()),
            "ra": pa.array(np.asarray(ra, np.float64)), "dec": pa.array(np.asarray(dec, np.float64)),
            "survey": pa.array([survey] * n, pa.string()),
            "release": pa.array([release] * n, pa.string())}


# ---------------------------------------------------------------------------------------------
# archive downloads (used by the builders' `fetch`; the parsing never depends on them)


class FetchError(Exception):
    """An archive URL could not be read (no network, host unreachable, an HTTP error, a
    connection cut mid-file). `status` is the HTTP status when the server answered."""

    def __init__(self, url: str, reason: str, status: int | None = None):
        super().__init__(f"{url}: {reason}")
        self.url, self.reason, self.status = url, reason, status


# what urllib raises when the network or the server fails (HTTPError is a URLError)
_NETWORK_ERRORS = (urllib.error.URLError, http.client.HTTPException, TimeoutError, ConnectionError)
_REPORTER: contextvars.ContextVar = contextvars.ContextVar("mmu_fetch_reporter", default=None)


@contextlib.contextmanager
def fetch_reporter(report):
    """Within the block, `download` and `list_links` call `report(event, **info)`: events
    "list" (url, count), "exists" (url, dest, size), "start" (url, dest, offset, total),
    "bytes" (n), "done" (url, dest, size, offset, seconds), "skip" (what, reason), and "note"
    (text) for what a builder's `fetch` wants the user to know."""
    token = _REPORTER.set(report)
    try:
        yield
    finally:
        _REPORTER.reset(token)


def report(event: str, **info) -> None:
    fn = _REPORTER.get()
    if fn is not None:
        fn(event, **info)


def _failure(url: str, e: BaseException) -> FetchError:
    if isinstance(e, urllib.error.HTTPError):
        return FetchError(url, f"HTTP {e.code} {e.reason}", e.code)
    reason = e.reason if isinstance(e, urllib.error.URLError) else e
    return FetchError(url, f"{type(reason).__name__}: {reason}" if isinstance(reason, BaseException)
                      else str(reason))


def download(url: str, dest: Path, chunk: int = 1 << 20, timeout: float = 60.0) -> Path:
    """Download `url` to `dest`, resuming a partial `dest.part` with an HTTP Range request.

    An existing `dest` is kept as it is (a rerun skips finished files); the bytes go to
    `dest.part`, renamed to `dest` only when complete. Network and HTTP failures raise
    `FetchError` naming the URL; the `.part` file stays for the next attempt to resume."""
    dest = Path(dest)
    if dest.exists():
        report("exists", url=url, dest=dest, size=dest.stat().st_size)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    t0 = time.perf_counter()
    offset = 0
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            offset = have if have and resp.status == 206 else 0  # 200: the server sent it all
            length = resp.headers.get("Content-Length")
            total = offset + int(length) if length and length.isdigit() else None
            report("start", url=url, dest=dest, offset=offset, total=total)
            with open(part, "ab" if offset else "wb") as f:
                while block := resp.read(chunk):
                    f.write(block)
                    report("bytes", n=len(block))
    except urllib.error.HTTPError as e:
        # 416: nothing left to send; the .part is whole (killed between last byte and rename)
        complete = e.code == 416 and have and e.headers.get("Content-Range", "").endswith(f"/{have}")
        e.close()
        if not complete:
            raise _failure(url, e) from None
        offset = total = have
    except _NETWORK_ERRORS as e:
        raise _failure(url, e) from None
    size = part.stat().st_size
    if total is not None and size != total:
        raise FetchError(url, f"connection closed after {size} of {total} bytes; rerun to resume")
    os.replace(part, dest)
    report("done", url=url, dest=dest, size=size, offset=offset, seconds=time.perf_counter() - t0)
    return dest


def list_links(url: str, pattern: str, timeout: float = 60.0) -> list[str]:
    """Names matching the regex `pattern` linked from an archive directory listing page."""
    import re

    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            html = resp.read().decode("utf-8", "replace")
    except _NETWORK_ERRORS as e:
        raise _failure(url, e) from None
    names = sorted({m.group(1) for m in re.finditer(r'href="(' + pattern + r')"', html)})
    report("list", url=url, count=len(names))
    return names
