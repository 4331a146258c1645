"""The survey builder interface and its registry.

A builder reads one survey's raw archive format and nothing else: it lists its raw inputs and
turns one input into standardized rows (pyarrow Tables in the schema of `mmu.model.schema`). The
engine (`mmu.engine.build`) does the rest the same way for every survey: Dask, validation, rejections,
resumption, partitioning, manifests and cards.

    @register_builder("mysurvey")
    class MySurvey(Builder):
        Config = MySurveyConfig          # a dataclass; catalog.yaml's builder_config fills it
        def modalities(self): ...        # {"spectrum": SpectrumSpec(...)}
        def extra_columns(self): ...     # survey-native columns, lower case
        def list_inputs(self, raw): ...  # [RawInput(key, paths), ...]
        def read(self, item): ...        # yields pa.Table chunks, and Rejection for bad rows
"""
from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pyarrow as pa

from mmu.model.schema import ModalitySpec, dataset_schema

_REGISTRY: dict[str, type[Builder]] = {}


@dataclass(frozen=True)
class RawInput:
    """One unit of raw data (and of resumption): a file, or a group of files read together."""

    key: str  # stable and unique within a build, e.g. a brick name or a relative path
    paths: tuple[str, ...]  # absolute paths of the files this input reads


@dataclass(frozen=True)
class Rejection:
    """Why an input, or one row of it, was not ingested."""

    input: str
    reason: str
    row: int | None = None
    object_id: str | None = None
    column: str | None = None
    file: str | None = None  # the file within a grouped input (a DESI pixel's coadds, a plate)

    def as_dict(self) -> dict:
        """The rejection as build.json records it: only the fields that are set."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


class InputRejected(Exception):
    """Raised by a builder when a whole input is unusable (corrupt file, missing HDU, ...)."""


@dataclass(frozen=True)
class BuilderConfig:
    """Base config; builders subclass it with their own fields (typed, with defaults)."""


class Builder:
    """A survey's reader: lists raw inputs and turns one into standardized rows (see the module doc).

    Class attributes: `name` (set by `register_builder`), `version` (bump it when the rows a
    builder produces change: it is part of the build key), `Config` (the dataclass that
    catalog.yaml's `builder_config` fills) and `nullable_modalities`.
    """

    name: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    Config: ClassVar[type] = BuilderConfig
    # paired catalogs kept with --keep-unmatched have rows lacking a modality
    nullable_modalities: ClassVar[bool] = False

    def __init__(self, config=None):
        self.config = config if config is not None else self.Config()

    @classmethod
    def from_options(cls, options: dict | None) -> Builder:
        """A builder configured from catalog.yaml's `builder_config`.

        Args:
            options: the config keys (lists become tuples); None for the defaults.

        Returns:
            The builder instance.

        Raises:
            ValueError: a key the builder's `Config` does not have (the message lists the known ones).

        Example:
            >>> get_builder("desi").from_options({"survey_programs": ["main/dark"]})  # doctest: +SKIP
        """
        options = dict(options or {})
        known = {f.name for f in dataclasses.fields(cls.Config)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"builder {cls.name!r}: unknown config keys {unknown}; "
                             f"known: {sorted(known)}")
        for f in dataclasses.fields(cls.Config):
            if f.name in options and isinstance(options[f.name], list):
                options[f.name] = tuple(options[f.name])
        return cls(cls.Config(**options))

    def options(self) -> dict:
        """The config as plain data (recorded in build.json, hashed into the build key)."""
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self.config).items()}

    # --- what a survey builder implements -------------------------------------------------

    def modalities(self) -> dict[str, ModalitySpec]:
        """The modality columns this builder fills: {column: spec}, e.g. {"spectrum": SpectrumSpec(...)}."""
        return {}

    def extra_columns(self) -> list[pa.Field]:
        """Survey-native scalar columns (lower case) kept next to the common ones and the modalities."""
        return []

    def list_inputs(self, raw: Path) -> list[RawInput]:
        """The raw inputs under `raw`, each one unit of work and of resumption.

        Args:
            raw: the raw root (the archive's layout below it).

        Returns:
            `RawInput`s with stable, unique keys and absolute paths.
        """
        raise NotImplementedError

    def read(self, item: RawInput) -> Iterator[pa.Table | Rejection]:
        """Rows of one input, in chunks, in `schema()`; a `Rejection` for each bad row it can name.

        Args:
            item: one of `list_inputs`' inputs.

        Yields:
            pyarrow Tables of rows, and `Rejection`s.

        Raises:
            InputRejected: the whole input is unusable (anything else raised rejects it too).
        """
        raise NotImplementedError

    def fetch(self, raw: Path, limit: int | None = None) -> list[Path]:
        """Download raw files from the survey's archive into `raw` (resumable; see `mmu fetch`).

        Args:
            raw: where to put them, in the layout `list_inputs` reads.
            limit: download only the first `limit` units (bricks, pixels, spectra).

        Returns:
            The paths fetched or already present.

        Raises:
            NotImplementedError: the builder has no archive download.
        """
        raise NotImplementedError(f"builder {self.name!r} has no archive download")

    # --- derived ---------------------------------------------------------------------------

    def manifest_extra(self) -> dict:
        """Extra fields for build.json (e.g. a paired catalog's inputs and match statistics)."""
        return {}

    def schema(self) -> pa.Schema:
        """The Arrow schema of this builder's rows: the common columns, its modalities and extras."""
        return dataset_schema(self.modalities(), self.extra_columns())


def register_builder(name: str):
    """Class decorator registering a builder under `name`.

    Args:
        name: the name catalog.yaml's `builder:` refers to.

    Returns:
        The decorator; it sets `cls.name` and returns the class unchanged.

    Raises:
        ValueError: another class is already registered under `name`.

    Example:
        >>> @register_builder("mysurvey")                  # doctest: +SKIP
        ... class MySurvey(Builder): ...
    """

    def wrap(cls: type[Builder]) -> type[Builder]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"builder name {name!r} is already registered by "
                             f"{_REGISTRY[name].__module__}.{_REGISTRY[name].__qualname__}")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def get_builder(ref: str) -> type[Builder]:
    """A registered builder class by name, or a plugin builder by ``package.module:Class``.

    Args:
        ref: a registered name (``"desi"``) or an import reference.

    Returns:
        The `Builder` subclass.

    Raises:
        KeyError: no such builder, an import that fails, or a class that is not a `Builder`.

    Example:
        >>> get_builder("desi").name
        'desi'
    """
    if ":" in ref:
        module, _, attr = ref.partition(":")
        try:
            cls = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            raise KeyError(f"cannot import builder {ref!r}: {e}") from None
        if not (isinstance(cls, type) and issubclass(cls, Builder)):
            raise KeyError(f"{ref!r} is not a mmu.engine.builder.Builder subclass")
        return cls
    importlib.import_module("mmu.builders")  # registers the survey builders
    try:
        return _REGISTRY[ref]
    except KeyError:
        raise KeyError(f"no builder {ref!r}; registered: {sorted(_REGISTRY)}") from None
