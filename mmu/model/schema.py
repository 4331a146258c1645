"""The data model: common columns and the three modality structs, in one place.

Everything that describes a row — the Arrow schema written to Parquet (units in field metadata),
the Hugging Face `datasets.Features` of the dataset card, the written spec in docs/schema.md and
the validator the build engine runs — is derived from the definitions in this module.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

SCHEMA_VERSION = "1.0"
# what changed between schema versions (docs/schema.md prints this)
SCHEMA_HISTORY = {"1.0": "first release: common columns, image/spectrum/lightcurve structs, split"}

INDEX_COLUMN = "_healpix_29"
SPLIT_COLUMN = "split"
SPLITS = ("train", "val", "test")
BAND_PATTERN = re.compile(r"^[a-z0-9]+-[a-z0-9_]+$")
MODALITIES = ("image", "spectrum", "lightcurve")


@dataclass(frozen=True)
class Column:
    """One documented column or struct field: name, Arrow type, unit and meaning."""

    name: str
    type: pa.DataType
    unit: str = ""
    doc: str = ""
    shape: str = ""  # human-readable shape, e.g. "[C,H,W]"

    def arrow_field(self, nullable: bool = True) -> pa.Field:
        meta = {"doc": self.doc}
        if self.unit:
            meta["unit"] = self.unit
        return pa.field(self.name, self.type, nullable=nullable, metadata=meta)


COMMON_COLUMNS = (
    Column("object_id", pa.string(), "", "unique per row within a dataset; survey-native id as text"),
    Column("ra", pa.float64(), "deg", "right ascension, ICRS"),
    Column("dec", pa.float64(), "deg", "declination, ICRS"),
    Column("survey", pa.string(), "", "survey name, lower case (e.g. 'legacysurvey')"),
    Column("release", pa.string(), "", "data release, lower case (e.g. 'dr10')"),
    Column(SPLIT_COLUMN, pa.string(), "",
           "train / val / test, a pure function of sky position (see the split definition)"),
)
INDEX_DOC = Column(INDEX_COLUMN, pa.int64(), "",
                   "HATS spatial index: nested HEALPix pixel at order 29, added at partitioning")


def _fixed(t: pa.DataType, n: int | None) -> pa.DataType:
    return pa.list_(t) if n is None else pa.list_(t, n)


@dataclass(frozen=True)
class ImageSpec:
    """Cutouts of C bands, H x W pixels. `height`/`width` None: shape varies per row."""

    bands: tuple[str, ...]
    height: int | None
    width: int | None
    flux_unit: str = "nanomaggy"
    kind: str = field(default="image", init=False)

    def columns(self) -> tuple[Column, ...]:
        c, h, w = len(self.bands), self.height, self.width
        grid = lambda t: _fixed(_fixed(_fixed(t, w), h), c)  # noqa: E731
        return (
            Column("band", _fixed(pa.string(), c), "", "band names '<survey>-<band>'", "[C]"),
            Column("flux", grid(pa.float32()), self.flux_unit, "flux per pixel", "[C,H,W]"),
            Column("ivar", grid(pa.float32()), f"({self.flux_unit})^-2", "inverse variance", "[C,H,W]"),
            Column("mask", grid(pa.bool_()), "", "True where the pixel is bad", "[C,H,W]"),
            Column("psf_fwhm", _fixed(pa.float32(), c), "arcsec", "PSF FWHM per band", "[C]"),
            Column("scale", pa.float32(), "arcsec/pixel", "pixel scale", ""),
        )

    def describe(self) -> dict:
        return {"bands": list(self.bands), "height": self.height, "width": self.width,
                "flux_unit": self.flux_unit}


@dataclass(frozen=True)
class SpectrumSpec:
    """A 1-D spectrum; `length` fixed (a survey grid, e.g. DESI's 7,781 pixels) or None."""

    length: int | None = None
    kind: str = field(default="spectrum", init=False)

    def columns(self) -> tuple[Column, ...]:
        n = self.length
        return (
            Column("lambda", _fixed(pa.float32(), n), "Angstrom", "vacuum wavelength", "[N]"),
            Column("flux", _fixed(pa.float32(), n), "1e-17 erg/(s cm2 Angstrom)", "flux density", "[N]"),
            Column("ivar", _fixed(pa.float32(), n), "(1e-17 erg/(s cm2 Angstrom))^-2", "inverse variance", "[N]"),
            Column("mask", _fixed(pa.bool_(), n), "", "True where the pixel is bad", "[N]"),
            Column("lsf_sigma", _fixed(pa.float32(), n), "Angstrom",
                   "line-spread function sigma, the pixel included (σ² + Δλ²/12)", "[N]"),
        )

    def describe(self) -> dict:
        return {"length": self.length}


@dataclass(frozen=True)
class LightcurveSpec:
    """A multi-band light curve of T epochs (variable length, never padded)."""

    flux_unit: str = "FLUXCAL"
    kind: str = field(default="lightcurve", init=False)

    def columns(self) -> tuple[Column, ...]:
        return (
            Column("time", pa.list_(pa.float64()), "d (MJD)", "epoch, Modified Julian Date", "[T]"),
            Column("band", pa.list_(pa.string()), "", "band of each epoch '<survey>-<band>'", "[T]"),
            Column("flux", pa.list_(pa.float32()), self.flux_unit, "calibrated flux", "[T]"),
            Column("flux_err", pa.list_(pa.float32()), self.flux_unit, "1-sigma flux error", "[T]"),
            Column("mask", pa.list_(pa.bool_()), "", "True where the epoch is bad", "[T]"),
        )

    def describe(self) -> dict:
        return {"flux_unit": self.flux_unit}


ModalitySpec = ImageSpec | SpectrumSpec | LightcurveSpec


def modality_spec(kind: str, params: dict[str, Any]) -> ModalitySpec:
    """Build a spec from its `describe()` form (as stored in build.json / catalog.yaml).

    Args:
        kind: ``"image"``, ``"spectrum"`` or ``"lightcurve"``.
        params: the spec's parameters (`describe()` output).

    Returns:
        The `ImageSpec`, `SpectrumSpec` or `LightcurveSpec`.

    Raises:
        ValueError: an unknown kind.
        KeyError: an image spec without ``bands``.

    Example:
        >>> modality_spec("spectrum", {"length": 7781})
        SpectrumSpec(length=7781, kind='spectrum')
    """
    if kind == "image":
        return ImageSpec(tuple(params["bands"]), params.get("height"), params.get("width"),
                         params.get("flux_unit", "nanomaggy"))
    if kind == "spectrum":
        return SpectrumSpec(params.get("length"))
    if kind == "lightcurve":
        return LightcurveSpec(params.get("flux_unit", "FLUXCAL"))
    raise ValueError(f"unknown modality {kind!r}; expected one of {MODALITIES}")


def modality_type(spec: ModalitySpec) -> pa.StructType:
    """The Arrow struct type of one modality column (its fields in spec order)."""
    return pa.struct([c.arrow_field() for c in spec.columns()])


def dataset_schema(modalities: dict[str, ModalitySpec], extra: list[pa.Field] | tuple = (),
                   with_index: bool = False) -> pa.Schema:
    """The Arrow schema of one dataset: common columns, modality structs, survey columns.

    Args:
        modalities: column name (usually the modality kind; prefixed in paired catalogs, e.g.
            ``desi_spectrum``) -> its spec; recorded in the field metadata.
        extra: survey-native columns, lower case, keeping their own names.
        with_index: also the HATS spatial index column.

    Returns:
        The schema, with ``mmu.schema_version`` in its metadata.

    Raises:
        ValueError: an extra column that collides with a standard one or is not lower case.

    Example:
        >>> dataset_schema({"spectrum": SpectrumSpec(64)}).field("spectrum").type.num_fields
        5
    """
    fields = [c.arrow_field(nullable=c.name not in ("object_id", "ra", "dec")) for c in COMMON_COLUMNS]
    for name, spec in modalities.items():
        fields.append(pa.field(name, modality_type(spec), metadata={
            "modality": spec.kind, "spec": json.dumps(spec.describe(), sort_keys=True)}))
    taken = {f.name for f in fields} | {INDEX_COLUMN}
    for f in extra:
        if f.name in taken:
            raise ValueError(f"survey column {f.name!r} collides with a standard column")
        if f.name != f.name.lower():
            raise ValueError(f"survey column {f.name!r} must be lower case")
        fields.append(f)
    if with_index:
        fields.append(INDEX_DOC.arrow_field())
    return pa.schema(fields, metadata={"mmu.schema_version": SCHEMA_VERSION})


def hf_features(schema: pa.Schema, modalities: dict[str, ModalitySpec]):
    """`datasets.Features` for a dataset card, with fixed shapes as Array3D / List(length=)."""
    from datasets import Array3D, Features, List, Value

    def value(t: pa.DataType):
        return Value("bool" if pa.types.is_boolean(t) else str(t))

    def seq(col: Column, n: int | None):
        inner = col.type
        while pa.types.is_list(inner) or pa.types.is_fixed_size_list(inner):
            inner = inner.value_type
        return List(value(inner), length=-1 if n is None else n)

    def modality_features(spec: ModalitySpec) -> dict:
        out = {}
        for col in spec.columns():
            t = col.type
            if isinstance(spec, ImageSpec) and col.shape == "[C,H,W]" and None not in (spec.height, spec.width):
                inner = "bool" if col.name == "mask" else "float32"
                out[col.name] = Array3D((len(spec.bands), spec.height, spec.width), inner)
            elif isinstance(spec, ImageSpec) and col.shape == "[C,H,W]":
                out[col.name] = List(List(List(Value("bool" if col.name == "mask" else "float32"))))
            elif pa.types.is_fixed_size_list(t):
                out[col.name] = seq(col, t.list_size)
            elif pa.types.is_list(t):
                out[col.name] = seq(col, None)
            else:
                out[col.name] = value(t)
        return out

    plain = pa.schema([f for f in schema if f.name not in modalities])
    features = dict(Features.from_arrow_schema(plain))
    ordered = {}
    for f in schema:
        ordered[f.name] = modality_features(modalities[f.name]) if f.name in modalities else features[f.name]
    return Features(ordered)


# ---------------------------------------------------------------------------------------------
# building modality arrays from numpy buffers (builders use these; never Python lists of arrays)


def _fsl(flat: np.ndarray, *shape: int) -> pa.Array:
    arr = pa.array(np.ascontiguousarray(flat).reshape(-1))
    for n in reversed(shape):
        arr = pa.FixedSizeListArray.from_arrays(arr, n)
    return arr


def image_array(spec: ImageSpec, flux: np.ndarray, ivar: np.ndarray, mask: np.ndarray,
                psf_fwhm: np.ndarray, scale: np.ndarray | float) -> pa.StructArray:
    """Image structs from numpy buffers (no Python lists of arrays).

    Args:
        spec: the image spec (bands, fixed height and width).
        flux: [n, C, H, W]; `ivar` and `mask` likewise.
        ivar: inverse variance, [n, C, H, W].
        mask: True where a pixel is bad, [n, C, H, W].
        psf_fwhm: [n, C] in arcsec.
        scale: pixel scale in arcsec, [n] or a scalar.

    Returns:
        A StructArray of n images in `modality_type(spec)`.

    Raises:
        ValueError: shapes that do not match the spec.
        NotImplementedError: a variable-size spec (no fixed height and width).
    """
    n, c, h, w = flux.shape
    if c != len(spec.bands) or (spec.height, spec.width) not in ((h, w), (None, None)):
        raise ValueError(f"image arrays of shape {flux.shape[1:]} do not match the spec "
                         f"({len(spec.bands)}, {spec.height}, {spec.width})")
    if spec.height is None:
        raise NotImplementedError("variable-size images: build the struct with pa.array")
    bands = _fsl(np.tile(np.asarray(spec.bands, dtype=object), n).astype(str), c)
    return pa.StructArray.from_arrays(
        [bands,
         _fsl(flux.astype(np.float32), c, h, w),
         _fsl(ivar.astype(np.float32), c, h, w),
         _fsl(mask.astype(bool), c, h, w),
         _fsl(np.asarray(psf_fwhm, np.float32).reshape(n, c), c),
         pa.array(np.broadcast_to(np.asarray(scale, np.float32), (n,)))],
        fields=list(modality_type(spec)),
    )


def _offsets(lengths: np.ndarray) -> pa.Array:
    return pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))


