"""docs/schema.md is generated from the schema code and must be current; it documents every
column, modality field, unit, shape, card key and version the code defines.
(The build.json field table is checked against a real build in test_publish.py.)"""
from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from mmu.hub.schemadoc import MANIFEST_FIELDS, default_doc_path, render_schema_doc, run_docs_schema
from mmu.model.schema import (
    BAND_PATTERN,
    COMMON_COLUMNS,
    INDEX_DOC,
    SCHEMA_HISTORY,
    SCHEMA_VERSION,
    ImageSpec,
    LightcurveSpec,
    SpectrumSpec,
)

DOC = Path(__file__).resolve().parent.parent / "docs" / "schema.md"


def test_docs_schema_md_is_current():
    assert default_doc_path() == DOC
    assert DOC.read_text() == render_schema_doc(), (
        "docs/schema.md is out of date: run `mmu docs schema` and commit it")


def test_rendering_is_deterministic():
    assert render_schema_doc() == render_schema_doc()


def test_check_flag_reports_a_stale_file(tmp_path, capsys):
    path = tmp_path / "schema.md"
    args = argparse.Namespace(check=True, output=str(path))
    assert run_docs_schema(args) == 1
    assert "missing" in capsys.readouterr().err
    assert run_docs_schema(argparse.Namespace(check=False, output=str(path))) == 0
    assert run_docs_schema(args) == 0
    path.write_text(path.read_text().replace("True where", "False where"))
    assert run_docs_schema(args) == 1
    assert "out of date; run `mmu docs schema`" in capsys.readouterr().err


def test_doc_covers_the_data_model():
    text = render_schema_doc()
    assert f"schema version {SCHEMA_VERSION}" in text
    for version, change in SCHEMA_HISTORY.items():
        assert f"| `{version}` | {change} |" in text
    assert BAND_PATTERN.pattern in text
    assert "**`mask` is True where a value is bad**" in text
    for col in (*COMMON_COLUMNS, INDEX_DOC):
        assert f"| `{col.name}` |" in text and col.doc in text
    for spec in (ImageSpec(("x-g",), 4, 4), SpectrumSpec(4), LightcurveSpec()):
        section = text.split(f"({type(spec).__name__})")[1].split("### ")[0]
        for col in spec.columns():
            row = next(line for line in section.splitlines() if line.startswith(f"| `{col.name}` |"))
            assert (col.unit or "—") in row and (col.shape or "scalar") in row and col.doc in row
    for key in MANIFEST_FIELDS:
        assert f"| `{key}` |" in text
    for path in ("README.md", "collection.properties", "build.json", "_<r>arcs", "Norder="):
        assert path in text


def test_example_card_yaml_is_the_card_code_output():
    """The card section is mmu.hub.card.card_yaml's own output, and it parses."""
    text = render_schema_doc()
    block = text.split("Its YAML header")[1].split("```yaml\n")[1].split("```")[0]
    meta = yaml.safe_load(block)
    assert list(meta) == ["pretty_name", "license", "tags", "configs", "dataset_info"]
    assert meta["configs"][0]["data_files"][0]["split"] == "train"
