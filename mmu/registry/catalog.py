"""The registry: every dataset and every benchmark task, parsed from catalog.yaml into typed,
validated objects. Unknown keys are errors, so a typo never silently means "default".

The catalog is the repository's `catalog.yaml` (shipped inside the wheel as `mmu/catalog.yaml`),
plus any overlay files named in the `MMU_CATALOG` environment variable (os.pathsep-separated),
e.g. a local project's own datasets or a demo's tasks. An overlay may add entries, never redefine.
"""
from __future__ import annotations

import contextlib
import contextvars
import os
import re
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mmu.model.splits import SplitDefinition

NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
TASK_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*\.v[0-9]+$")
FILTER_RE = re.compile(r"^\s*[A-Za-z_][A-Za-z0-9_]*\s*((==|!=|<=|>=|<|>)\s*\S.*)?$")  # task filters


class CatalogError(ValueError):
    """catalog.yaml (or an overlay) is malformed."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class License(_Strict):
    """A dataset's license terms: SPDX id (or the survey's own name), URL and usage restrictions."""
    id: str = Field(description="SPDX id or the survey's own name for its terms")
    url: str
    non_commercial: bool = False
    no_derivatives: bool = False
    notes: str = ""


class RawSource(_Strict):
    """Where a dataset's raw inputs come from: archive URL, file pattern, docs and approximate size."""
    archive: str = Field(description="archive base URL")
    pattern: str = Field(description="URL pattern of one raw input, relative to the archive")
    docs: str = Field(description="data model documentation URL")
    size: str = Field(default="", description="approximate size of the full raw data")


class SplitsEntry(_Strict):
    """The catalog's `splits` section: the train/val/test split definition and its expected hash.

    Raises:
        ValueError: (on validation) `hash` does not match the hash computed from the definition.
    """

    method: Literal["healpix-sha256-v1"] = "healpix-sha256-v1"
    order: int
    seed: int
    fractions: dict[Literal["train", "val", "test"], float]
    hash: str = Field(description="sha256 of the definition; checked against the computed one")

    def definition(self) -> SplitDefinition:
        f = self.fractions
        return SplitDefinition(order=self.order, seed=self.seed, train=f["train"], val=f["val"],
                               test=f["test"], method=self.method)

    @model_validator(mode="after")
    def _hash_matches(self):
        computed = self.definition().hash
        if computed != self.hash:
            raise ValueError(f"splits.hash {self.hash!r} does not match the definition "
                             f"(computed {computed}); a changed split definition needs a new hash")
        return self


class DatasetEntry(_Strict):
    """One `datasets` entry of the catalog: a survey release, its builder, raw source, license and citation.

    Raises:
        ValueError: (on validation) the name is not lower-case letters, digits and '_', does not
            contain its survey and release, or a citation is not a BibTeX entry.
    """

    name: str
    survey: str
    release: str
    description: str
    modalities: list[Literal["image", "spectrum", "lightcurve", "catalog"]]
    builder: str = Field(description="registered builder name, or 'module:Class' for a plugin")
    builder_config: dict = Field(default_factory=dict)
    raw: RawSource
    license: License
    citation: list[str] = Field(description="BibTeX entries, the dataset's own first")
    acknowledgement: str = ""
    homepage: str
    expected_rows: int | None = Field(
        default=None, description="rows of the full real-archive build (None: depends on inputs)")
    mock_only: bool = Field(default=False, description="exists only as mock-observatory output")
    keywords: list[str] = Field(default_factory=list)
    partition: dict[str, int | float] = Field(default_factory=dict, description=(
        "this dataset's hats-import settings (`mmu.engine.build.PartitionSettings` names), e.g. "
        "{margin_threshold_arcsec: 32} for an image survey; `mmu build --set` overrides them"))

    @field_validator("name")
    @classmethod
    def _name(cls, v):
        if not NAME_RE.match(v):
            raise ValueError(f"dataset name {v!r} must be lower case letters, digits and '_'")
        return v

    @model_validator(mode="after")
    def _name_has_release(self):
        if self.survey not in self.name or self.release.lower() not in self.name:
            raise ValueError(f"dataset name {self.name!r} must contain its survey {self.survey!r} "
                             f"and release {self.release!r} (a released name never changes meaning)")
        for bib in self.citation:
            if not re.match(r"^\s*@\w+\{[^,\s]+,", bib):
                raise ValueError(f"{self.name}: citation is not a BibTeX entry: {bib[:60]!r}")
        return self


class PairedSource(_Strict):
    """How the paired catalog a task reads is made: `mmu crossmatch INPUTS... --name NAME`."""

    name: str = Field(description="the paired catalog's name in the hub")
    inputs: list[str] = Field(description="registered datasets, in crossmatch order; the first is "
                              "the task's `dataset`")
    prefixes: list[str] = Field(description="column prefix of each input (`--prefixes`)")
    radius_arcsec: float = 1.0
    method: Literal["nearest", "host"] = "nearest"

    @model_validator(mode="after")
    def _shape(self):
        if not NAME_RE.match(self.name):
            raise ValueError(f"paired catalog name {self.name!r} must be lower case letters, digits and '_'")
        if len(self.inputs) < 2 or len(self.prefixes) != len(self.inputs):
            raise ValueError("a paired source needs two or more inputs and one prefix per input")
        return self


