"""The encoder registry: `@register_encoder("name", kind="image")` on a factory, so adding an
encoder is a one-file change. A factory takes the modality config (shapes) and keyword options
and returns an `nn.Module` with a `width` attribute whose forward maps the preprocessed modality
dict to features [B, width].
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

_ENCODERS: dict[str, "EncoderEntry"] = {}


@dataclass(frozen=True)
class EncoderEntry:
    name: str
    kind: str
    factory: Callable
    doc: str


def register_encoder(name: str, kind: str):
    if kind not in ("image", "spectrum", "lightcurve"):
        raise ValueError(f"encoder {name!r}: unknown kind {kind!r}")

    def deco(factory):
        if name in _ENCODERS:
            raise ValueError(f"encoder {name!r} is already registered (by "
                             f"{_ENCODERS[name].factory.__module__}); pick another name")
        _ENCODERS[name] = EncoderEntry(name, kind, factory, (factory.__doc__ or "").strip())
        return factory

    return deco


def _load_builtin():
    from mmu.pretrain import encoders  # noqa: F401  (registers the built-in encoders)


def list_encoders() -> dict[str, EncoderEntry]:
    _load_builtin()
    return dict(_ENCODERS)


def build_encoder(name: str, modality, **options):
    """Instantiate encoder `name` for a `ModalityConfig`; its kind must match."""
    entries = list_encoders()
    if name not in entries:
        raise KeyError(f"unknown encoder {name!r}; registered: {', '.join(sorted(entries))}")
    entry = entries[name]
    if entry.kind != modality.kind:
        raise ValueError(f"encoder {name!r} reads {entry.kind}, but the modality is a {modality.kind}")
    return entry.factory(modality, **options)
