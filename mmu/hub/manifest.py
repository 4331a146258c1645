"""`build.json`, a hub dataset's manifest, as a typed model: written by the build engine and read
by everything else (export, cite, crossmatch, eval, publish) through `read_manifest` only.

The JSON keys are documented field by field in docs/schema.md (`mmu.hub.schemadoc.MANIFEST_FIELDS`).
`format_version` numbers the file's shape; a manifest written before the field existed has none
and is read as version 1.
"""
from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

#: the version of the build.json shape this code writes (and the newest it reads)
MANIFEST_FORMAT_VERSION = 1
MANIFEST = "build.json"

Number = int | float  # kept as written: an int stays an int in the JSON


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RawFile(_Strict):
    """One raw file an input read."""

    path: str  # relative to the raw root
    sha256: str
    bytes: int


class InputRecord(_Strict):
    """A raw input the builder listed, accepted or not."""

    key: str
    files: list[RawFile]
    rows: int = 0


class RejectedInput(_Strict):
    """A raw input the build rejected as a whole, and why."""
    input: str
    reason: str


class RejectedRow(_Strict):
    """A row rejected by validation or as a duplicate (`mmu.engine.builder.Rejection`)."""

    input: str
    reason: str
    row: int | None = None
    object_id: str | None = None
    column: str | None = None
    file: str | None = None


class SplitRecord(_Strict):
    """The split definition a build used: method, HEALPix order, seed, fractions and its hash."""
    method: str
    order: int
    seed: int
    fractions: dict[str, Number]
    hash: str


class RowCounts(_Strict):
    """The number of rows a build wrote, in total and per split."""
    total: int
    train: int = 0
    val: int = 0
    test: int = 0


class PartitionRecord(_Strict):
    """The partitioning settings (`mmu.engine.build.PartitionSettings`) and the margin cache."""

    writer: str = "hats-import"  # builds before the one-pass writer have no field: hats-import wrote them
    partition_bytes: int
    row_group_bytes: int
    compression_level: int
    highest_order: int
    margin_delta: int
    margin_order: int
    margin_threshold_arcsec: Number
    margin_catalog: str


class BuildManifest(_Strict):
    """The contents of `HUB/<name>/build.json` (see docs/schema.md for every field).

    Example:
        >>> m = read_manifest("hub", "desi_dr1")              # doctest: +SKIP
        >>> m.content_revision[:12], m.rows.train, m.data_files["train"][:1]  # doctest: +SKIP
    """

    format_version: int = MANIFEST_FORMAT_VERSION
    name: str
    survey: str
    release: str
    builder: str
    builder_version: str
    config: dict[str, Any]
    schema_version: str
    code_version: str
    engine_version: str
    build_key: str
    content_revision: str
    mock: bool = False
    mock_seed: int | None = None
    simulator_version: str | None = None
    split: SplitRecord
    rows: RowCounts
    inputs: list[InputRecord]
    rejected_inputs: list[RejectedInput] = Field(default_factory=list)
    rejected_rows: list[RejectedRow] = Field(default_factory=list)
    partition: PartitionRecord
    modalities: dict[str, dict[str, Any]]
    data_files: dict[str, list[str]]
    split_bytes: dict[str, int] = Field(default_factory=dict)
    timings_s: dict[str, Number] = Field(default_factory=dict)
    created: str
    # information about the inputs that is not a rejection (`Builder.manifest_extra`), e.g.
    # Legacy Survey bricks with missing bands
    input_notes: dict[str, Any] | None = None
    # paired (cross-matched) catalogs only (`PairedBuilder.manifest_extra`)
    paired: bool | None = None
    inputs_datasets: list[str] | None = None
    inputs_revisions: list[str] | None = None
    prefixes: list[str] | None = None
    method: str | None = None
    radius_arcsec: Number | None = None
    keep_unmatched: bool | None = None
    match: dict[str, Any] | None = None

    @field_validator("data_files")
    @classmethod
    def _relative_files(cls, v):
        # data files are read as dataset_dir / entry: an entry must stay inside the dataset folder
        for split, files in v.items():
            for k, f in enumerate(files):
                p = PurePosixPath(f)
                if not f or p.is_absolute() or "\\" in f or ".." in p.parts:
                    raise ValueError(f"data_files.{split}[{k}] = {f!r} is not a relative path inside the "
                                     f"dataset folder")
        return v

    @property
    def source_datasets(self) -> list[str]:
        """The datasets the rows come from: a paired catalog's inputs, else the dataset itself."""
        return list(self.inputs_datasets) if self.inputs_datasets else [self.name]

    @property
    def source_revisions(self) -> list[str]:
        """The content revision of each of `source_datasets`."""
        return list(self.inputs_revisions) if self.inputs_revisions else [self.content_revision]

    def to_json(self) -> dict:
        """The manifest as JSON data, exactly the keys it was given (absent optional keys stay absent).

        Returns:
            A dict ready for `json.dumps`; ``format_version`` is always included.
        """
        data = self.model_dump(mode="json", exclude_unset=True)
        data["format_version"] = self.format_version
        return data


def parse_manifest(data: dict, source: str | Path = MANIFEST) -> BuildManifest:
    """Validate build.json data (any supported format version) into a `BuildManifest`.

    Args:
        data: the parsed JSON object.
        source: where it came from, for error messages.

    Returns:
        The typed manifest; a manifest without ``format_version`` (written before the field
        existed) is read as version 1.

    Raises:
        ValueError: a newer format version than this code reads, or a field missing or of the
            wrong type (the message names the file and the field).

    Example:
        >>> parse_manifest(json.loads(Path("hub/desi_dr1/build.json").read_text()))  # doctest: +SKIP
    """
    if not isinstance(data, dict):
        raise ValueError(f"{source}: a build.json holds a JSON object, got {type(data).__name__}")
    return validate_versioned(BuildManifest, data, source=source, what="build.json",
                              current=MANIFEST_FORMAT_VERSION, hint="upgrade mmu")


def validate_versioned(model: type[BaseModel], data: dict, *, source: str, what: str, current: int,
                       hint: str):
    """Validate `data` as `model`, a file format with a `format_version` field (a file without one
    is version 1, as written before formats were versioned).

    Raises:
        ValueError: naming `source`: a version this code does not read (with `hint`), or the first
            invalid fields.
    """
    version = data.get("format_version", 1)
    if not isinstance(version, int) or not 1 <= version <= current:
        raise ValueError(f"{source}: {what} format version {version!r} is not one this mmu reads "
                         f"(1..{current}); {hint}")
    try:
        return model.model_validate({**data, "format_version": version})
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()[:5])
        raise ValueError(f"{source}: not a valid {what} ({problems})") from None


def load_manifest_file(path: str | Path) -> BuildManifest:
    """Read and validate one build.json file.

    Args:
        path: the file.

    Returns:
        The typed manifest.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not JSON, or not a valid manifest (see `parse_manifest`).
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not JSON ({e})") from None
    return parse_manifest(data, path)


def write_manifest(directory: str | Path, manifest: BuildManifest) -> Path:
    """Write `directory/build.json` atomically (the one place build.json is written).

    Args:
        directory: the dataset's collection folder.
        manifest: what to write.

    Returns:
        The path written.
    """
    from mmu.hub.layout import atomic_write_json

    path = Path(directory) / MANIFEST
    atomic_write_json(path, manifest.to_json())
    return path
