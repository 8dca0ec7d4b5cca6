"""Typed, versioned, JSON-serializable method configs and the method registry.

Every compression method registers one dataclass config (validated on construction, so a typo or
an out-of-range value fails loudly) and one ``apply`` function. Configs round-trip through JSON as
``{"method": NAME, "version": N, "config": {...}}``; unknown fields and newer versions are refused.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, TypeVar

from squeeze.errors import SqueezeError

CONFIG_VERSION = 1
C = TypeVar("C", bound="QuantConfig")
T = TypeVar("T")


@dataclass
class QuantConfig:
    """Options shared by every post-training quantization method.

    Attributes:
        wbits: weight bit width (2..16).
        abits: activation bit width (2..16), for layer inputs and both attention-matmul operands.
        calib: number of calibration samples (> 0).
        seed: seed choosing calibration samples and any randomness in the method.
        batch_size: calibration batch size used when walking the model block by block.
        quantize_attention: quantize the two attention matmuls (q@k^T, softmax@v) where found.
        overrides: per-module bit widths by shell pattern on the module name, e.g.
            ``{"head": {"wbits": 8, "abits": 8}}``; the first matching pattern wins.
    """

    method: ClassVar[str] = "base"
    wbits: int = 4
    abits: int = 8
    calib: int = 32
    seed: int = 0
    batch_size: int = 32
    quantize_attention: bool = True
    overrides: dict[str, dict[str, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("wbits", "abits"):
            bits = getattr(self, name)
            if not isinstance(bits, int) or not 2 <= bits <= 16:
                raise SqueezeError(f"{name}={bits!r} is outside 2..16; choose a bit width from 2 to 16")
        if not isinstance(self.calib, int) or self.calib < 1:
            raise SqueezeError(f"calib={self.calib!r}: need at least 1 calibration sample")
        if self.batch_size < 1:
            raise SqueezeError("batch_size must be at least 1")
        for pattern, bits in self.overrides.items():
            bad = set(bits) - {"wbits", "abits"}
            if bad:
                raise SqueezeError(f"override {pattern!r} has unknown keys {sorted(bad)}; use wbits/abits")
            for key, value in bits.items():
                if not 2 <= int(value) <= 16:
                    raise SqueezeError(f"override {pattern!r}: {key}={value} is outside 2..16")

    def bits_for(self, module_name: str) -> tuple[int, int]:
        """``(wbits, abits)`` for a module, after per-name overrides."""
        for pattern, bits in self.overrides.items():
            if fnmatch.fnmatch(module_name, pattern):
                return int(bits.get("wbits", self.wbits)), int(bits.get("abits", self.abits))
        return self.wbits, self.abits

    def to_dict(self) -> dict[str, Any]:
        """``{"method", "version", "config"}`` JSON-able dict."""
        return {"method": self.method, "version": CONFIG_VERSION, "config": dataclasses.asdict(self)}

    @classmethod
    def from_fields(cls: type[C], fields: dict[str, Any]) -> C:
        """Build from a field dict, refusing unknown names with a hint of the valid ones."""
        return build_fields(cls, fields, f"method {cls.method!r}")


@dataclass(frozen=True)
class MethodEntry:
    """A registered method: its config class, its apply function and a one-line summary."""

    name: str
    config_cls: type[QuantConfig]
    apply: Callable[..., None]
    summary: str


_METHODS: dict[str, MethodEntry] = {}


def register_method(config_cls: type[QuantConfig], summary: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Decorator registering ``apply(model, config, batches)`` for ``config_cls.method``."""
    def wrap(fn: Callable[..., None]) -> Callable[..., None]:
        name = config_cls.method
        if name in _METHODS:
            raise ValueError(f"method {name!r} registered twice")
        _METHODS[name] = MethodEntry(name, config_cls, fn, summary)
        return fn
    return wrap


def get_method(name: str) -> MethodEntry:
    """Look up a method by name; unknown names get a one-line error listing the known ones."""
    import squeeze.methods  # noqa: F401,PLC0415  (fills the registry)

    if name not in _METHODS:
        raise SqueezeError(f"unknown method {name!r}; known methods: {', '.join(sorted(_METHODS))}")
    return _METHODS[name]


def list_methods() -> dict[str, str]:
    """Registered method names with their summaries."""
    import squeeze.methods  # noqa: F401,PLC0415

    return {n: e.summary for n, e in sorted(_METHODS.items())}


def make_config(name: str, **fields: Any) -> QuantConfig:
    """Build the config of method ``name`` from keyword fields (validated)."""
    return get_method(name).config_cls.from_fields(fields)


def build_fields(cls: type[T], fields: dict[str, Any], what: str) -> T:
    """``cls(**fields)`` for a config dataclass, refusing unknown keys in one line that names the valid ones."""
    valid = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(fields) - valid)
    if unknown:
        raise SqueezeError(f"unknown {what} option(s) {unknown}; valid: {sorted(valid)}")
    return cls(**fields)


def read_document(data: dict[str, Any], what: str, newest: int) -> tuple[str, dict[str, Any]]:
    """``(method, fields)`` of a saved config document ``{"method", "version", "config"}`` (the ``to_dict``
    form of every method config); refuses malformed documents and versions newer than ``newest``."""
    try:
        version, name, fields = int(data["version"]), data["method"], dict(data["config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise SqueezeError(f"not a {what} config document ({exc}); expected method, version and config") from exc
    if version > newest:
        raise SqueezeError(f"{what} config version {version} is newer than this squeeze ({newest}); upgrade squeeze")
    return name, fields


def read_recipe(path: Path) -> tuple[str, dict[str, Any]]:
    """``(method, fields)`` of a recipe file: a config document (``QuantConfig.to_dict``) or a run's report.json,
    whose ``config`` field is one. JSON only; unknown fields are refused when the config is built."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError as exc:
        raise SqueezeError(f"recipe {path} does not exist; pass a config JSON or a run's report.json") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SqueezeError(f"recipe {path} is not readable JSON ({exc}); fix the file") from exc
    if isinstance(data, dict) and isinstance(data.get("config"), dict) and "method" in data["config"]:
        data = data["config"]  # a report.json: its config document
    if not isinstance(data, dict):
        raise SqueezeError(f"recipe {path} is not a JSON object; expected method, version and config")
    return read_document(data, "quantization", CONFIG_VERSION)


def config_from_dict(data: dict[str, Any]) -> QuantConfig:
    """Inverse of :meth:`QuantConfig.to_dict`; refuses configs written by a newer format version."""
    name, fields = read_document(data, "quantization", CONFIG_VERSION)
    return make_config(name, **fields)