def spectrum_array(spec: SpectrumSpec, lam, flux, ivar, mask, lsf_sigma) -> pa.StructArray:
    """Spectrum structs from numpy buffers.

    Args:
        spec: the spectrum spec; with a fixed `length` every array is 2-D [n, length], else each
            argument is a list of n 1-D arrays of equal lengths per object.
        lam: wavelength (Angstrom); `flux`, `ivar`, `mask`, `lsf_sigma` the same shapes.
        flux: flux density.
        ivar: inverse variance of `flux`.
        mask: True where a pixel is bad.
        lsf_sigma: line-spread function sigma (Angstrom).

    Returns:
        A StructArray of n spectra in `modality_type(spec)`.

    Raises:
        ValueError: an array whose shape or lengths differ from the spec or from `lam`.
    """
    names = ("lambda", "flux", "ivar", "mask", "lsf_sigma")
    dtypes = (np.float32, np.float32, np.float32, bool, np.float32)
    parts = (lam, flux, ivar, mask, lsf_sigma)
    if spec.length is not None:
        arrays = []
        for name, dt, a in zip(names, dtypes, parts, strict=True):
            a = np.asarray(a, dtype=dt)
            if a.ndim != 2 or a.shape[1] != spec.length:
                raise ValueError(f"spectrum {name} has shape {a.shape}, expected [n, {spec.length}]")
            arrays.append(_fsl(a, spec.length))
    else:
        lengths = np.array([len(x) for x in lam])
        offsets = _offsets(lengths)
        arrays = []
        for name, dt, a in zip(names, dtypes, parts, strict=True):
            if [len(x) for x in a] != list(lengths):
                raise ValueError(f"spectrum {name} lengths differ from lambda's")
            flat = np.concatenate([np.asarray(x, dt) for x in a]) if len(a) else np.array([], dt)
            arrays.append(pa.ListArray.from_arrays(offsets, pa.array(flat)))
    return pa.StructArray.from_arrays(arrays, fields=list(modality_type(spec)))


