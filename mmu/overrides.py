"""Command-line overrides of a config: one syntax, `KEY=VALUE`, for every command that takes them.

A key is a dotted path (``train.steps``, ``data.train``, ``zeropoint_rms_mag``); a value is read
as one YAML scalar or flow collection, so ``100`` is an int, ``3e-4`` a float, ``true`` a bool,
``[a, b]`` a list, ``{g: 1}`` a mapping, ``null`` (or nothing after ``=``) None, and any other
text a string (``shards/train``). Quote a value to keep it a string: ``name='007'``.

    >>> parse_overrides(["train.steps=100", "data.train=[a,b]", "run.name=tiny"])
    {'train': {'steps': 100}, 'data': {'train': ['a', 'b']}, 'run': {'name': 'tiny'}}
"""
from __future__ import annotations

import copy
import json
import re
from typing import Any

import yaml

EXAMPLE = "train.steps=100"
_KEY_PART = re.compile(r"^[^\s.=\[\]{}]+$")


class OverrideError(ValueError):
    """An override is not `KEY=VALUE`, or its key does not fit the config."""


def parse_value(text: str) -> Any:
    """The value of an override: YAML (JSON is YAML too), else the text itself.

    PyYAML reads ``1e-4`` (no dot) as a string; it is a float here, as in JSON.
    """
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str) and value == text.strip():
        try:
            number = json.loads(text)
        except ValueError:
            return value
        if isinstance(number, (int, float)):
            return number
    return value


def parse_item(item: str) -> tuple[tuple[str, ...], Any]:
    """``"a.b=1"`` -> ``(("a", "b"), 1)``.

    Raises:
        OverrideError: no ``=``, an empty key, or a key part that is not a name.
    """
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep:
        raise OverrideError(f"override {item!r}: expected key=value, e.g. {EXAMPLE}")
    if not key:
        raise OverrideError(f"override {item!r}: the key before '=' is empty (expected key=value, "
                            f"e.g. {EXAMPLE})")
    parts = tuple(p.strip() for p in key.split("."))
    bad = [p for p in parts if not _KEY_PART.match(p)]
    if bad:
        raise OverrideError(f"override {item!r}: {key!r} is not a dotted key (a part is "
                            f"{bad[0]!r}); expected names joined by '.', e.g. {EXAMPLE}")
    return parts, parse_value(text)


def _set(tree: dict, parts: tuple[str, ...], value: Any, item: str) -> None:
    node = tree
    for depth, p in enumerate(parts[:-1]):
        child = node.get(p)
        if child is None:
            child = node[p] = {}
        if not isinstance(child, dict):
            where = ".".join(parts[:depth + 1])
            raise OverrideError(f"override {item!r}: {where!r} is a value ({child!r}), not a section "
                                "with keys")
        node = child
    node[parts[-1]] = value


def parse_overrides(items: list[str]) -> dict:
    """``["a.b=1", "c=[x, y]"]`` -> ``{"a": {"b": 1}, "c": ["x", "y"]}``; a later item wins.

    Raises:
        OverrideError: an item is not ``KEY=VALUE`` (see `parse_item`), or sets a key below one
            that another item set to a value (``a=1 a.b=2``).
    """
    tree: dict = {}
    for item in items:
        parts, value = parse_item(item)
        _set(tree, parts, value, item)
    return tree


def apply_overrides(data: dict, items: list[str]) -> dict:
    """A copy of the config `data` with each ``KEY=VALUE`` of `items` set at its dotted path.

    A value replaces what was at its path (``model={...}`` replaces the whole section); missing
    sections are created.

    Raises:
        OverrideError: a malformed item, or a path through a key whose value is not a section
            (``train.steps.x=1``).
    """
    data = copy.deepcopy(data)
    for item in items:
        parts, value = parse_item(item)
        _set(data, parts, value, item)
    return data
