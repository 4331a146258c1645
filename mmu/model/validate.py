"""Check tables against the data model and say which column of which row is wrong.

`conform` fixes the table-level contract (columns present, types castable, nothing extra);
`validate_rows` finds bad rows (NaN coordinates, unmasked non-finite values, all-zero ivar,
ragged arrays, duplicate ids) so the engine can reject exactly those rows, with reasons.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mmu.model.schema import BAND_PATTERN, INDEX_COLUMN, ImageSpec, LightcurveSpec, ModalitySpec, SpectrumSpec


class SchemaMismatch(ValueError):
    """A table does not have the dataset's columns and types."""


@dataclass(frozen=True)
class RowProblem:
    row: int
    column: str
    reason: str
    object_id: str | None = None

    def __str__(self) -> str:
        oid = f" (object_id {self.object_id!r})" if self.object_id is not None else ""
        return f"row {self.row}{oid}, column {self.column!r}: {self.reason}"


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Select, order and cast `table` to `schema` (a builder's rows -> the dataset schema).

    Args:
        table: rows as a builder produced them.
        schema: the dataset schema (`mmu.model.schema.dataset_schema`).

    Returns:
        The table with exactly the schema's columns, in its order and types (safe casts only).

    Raises:
        SchemaMismatch: a missing column, a column the schema lacks, or a type that does not
            cast safely (the message names the column).
    """
    names = set(table.column_names)
    wanted = [f.name for f in schema if f.name != INDEX_COLUMN or f.name in names]
    missing = [n for n in wanted if n not in names]
    if missing:
        raise SchemaMismatch(f"missing column(s) {missing}")
    extra = sorted(names - {f.name for f in schema})
    if extra:
        raise SchemaMismatch(f"column(s) {extra} are not in the dataset schema "
                             "(declare them in the builder's extra_columns)")
    columns = []
    for name in wanted:
        target = schema.field(name)
        col = table.column(name)
        if not col.type.equals(target.type):
            try:
                col = col.cast(target.type, safe=True)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
                raise SchemaMismatch(f"column {name!r} has type {col.type}, expected "
                                     f"{target.type}: {e}") from None
        columns.append(col)
    out_schema = pa.schema([schema.field(n) for n in wanted], metadata=schema.metadata)
    return pa.Table.from_arrays(columns, schema=out_schema)


def flat_values(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Flatten (nested) lists to leaf values plus row offsets into them, without Python loops.

    Args:
        arr: a list, large-list or fixed-size-list array (nested any depth), or a flat array.

    Returns:
        ``(values, offsets)``: the leaf values as numpy (strings as an object array) and
        ``len(arr) + 1`` offsets; row i's values are ``values[offsets[i]:offsets[i + 1]]``.

    Example:
        >>> v, off = flat_values(pa.array([[1, 2], [3]]))
        >>> v.tolist(), off.tolist()
        ([1, 2, 3], [0, 2, 3])
    """
    offsets = np.arange(len(arr) + 1, dtype=np.int64)
    while pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type) or pa.types.is_fixed_size_list(arr.type):
        if pa.types.is_fixed_size_list(arr.type):
            k = arr.type.list_size
            offsets = offsets * k
            arr = arr.values.slice(arr.offset * k, len(arr) * k)
        else:
            child = np.asarray(arr.offsets, dtype=np.int64)
            offsets = (child - child[0])[offsets]
            arr = arr.values.slice(child[0], child[-1] - child[0])
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        values = np.asarray(arr.to_pylist(), dtype=object)
    else:
        values = arr.to_numpy(zero_copy_only=False)
    return values, offsets