def lightcurve_array(spec: LightcurveSpec, time, band, flux, flux_err, mask) -> pa.StructArray:
    """Light-curve structs from per-object 1-D arrays.

    Args:
        spec: the light-curve spec.
        time: n arrays of observation times (MJD); the other arguments n arrays of the same lengths.
        band: band names per observation.
        flux: flux per observation.
        flux_err: its uncertainty.
        mask: True where an observation is bad.

    Returns:
        A StructArray of n light curves in `modality_type(spec)`.

    Raises:
        ValueError: an argument whose per-object lengths differ from `time`'s.
    """
    lengths = np.array([len(t) for t in time])
    offsets = _offsets(lengths)
    arrays = []
    for name, dt, a in (("time", np.float64, time), ("band", None, band), ("flux", np.float32, flux),
                        ("flux_err", np.float32, flux_err), ("mask", bool, mask)):
        if [len(x) for x in a] != list(lengths):
            raise ValueError(f"light curve {name} lengths differ from time's")
        if dt is None:
            flat = pa.array([str(b) for x in a for b in x], pa.string())
        else:
            flat = pa.array(np.concatenate([np.asarray(x, dt) for x in a]) if len(a) else np.array([], dt))
        arrays.append(pa.ListArray.from_arrays(offsets, flat))
    return pa.StructArray.from_arrays(arrays, fields=list(modality_type(spec)))


def spec_from_field(f: pa.Field) -> ModalitySpec | None:
    """Recover a modality spec from a struct field written by `dataset_schema` (or None)."""
    meta = f.metadata or {}
    kind = meta.get(b"modality", b"").decode()
    if kind not in MODALITIES or b"spec" not in meta:
        return None
    return modality_spec(kind, json.loads(meta[b"spec"]))


def modalities_of(schema: pa.Schema) -> dict[str, ModalitySpec]:
    """The modality columns of a schema written by `dataset_schema`, with their specs.

    Args:
        schema: a hub dataset's (or a shard's) Arrow schema.

    Returns:
        ``{column: spec}`` in schema order; columns without modality metadata are left out.

    Example:
        >>> modalities_of(dataset_schema({"spectrum": SpectrumSpec(64)}))
        {'spectrum': SpectrumSpec(length=64, kind='spectrum')}
    """
    out = {}
    for f in schema:
        spec = spec_from_field(f)
        if spec is not None:
            out[f.name] = spec
    return out
