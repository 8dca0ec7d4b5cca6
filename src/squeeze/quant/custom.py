"""Registry of method-specific modules (quantizers, or activations a method swaps in) that the save format
must rebuild.

Most methods use :class:`squeeze.quant.quantizer.Quantizer`, which the format stores as a spec. A method
with its own quantizer module (e.g. DFSQ's per-sample channel normalization) registers the class
here; it provides ``header() -> dict`` (JSON-able construction arguments) and
``from_header(dict)`` (a classmethod), and keeps its calibrated parameters in buffers so they travel
with the state dict. :mod:`squeeze.export.format` then saves and reloads it without depending on the
method's package.
"""
from __future__ import annotations

from typing import Any, Iterator

from torch import nn

from squeeze.errors import SqueezeError

_CLASSES: dict[str, type[nn.Module]] = {}


def register_custom_quantizer(cls: type[nn.Module]) -> type[nn.Module]:
    """Class decorator: make ``cls`` saveable by :func:`squeeze.save` (keyed by its class name)."""
    if not (hasattr(cls, "header") and hasattr(cls, "from_header")):
        raise TypeError(f"{cls.__name__} needs header() and from_header() to be registered")
    _CLASSES[cls.__name__] = cls
    return cls


def iter_custom(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """``(name, module)`` of every registered custom quantizer inside ``model``."""
    classes = tuple(_CLASSES.values())
    for name, mod in model.named_modules():
        if classes and isinstance(mod, classes):
            yield name, mod


def custom_headers(model: nn.Module) -> dict[str, dict[str, Any]]:
    """``{module name: {"class", "info"}}`` for the save header."""
    return {name: {"class": type(mod).__name__, "info": mod.header()} for name, mod in iter_custom(model)}


def install_custom(model: nn.Module, headers: dict[str, dict[str, Any]]) -> None:
    """Re-create the custom quantizers listed in a save header inside ``model`` (before loading state)."""
    import squeeze.methods  # noqa: F401,PLC0415  (registers the methods' quantizer classes)

    for name, entry in headers.items():
        cls = _CLASSES.get(entry.get("class", ""))
        if cls is None:
            raise SqueezeError(f"the file uses quantizer {entry.get('class')!r}, unknown to this squeeze; upgrade squeeze")
        parent, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent), attr, cls.from_header(entry["info"]))
