"""The model zoo: a registry of models by name, each with its data, metric and evaluation.

A :class:`ZooModel` bundles a float ``nn.Module`` in eval mode with the two things a compression
run needs besides the network: calibration inputs (``calib_inputs(n, seed)``) and an evaluation
function that returns the model's metric (higher is better) on a fixed held-out set.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from squeeze.errors import SqueezeError


@dataclass
class ZooModel:
    """A ready-to-compress model with its data and metric.

    Attributes:
        name: registry name (e.g. ``vit-fmnist``).
        model: the float network, eval mode; called as ``model(x)`` on a batch tensor.
        metric: name of the metric ``evaluate`` returns (``top1``, ``agreement``, ``cosine``...).
        calib_inputs: ``(n, seed) -> Tensor`` of ``n`` calibration inputs, batch first, drawn from
            training data (never from the evaluation set).
        evaluate: ``model -> float`` metric on the fixed evaluation set (higher is better).
        input_shape: shape of one input without batch dim (for checks and tiny tests).
        info: free-form facts for reports (source package, licence, checkpoint recipe).
        holdout: ``model -> float``, the same metric on held-out *training* data, for choosing a
            method's hyper-parameters without touching the evaluation set (``None``: not offered).
    """

    name: str
    model: nn.Module
    metric: str
    calib_inputs: Callable[[int, int], torch.Tensor]
    evaluate: Callable[[nn.Module], float]
    input_shape: tuple[int, ...]
    info: dict[str, str] = field(default_factory=dict)
    holdout: Callable[[nn.Module], float] | None = None


@dataclass(frozen=True)
class _Entry:
    loader: Callable[[], ZooModel]
    description: str


_REGISTRY: dict[str, _Entry] = {}


def register_model(name: str, description: str) -> Callable[[Callable[[], ZooModel]], Callable[[], ZooModel]]:
    """Decorator registering a zero-argument loader under ``name``."""
    def wrap(loader: Callable[[], ZooModel]) -> Callable[[], ZooModel]:
        if name in _REGISTRY:
            raise ValueError(f"zoo model {name!r} registered twice")
        _REGISTRY[name] = _Entry(loader, description)
        return loader
    return wrap


def list_models(pattern: str = "*") -> dict[str, str]:
    """Names (matching a shell-style ``pattern``) and one-line descriptions of registered models."""
    _import_builtin()
    return {n: e.description for n, e in sorted(_REGISTRY.items()) if fnmatch.fnmatch(n, pattern)}


def load_model(name: str) -> ZooModel:
    """Load a zoo model by name; unknown names get a one-line error listing what exists."""
    _import_builtin()
    if name in _REGISTRY:
        zm = _REGISTRY[name].loader()
        zm.model.eval()
        return zm
    from squeeze.zoo import external  # noqa: PLC0415 (local import: optional heavy deps)

    found = external.try_load(name)
    if found is not None:
        return found
    raise SqueezeError(
        f"unknown model {name!r}; run `squeeze zoo list` for zoo names, or pass timm:NAME or a local "
        "Hugging Face model folder"
    )


def _import_builtin() -> None:
    """Import the modules whose decorators fill the registry."""
    from squeeze.zoo import builtin  # noqa: F401,PLC0415
