"""The encoder registry: `@register_encoder("name", kind="image")` on a factory, so adding an
encoder is a one-file change. A config names a built-in encoder (`encoder: convnet`) or one in
any importable module as `module:name` (`encoder: my_encoders:spectrum_cnn`; importing the
module registers it). Your own config may name one freely; a checkpoint's embedded config naming
one is refused by `load_pretrained` unless `trust_code=True` (`mmu eval ... --trust-code`), since
building that model imports, i.e. runs, a module the checkpoint's author chose. A factory takes the modality config
(shapes) and keyword options and returns an `nn.Module` with a `width` attribute whose forward
maps the preprocessed modality dict to features [B, width].
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

_ENCODERS: dict[str, EncoderEntry] = {}
#: the modality kinds an encoder may read ("scalars": a short vector of catalog columns)
KINDS = ("image", "spectrum", "lightcurve", "scalars")


@dataclass(frozen=True)
class EncoderEntry:
    name: str
    kind: str
    factory: Callable
    doc: str


def register_encoder(name: str, kind: str):
    if kind not in KINDS:
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


def resolve_encoder(name: str) -> EncoderEntry:
    """The registry entry of `name` or of `module:name` (importing the module first)."""
    entries = list_encoders()
    if ":" in name:
        import importlib

        module, _, short = name.partition(":")
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise KeyError(f"encoder {name!r}: cannot import module {module!r} ({e}); is it on "
                           "PYTHONPATH (or installed)?") from None
        entries = list_encoders()
        found = [e for e in entries.values() if e.name == short and e.factory.__module__ == module]
        if not found:
            raise KeyError(f"encoder {name!r}: module {module!r} registers no encoder named {short!r} "
                           f"(decorate its factory with @register_encoder({short!r}, kind=...))")
        return found[0]
    if name not in entries:
        raise KeyError(f"unknown encoder {name!r}; registered: {', '.join(sorted(entries))} "
                       "(an encoder in your own module: `module:name`)")
    return entries[name]


def build_encoder(name: str, modality, **options):
    """Instantiate encoder `name` (or `module:name`) for a `ModalityConfig`; its kind must match."""
    entry = resolve_encoder(name)
    if entry.kind != modality.kind:
        raise ValueError(f"encoder {name!r} reads {entry.kind}, but the modality is a {modality.kind}")
    return entry.factory(modality, **options)