def _per_row_count(flag: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    c = np.concatenate([[0], np.cumsum(flag, dtype=np.int64)])
    return c[offsets[1:]] - c[offsets[:-1]]


class _Problems:
    def __init__(self, ids: list):
        self.ids = ids
        self.found: dict[int, list[tuple[str, str]]] = {}

    def add(self, rows: np.ndarray, column: str, reason: str):
        for r in np.flatnonzero(rows):
            self.found.setdefault(int(r), []).append((column, reason))

    def result(self) -> list[RowProblem]:
        out = []
        for row in sorted(self.found):
            cols = "; ".join(f"{c}: {r}" for c, r in self.found[row])
            column = self.found[row][0][0]
            out.append(RowProblem(row, column, cols if len(self.found[row]) > 1 else self.found[row][0][1],
                                  self.ids[row] if row < len(self.ids) else None))
        return out


def validate_rows(table: pa.Table, modalities: dict[str, ModalitySpec],
                  allow_null_modalities: bool = False) -> list[RowProblem]:
    """Every bad row of a conformed table, with the column and the reason.

    Args:
        table: rows already `conform`ed to the dataset schema.
        modalities: the modality columns and their specs.
        allow_null_modalities: a null modality is allowed (paired catalogs kept with
            ``--keep-unmatched``).

    Returns:
        One `RowProblem` per bad row (several reasons joined), in row order; empty when all
        rows are good.
    """
    n = table.num_rows
    ids = table.column("object_id").to_pylist()
    p = _Problems(ids)
    idarr = np.array([i if i is not None else "" for i in ids], dtype=object)
    p.add(np.array([i is None or i == "" for i in ids], bool), "object_id", "missing or empty object_id")
    _, first = np.unique(idarr, return_index=True)
    dup = np.ones(n, bool)
    dup[first] = False
    p.add(dup & (idarr != ""), "object_id", "duplicate object_id within this input")

    ra = table.column("ra").to_numpy(zero_copy_only=False).astype(float)
    dec = table.column("dec").to_numpy(zero_copy_only=False).astype(float)
    p.add(~np.isfinite(ra), "ra", "ra is NaN, inf or missing")
    p.add(~np.isfinite(dec), "dec", "dec is NaN, inf or missing")
    with np.errstate(invalid="ignore"):
        p.add(np.isfinite(ra) & ((ra < 0) | (ra >= 360)), "ra", "ra outside [0, 360) deg")
        p.add(np.isfinite(dec) & ((dec < -90) | (dec > 90)), "dec", "dec outside [-90, 90] deg")
    for col in ("survey", "release"):
        if col in table.column_names:
            p.add(np.asarray(pc.is_null(table.column(col))), col, f"{col} is missing")

    for name, spec in modalities.items():
        if name not in table.column_names:
            continue
        struct = table.column(name).combine_chunks()
        null = np.asarray(struct.is_null())
        if not allow_null_modalities:
            p.add(null, name, "modality is missing")
        fields = {f.name: arr for f, arr in zip(struct.type, struct.flatten())}
        flat = {k: flat_values(v) for k, v in fields.items() if k != "scale"}
        ok = ~null
        if isinstance(spec, ImageSpec):
            _check_image(p, name, flat, fields, ok)
        elif isinstance(spec, SpectrumSpec):
            _check_arrays(p, name, flat, ok, ("lambda", "flux", "ivar", "mask", "lsf_sigma"), "ivar")
            lam, off = flat["lambda"]
            lam = lam.astype(float)
            with np.errstate(invalid="ignore"):
                step_bad = np.concatenate([np.diff(lam) <= 0, [False]])
            # a step across a row boundary is not a step
            ends = off[1:] - 1
            step_bad[ends[ends >= 0]] = False
            p.add(ok & (_per_row_count(~np.isfinite(lam) | (lam <= 0), off) > 0), f"{name}.lambda",
                  "wavelength not finite and positive")
            p.add(ok & (_per_row_count(step_bad, off) > 0), f"{name}.lambda",
                  "wavelength not strictly increasing")
        elif isinstance(spec, LightcurveSpec):
            _check_arrays(p, name, flat, ok, ("time", "band", "flux", "flux_err", "mask"), None)
            t, off = flat["time"]
            p.add(ok & (_per_row_count(~np.isfinite(t.astype(float)), off) > 0), f"{name}.time",
                  "time not finite")
            p.add(ok & (np.diff(off) == 0), f"{name}.time", "light curve has no epochs")
            _check_band_names(p, name, flat, ok)
            fe, foff = flat["flux_err"]
            m, _ = flat["mask"]
            with np.errstate(invalid="ignore"):
                bad = ~m.astype(bool) & ~(fe.astype(float) > 0)
            p.add(ok & (_per_row_count(bad, foff) > 0), f"{name}.flux_err",
                  "flux_err not positive at an unmasked epoch")
    return p.result()


def _check_arrays(p, name, flat, ok, names, ivar_name):
    lengths = {k: np.diff(flat[k][1]) for k in names}
    ref = lengths[names[0]]
    for k in names[1:]:
        p.add(ok & (lengths[k] != ref), f"{name}.{k}", f"length differs from {names[0]}'s")
    aligned = ok & np.all([lengths[k] == ref for k in names], axis=0)
    mask, off = flat["mask"]
    mask = mask.astype(bool)
    for k in names:
        values, koff = flat[k]
        if k in ("mask", "band") or values.dtype == object:
            continue
        bad = ~np.isfinite(values.astype(float))
        if len(bad) == len(mask):
            bad &= ~mask
        p.add(aligned & (_per_row_count(bad, koff) > 0), f"{name}.{k}",
              f"non-finite {k} at an unmasked pixel (mask it, True = bad)")
    if ivar_name:
        iv, ioff = flat[ivar_name]
        iv = iv.astype(float)
        with np.errstate(invalid="ignore"):
            p.add(aligned & (_per_row_count(iv < 0, ioff) > 0), f"{name}.{ivar_name}", "negative ivar")
            usable = (iv > 0) & ~mask if len(iv) == len(mask) else iv > 0
        p.add(aligned & (_per_row_count(usable, ioff) == 0), f"{name}.{ivar_name}",
              "all-zero ivar (or every pixel masked): no information")


def _check_band_names(p, name, flat, ok):
    """Rows whose band names are not '<survey>-<band>' in lower case."""
    band, boff = flat["band"]
    badband = np.array([b is None or not BAND_PATTERN.match(b) for b in band], bool)
    p.add(ok & (_per_row_count(badband, boff) > 0), f"{name}.band",
          "band names must be '<survey>-<band>' lower case")


def _check_image(p, name, flat, fields, ok):
    _check_arrays(p, name, flat, ok, ("flux", "ivar", "mask"), "ivar")
    _check_band_names(p, name, flat, ok)
    psf, poff = flat["psf_fwhm"]
    mask, moff = flat["mask"]
    # a band with no coverage (every pixel masked) legitimately has no PSF (DR10: psfsize_i = 0)
    per_band = np.diff(moff) // np.maximum(np.diff(poff), 1)
    band_masked = np.zeros(len(psf), bool)
    for i in np.flatnonzero(ok & (np.diff(poff) > 0)):
        nb = poff[i + 1] - poff[i]
        m = mask[moff[i]:moff[i + 1]].astype(bool).reshape(nb, per_band[i])
        band_masked[poff[i]:poff[i + 1]] = m.all(axis=1)
    with np.errstate(invalid="ignore"):
        bad_psf = ~(psf.astype(float) > 0) & ~band_masked
        p.add(ok & (_per_row_count(bad_psf, poff) > 0), f"{name}.psf_fwhm",
              "psf_fwhm not positive in a band with unmasked pixels")
        scale = fields["scale"].to_numpy(zero_copy_only=False).astype(float)
        p.add(ok & ~(scale > 0), f"{name}.scale", "pixel scale not positive")
