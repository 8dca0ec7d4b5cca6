"""Dual uniform quantization (DUQ) of weights, from the TPAMI extension of ERQ (Zhong et al., "ERQ:
Error Reduction for Post-Training Quantization of Vision Transformers").

RepQ-ViT's reparameterization multiplies input column ``c`` of qkv / fc1 by ``r_c``, which creates
whole outlier *columns*. DUQ picks a set of outlier input columns shared by all rows (the columns
most often holding a row's extreme entries) and gives every row two uniform grids: one for those
columns, one for the rest, each with the usual percentile-MSE range search.

The result is expressed as dense per-element ``(scale, zero_point)`` of shape (out, in), which the
toolkit's per-channel weight quantizer broadcasts as is (and save/load stores as is).
"""
from __future__ import annotations

import torch

from squeeze.quant import primitives as P


def outlier_columns(w: torch.Tensor, count: int, percentile: float = 0.99) -> torch.Tensor:
    """Boolean mask (in,) of the ``count`` columns flagged most often as row outliers.

    An entry is flagged when it lies above the ``percentile`` quantile of its row's positive values
    or below the ``1 - percentile`` quantile of its row's negative values. Ties go to the lower index.
    """
    w = w.detach().float()
    nan = torch.tensor(float("nan"), device=w.device)
    hi = torch.nanquantile(torch.where(w > 0, w, nan), percentile, dim=1, keepdim=True)
    lo = torch.nanquantile(torch.where(w < 0, w, nan), 1 - percentile, dim=1, keepdim=True)
    votes = ((w > hi) | (w < lo)).sum(0)  # comparisons with NaN (no such values) are False
    order = torch.argsort(votes, descending=True, stable=True)
    mask = torch.zeros(w.shape[1], dtype=torch.bool, device=w.device)
    mask[order[: max(0, min(count, w.shape[1] - 1))]] = True
    return mask


def dual_uniform_params(w: torch.Tensor, mask: torch.Tensor, bits: int, symmetric: bool,
                        percentiles: tuple[float, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-element (out, in) scale and zero point: one per-row grid on ``mask`` columns, one on the rest."""
    w = w.detach().float()
    params = []
    for part in (mask, ~mask):
        lo, hi = P.percentile_mse_range(w[:, part], 1, bits, symmetric, percentiles)
        params.append(P.params_from_range(lo, hi, bits, symmetric))  # each (out, 1)
    (s_out, z_out), (s_in, z_in) = params
    cols = mask[None, :]
    return torch.where(cols, s_out, s_in), torch.where(cols, z_out, z_in)