class TaskEntry(_Strict):
    """A benchmark task, versioned `Name.vN`; a released task is never edited, only superseded.
    The task reads `dataset` (or the paired catalog `paired` describes), the modality columns
    `columns`, the target column, rows passing `filters` (`column`, `column == value`,
    `column >= value`, ...; rows without a finite / non-null target are always dropped), with the
    splits of `split_hash`.

    A mock task (`mock: true`, labels from the simulator) pins `dataset_revision` (a content
    revision, never a build key), its simulation and lock file. A survey-label task (`mock:
    false`) reads the surveys' own label columns and runs on any build of its datasets, mock or
    archive: it pins no revision (`dataset_revision` may be left out), reads no mock-only dataset,
    and each result records the build it ran on."""

    name: str
    description: str = ""
    dataset: str
    dataset_revision: str | None = Field(default=None, description=(
        "mock tasks: the content revision of the canonical build; survey-label tasks: none (any build)"))
    paired: PairedSource | None = None
    input_prefix: str = ""
    modality: Literal["image", "spectrum", "lightcurve", "image+spectrum", "image+image"] = Field(description=(
        "what the task reads; `a+b` (retrieval) reads two columns, of kinds a and b: `image+image` pairs "
        "two surveys' images, each embedded by the model column it maps to"))
    input_columns: list[str] = Field(default_factory=list, description=(
        "modality columns read; default `<input_prefix>_<modality>` (retrieval: two columns)"))
    target: str
    target_transform: Literal["none", "log10"] = Field(
        default="none", description="applied to the target column; log10 drops values <= 0")
    target_map: dict[str, str] | None = Field(default=None, description=(
        "classification: label -> class, applied to the labels (as strings) before anything else; "
        "labels not named keep their value (e.g. PLAsTiCC's 991-994 -> 99)"))
    filters: list[str] = Field(default_factory=list)
    split_hash: str
    min_per_split: dict[Literal["train", "val", "test"], int] = Field(default_factory=dict)
    type: Literal["regression", "classification", "retrieval"]
    main_score: str
    higher_is_better: bool
    metrics: list[str] = Field(default_factory=list, description="reported metrics (default by type)")
    class_weights: dict[str, float] | None = None
    protocols: list[str] = Field(default_factory=list)
    mock: bool = False
    sim: dict | None = Field(default=None, description="mock tasks: the simulation parameters")
    lock: str | None = Field(default=None, description="mock tasks: the lock file of canonical revisions")
    superseded_by: str | None = None

    @field_validator("name")
    @classmethod
    def _versioned(cls, v):
        if not TASK_RE.match(v):
            raise ValueError(f"task name {v!r} must be versioned as 'Name.vN'")
        return v

    @field_validator("filters")
    @classmethod
    def _filters(cls, v):
        for f in v:
            if not FILTER_RE.match(f):
                raise ValueError(f"filter {f!r}: expected `column` or `column OP value` with OP one "
                                 f"of == != < <= > >=")
        return v

    @model_validator(mode="after")
    def _consistent(self):
        if self.paired is not None and self.paired.inputs[0] != self.dataset:
            raise ValueError(f"task {self.name}: paired.inputs[0] must be the task's dataset {self.dataset!r}")
        if self.type == "retrieval" and len(self.columns) != 2:
            raise ValueError(f"task {self.name}: a retrieval task reads two columns (`input_columns`)")
        if self.type != "retrieval" and len(self.columns) != 1:
            raise ValueError(f"task {self.name}: a {self.type} task reads one modality column")
        if self.modality == "image+image" and (self.type != "retrieval" or len(set(self.columns)) != 2 or not all(
                c.endswith("_image") for c in self.columns)):
            raise ValueError(f"task {self.name}: an image+image task is a retrieval task reading two different "
                             f"`<prefix>_image` columns (`input_columns`), not {self.type} on {self.columns}")
        if self.main_score not in self.metric_names:
            raise ValueError(f"task {self.name}: main_score {self.main_score!r} is not among its "
                             f"metrics {self.metric_names}")
        if self.mock and (not self.sim or not self.lock or not self.dataset_revision):
            raise ValueError(f"task {self.name}: a mock task pins its simulation (`sim`), the lock "
                             f"file of canonical revisions (`lock`) and its `dataset_revision`")
        if self.target_map and self.type != "classification":
            raise ValueError(f"task {self.name}: `target_map` maps class labels; a {self.type} task has none")
        if not self.protocols:
            raise ValueError(f"task {self.name}: name at least one protocol")
        return self

    @property
    def columns(self) -> list[str]:
        if self.input_columns:
            return list(self.input_columns)
        return [f"{self.input_prefix}_{self.modality}" if self.input_prefix else self.modality]

    @property
    def metric_names(self) -> list[str]:
        if self.metrics:
            return list(self.metrics)
        return {"regression": ["r2"], "classification": ["accuracy", "macro_f1"],
                "retrieval": ["r@1", "r@5", "r@10", "median_rank"]}[self.type]

    @property
    def hub_name(self) -> str:
        """The hub dataset the task reads: the paired catalog, or `dataset` itself."""
        return self.paired.name if self.paired else self.dataset


