"""Benchmark tasks on hub datasets: which rows, which target, which modality columns.

`open_task(task, hub)` reads the scalar columns of the task's dataset (ids, positions, split,
target, filter columns), checks the dataset's content revision and split hash against the task,
applies the filters, and says whether the numbers will be comparable. Whether a row has a
modality is read from one small field of it (`present_rows`); the modality arrays themselves are
read later, in batches, by `iter_samples` (the embedding step), never all at once. What the task
holds is what a probe holds anyway: the ids, targets and positions of its rows.
"""
from __future__ import annotations

import operator
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

from mmu.hub.layout import dataset_dir, read_manifest
from mmu.hub.manifest import BuildManifest
from mmu.model.schema import SPLIT_COLUMN, SPLITS
from mmu.registry.catalog import TaskEntry, load_catalog

_OPS = {"==": operator.eq, "!=": operator.ne, "<=": operator.le, ">=": operator.ge, "<": operator.lt,
        ">": operator.gt}
_FILTER = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:(==|!=|<=|>=|<|>)\s*(\S.*?))?\s*$")


class TaskError(ValueError):
    """A task is unknown, malformed, or cannot be evaluated on the given hub data."""
    pass


@dataclass
class TaskData:
    """A task opened on a hub: per-split ids, targets and positions after the filters.

    Rows of each split are sorted by object id. Targets are floats for regression (log10 applied
    when the task says so) and strings for classification.

    Attributes:
        task: The catalog entry.
        hub: The hub directory.
        manifest: The dataset's build manifest.
        ids: Split -> object ids (str).
        y: Split -> targets.
        radec: Split -> [n, 2] float (ra, dec) in degrees.
        comparable: Whether the dataset revision (mock tasks), paired inputs and split hash match
            the task's.
        not_comparable: The reasons it is not comparable (empty when comparable).
    """
    task: TaskEntry
    hub: Path
    manifest: BuildManifest
    ids: dict[str, np.ndarray]
    y: dict[str, np.ndarray]
    radec: dict[str, np.ndarray]
    comparable: bool
    not_comparable: list[str] = field(default_factory=list)

    @property
    def files(self) -> dict[str, list[Path]]:
        d = dataset_dir(self.hub, self.task.hub_name)
        return {s: [d / f for f in self.manifest.data_files.get(s, [])] for s in SPLITS}

    def counts(self) -> dict[str, int]:
        return {s: int(len(self.ids[s])) for s in SPLITS}

    @property
    def build(self) -> dict:
        """Which build the task ran on, as a result's `build` block records it: {kind: mock |
        archive, dataset, content_revision, inputs_revisions} (a paired catalog's: the content
        revision of each input, in the manifest's `inputs_datasets` order; else None)."""
        m = self.manifest
        return {"kind": "mock" if (m.mock or self.task.mock) else "archive", "dataset": self.task.hub_name,
                "content_revision": m.content_revision,
                "inputs_revisions": list(m.inputs_revisions) if m.inputs_revisions else None}


def tasks(names: list[str] | None = None) -> list[TaskEntry]:
    """The catalog's current tasks (superseded ones only when named)."""
    cat = load_catalog()
    if names:
        out = []
        for n in names:
            try:
                out.append(cat.task(n))
            except KeyError:
                raise TaskError(f"no task {n!r} in the catalog; known: "
                                f"{', '.join(t.name for t in cat.tasks) or '(none)'}") from None
        return out
    return [t for t in cat.tasks if not t.superseded_by]


def parse_filter(text: str):
    """Parse a task filter of the form `column` or `column OP value`.

    OP is one of ==, !=, <=, >=, <, >; the value is parsed as YAML (so numbers, booleans and
    strings come out typed).

    Args:
        text: The filter text, e.g. "z_quality >= 3".

    Returns:
        (column, op, value); op and value are None for a bare `column` (truthiness) filter.

    Raises:
        TaskError: The text matches neither form.
    """
    m = _FILTER.match(text)
    if not m:
        raise TaskError(f"filter {text!r}: expected `column` or `column OP value`")
    column, op, value = m.groups()
    return column, op, (yaml.safe_load(value) if op else None)


