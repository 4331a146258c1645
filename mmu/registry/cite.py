"""`mmu catalog cite`: the BibTeX, acknowledgements and license caveats of every dataset a piece
of work used, from the catalog's entries, de-duplicated.

Targets are dataset names, built datasets (a hub folder or its build.json: a paired,
cross-matched catalog lists its inputs in `inputs_datasets`), or benchmark results files (their
`dataset` / `datasets` / `task` fields); each resolves to the survey datasets it rests on.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

from mmu.hub.layout import MANIFEST


class CiteError(ValueError):
    """A target cannot be resolved, or the catalog's BibTeX is malformed or contradictory."""


# -------------------------------------------------------------------------------------------------
# a strict BibTeX reader for the catalog's entries (de-duplication needs keys and fields)


@dataclass(frozen=True)
class BibEntry:
    type: str  # lower case: article, misc, ...
    key: str
    fields: tuple[tuple[str, str], ...]  # (lower-case name, value as written, delimiters included)

    def get(self, name: str) -> str | None:
        return next((v for k, v in self.fields if k == name), None)

    def normalized(self) -> tuple:
        return (self.type, self.key, tuple((k, " ".join(v.split())) for k, v in self.fields))

    def render(self) -> str:
        width = max((len(k) for k, _ in self.fields), default=0)
        body = ",\n".join(f"  {k.ljust(width)} = {' '.join(v.split())}" for k, v in self.fields)
        return f"@{self.type}{{{self.key},\n{body}\n}}"


_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_:.+-]*")
_KEY = re.compile(r"[^\s,{}()\"#%'=]+")


def parse_bibtex(text: str, source: str = "<bibtex>") -> list[BibEntry]:
    """Parse @type{key, field = value, ...} entries; values are {...}, "...", digits or macro
    names joined with #. Anything malformed raises CiteError with the line. Text outside entries
    is allowed only as blank or %-comment lines."""
    entries, i, n = [], 0, len(text)

    def where(pos: int) -> str:
        return f"{source}, line {text.count(chr(10), 0, pos) + 1}"

    def skip_ws(pos: int) -> int:
        while pos < n and text[pos].isspace():
            pos += 1
        return pos

    def braced(pos: int, close: str) -> int:  # text[pos] is the opener; returns index after close
        depth, start = 0, pos
        pos += 1
        while pos < n:
            c = text[pos]
            if c == "\\":
                pos += 2
                continue
            if c == "{":
                depth += 1
            elif c == "}":
                if depth == 0 and close == "}":
                    return pos + 1
                depth -= 1
                if depth < 0:
                    raise CiteError(f"{where(pos)}: unbalanced '}}'")
            elif c == close and depth == 0:
                return pos + 1
            pos += 1
        raise CiteError(f"{where(start)}: unterminated value")

    while True:
        i = skip_ws(i)
        if i >= n:
            return entries
        if text[i] == "%":
            i = text.find("\n", i) if "\n" in text[i:] else n
            continue
        if text[i] != "@":
            raise CiteError(f"{where(i)}: expected '@' to start an entry, found {text[i:i + 20]!r}")
        m = _NAME.match(text, i + 1)
        if not m:
            raise CiteError(f"{where(i)}: missing entry type after '@'")
        etype, i = m.group().lower(), skip_ws(m.end())
        if i >= n or text[i] not in "{(":
            raise CiteError(f"{where(i)}: expected '{{' after @{etype}")
        close = "}" if text[i] == "{" else ")"
        i = skip_ws(i + 1)
        m = _KEY.match(text, i)
        if not m:
            raise CiteError(f"{where(i)}: @{etype} has no citation key")
        key, i = m.group(), skip_ws(m.end())
        fields, names = [], set()
        while True:
            if i < n and text[i] == close:
                i += 1
                break
            if i >= n or text[i] != ",":
                raise CiteError(f"{where(i)}: @{etype}{{{key}: expected ',' or the closing '{close}'")
            i = skip_ws(i + 1)
            if i < n and text[i] == close:  # trailing comma
                i += 1
                break
            m = _NAME.match(text, i)
            if not m:
                raise CiteError(f"{where(i)}: @{etype}{{{key}: expected a field name")
            fname, i = m.group().lower(), skip_ws(m.end())
            if fname in names:
                raise CiteError(f"{where(i)}: @{etype}{{{key}: field {fname!r} appears twice")
            if i >= n or text[i] != "=":
                raise CiteError(f"{where(i)}: @{etype}{{{key}: expected '=' after {fname}")
            i = skip_ws(i + 1)
            parts = []
            while True:
                start = i
                if i < n and text[i] == "{":
                    i = braced(i, "}")
                elif i < n and text[i] == '"':
                    i = braced(i, '"')
                elif i < n and (text[i].isalnum()):
                    m = re.compile(r"[A-Za-z0-9_]+").match(text, i)
                    i = m.end()
                else:
                    raise CiteError(f"{where(i)}: @{etype}{{{key}: field {fname!r} has no value")
                parts.append(text[start:i])
                i = skip_ws(i)
                if i < n and text[i] == "#":
                    i = skip_ws(i + 1)
                    continue
                break
            names.add(fname)
            fields.append((fname, " # ".join(parts)))
        entries.append(BibEntry(etype, key, tuple(fields)))


# -------------------------------------------------------------------------------------------------
# resolving targets to datasets


@dataclass
class Citations:
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
    are followed to their inputs, recursively)."""
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
    """A .bib file: the entries, with the datasets, licenses and acknowledgements as % comments."""
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
    p = argparse.ArgumentParser(prog="mmu catalog cite")
    configure_cite_parser(p)
    return run_cite(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
