"""Reading a CNN's batch norm layers during synthesis (ZeroQ, Cai et al., CVPR 2020).

A batch norm layer's running mean and variance describe the activations the network saw in training;
ZeroQ optimizes images until each image's per-channel statistics at every layer match them. The hooks
here record that distance on each forward pass and are always removed on exit.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from squeeze.dfq.losses import batchnorm_statistics_loss
from squeeze.errors import SqueezeError


def batchnorm_layers(model: nn.Module) -> list[nn.BatchNorm2d]:
    """The model's 2-D batch norm layers that carry running statistics (ZeroQ reads only those)."""
    return [m for m in model.modules() if isinstance(m, nn.BatchNorm2d) and m.running_mean is not None]


def require_batchnorm(model: nn.Module) -> list[nn.BatchNorm2d]:
    """:func:`batchnorm_layers`, or one clear error for a network without them (a ViT's LayerNorm keeps none)."""
    layers = batchnorm_layers(model)
    if not layers:
        raise SqueezeError("ZeroQ matches batch norm statistics, and this model has no BatchNorm2d layer with "
                           "running statistics; for a vision transformer use --data synthetic:spdfq or psaq-vit")
    return layers


class BatchNormRecorder:
    """Sum of :func:`squeeze.dfq.losses.batchnorm_statistics_loss` over the layers of the last forward pass."""

    def __init__(self) -> None:
        self.terms: list[torch.Tensor] = []

    def clear(self) -> None:
        self.terms = []

    def loss(self) -> torch.Tensor:
        if not self.terms:
            raise SqueezeError("no batch norm layer ran in the forward pass; ZeroQ needs a network that uses them")
        return torch.stack(self.terms).sum()


@contextmanager
def record_batchnorm(model: nn.Module) -> Iterator[BatchNormRecorder]:
    """Hooks on every batch norm layer of ``model`` adding its statistics loss to the recorder."""
    layers = require_batchnorm(model)
    rec = BatchNormRecorder()

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        rec.terms.append(batchnorm_statistics_loss(inputs[0], module.running_mean, module.running_var))

    handles = [layer.register_forward_pre_hook(hook) for layer in layers]
    try:
        yield rec
    finally:
        for handle in handles:
            handle.remove()