def _filter_mask(table: pa.Table, filters: list[str]) -> np.ndarray:
    keep = np.ones(table.num_rows, bool)
    for f in filters:
        column, op, value = parse_filter(f)
        col = table.column(column)
        valid = np.asarray(col.is_valid().to_numpy(zero_copy_only=False), bool)
        values = np.asarray(col.to_numpy(zero_copy_only=False))
        if op is None:
            hit = valid & np.asarray([bool(v) if ok else False for v, ok in zip(values, valid)])
        else:
            hit = valid.copy()
            hit[valid] = _OPS[op](values[valid], value)
        keep &= hit
    return keep


def filter_columns(task: TaskEntry) -> list[str]:
    """The column names a task's filters read.

    Args:
        task: The catalog task entry.

    Returns:
        One column name per filter, in filter order.

    Raises:
        TaskError: A filter cannot be parsed.
    """
    return [parse_filter(f)[0] for f in task.filters]


def open_task(task: TaskEntry, hub: str | Path, catalog=None) -> TaskData:
    """Read a task's scalar columns from its hub dataset and select the evaluable rows.

    Reads ids, positions, split, target and filter columns (not the modality arrays), and keeps
    the rows of each split that have every input modality, pass the filters and have a valid
    (finite, for regression) target; a classification task's labels go through its `target_map`.
    It compares the dataset's content revision (mock tasks; a survey-label task pins none and
    runs on any build), its paired inputs and split hash with the task's and the catalog's; a
    mismatch is recorded in `not_comparable`, not raised.

    Args:
        task: The catalog task entry.
        hub: The hub directory.
        catalog: The catalog to check the split hash against (default: `load_catalog()`).

    Returns:
        The `TaskData` of the task.

    Raises:
        TaskError: The build lacks the task's label column or another needed column; the filters
            leave no test (or no train) rows; a split has fewer rows than the task's
            `min_per_split`; a classification task has fewer than two classes in train, or a
            class in test that train lacks. Each message names the task and what is missing.
        FileNotFoundError: The dataset or its manifest is missing from the hub.

    Example:
        >>> data = open_task(tasks(["MockRedshiftImage.v1"])[0], "hub")  # doctest: +SKIP
        >>> data.counts()  # doctest: +SKIP
    """
    hub = Path(hub)
    name = task.hub_name
    manifest = read_manifest(hub, name)
    catalog = catalog or load_catalog()
    reasons = []
    if task.dataset_revision is not None and manifest.content_revision != task.dataset_revision:
        reasons.append(f"{name} content revision {manifest.content_revision[:16]} is not the "
                       f"task's {task.dataset_revision[:16]}")
    if task.paired is not None and manifest.inputs_datasets is not None:
        built = {"inputs": list(manifest.inputs_datasets), "prefixes": list(manifest.prefixes or []),
                 "method": manifest.method, "radius_arcsec": manifest.radius_arcsec}
        for key, got in built.items():
            want = getattr(task.paired, key)
            if got != (list(want) if isinstance(want, list) else want):
                reasons.append(f"{name} was cross-matched with {key} {got}, not the task's {want}")
    split_hash = manifest.split.hash
    if split_hash != task.split_hash or task.split_hash != catalog.splits.hash:
        reasons.append(f"split hash {str(split_hash)[:16]} (dataset) / {task.split_hash[:16]} (task) / "
                       f"{catalog.splits.hash[:16]} (catalog) differ")
    d = dataset_dir(hub, name)
    wanted = ["object_id", "ra", "dec", SPLIT_COLUMN, task.target, *filter_columns(task), *task.columns]
    build = f"{'mock' if manifest.mock else 'archive'} build {manifest.content_revision[:12]} of {name} in {hub}"
    ids, y, radec, steps = {}, {}, {}, {}
    for split in SPLITS:
        parts = []
        for f in manifest.data_files.get(split, []):
            path = d / f
            schema = pq.read_schema(path)
            missing = [c for c in dict.fromkeys(wanted) if c not in schema.names]
            if task.target in missing:
                raise TaskError(f"{task.name}: the {build} has no label column {task.target!r} ({path.name}); "
                                f"the task needs a build of {task.hub_name} that carries it")
            if missing:
                raise TaskError(f"{task.name}: the {build} has no column(s) {missing} ({path.name}); columns: "
                                f"{', '.join(schema.names)}")
            scalar = [c for c in dict.fromkeys(wanted) if c not in task.columns]
            t = pq.read_table(path, columns=scalar)
            present = np.ones(t.num_rows, bool)
            for c in task.columns:  # a row lacking an input modality cannot be evaluated
                present &= present_rows(path, c)
            t = t.append_column("_present", pa.array(present))
            # only this split's rows are kept (a partition listed under two splits holds both)
            parts.append(t.filter(pc.equal(t.column(SPLIT_COLUMN), split)))
        if not parts:
            ids[split], y[split], radec[split] = np.array([], object), np.array([]), np.zeros((0, 2))
            steps[split] = [(f"{split} rows", 0)]
            continue
        t = pa.concat_tables(parts)
        keep = (np.asarray(t.column(SPLIT_COLUMN).to_numpy(zero_copy_only=False)) == split)
        steps[split] = [(f"{split} rows", int(keep.sum()))]
        keep &= np.asarray(t.column("_present").to_numpy(zero_copy_only=False), bool)
        steps[split].append((f"with {' and '.join(task.columns)}", int(keep.sum())))
        for f in task.filters:
            keep &= _filter_mask(t, [f])
            steps[split].append((f"`{f}`", int(keep.sum())))
        target = t.column(task.target)
        keep &= np.asarray(target.is_valid(), bool)
        yv = np.asarray(target.to_numpy(zero_copy_only=False))
        if task.type == "regression":
            yv = np.where(np.asarray(target.is_valid(), bool), yv, np.nan).astype(float)
            if task.target_transform == "log10":
                with np.errstate(divide="ignore", invalid="ignore"):
                    yv = np.where(yv > 0, np.log10(np.where(yv > 0, yv, 1.0)), np.nan)
            keep &= np.isfinite(yv)
        elif task.type == "classification":
            yv = yv.astype(str)
            if task.target_map:
                yv = np.asarray([task.target_map.get(v, v) for v in yv], dtype=object).astype(str)
        steps[split].append((f"with a valid {task.target}", int(keep.sum())))
        order = np.argsort(np.asarray(t.column("object_id").to_pylist(), dtype=object)[keep].astype(str), kind="stable")
        ids[split] = np.asarray(t.column("object_id").to_pylist(), dtype=object)[keep][order].astype(str)
        y[split] = yv[keep][order]
        radec[split] = np.c_[np.asarray(t.column("ra"), float)[keep][order],
                             np.asarray(t.column("dec"), float)[keep][order]]
    data = TaskData(task, hub, manifest, ids, y, radec, comparable=not reasons, not_comparable=reasons)
    for split in ("test", "train"):
        if len(ids[split]) == 0:
            raise TaskError(f"{task.name}: the filters leave no {split} rows in the {build} (" + "; ".join(
                f"{what}: {n}" for what, n in steps[split]) + ")")
    short = {s: (n, task.min_per_split[s]) for s, n in data.counts().items()
             if s in task.min_per_split and n < task.min_per_split[s]}
    if short:
        raise TaskError(f"{task.name}: too few rows after the filters in the {build}: " + ", ".join(
            f"{s} {n} < {m}" for s, (n, m) in short.items()) + " (min_per_split); is this the task's dataset?")
    if task.type == "classification":
        train_classes = sorted(set(y["train"].tolist()))
        if len(train_classes) < 2:
            raise TaskError(f"{task.name}: train holds one class only ({train_classes[0]!r}, {len(y['train'])} rows) "
                            f"in the {build}; a classifier needs two or more")
        unseen = sorted(set(y["test"].tolist()) - set(train_classes))
        if unseen:
            counts = {c: int(np.sum(y["test"] == c)) for c in unseen}
            raise TaskError(f"{task.name}: class(es) {counts} (test rows) are in test but absent from train "
                            f"in the {build}; train has {train_classes}; a probe cannot predict a class it never saw")
    return data