class Catalog(_Strict):
    """The whole catalog.yaml: its version, split definition, datasets and benchmark tasks.

    Raises:
        ValueError: (on validation) a dataset or task name is defined twice, or a task names an
            unknown dataset.
    """

    version: int
    splits: SplitsEntry
    datasets: list[DatasetEntry]
    tasks: list[TaskEntry] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self):
        for kind, items in (("dataset", self.datasets), ("task", self.tasks)):
            seen = set()
            for item in items:
                if item.name in seen:
                    raise ValueError(f"{kind} {item.name!r} is defined twice")
                seen.add(item.name)
        names = {d.name for d in self.datasets}
        mock_only = {d.name for d in self.datasets if d.mock_only}
        for t in self.tasks:
            if t.dataset not in names:
                raise ValueError(f"task {t.name} names unknown dataset {t.dataset!r}")
            sim = [n for n in ([t.dataset] + (t.paired.inputs if t.paired else [])) if n in mock_only]
            if not t.mock and sim:
                raise ValueError(f"task {t.name} is a survey-label task (mock: false) but reads the mock-only "
                                 f"dataset(s) {sorted(set(sim))}; it would not run on an archive build")
        return self

    @property
    def split_definition(self) -> SplitDefinition:
        return self.splits.definition()

    def dataset(self, name: str) -> DatasetEntry:
        for d in self.datasets:
            if d.name == name:
                return d
        raise KeyError(f"no dataset {name!r} in the catalog; `mmu catalog list` shows the "
                       f"{len(self.datasets)} known: {', '.join(d.name for d in self.datasets)}")

    def task(self, name: str) -> TaskEntry:
        for t in self.tasks:
            if t.name == name:
                return t
        raise KeyError(f"no task {name!r} in the catalog")


def default_catalog_path() -> Path:
    """The repository's catalog.yaml in a checkout, else the copy inside the installed wheel."""
    root = Path(__file__).resolve().parents[2] / "catalog.yaml"
    if root.is_file():
        return root
    packaged = resources.files("mmu") / "catalog.yaml"
    return Path(str(packaged))


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise CatalogError(f"{path}: catalog file not found") from None
    except yaml.YAMLError as e:
        raise CatalogError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise CatalogError(f"{path}: expected a mapping at the top level")
    return data


def parse_catalog(data: dict, source: str = "<catalog>") -> Catalog:
    """Validate already-loaded catalog data as a `Catalog`.

    Args:
        data: the catalog as a mapping (as read from YAML).
        source: name of where `data` came from, used in the error message.

    Returns:
        The validated `Catalog`.

    Raises:
        CatalogError: `data` is not a valid catalog (the message starts with `source`).
    """
    try:
        return Catalog.model_validate(data)
    except ValidationError as e:
        raise CatalogError(f"{source}: {e}") from None


def load_catalog(path: str | Path | None = None, overlays: list[str | Path] | None = None) -> Catalog:
    """Load the catalog, plus overlays: the argument's, then those made active by
    `active_overlays`, then the `MMU_CATALOG` environment variable's.

    Args:
        path: the base catalog (default: the repository's or the installed package's catalog.yaml).
        overlays: YAML files that add `datasets` and `tasks`.

    Raises:
        CatalogError: a file is missing, not YAML, or not a valid catalog.
    """
    return _load(str(path or default_catalog_path()),
                 tuple(str(p) for p in (overlays or [])) + _ACTIVE.get() + _env_overlays())


_ACTIVE: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar("mmu_catalog_overlays", default=())


@contextlib.contextmanager
def active_overlays(*paths: str | Path):
    """Within the block, every `load_catalog()` also reads the overlay files `paths`.

    Example:
        >>> with active_overlays("demo/demo-tasks.yaml"):   # doctest: +SKIP
        ...     load_catalog().task("DemoMockRedshiftImage.v1")
    """
    token = _ACTIVE.set(_ACTIVE.get() + tuple(str(p) for p in paths))
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def _env_overlays() -> tuple[str, ...]:
    env = os.environ.get("MMU_CATALOG", "")
    return tuple(p for p in env.split(os.pathsep) if p)


@lru_cache(maxsize=8)
def _load(path: str, overlays: tuple[str, ...]) -> Catalog:
    data = _read_yaml(Path(path))
    for overlay in overlays:
        extra = _read_yaml(Path(overlay))
        unknown = set(extra) - {"datasets", "tasks"}
        if unknown:
            raise CatalogError(f"{overlay}: an overlay may only add 'datasets' and 'tasks', "
                               f"not {sorted(unknown)}")
        for key in ("datasets", "tasks"):
            data[key] = list(data.get(key) or []) + list(extra.get(key) or [])
    return parse_catalog(data, " + ".join((path,) + overlays))

