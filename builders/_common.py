"""Shared pieces of the survey builders: opening FITS files with clear rejections, checking
HDUs and columns, the common columns of a row chunk, and resumable archive downloads."""
from __future__ import annotations

import contextlib
import http.client
import logging
import os
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa

from mmu.engine.builder import InputRejected
from mmu.logs import tqdm


class RowRejected(InputRejected):
    """One row of a file is unusable (e.g. its text cannot be decoded), not the whole input: the
    builder turns it into a `Rejection` with the file, row, object id and column."""

    def __init__(self, reason: str, *, file: str | None = None, row: int | None = None,
                 object_id: str | None = None, column: str | None = None):
        super().__init__(reason)
        self.file, self.row, self.object_id, self.column = file, row, object_id, column


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
        reraise_environment(e)  # a full disk or a denied read is not the file's fault
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
    """The HDU named `hdu` of an open FITS file.

    Args:
        hdul: the open `HDUList`.
        hdu: the extension name, e.g. ``"COADD"``.
        path: the file (named in the error).
        hint: what the user should check, appended to the error.

    Returns:
        The HDU.

    Raises:
        InputRejected: the file has no such HDU (the message lists the ones it has).
    """
    names = [h.name for h in hdul]
    if hdu not in names:
        raise InputRejected(f"{Path(path).name}: HDU {hdu!r} missing (found {names})"
                            + (f"; {hint}" if hint else ""))
    return hdul[hdu]


def require_columns(data, columns: Iterable[str], path: str | Path, hdu: str, hint: str = ""):
    """Check that a FITS table has `columns` (case-insensitive).

    Args:
        data: the table (`FITS_rec`).
        columns: the column names needed.
        path: the file, and `hdu` its extension (named in the error).
        hdu: the extension name.
        hint: what the user should check, appended to the error.

    Raises:
        InputRejected: naming the missing columns, the file and the HDU.
    """
    have = {c.upper() for c in data.columns.names}
    missing = [c for c in columns if c.upper() not in have]
    if missing:
        raise InputRejected(f"{Path(path).name}: HDU {hdu!r} missing column(s) {missing}"
                            + (f"; {hint}" if hint else ""))


def has_column(data, column: str) -> bool:
    """Whether the FITS table `data` has `column` (case-insensitive)."""
    return column.upper() in {c.upper() for c in data.columns.names}


def column_or_null(data, column: str, arrow_type: pa.DataType, n: int,
                   bad: dict[int, str] | None = None) -> pa.Array:
    """A FITS table column as Arrow (strings stripped), or nulls when the file lacks it.

    A text value that is not ASCII (FITS text is printable ASCII; a stray 0xff byte cannot be
    decoded) becomes null and its row goes into `bad` as ``{row: column}`` (the first bad column
    of a row is kept), so that the builder rejects that row alone, naming the column. Without
    `bad`, such a value raises `InputRejected` naming the column and row.
    """
    if data is None or not has_column(data, column):
        return pa.nulls(n, arrow_type)
    values = np.asarray(data[column])
    if values.dtype.kind in "SU":
        text, rows = decode_text(values)
        if len(rows):
            if bad is None:
                raise InputRejected(f"column {column} row {int(rows[0])}: {describe_text(values[rows[0]])}")
            for r in rows.tolist():
                bad.setdefault(r, column)
        return pa.array(text.tolist(), arrow_type, mask=_row_mask(len(text), rows))
    if values.dtype.byteorder not in ("=", "|"):
        values = values.astype(values.dtype.newbyteorder("="))
    return pa.array(values).cast(arrow_type)


def _row_mask(n: int, rows: np.ndarray) -> np.ndarray | None:
    if not len(rows):
        return None
    mask = np.zeros(n, bool)
    mask[rows] = True
    return mask


def decode_text(values) -> tuple[np.ndarray, np.ndarray]:
    """A FITS text column (bytes) as stripped `str` values, and the rows that are not ASCII.

    Args:
        values: the column (numpy ``S`` or ``U`` array, one value per row).

    Returns:
        ``(text, bad_rows)``: `text` a numpy ``U`` array with ``""`` at the bad rows; `bad_rows`
        the sorted indices of rows holding a byte >= 0x80 (not ASCII: FITS text is ASCII).
    """
    a = np.asarray(values)
    if a.dtype.kind == "U":
        return np.char.strip(a), np.array([], np.int64)
    a = np.ascontiguousarray(a)
    if len(a) and a.dtype.itemsize:
        bad = np.flatnonzero((a.view(np.uint8).reshape(len(a), -1) >= 0x80).any(axis=1))
    else:
        bad = np.array([], np.int64)
    if len(bad):
        a = a.copy()
        a[bad] = b""
    return np.char.strip(a.astype(str)), bad


