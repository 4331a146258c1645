"""`mmu docs schema`: documentation generated from the code."""
from __future__ import annotations

from mmu.cli.common import mark_group


def register(sub) -> None:
    from mmu.hub import schemadoc

    docs = sub.add_parser("docs", help="generated documentation (the hub format specification)",
                          description="Documentation generated from the code.",
                          epilog="example:  mmu docs schema --check")
    mark_group(docs)
    dsub = docs.add_subparsers(dest="docs_command", metavar="DOC")
    schema_doc = dsub.add_parser("schema", help="write docs/schema.md from the schema code",
                                 epilog="example:  mmu docs schema --check   (exit 1 if docs/schema.md "
                                        "is out of date)")
    schemadoc.configure_docs_parser(schema_doc)
    schema_doc.set_defaults(func=schemadoc.run_docs_schema)
