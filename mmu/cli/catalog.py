"""`mmu catalog list|show|cite`: the registry (catalog.yaml) on the command line."""
from __future__ import annotations

import json
import textwrap

from mmu.cli.common import UsageError, mark_group


def _catalog_list(args) -> int:
    from mmu.registry.catalog import load_catalog

    cat = load_catalog()
    if args.json:
        print(json.dumps([d.model_dump() for d in cat.datasets], indent=2))
        return 0
    rows = [("name", "survey", "release", "modalities", "license", "builder")]
    for d in cat.datasets:
        lic = d.license.id + (" (NON-COMMERCIAL)" if d.license.non_commercial else "") + \
            (" (mock only)" if d.mock_only else "")
        rows.append((d.name, d.survey, d.release, ",".join(d.modalities), lic, d.builder))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for k, r in enumerate(rows):
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        if k == 0:
            print("  ".join("-" * w for w in widths))
    if cat.tasks:
        print(f"\n{len(cat.tasks)} benchmark task(s): {', '.join(t.name for t in cat.tasks)}")
    return 0


def _catalog_show(args) -> int:
    from mmu.registry.catalog import load_catalog

    cat = load_catalog()
    try:
        d = cat.dataset(args.name)
    except KeyError as e:
        raise UsageError(e.args[0]) from None
    if args.json:
        print(json.dumps(d.model_dump(), indent=2))
        return 0
    print(f"{d.name}  ({d.survey} {d.release})")
    print(textwrap.fill(d.description, 96, initial_indent="  ", subsequent_indent="  "))
    print(f"\n  modalities   {', '.join(d.modalities)}")
    print(f"  builder      {d.builder}  {json.dumps(d.builder_config) if d.builder_config else ''}")
    print(f"  raw data     {d.raw.archive}")
    print(f"               {d.raw.pattern}")
    print(f"  data model   {d.raw.docs}")
    if d.raw.size:
        print(f"  size         {d.raw.size}")
    print(f"  homepage     {d.homepage}")
    print(f"  license      {d.license.id}  {d.license.url}"
          + ("  ** NON-COMMERCIAL **" if d.license.non_commercial else "")
          + ("  ** NO DERIVATIVES **" if d.license.no_derivatives else ""))
    if d.expected_rows:
        print(f"  rows         {d.expected_rows} (full archive build)")
    if d.mock_only:
        print("  mock only    built from `mmu sim` output")
    if d.acknowledgement:
        print("\n  acknowledgement:")
        print(textwrap.fill(d.acknowledgement, 96, initial_indent="    ", subsequent_indent="    "))
    print("\n  citation:")
    for c in d.citation:
        print(textwrap.indent(c.strip(), "    "))
    return 0


def register(sub) -> None:
    from mmu.registry import cite

    cat = sub.add_parser("catalog", help="list and describe the datasets in the registry",
                         description="The registry (catalog.yaml): datasets and benchmark tasks.",
                         epilog="example:  mmu catalog show desi_dr1")
    mark_group(cat)
    csub = cat.add_subparsers(dest="catalog_command", metavar="ACTION")
    lst = csub.add_parser("list", help="a table of every dataset with its license",
                          description="A table of every dataset of the catalog: survey, release, "
                                      "modalities, license, builder; then the benchmark tasks.",
                          epilog="example:  mmu catalog list --json")
    lst.add_argument("--json", action="store_true", help="print JSON instead of a table")
    lst.set_defaults(func=_catalog_list)
    show = csub.add_parser("show", help="everything about one dataset, including its citation",
                           description="Everything the catalog says about one dataset: raw data, "
                                       "license, acknowledgement, citation. An unknown name exits 2.",
                           epilog="example:  mmu catalog show desi_dr1")
    show.add_argument("name", help="dataset name, e.g. desi_dr1 (see `mmu catalog list`)")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(func=_catalog_show)
    cite_p = csub.add_parser("cite", help="BibTeX, acknowledgements and license warnings for datasets")
    cite.configure_cite_parser(cite_p)  # its description ends with examples
    cite_p.set_defaults(func=cite.run_cite)
