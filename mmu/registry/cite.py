"""`mmu catalog cite`: the BibTeX, acknowledgements and license caveats of every dataset a piece
of work used, from the catalog's entries, de-duplicated.

Targets are dataset names, built datasets (a hub folder or its build.json: a paired,
cross-matched catalog lists its inputs in `inputs_datasets`), or benchmark results files (their
`dataset` / `datasets` / `task` fields); each resolves to the survey datasets it rests on.
"""
from __future__ import annotations

import argparse
import json
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

from mmu.hub.layout import MANIFEST


class CiteError(ValueError):
    """A target cannot be resolved, or the catalog's BibTeX is malformed or contradictory."""


# -------------------------------------------------------------------------------------------------
# the catalog's BibTeX, read by bibtexparser and held strictly (de-duplication needs keys and fields)


@dataclass(frozen=True)
class BibEntry:
    """One BibTeX entry as bibtexparser reads it, fields in the order they are written.

    Values are bibtexparser's: outer delimiters removed, ``#`` concatenations joined and month
    macros expanded (``common_strings``); inner braces are kept.
    """

    type: str  # lower case: article, misc, ...
    key: str
    fields: tuple[tuple[str, str], ...]  # (lower-case name, value)

    def get(self, name: str) -> str | None:
        """The value of field `name` (lower case), or None."""
        return next((v for k, v in self.fields if k == name), None)

    def normalized(self) -> tuple:
        """What two entries must share to be the same entry: type, key and fields, whitespace
        runs collapsed."""
        return (self.type, self.key, tuple((k, " ".join(v.split())) for k, v in self.fields))

    def render(self) -> str:
        """The entry as BibTeX text, one aligned ``name = {value}`` line per field."""
        width = max((len(k) for k, _ in self.fields), default=0)
        body = ",\n".join(f"  {k.ljust(width)} = {{{' '.join(v.split())}}}" for k, v in self.fields)
        return f"@{self.type}{{{self.key},\n{body}\n}}"


def _grammar_elements(expr, name: str):
    """The sub-expressions of a pyparsing grammar whose results name is `name`."""
    seen, stack = set(), [expr]
    while stack:
        x = stack.pop()
        if id(x) in seen:
            continue
        seen.add(id(x))
        if x.resultsName == name:
            yield x
        stack += list(getattr(x, "exprs", None) or [])
        if getattr(x, "expr", None) is not None:
            stack.append(x.expr)


