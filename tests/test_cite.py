"""`mmu catalog cite`: BibTeX that parses back, de-duplicated acknowledgements, license warnings,
and citations that follow paired datasets and results files to their inputs."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mmu.registry.catalog import load_catalog
from mmu.registry.cite import CiteError, collect, main, parse_bibtex, render_bibtex

SURVEYS = ["legacysurvey_dr10_south", "desi_dr1", "sdss_dr17", "plasticc_2018"]
REPO = Path(__file__).resolve().parent.parent

# A non-commercial dataset that shares DESI's acknowledgement and one of its BibTeX entries (both
# must appear once), and a no-derivatives one.
LICENSE_OVERLAY = """\
datasets:
  - name: ncsurvey_dr1
    survey: ncsurvey
    release: dr1
    description: a survey whose data may not be used commercially
    modalities: [spectrum]
    builder: "mmu_testbuilder:TestSpectra"
    raw: {archive: local, pattern: "spectra-*.fits", docs: tests/mmu_testbuilder.py}
    license: {id: CC-BY-NC-4.0, url: "https://creativecommons.org/licenses/by-nc/4.0/", non_commercial: true}
    citation:
      - "@article{NC2024, author = {Doe, J.}, title = {The NC survey}, journal = {MNRAS}, year = 2024}"
      - |-
        @article{DESI2025DR1,
          author = {{DESI Collaboration}},
          title = {Data Release 1 of the Dark Energy Spectroscopic Instrument},
          journal = {arXiv e-prints}, eprint = {2503.14745}, year = {2025}
        }
    acknowledgement: >-
      This research used data obtained with the Dark Energy Spectroscopic Instrument (DESI). See
      https://data.desi.lbl.gov/doc/acknowledgments/ for the full acknowledgement required.
    homepage: local
  - name: ndsurvey_v2
    survey: ndsurvey
    release: v2
    description: a survey whose data may not be redistributed modified
    modalities: [image]
    builder: "mmu_testbuilder:TestSpectra"
    raw: {archive: local, pattern: "spectra-*.fits", docs: tests/mmu_testbuilder.py}
    license: {id: CC-BY-ND-4.0, url: "https://creativecommons.org/licenses/by-nd/4.0/", no_derivatives: true}
    citation: ["@misc{ND2023, title = {ND survey} # { v2}, year = 2023}"]
    acknowledgement: The ND survey thanks its funders.
    homepage: local
"""

CONFLICT_OVERLAY = """\
datasets:
  - name: clash_v1
    survey: clash
    release: v1
    description: reuses a catalog BibTeX key for a different paper
    modalities: [spectrum]
    builder: "mmu_testbuilder:TestSpectra"
    raw: {archive: local, pattern: "x", docs: x}
    license: {id: MIT, url: "https://opensource.org/license/mit"}
    citation: ["@article{Dey2019, title = {Something else entirely}, year = 2019}"]
    homepage: local