def describe_text(value) -> str:
    """Why a text value is unreadable, e.g. ``"byte 0xff at position 3 is not ASCII (b'GAL\\xffXY')"``."""
    raw = value.tobytes() if hasattr(value, "tobytes") else bytes(value)
    raw = raw.rstrip(b"\0")
    at = next((i for i, c in enumerate(raw) if c >= 0x80), 0)
    return f"byte 0x{raw[at]:02x} at position {at} is not ASCII text ({raw!r})" if raw else "not ASCII text"


def reraise_environment(e: BaseException) -> None:
    """Raise `e` again when it is a fault of the machine (a full disk, a denied read, an I/O
    error, no memory; `mmu.engine.build.environment_fault`), never the input's: such a fault
    must fail the build, not become a rejection of the file being read."""
    from mmu.engine.build import environment_fault

    if environment_fault(e):
        raise e


def native(a) -> np.ndarray:
    """A numpy array in native byte order (FITS data is big-endian)."""
    a = np.asarray(a)
    return a.astype(a.dtype.newbyteorder("=")) if a.dtype.byteorder not in ("=", "|") else a


def common_columns(object_id: list[str], ra, dec, survey: str, release: str) -> dict[str, pa.Array]:
    """The columns every hub row has (object_id, ra, dec, survey, release) for a chunk of rows.

    Args:
        object_id: the objects' ids (strings).
        ra: right ascension in degrees; `dec` declination.
        dec: declination in degrees.
        survey: the survey name, repeated on every row; `release` likewise.
        release: the data release.

    Returns:
        ``{column: pa.Array}``, ready to be merged with a builder's own columns.
    """
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
log = logging.getLogger(__name__)


def human_size(n: float) -> str:
    """Bytes in decimal units, as the fetch lines show them: ``"12.3 MB"``."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover - the loop returns at GB


def _failure(url: str, e: BaseException) -> FetchError:
    if isinstance(e, urllib.error.HTTPError):
        return FetchError(url, f"HTTP {e.code} {e.reason}", e.code)
    reason = e.reason if isinstance(e, urllib.error.URLError) else e
    return FetchError(url, f"{type(reason).__name__}: {reason}" if isinstance(reason, BaseException)
                      else str(reason))


def download(url: str, dest: Path, chunk: int = 1 << 20, timeout: float = 60.0) -> Path:
    """Download `url` to `dest`, resuming a partial `dest.part` with an HTTP Range request.

    An existing `dest` is kept as it is (a rerun skips finished files); the bytes go to
    `dest.part`, renamed to `dest` only when complete. Each file is logged (INFO, logger
    ``mmu.builders._common``) when found or finished, with a `mmu.logs.tqdm` byte bar meanwhile.

    Args:
        url: the archive URL.
        dest: where the file goes (parent folders are created).
        chunk: bytes per read.
        timeout: seconds to wait for the server.

    Returns:
        `dest`.

    Raises:
        FetchError: a network or HTTP failure, naming the URL; the `.part` file stays for the
            next attempt to resume.

    Example:
        >>> download("https://zenodo.org/records/2539456/files/x.csv.gz", Path("raw/x.csv.gz"))  # doctest: +SKIP
    """
    dest = Path(dest)
    if dest.exists():
        log.info("%s  already here (%s)", dest, human_size(dest.stat().st_size))
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
            with open(part, "ab" if offset else "wb") as f, \
                    tqdm(total=total, initial=offset, unit="B", unit_scale=True, desc=dest.name,
                         leave=False) as bar:
                while block := resp.read(chunk):
                    f.write(block)
                    bar.update(len(block))
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
    rate = (size - offset) / max(time.perf_counter() - t0, 1e-6)
    resumed = f", resumed at {human_size(offset)}" if offset else ""
    log.info("%s  %s  (%s/s%s)", dest, human_size(size), human_size(rate), resumed)
    return dest


def list_links(url: str, pattern: str, timeout: float = 60.0) -> list[str]:
    """Names matching the regex `pattern` linked from an archive directory listing page.

    Args:
        url: the listing page (an Apache/nginx index).
        pattern: a regex for the ``href`` values wanted, e.g. ``r"[0-9]+/"``.
        timeout: seconds to wait for the server.

    Returns:
        The matching names, sorted and de-duplicated.

    Raises:
        FetchError: a network or HTTP failure, naming the URL.
    """
    import re

    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            html = resp.read().decode("utf-8", "replace")
    except _NETWORK_ERRORS as e:
        raise _failure(url, e) from None
    names = sorted({m.group(1) for m in re.finditer(r'href="(' + pattern + r')"', html)})
    log.info("listed %s (%d entries)", url, len(names))
    return names