def parse_bibtex(text: str, source: str = "<bibtex>") -> list[BibEntry]:
    """Read the BibTeX entries of `text` with bibtexparser, strictly.

    bibtexparser skips what it cannot read as an "implicit comment" and keeps the first of two
    fields with one name; here both are errors, since a citation silently losing a field or a
    whole entry is worse than none. Text outside entries may only be blank or ``%`` comments.

    Args:
        text: BibTeX source (``@type{key, name = value, ...}`` entries).
        source: what the text is, for error messages (e.g. ``catalog entry desi_dr1``).

    Returns:
        The entries in the order written; field names lower case, in the order written.

    Raises:
        CiteError: text that is not a readable entry (with its line), or a field given twice.

    Example:
        >>> [e] = parse_bibtex("@misc{ND2023, title = {ND survey} # { v2}, year = 2023}")
        >>> e.key, e.get("title"), e.get("year")
        ('ND2023', 'ND survey v2', '2023')
    """
    import bibtexparser
    from bibtexparser.bparser import BibTexParser

    parser = BibTexParser(common_strings=True, ignore_nonstandard_types=False)
    # bibtexparser folds each entry's fields into a dict (reversed, the first of a repeated name
    # winning): record each field's name and offset, and each entry's offset, as its grammar
    # matches. `_expr` is the parser's pyparsing grammar (bibtexparser 1.x, pinned <2 in pyproject).
    field_at: dict[int, str] = {}
    entry_at: list[int] = []

    def on_field(s, loc, tokens) -> None:  # returns None: the tokens go on unchanged
        field_at.setdefault(loc, tokens[0][0].lower())

    def on_entry(s, loc, tokens) -> None:
        entry_at.append(loc)

    for element in _grammar_elements(parser._expr.entry, "Field"):
        element.add_parse_action(on_field)
    parser._expr.entry.add_parse_action(on_entry)

    def line(pos: int) -> int:
        return text.count("\n", 0, max(pos, 0)) + 1

    db = bibtexparser.loads(text, parser)
    for comment in db.comments:  # what bibtexparser skipped: only % comments may be
        bad = [x.strip() for x in comment.splitlines() if x.strip() and not x.lstrip().startswith("%")]
        if bad:
            raise CiteError(f"{source}, line {line(text.find(bad[0]))}: not a BibTeX entry: "
                            f"{bad[0][:60]!r} (check the braces, the commas between fields, "
                            f"'=' after each field name and the citation key)")
    starts = sorted(set(entry_at))
    if len(starts) != len(db.entries):
        raise CiteError(f"{source}: read {len(db.entries)} entries at {len(starts)} places; malformed BibTeX")
    entries = []
    for i, (start, d) in enumerate(zip(starts, db.entries, strict=False)):
        end = starts[i + 1] if i + 1 < len(starts) else len(text) + 1
        names = [n for at, n in sorted(field_at.items()) if start <= at < end]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise CiteError(f"{source}, line {line(start)}: @{d['ENTRYTYPE']}{{{d['ID']}: field "
                            f"{twice[0]!r} appears twice")
        if sorted(names) != sorted(n for n in d if n not in ("ENTRYTYPE", "ID")):
            raise CiteError(f"{source}, line {line(start)}: @{d['ENTRYTYPE']}{{{d['ID']}: fields read "
                            f"{sorted(d)} do not match the fields written {names}")
        entries.append(BibEntry(d["ENTRYTYPE"].lower(), d["ID"], tuple((n, str(d[n])) for n in names)))
    return entries


# -------------------------------------------------------------------------------------------------
# resolving targets to datasets


@dataclass
class Citations:
    """What `collect` found for a set of targets: what to cite, acknowledge and beware of."""

    datasets: list[str]  # the catalog datasets cited, in first-use order
    via: dict[str, list[str]]  # target as given -> the catalog datasets it resolved to
    entries: list[BibEntry]
    keys_of: dict[str, list[str]]  # dataset -> its citation keys
    acknowledgements: list[tuple[str, list[str]]]  # (text, datasets requiring it)
    licenses: dict[str, str]  # dataset -> "id url"
    warnings: list[str] = field(default_factory=list)


def _names_in_results(data: dict, catalog) -> list[str]:
    names = []
    for key in ("dataset", "datasets"):
        v = data.get(key)
        if isinstance(v, str):
            names.append(v)
        elif isinstance(v, list):
            names += [x for x in v if isinstance(x, str)]
        elif isinstance(v, dict) and isinstance(v.get("name"), str):  # {"name": ..., "revision": ...}
            names.append(v["name"])
    if not names:
        for key in ("task", "tasks"):
            v = data.get(key)
            for t in ([v] if isinstance(v, (str, dict)) else v if isinstance(v, list) else []):
                tname = t.get("name") if isinstance(t, dict) else t
                try:
                    names.append(catalog.task(tname).dataset)
                except KeyError:
                    raise CiteError(f"results name task {tname!r}, which is not in the catalog") from None
    return names


