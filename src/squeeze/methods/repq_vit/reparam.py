"""RepQ-ViT scale reparameterization math (Li et al., "RepQ-ViT", ICCV 2023, Sec. 4.1).

A per-channel asymmetric quantizer on a LayerNorm output, with steps ``s_c`` and zero points
``z_c``, is turned into a per-tensor one ``(s_bar, z_bar)`` by rescaling channel ``c`` of the
LayerNorm output by ``1/r_c`` and shifting it by ``-b_c``; the consumer Linear layers absorb the
inverse (columns times ``r_c``, bias plus ``W_new @ b``), so float outputs are unchanged and the
per-tensor grid on the new activation equals the per-channel grid on the old one.
"""
from __future__ import annotations

import torch
from torch import nn


def reparam_targets(scale: torch.Tensor, zero_point: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor,
                                                                           torch.Tensor, torch.Tensor]:
    """From per-channel ``(scale, zero_point)`` (shape (C,)) compute ``(r, b, s_bar, z_bar)``.

    ``r_c = s_c / s_bar`` with ``s_bar = mean(s)``; ``z_bar = round(mean(z))`` (kept integer so the
    grids coincide exactly); ``b_c = lo_c / r_c - lo_bar`` where ``lo = -z * s`` is the range start.
    """
    s_bar = scale.mean()
    z_bar = torch.round(zero_point.mean())
    r = scale / s_bar
    lo = -zero_point * scale
    b = lo / r - (-z_bar * s_bar)
    return r, b, s_bar, z_bar


@torch.no_grad()
def fold_into_layernorm(norm: nn.LayerNorm, consumers: list[nn.Linear], r: torch.Tensor, b: torch.Tensor) -> None:
    """Apply ``x' = x / r - b`` to the LayerNorm output and the inverse to each consumer, in place."""
    if norm.weight is None or norm.bias is None:
        raise ValueError("reparameterization needs a LayerNorm with affine weight and bias")
    norm.weight.div_(r)
    norm.bias.div_(r).sub_(b)
    for layer in consumers:
        layer.weight.mul_(r)  # scale input column c by r_c
        shift = layer.weight @ b
        if layer.bias is None:
            layer.bias = nn.Parameter(shift.clone())
        else:
            layer.bias.add_(shift)
