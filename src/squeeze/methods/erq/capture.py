"""Full-precision statistics that ERQ (Zhong et al., ICML 2024) solves from, captured with hooks.

ERQ fits every layer on the *full-precision* model's input ``X`` (after the reparameterization),
quantized by the layer's own activation quantizer, ``X_q``; layers do not see upstream quantization
error. One forward pass over the calibration set with every quantizer off therefore gives all layers'
inputs at once. Instead of storing tokens (the official code pickles every layer's inputs and
outputs), each hook accumulates, in float64 on the layer's device:

* ``gram = A^T A`` with ``A = [X_q, 1]`` (the ones column only for layers with a bias);
* ``atr = A^T (X - X_q) W^T`` (Aqer's ``A^T R``; only for the layers Aqer updates).

Peak memory is ``(D+1)^2`` plus ``(D+1) x out`` float64 numbers per layer (about 0.5 GB for a
12-block, width-384 ViT), independent of the number of calibration images.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from squeeze.methods.gptq.method import layer_rows
from squeeze.quant.modules import QuantConv2d, QuantLinear, iter_quantizers

Layer = QuantLinear | QuantConv2d


@dataclass
class LayerStats:
    """Accumulated statistics of one layer (see module docstring).

    Attributes:
        gram: (k, k) float64 ``A^T A``; ``k = in + 1`` with a bias, else ``in``.
        atr: (k, out) float64 ``A^T R`` or ``None`` when Aqer does not update this layer.
        tokens: number of rows of ``A`` (tokens, or conv patches, over the calibration set).
    """

    gram: torch.Tensor
    atr: torch.Tensor | None
    tokens: int = 0


def augmented_rows(layer: Layer, x: torch.Tensor) -> torch.Tensor:
    """The layer's input as float64 rows ``[x, 1]`` (``[x]`` without a bias), conv via im2col."""
    rows = layer_rows(layer, x).double()
    if layer.bias is None:
        return rows
    return torch.cat([rows, torch.ones(rows.shape[0], 1, dtype=rows.dtype, device=rows.device)], 1)


def _hook(layer: Layer, stats: LayerStats) -> Callable[[nn.Module, tuple], None]:
    def fn(_m: nn.Module, args: tuple) -> None:
        x = args[0].detach()
        q = layer.input_quantizer
        xq = q.fake_quant(x) if q is not None and q.calibrated else x
        a = augmented_rows(layer, xq)  # (n, k)
        stats.gram += a.T @ a
        stats.tokens += a.shape[0]
        if stats.atr is not None:
            w = layer.weight.detach().reshape(layer.weight.shape[0], -1).double()
            residual = (layer_rows(layer, x).double() - a[:, : w.shape[1]]) @ w.T  # (n, out)
            stats.atr += a.T @ residual
    return fn


def _empty_stats(layer: Layer, with_atr: bool) -> LayerStats:
    w = layer.weight
    k = w[0].numel() + (layer.bias is not None)
    opts = {"dtype": torch.float64, "device": w.device}
    atr = torch.zeros(k, w.shape[0], **opts) if with_atr else None
    return LayerStats(torch.zeros(k, k, **opts), atr)


@torch.no_grad()
def collect_stats(model: nn.Module, batches: list[torch.Tensor], layers: list[tuple[str, Layer]],
                  aqer_layers: set[str]) -> dict[str, LayerStats]:
    """Run the full-precision model (every quantizer off) once and accumulate each layer's stats.

    Quantizer modes are restored and hooks removed afterwards, even on error.
    """
    stats = {name: _empty_stats(layer, name in aqer_layers) for name, layer in layers}
    modes = [(q, q.mode) for _, q in iter_quantizers(model)]
    handles = []
    try:
        for q, _ in modes:
            q.mode = "off"
        handles = [layer.register_forward_pre_hook(_hook(layer, stats[name])) for name, layer in layers]
        for batch in batches:
            model(batch)
    finally:
        for h in handles:
            h.remove()
        for q, mode in modes:
            q.mode = mode
    return stats