def resolve(targets: list[str], catalog, hub: str | Path | None = None) -> dict[str, list[str]]:
    """Each target -> the catalog dataset names it rests on (paired datasets and results files
    are followed to their inputs, recursively).

    Args:
        targets: dataset names, built datasets (a folder, its build.json, or a name in `hub`) or
            results files.
        catalog: the catalog (`mmu.registry.catalog.load_catalog()`).
        hub: the hub folder names are looked up in (default: a build.json's own hub).

    Returns:
        {target: [dataset names, in first-use order]}.

    Raises:
        CiteError: a target that is none of these, or inputs that lead back to themselves.
    """
    known = {d.name for d in catalog.datasets}

    def from_manifest(data: dict, path: Path, seen: tuple) -> list[str]:
        home = Path(hub) if hub else path.parent.parent  # HUB/NAME/build.json
        if "inputs_datasets" in data:
            return [n for x in data["inputs_datasets"] for n in one(x, home, seen + (str(path),))]
        if "build_key" in data and data.get("name"):
            if data["name"] not in known:
                raise CiteError(f"{path}: dataset {data['name']!r} is not in the catalog "
                                f"and lists no inputs_datasets")
            return [data["name"]]
        names = _names_in_results(data, catalog)
        if not names:
            raise CiteError(f"{path}: neither a build.json (name, build_key or inputs_datasets) nor a "
                            f"results file (dataset, datasets or task)")
        return [n for x in names for n in one(x, home, seen + (str(path),))]

    def one(target: str, home: Path | None, seen: tuple) -> list[str]:
        if target in known:
            return [target]
        path = Path(target)
        if not path.exists() and home is not None and (home / target / MANIFEST).is_file():
            path = home / target / MANIFEST
        if path.is_dir():
            path = path / MANIFEST
        if not path.is_file():
            raise CiteError(f"{target!r}: not a dataset of the catalog (`mmu catalog list`), nor a built "
                            f"dataset{' in hub ' + str(home) if home else ' (pass --hub HUB)'}, nor a file")
        if str(path.resolve()) in seen:
            raise CiteError(f"{path}: its inputs lead back to itself")
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CiteError(f"{path}: not a JSON file ({e})") from None
        if isinstance(data, list):  # a list of results
            return [n for d in data if isinstance(d, dict) for n in from_manifest(d, path.resolve(), seen)]
        if not isinstance(data, dict):
            raise CiteError(f"{path}: expected a JSON object")
        return from_manifest(data, path.resolve(), seen + (str(path.resolve()),))

    home = Path(hub) if hub else None
    out = {}
    for t in targets:
        out[t] = list(dict.fromkeys(one(t, home, ())))
    return out


def collect(targets: list[str], catalog, hub: str | Path | None = None) -> Citations:
    """Everything to cite for `targets` (see `resolve`): BibTeX entries de-duplicated by key,
    acknowledgements de-duplicated by text, licenses, and warnings for non-commercial and
    no-derivatives licenses.

    Raises:
        CiteError: an unresolvable target, malformed catalog BibTeX (`parse_bibtex`), a
            citation holding more than one entry, or one key naming two different entries.

    Example:
        >>> c = collect(["desi_dr1"], load_catalog())  # doctest: +SKIP
        >>> [e.key for e in c.entries]  # doctest: +SKIP
        ['DESI2025DR1', 'DESI2016Instrument']
    """
    via = resolve(targets, catalog, hub)
    names = list(dict.fromkeys(n for ns in via.values() for n in ns))
    entries: dict[str, tuple[BibEntry, str]] = {}
    keys_of, acks, licenses, warnings = {}, {}, {}, []
    for name in names:
        d = catalog.dataset(name)
        keys_of[name] = []
        for text in d.citation:
            parsed = parse_bibtex(text, f"catalog entry {name}")
            if len(parsed) != 1:
                raise CiteError(f"catalog entry {name}: each citation must hold one BibTeX entry")
            e = parsed[0]
            if e.key in entries and entries[e.key][0].normalized() != e.normalized():
                raise CiteError(f"BibTeX key {e.key!r} means different entries in {entries[e.key][1]} "
                                f"and {name}; give one of them a distinct key in catalog.yaml")
            entries.setdefault(e.key, (e, name))
            keys_of[name].append(e.key)
        if d.acknowledgement.strip():
            text = " ".join(d.acknowledgement.split())
            acks.setdefault(text, []).append(name)
        lic = d.license
        licenses[name] = f"{lic.id} {lic.url}"
        if lic.non_commercial:
            warnings.append(f"{name} is licensed {lic.id} ({lic.url}): NON-COMMERCIAL use only; work "
                            f"derived from it (cross-matches, trained models, results) carries that limit")
        if lic.no_derivatives:
            warnings.append(f"{name} is licensed {lic.id} ({lic.url}): NO DERIVATIVES; sharing modified "
                            f"versions (cutouts, cross-matches, re-built catalogs) may not be allowed")
    return Citations(names, via, [e for e, _ in entries.values()], keys_of, list(acks.items()),
                     licenses, warnings)