def _leaf_cost(t: pa.DataType) -> tuple[int, int]:
    """(list nesting, bits per leaf value) of a field type: what decoding one row of it costs."""
    depth = 0
    while pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        t, depth = t.value_type, depth + 1
    try:
        bits = t.bit_width
    except ValueError:  # strings, binary: variable width
        bits = 256
    return depth, bits


def present_rows(path: str | Path, column: str) -> np.ndarray:
    """Which rows of Parquet file `path` have (non-null) struct column `column`, from its cheapest
    field alone (a scalar before a list, then the fewest bits per value, then the fewest bytes in
    the footer: an image's ``scale``, a spectrum's or light curve's bool ``mask``): a null struct is
    recorded in every field's definition levels, so one small field gives the struct's validity
    without reading its pixels.

    Args:
        path: a hub partition file.
        column: a struct (modality) column of it.

    Returns:
        bool [rows of the file].
    """
    pf = pq.ParquetFile(path)
    t = pf.schema_arrow.field(column).type
    if not pa.types.is_struct(t) or t.num_fields == 0:  # not a struct: its own validity
        return np.asarray(pf.read(columns=[column]).column(0).is_valid(), bool)
    md = pf.metadata
    stored: dict[str, int] = {}
    for rg in range(md.num_row_groups):
        group = md.row_group(rg)
        for i in range(group.num_columns):
            leaf = group.column(i)
            parts = leaf.path_in_schema.split(".")
            if parts[0] == column and len(parts) > 1:
                stored[parts[1]] = stored.get(parts[1], 0) + leaf.total_compressed_size
    field = min((f.name for f in t), key=lambda f: (*_leaf_cost(t.field(f).type), stored.get(f, 0), f))
    col = pf.read(columns=[f"{column}.{field}"], use_threads=False).column(0)
    return np.asarray(col.is_valid(), bool)


