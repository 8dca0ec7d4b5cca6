"""AdaRound learned rounding (Nagel, Amjad, van Baalen, Louizos, Blankevoort, "Up or Down? Adaptive
Rounding for Post-Training Quantization", ICML 2020), written from the paper.

Each weight is quantized as ``s * (clamp(floor(w/s) + h(V) + z, qmin, qmax) - z)`` on the fixed
grid ``(s, z)`` of the layer's weight quantizer, where ``h(V) = clamp(sigmoid(V) (zeta - gamma) +
gamma, 0, 1)`` is a rectified sigmoid (``zeta = 1.1``, ``gamma = -0.1``). ``V`` starts where
``h(V)`` equals the fractional part of ``w/s`` (so the soft weight starts at the float weight) and
is pushed to a hard 0/1 by the regulariser ``sum(1 - |2h - 1|^beta)`` with ``beta`` annealed from
20 to 2. At the end ``h`` is hardened (``V >= 0``) and the result is written into the weight: it
lies exactly on the grid, so the normal weight quantizer reproduces it (quantization is idempotent
on grid values).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from squeeze.quant import primitives as P
from squeeze.quant.modules import QuantConv2d, QuantLinear
from squeeze.quant.quantizer import Quantizer

ZETA, GAMMA = 1.1, -0.1  # stretch of the rectified sigmoid (AdaRound Sec. 4)


def rectified_sigmoid(v: torch.Tensor) -> torch.Tensor:
    """``h(V) = clamp(sigmoid(V) * (zeta - gamma) + gamma, 0, 1)``."""
    return torch.clamp(torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)


def init_logits(frac: torch.Tensor) -> torch.Tensor:
    """``V`` with ``h(V) = frac`` (fractional part of ``w / s``, in [0, 1))."""
    p = (frac - GAMMA) / (ZETA - GAMMA)  # in (0.083, 0.917): no infinities
    return torch.log(p / (1 - p))


def rounding_regularizer(h: torch.Tensor, beta: float) -> torch.Tensor:
    """``sum(1 - |2h - 1|^beta)``: 0 when every ``h`` is 0 or 1, large for ``h`` near 0.5."""
    return (1 - (2 * h - 1).abs().pow(beta)).sum()


def annealed_beta(step: int, iters: int, warmup: float, start: float = 20.0, end: float = 2.0) -> float | None:
    """``beta`` at ``step``: ``None`` during the first ``warmup`` fraction, then linear ``start -> end``."""
    first = int(warmup * iters)
    if step < first:
        return None
    frac = (step - first) / max(1, iters - first)
    return end + (start - end) * max(0.0, 1.0 - frac)


class AdaRoundWeight(nn.Module):
    """Stands in for a layer's weight quantizer during reconstruction: returns the rounded weight.

    Its ``forward(w)`` ignores ``w`` (the float weight, fixed) and returns the soft- or
    hard-rounded weight built from the learnable logits ``alpha`` (same shape as the stat view of
    the weight, see :class:`squeeze.quant.primitives.Granularity`).
    """

    def __init__(self, quantizer: Quantizer, weight: torch.Tensor) -> None:
        super().__init__()
        assert quantizer.spec.kind == "uniform" and quantizer.calibrated, "AdaRound needs a calibrated uniform grid"
        self.quantizer = quantizer
        self.shape = weight.shape
        view, _ = quantizer.spec.granularity.view(weight.detach())
        scaled = view / quantizer.scale
        self.register_buffer("floor", torch.floor(scaled))
        self.alpha = nn.Parameter(init_logits(scaled - self.floor))
        self.hard = False

    def soft(self) -> torch.Tensor:
        """Current ``h(V)`` (or its hard 0/1 version)."""
        return (self.alpha >= 0).to(self.alpha.dtype) if self.hard else rectified_sigmoid(self.alpha)

    def forward(self, _weight: torch.Tensor) -> torch.Tensor:
        spec = self.quantizer.spec
        qmin, qmax = P.int_range(spec.bits, spec.symmetric)
        zp, scale = self.quantizer.zero_point, self.quantizer.scale
        codes = torch.clamp(self.floor + self.soft() + zp, qmin, qmax)
        return ((codes - zp) * scale).reshape(self.shape)

    def regularizer(self, beta: float) -> torch.Tensor:
        return rounding_regularizer(rectified_sigmoid(self.alpha), beta)


Layer = QuantLinear | QuantConv2d


@contextmanager
def adaround(layers: list[Layer]) -> Iterator[list[AdaRoundWeight]]:
    """Swap each layer's (calibrated) weight quantizer for an :class:`AdaRoundWeight`.

    On normal exit the hard rounding is baked into ``layer.weight`` and the original quantizer is
    put back in ``quant`` mode; on an exception the original quantizer is put back and the weight
    left as it was. Either way no :class:`AdaRoundWeight` remains in the model.
    """
    originals = [layer.weight_quantizer for layer in layers]
    swapped: list[AdaRoundWeight] = []
    try:
        for layer, q in zip(layers, originals):
            assert q is not None
            ada = AdaRoundWeight(q, layer.weight).to(layer.weight.device)
            layer.weight_quantizer = ada  # type: ignore[assignment]
            swapped.append(ada)
        yield swapped
        for layer, ada in zip(layers, swapped):
            bake(layer, ada)
    finally:
        for layer, q in zip(layers, originals):
            layer.weight_quantizer = q
            if q is not None:
                q.mode = "quant"


@torch.no_grad()
def bake(layer: Layer, ada: AdaRoundWeight) -> None:
    """Write the hard-rounded weight (exactly on the quantizer grid) into ``layer.weight``."""
    ada.hard = True
    layer.weight.copy_(ada(layer.weight))
