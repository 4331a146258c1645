"""`mmu push`: upload a built dataset to a Hugging Face Hub dataset repository."""
from __future__ import annotations


def _push(args) -> int:
    from mmu.hub import publish

    return publish.run_push(args)


def register(sub) -> None:
    from mmu.hub import publish

    p = sub.add_parser("push", help="upload a built dataset to a Hugging Face Hub dataset repository")
    publish.configure_push_parser(p)  # its description ends with an example
    p.set_defaults(func=_push)
