"""Pure quantization math: grids, parameter choice, (fake-)quantize, log-domain quantizers.

All functions are stateless and work on a 2-D *stat view* of a tensor: rows or columns that share
one (scale, zero point). :class:`Granularity` maps a tensor to that view with a plain reshape, so
the inverse is ``view.reshape(x.shape)`` and parameters broadcast without transposes.
References: Jacob et al. 2018 (uniform affine quantization); Lin et al., RepQ-ViT, ICCV 2023 (log-sqrt2
post-softmax quantizer); Miyashita et al. 2016 (log2 quantization).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

GranularityKind = Literal["tensor", "channel", "group"]


@dataclass(frozen=True)
class Granularity:
    """Which elements share quantization parameters.

    ``tensor``: one pair for the whole tensor. ``channel``: one per index of ``axis`` (``0`` = output
    channel of a weight, ``-1`` = last dim of an activation). ``group``: weights only, consecutive
    runs of ``group_size`` elements of each output row (the flattened input dims).
    """

    kind: GranularityKind = "tensor"
    axis: int = 0
    group_size: int = 128

    def __post_init__(self) -> None:
        if self.kind not in ("tensor", "channel", "group"):
            raise ValueError(f"granularity must be tensor, channel or group, not {self.kind!r}")
        if self.kind == "channel" and self.axis not in (0, -1):
            raise ValueError("channel granularity supports axis 0 (weights) or -1 (activations)")
        if self.kind == "group" and self.group_size < 1:
            raise ValueError("group_size must be positive")

    def view(self, x: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Reshape ``x`` to 2-D; returns ``(view, reduce_dim)``: statistics reduce along ``reduce_dim``."""
        if self.kind == "tensor":
            return x.reshape(1, -1), 1
        if self.kind == "channel" and self.axis == 0:
            return x.reshape(x.shape[0], -1), 1
        if self.kind == "channel":
            return x.reshape(-1, x.shape[-1]), 0
        row = x[0].numel()
        if row % self.group_size:
            raise ValueError(f"row length {row} is not divisible by group_size {self.group_size}")
        return x.reshape(-1, self.group_size), 1


def int_range(bits: int, symmetric: bool) -> tuple[int, int]:
    """Integer grid ``[qmin, qmax]``: signed (narrow-free) for symmetric, unsigned for asymmetric."""
    if symmetric:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2 ** bits - 1


def params_from_range(lo: torch.Tensor, hi: torch.Tensor, bits: int, symmetric: bool,
                      eps: float = 1e-8) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and integer zero point that map ``[lo, hi]`` onto the ``bits``-bit grid.

    The range is widened to include 0 so that 0 stays exactly representable (padding, ReLU).
    """
    qmin, qmax = int_range(bits, symmetric)
    lo, hi = torch.minimum(lo, torch.zeros_like(lo)), torch.maximum(hi, torch.zeros_like(hi))
    if symmetric:
        scale = (torch.maximum(-lo, hi) / qmax).clamp_min(eps)
        return scale, torch.zeros_like(scale)
    scale = ((hi - lo) / (qmax - qmin)).clamp_min(eps)
    zero_point = (qmin - torch.round(lo / scale)).clamp(qmin, qmax)
    return scale, zero_point


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round to nearest with a straight-through gradient (identity backward)."""
    return x + (torch.round(x) - x).detach()


def quantize(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int, qmax: int) -> torch.Tensor:
    """Integer codes ``clamp(round(x/scale) + z, qmin, qmax)`` (as float tensor holding integers)."""
    return torch.clamp(torch.round(x / scale) + zero_point, qmin, qmax)


def dequantize(q: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor) -> torch.Tensor:
    """Real values ``(q - z) * scale``."""
    return (q - zero_point) * scale


def fake_quantize(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int, qmax: int) -> torch.Tensor:
    """Quantize-dequantize with a straight-through estimator inside the clamp range."""
    q = torch.clamp(round_ste(x / scale) + zero_point, qmin, qmax)
    return (q - zero_point) * scale


