"""Fake-quant modules (module swap on eager models, no tracing).

:class:`QuantLinear` / :class:`QuantConv2d` subclass the float layers, so parameter names and
``isinstance`` checks are unchanged; they add ``input_quantizer`` and ``weight_quantizer``
children (``None`` = not quantized). :class:`QuantMatMul` is an explicit ``a @ b`` with a quantizer
on each operand; attention adapters (``squeeze.quant.prepare``) insert two per attention layer:
``matmul1`` (q @ k^T) and ``matmul2`` (softmax probabilities @ v, so ``matmul2.a_quantizer`` is the
post-softmax quantizer).
"""
from __future__ import annotations

from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from squeeze.quant.quantizer import Mode, Quantizer


def _quantized_operands(layer: "QuantLinear | QuantConv2d", x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The layer's input and weight after their fake-quantizers (identity where ``None``)."""
    x = layer.input_quantizer(x) if layer.input_quantizer is not None else x
    w = layer.weight_quantizer(layer.weight) if layer.weight_quantizer is not None else layer.weight
    return x, w


class QuantLinear(nn.Linear):
    """``nn.Linear`` with optional input and weight fake-quantizers."""

    input_quantizer: Quantizer | None
    weight_quantizer: Quantizer | None

    @classmethod
    def from_float(cls, layer: nn.Linear) -> "QuantLinear":
        """Wrap ``layer`` sharing its parameters (no copy)."""
        new = cls.__new__(cls)
        nn.Module.__init__(new)
        new.in_features, new.out_features = layer.in_features, layer.out_features
        new.weight, new.bias = layer.weight, layer.bias
        new.input_quantizer = new.weight_quantizer = None
        new.train(layer.training)
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(*_quantized_operands(self, x), self.bias)


class QuantConv2d(nn.Conv2d):
    """``nn.Conv2d`` with optional input and weight fake-quantizers."""

    input_quantizer: Quantizer | None
    weight_quantizer: Quantizer | None

    @classmethod
    def from_float(cls, layer: nn.Conv2d) -> "QuantConv2d":
        """Wrap ``layer`` sharing its parameters (no copy)."""
        new = cls.__new__(cls)
        nn.Module.__init__(new)
        for attr in ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation",
                     "transposed", "output_padding", "groups", "padding_mode",
                     "_reversed_padding_repeated_twice"):
            setattr(new, attr, getattr(layer, attr))
        new.weight, new.bias = layer.weight, layer.bias
        new.input_quantizer = new.weight_quantizer = None
        new.train(layer.training)
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(*_quantized_operands(self, x), self.bias)


class QuantMatMul(nn.Module):
    """``a @ b`` with optional fake-quantizers on both operands (attention matmuls)."""

    def __init__(self) -> None:
        super().__init__()
        self.a_quantizer: Quantizer | None = None
        self.b_quantizer: Quantizer | None = None

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        a = self.a_quantizer(a) if self.a_quantizer is not None else a
        b = self.b_quantizer(b) if self.b_quantizer is not None else b
        return a @ b


QUANT_LAYERS = (QuantLinear, QuantConv2d)


def swap_layers(model: nn.Module) -> int:
    """Replace every ``nn.Linear``/``nn.Conv2d`` in ``model`` by its quant subclass, in place.

    Float outputs are unchanged while no quantizer is attached. Returns the number swapped.
    """
    count = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, QUANT_LAYERS):
                continue
            if type(child) is nn.Linear:
                setattr(parent, name, QuantLinear.from_float(child))
                count += 1
            elif type(child) is nn.Conv2d:
                setattr(parent, name, QuantConv2d.from_float(child))
                count += 1
    return count


def iter_quantizers(model: nn.Module) -> Iterator[tuple[str, Quantizer]]:
    """All quantizers in ``model`` with their qualified names."""
    for name, module in model.named_modules():
        if isinstance(module, Quantizer):
            yield name, module


def set_mode(model: nn.Module, mode: Mode, which: str = "all") -> None:
    """Set ``mode`` on quantizers: ``which`` is ``all``, ``weight`` or ``act`` (inputs and matmuls)."""
    for name, q in iter_quantizers(model):
        is_weight = name.endswith("weight_quantizer")
        if which == "all" or (which == "weight") == is_weight:
            q.mode = mode


def finalize_observers(model: nn.Module) -> None:
    """Turn every observing quantizer's statistics into parameters and switch it to ``quant``."""
    for _, q in iter_quantizers(model):
        if q.mode == "observe":
            q.finalize()
            q.mode = "quant"