"""


@pytest.fixture(scope="module")
def overlay(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cite") / "licenses.yaml"
    path.write_text(LICENSE_OVERLAY)
    return path


def keys_in(text: str) -> list[str]:
    """Entry keys as an independent parser reads them (bibtexparser when installed)."""
    ours = [e.key for e in parse_bibtex(text)]
    try:
        import bibtexparser
    except ImportError:
        return ours
    theirs = [e["ID"] for e in bibtexparser.loads(text).entries]
    assert theirs == ours
    return theirs


def test_four_surveys_give_valid_bibtex(capsys):
    assert main(SURVEYS) == 0
    out, err = capsys.readouterr()
    assert "warning" not in err  # none of the four has a restrictive license
    cat = load_catalog()
    expected = [parse_bibtex(c)[0].key for name in SURVEYS for c in cat.dataset(name).citation]
    assert keys_in(out) == expected
    for name in SURVEYS:  # every field of every catalog entry survives, whitespace aside
        for c in cat.dataset(name).citation:
            original = parse_bibtex(c)[0]
            [rendered] = [e for e in parse_bibtex(out) if e.key == original.key]
            assert rendered.normalized() == original.normalized()
    acks = [cat.dataset(n).acknowledgement for n in SURVEYS if cat.dataset(n).acknowledgement]
    for ack in acks:  # each once, as % comments that BibTeX ignores
        first_words = " ".join(ack.split()[:8])
        assert " ".join(out.split()).count(first_words) == 1


def test_license_warnings_and_deduplication(overlay, tmp_path):
    env = {**os.environ, "MMU_CATALOG": str(overlay),
           "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])}
    bib = tmp_path / "refs.bib"
    r = subprocess.run([sys.executable, "-m", "mmu", "catalog", "cite", "desi_dr1", "ncsurvey_dr1",
                        "ndsurvey_v2", "-o", str(bib)], capture_output=True, text=True, env=env,
                       cwd=tmp_path, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "warning: ncsurvey_dr1 is licensed CC-BY-NC-4.0" in r.stderr and "NON-COMMERCIAL" in r.stderr
    assert "warning: ndsurvey_v2 is licensed CC-BY-ND-4.0" in r.stderr and "NO DERIVATIVES" in r.stderr
    assert "desi_dr1" not in r.stderr
    text = bib.read_text()
    assert keys_in(text) == ["DESI2025DR1", "DESI2016Instrument", "NC2024", "ND2023"]
    assert "% [desi_dr1, ncsurvey_dr1]" in text  # one shared acknowledgement, both datasets named
    assert text.count("Dark Energy Spectroscopic Instrument (DESI)") == 1
    assert "% WARNING: ncsurvey_dr1" in text
    assert "Acknowledgements required in publications" in r.stdout
    assert r.stdout.count("The ND survey thanks its funders.") == 1


def test_conflicting_keys_are_an_error(tmp_path):
    path = tmp_path / "clash.yaml"
    path.write_text(CONFLICT_OVERLAY)
    cat = load_catalog(overlays=[path])
    with pytest.raises(CiteError, match="'Dey2019' means different entries in legacysurvey_dr10_south and clash_v1"):
        collect(["legacysurvey_dr10_south", "clash_v1"], cat)


def test_paired_datasets_and_results_cite_their_inputs(tmp_path, capsys):
    hub = tmp_path / "hub"
    (hub / "desi_x_ls").mkdir(parents=True)
    (hub / "desi_x_ls" / "build.json").write_text(json.dumps(
        {"name": "desi_x_ls", "build_key": "ab12", "paired": True,  # as mmu/pairing/crossmatch.py writes it
         "inputs_datasets": ["desi_dr1", "legacysurvey_dr10_south"]}))
    (hub / "triple").mkdir()
    (hub / "triple" / "build.json").write_text(json.dumps(
        {"name": "triple", "inputs_datasets": ["desi_x_ls", "plasticc_2018"]}))
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"task": "Redshift.v1", "dataset": "desi_x_ls", "metrics": {}}))
    many = tmp_path / "many.json"
    many.write_text(json.dumps({"datasets": ["sdss_dr17", "desi_dr1"]}))
    cat = load_catalog()

    c = collect([str(hub / "desi_x_ls")], cat)  # a folder; the hub is its parent
    assert c.datasets == ["desi_dr1", "legacysurvey_dr10_south"]
    c = collect([str(hub / "triple" / "build.json")], cat)
    assert c.datasets == ["desi_dr1", "legacysurvey_dr10_south", "plasticc_2018"]
    c = collect(["triple", str(many)], cat, hub=hub)
    assert c.datasets == ["desi_dr1", "legacysurvey_dr10_south", "plasticc_2018", "sdss_dr17"]
    assert [e.key for e in c.entries].count("DESI2025DR1") == 1

    assert main([str(results), "--hub", str(hub)]) == 0
    out, err = capsys.readouterr()
    assert keys_in(out) == ["DESI2025DR1", "DESI2016Instrument", "Dey2019"]
    assert f"note: {results} rests on desi_dr1, legacysurvey_dr10_south" in err

    (hub / "loop").mkdir()
    (hub / "loop" / "build.json").write_text(json.dumps({"name": "loop", "inputs_datasets": ["loop"]}))
    with pytest.raises(CiteError, match="lead back to itself"):
        collect(["loop"], cat, hub=hub)
    assert main(["nosuch_dr9"]) == 2
    assert "not a dataset of the catalog" in capsys.readouterr().err
    (tmp_path / "odd.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(CiteError, match="neither a build.json"):
        collect([str(tmp_path / "odd.json")], cat)


UNREADABLE = "not a BibTeX entry"


@pytest.mark.parametrize("bad, why", [
    ("@article{K, title = {unclosed}", UNREADABLE),
    ("@article{K, title = {a}}} ", UNREADABLE),
    ("@article{K, title = {a}, title = {b}}", "line 1: @article{K: field 'title' appears twice"),
    ("@article{K, Title = {a}, title = {b}}", "field 'title' appears twice"),  # names are case-blind
    ("@article{, title = {a}}", UNREADABLE),
    ("@article{K, title {a}}", UNREADABLE),
    ("@article{K, title = {a}{b}}", UNREADABLE),
    ("text @article{K, title = {a}}", UNREADABLE),
    ("@misc{A, year = 2020}\n\n@article{B, title = {a}{b}}", "line 3: not a BibTeX entry"),
])
def test_strict_parser_rejects_malformed_bibtex(bad, why):
    """bibtexparser alone would skip these (or keep the first title): each must be an error
    naming the line, never a citation silently missing an entry or a field."""
    with pytest.raises(CiteError, match=re.escape(why)):
        parse_bibtex(bad)


def test_parser_keeps_field_order_non_ascii_macros_and_concatenation():
    [a, b] = parse_bibtex("% a comment line\n"
                          "@Article{Sch\u00f6n2024,\n  author = {Sch\u00f6n, J. and {\\\"O}zel, F.},\n"
                          "  title = \"Spectra {DESI} \" # {in 3D}, month = jan, year = 2024,\n}\n"
                          "@misc(Z99, note = {caf\u00e9 \u2014 \u00b0})")
    assert (a.type, a.key) == ("article", "Sch\u00f6n2024")
    assert [k for k, _ in a.fields] == ["author", "title", "month", "year"]  # as written
    assert a.get("author") == "Sch\u00f6n, J. and {\\\"O}zel, F." and a.get("title") == "Spectra {DESI} in 3D"
    assert a.get("month") == "January" and a.get("year") == "2024"
    assert (b.type, b.key, b.get("note")) == ("misc", "Z99", "caf\u00e9 \u2014 \u00b0")
    again = parse_bibtex(a.render() + "\n" + b.render())
    assert [e.normalized() for e in again] == [a.normalized(), b.normalized()]


def test_render_round_trips_every_catalog_entry():
    cat = load_catalog()
    c = collect([d.name for d in cat.datasets], cat)
    again = parse_bibtex(render_bibtex(c))
    assert [e.normalized() for e in again] == [e.normalized() for e in c.entries]