def minmax_range(v: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row (or per-column) min and max of a 2-D stat view, kept as broadcastable shapes."""
    return v.amin(dim, keepdim=True), v.amax(dim, keepdim=True)


def percentile_range(v: torch.Tensor, dim: int, p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(quantile(1-p), quantile(p))`` along ``dim``; exact via ``kthvalue`` (no size limit)."""
    n = v.shape[dim]
    k_hi = min(n, max(1, math.ceil(p * n)))
    k_lo = max(1, min(n, n + 1 - k_hi))
    return v.kthvalue(k_lo, dim, keepdim=True)[0], v.kthvalue(k_hi, dim, keepdim=True)[0]


def quant_error(v: torch.Tensor, dim: int, lo: torch.Tensor, hi: torch.Tensor, bits: int, symmetric: bool,
                power: float = 2.0) -> torch.Tensor:
    """Mean ``|v - Q(v)|^power`` per row/column for the grid built from ``[lo, hi]``."""
    qmin, qmax = int_range(bits, symmetric)
    scale, zp = params_from_range(lo, hi, bits, symmetric)
    err = (v - dequantize(quantize(v, scale, zp, qmin, qmax), scale, zp)).abs().pow(power)
    return err.mean(dim, keepdim=True)


def search_range(v: torch.Tensor, dim: int, candidates: list[tuple[torch.Tensor, torch.Tensor]], bits: int,
                 symmetric: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row/column, the candidate ``(lo, hi)`` with the lowest squared quantization error."""
    errors = torch.stack([quant_error(v, dim, lo, hi, bits, symmetric) for lo, hi in candidates])
    best = errors.argmin(0, keepdim=True)  # (1, *param_shape)
    los = torch.stack([lo.expand_as(errors[0]) for lo, _ in candidates])
    his = torch.stack([hi.expand_as(errors[0]) for _, hi in candidates])
    return los.gather(0, best)[0], his.gather(0, best)[0]


def percentile_mse_range(v: torch.Tensor, dim: int, bits: int, symmetric: bool,
                         percentiles: tuple[float, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """RepQ-ViT-style search: the percentile clip with the lowest MSE, per row/column."""
    return search_range(v, dim, [percentile_range(v, dim, p) for p in percentiles], bits, symmetric)


def omse_range(v: torch.Tensor, dim: int, bits: int, symmetric: bool,
               steps: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    """OMSE (Choukroun et al., ICCVW 2019): shrink the min-max range by the factor minimizing MSE."""
    lo, hi = minmax_range(v, dim)
    factors = torch.linspace(1.0 / steps, 1.0, steps).tolist()
    return search_range(v, dim, [(lo * a, hi * a) for a in factors], bits, symmetric)


def log2_quantize(x: torch.Tensor, delta: torch.Tensor, bits: int, base_sqrt2: bool) -> torch.Tensor:
    """Fake-quantize non-negative ``x`` on a log2 (or log-sqrt2) grid below ``delta``.

    Index ``q = round(-log_b(x / delta))`` with ``b = 2`` (or ``sqrt 2``); ``x_hat = delta * b^-q``.
    Values whose index exceeds ``2^bits - 1`` become exactly 0 (RepQ-ViT convention).
    """
    levels = 2 ** bits
    mult = 2.0 if base_sqrt2 else 1.0
    ratio = (x / delta).clamp_min(1e-30)
    q = round_ste(-mult * torch.log2(ratio))
    q = q.clamp_min(0)  # values above delta saturate at delta
    out = delta * torch.exp2(-q / mult)
    return torch.where(q > levels - 1, torch.zeros_like(out), out)


def log2_delta_search(x: torch.Tensor, bits: int, base_sqrt2: bool,
                      percentiles: tuple[float, ...] = (0.999, 0.9999, 0.99999, 1.0)) -> torch.Tensor:
    """Choose ``delta`` among high percentiles of ``x`` by the lowest squared error."""
    flat = x.reshape(1, -1)
    best, best_err = None, float("inf")
    for p in percentiles:
        delta = percentile_range(flat, 1, p)[1].clamp_min(1e-8)
        err = (log2_quantize(flat, delta, bits, base_sqrt2) - flat).pow(2).mean().item()
        if err < best_err:
            best, best_err = delta, err
    assert best is not None
    return best.reshape(())
