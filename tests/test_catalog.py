"""The registry: every entry of catalog.yaml validates; malformed entries are refused."""
from __future__ import annotations

import copy
import re

import pytest
import yaml

from mmu.model.splits import SplitDefinition
from mmu.registry.catalog import CatalogError, default_catalog_path, load_catalog, parse_catalog

RAW = yaml.safe_load(default_catalog_path().read_text())
CATALOG = load_catalog(default_catalog_path(), overlays=[])
DESI = next(i for i, d in enumerate(RAW["datasets"]) if d["name"] == "desi_dr1")


def test_design_first_surveys_are_registered():
    names = {d.name for d in CATALOG.datasets}
    assert {"legacysurvey_dr10_south", "desi_dr1", "sdss_dr17", "plasticc_2018", "sim_truth_v1"} <= names
    assert {d.survey for d in CATALOG.datasets} >= {"legacysurvey", "desi", "sdss", "plasticc"}


@pytest.mark.parametrize("entry", CATALOG.datasets, ids=lambda d: d.name)
def test_every_dataset_entry(entry):
    assert entry.survey in entry.name and entry.release in entry.name
    assert entry.raw.archive and entry.raw.pattern and entry.raw.docs
    assert entry.license.id and entry.license.url.startswith(("http", "docs/"))
    assert entry.citation and all(re.match(r"@\w+\{", c.strip()) for c in entry.citation)
    for bib in entry.citation:  # balanced braces: parseable BibTeX
        assert bib.count("{") == bib.count("}"), bib
    assert set(entry.modalities) <= {"image", "spectrum", "lightcurve", "catalog"}


@pytest.mark.parametrize("entry", CATALOG.tasks, ids=lambda t: t.name)
def test_every_task_entry(entry):
    assert entry.split_hash == CATALOG.split_definition.hash
    assert entry.dataset in {d.name for d in CATALOG.datasets}


def test_split_definition_matches_its_pinned_hash():
    d = CATALOG.split_definition
    assert d == SplitDefinition(order=4, seed=20261122, train=0.8, val=0.1, test=0.1)
    assert d.hash == RAW["splits"]["hash"]


def _mutated(fn):
    data = copy.deepcopy(RAW)
    fn(data)
    return data


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["datasets"][0].update(licence="typo"), "licence"),
    (lambda d: d["datasets"][0]["license"].update(noncommercial=True), "noncommercial"),
    (lambda d: d["datasets"][DESI].update(name="desi"), "must contain its survey"),
    (lambda d: d["datasets"][DESI].update(name="DESI_dr1"), "lower case"),
    (lambda d: d["datasets"][0].update(citation=["Dey et al. 2019"]), "not a BibTeX entry"),
    (lambda d: d["datasets"].append(copy.deepcopy(d["datasets"][0])), "defined twice"),
    (lambda d: d["splits"].update(order=5), "does not match the definition"),
    (lambda d: d["datasets"][0].update(modalities=["pixels"]), "modalities"),
    (lambda d: d.update(tasks=[{"name": "redshift", "dataset": "desi_dr1"}]), "versioned"),
    (lambda d: d["tasks"].append({**next(t for t in d["tasks"] if t["name"] == "DESISpectype.v1"),
                                  "name": "TruthSpectype.v1", "dataset": "sim_truth_v1"}), "mock-only"),
])
def test_malformed_catalogs_are_refused(mutate, message):
    with pytest.raises(CatalogError, match=message):
        parse_catalog(_mutated(mutate))


def test_overlay_adds_entries_and_cannot_redefine(tmp_path):
    extra = copy.deepcopy(RAW["datasets"][DESI])
    extra["name"] = "desi_dr1_local"
    ok = tmp_path / "ok.yaml"
    ok.write_text(yaml.safe_dump({"datasets": [extra]}))
    cat = load_catalog(default_catalog_path(), overlays=[ok])
    assert cat.dataset("desi_dr1_local").survey == "desi"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"datasets": [RAW["datasets"][DESI]]}))
    with pytest.raises(CatalogError, match="defined twice"):
        load_catalog(default_catalog_path(), overlays=[bad])
    worse = tmp_path / "worse.yaml"
    worse.write_text(yaml.safe_dump({"splits": RAW["splits"]}))
    with pytest.raises(CatalogError, match="may only add"):
        load_catalog(default_catalog_path(), overlays=[worse])


def test_unknown_dataset_lists_the_known_ones():
    with pytest.raises(KeyError, match="desi_dr1"):
        CATALOG.dataset("desi_dr2")