def render_bibtex(c: Citations) -> str:
    """A .bib file: the entries, with the datasets, licenses and acknowledgements as % comments
    (BibTeX ignores them; `parse_bibtex` reads the file back)."""
    lines = [f"% BibTeX for {', '.join(c.datasets)} (written by `mmu catalog cite`)", "%"]
    for name in c.datasets:
        lines.append(f"% {name}: cite {', '.join(c.keys_of[name])}; license {c.licenses[name]}")
    lines.append("")
    for e in c.entries:
        lines += [e.render(), ""]
    if c.acknowledgements:
        lines.append("% Acknowledgements these surveys require in publications:")
        for text, names in c.acknowledgements:
            lines.append("%")
            lines.append(f"% [{', '.join(names)}]")
            lines += ["% " + x for x in textwrap.wrap(text, 94)]
    for w in c.warnings:
        lines.append(f"% WARNING: {w}")
    return "\n".join(lines).rstrip() + "\n"


# -------------------------------------------------------------------------------------------------
# the command


def configure_cite_parser(p: argparse.ArgumentParser) -> None:
    """The options of `mmu catalog cite` on parser `p`."""
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.description = textwrap.dedent("""\
        Print the BibTeX of every dataset used (each dataset's own paper and the papers it rests
        on) and the acknowledgement texts the surveys require, de-duplicated; warn about
        non-commercial and no-derivatives licenses.

        A target is a dataset name, a built dataset (a hub folder, its build.json, or a name built
        in --hub: a cross-matched catalog cites every input), or a results file (its dataset,
        datasets or task fields).

        examples:  mmu catalog cite desi_dr1 legacysurvey_dr10_south -o refs.bib
                   mmu catalog cite results/run1.json --hub ./hub""")
    p.add_argument("targets", nargs="+", metavar="NAME", help="dataset name, built dataset or results file")
    p.add_argument("-o", "--output", default=None, help="write the BibTeX to this file instead of stdout")
    p.add_argument("--hub", default=None, help="hub directory, to resolve built (paired) datasets by name")


def run_cite(args) -> int:
    """`mmu catalog cite`: BibTeX to stdout or ``-o FILE``; license warnings and what each
    target rests on to stderr. Returns the exit code (2 for an unresolvable target)."""
    from mmu.registry.catalog import CatalogError, load_catalog

    try:
        citations = collect(args.targets, load_catalog(), args.hub)
    except (CiteError, CatalogError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for w in citations.warnings:
        print(f"warning: {w}", file=sys.stderr)
    for target, names in citations.via.items():
        if names != [target]:
            print(f"note: {target} rests on {', '.join(names)}", file=sys.stderr)
    bib = render_bibtex(citations)
    if args.output is None:
        sys.stdout.write(bib)
        return 0
    from mmu.hub.layout import atomic_write_text

    atomic_write_text(Path(args.output), bib)
    print(f"wrote {len(citations.entries)} BibTeX entries for {len(citations.datasets)} dataset(s) "
          f"to {args.output}")
    if citations.acknowledgements:
        print("\nAcknowledgements required in publications:")
        for text, names in citations.acknowledgements:
            print(f"\n[{', '.join(names)}]")
            print(textwrap.fill(text, 96))
    return 0


def main(argv: list[str] | None = None) -> int:
    """`mmu catalog cite` as a function (``python -m mmu.registry.cite``); returns the exit code."""
    p = argparse.ArgumentParser(prog="mmu catalog cite")
    configure_cite_parser(p)
    return run_cite(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