def iter_samples(files: list[Path], split: str, column: str, batch_rows: int = 256):
    """Batches of (object_ids, samples) of one modality column for the rows of `split`; a sample
    is `{"object_id", column: {field: ndarray}}`, as the trainer's collator takes it."""
    for path in files:
        pf = pq.ParquetFile(path)
        for batch in pf.iter_batches(batch_size=batch_rows, columns=["object_id", SPLIT_COLUMN, column]):
            out = table_samples(pa.Table.from_batches([batch]), split, column, path)
            if out[0]:
                yield out


def table_samples(t: pa.Table, split: str, column: str, path) -> tuple[list[str], list[dict]]:
    """(object_ids, samples) of the rows of table `t` in `split` that have `column`.

    Raises:
        TaskError: `column` is not a modality column of `t` (read from file `path`).
    """
    from mmu.model.schema import modalities_of
    from mmu.shards.export import row_arrays  # the exporter's struct -> per-row arrays, reused as is

    keep = pc.and_(pc.equal(t.column(SPLIT_COLUMN), split), pc.is_valid(t.column(column)))
    if not pc.all(keep, skip_nulls=False).as_py():  # a partition file usually holds one split: no copy
        t = t.filter(keep)
    if t.num_rows == 0:
        return [], []
    mods = {k: v for k, v in modalities_of(t.schema).items() if k == column}
    if column not in mods:
        raise TaskError(f"{path}: column {column!r} is not a modality column")
    arrays = row_arrays(t, mods, {})
    oids = [str(o) for o in t.column("object_id").to_pylist()]
    samples = [{"object_id": oid, column: {k.split(".", 1)[1]: v for k, v in a.items()}}
               for oid, a in zip(oids, arrays)]
    return oids, samples
