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


def fake_quantize_inplace(v: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int,
                          qmax: int) -> torch.Tensor:
    """:func:`fake_quantize` for inference: same values, one output buffer updated in place.

    About 3x faster on CPU than the out-of-place chain (and faster than PyTorch's fused
    fake-quant kernels on this CPU build); no autograd, so only used when no gradient is needed.
    """
    out = v / scale
    return out.round_().add_(zero_point).clamp_(qmin, qmax).sub_(zero_point).mul_(scale)


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
    if not (torch.is_grad_enabled() and x.requires_grad):  # inference: same values, in place
        q = (x / delta).clamp_min_(1e-30).log2_().mul_(-mult).round_().clamp_min_(0)
        dropped = q > levels - 1
        return q.div_(-mult).exp2_().mul_(delta).masked_fill_(dropped, 0.0)
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


# --- SULQ: shift-uniform-log2 quantizer (Zhong et al., "I&S-ViT", arXiv 2311.10126, 2023) -------------

SULQ_ETAS = (0.001, 0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.1, 0.2, 0.5, 1.0)


def sulq_quantize(x: torch.Tensor, eta: torch.Tensor | float, lo: torch.Tensor | float, hi: torch.Tensor | float,
                  bits: int) -> torch.Tensor:
    """Fake-quantize non-negative ``x`` (post-softmax probabilities) with SULQ.

    ``t = log2(x + eta)`` is quantized uniformly over ``[lo, hi]`` with **2^bits levels**:
    ``q = clamp(round((t - lo) / s), 0, 2^bits - 1)``, ``s = (hi - lo) / (2^bits - 1)``; the
    dequantized exponent ``e = lo + q*s`` is rounded to an integer, ``x_hat = 2^round(e) - eta``, so
    every level is a power of two minus ``eta`` (bit-shift friendly).

    Level count: the authors' code searches ``eta`` with 2^b levels but its forward pass uses step
    ``(hi - lo) / 2^b`` with ``q`` in ``[0, 2^b]`` (2^b + 1 levels, i.e. b+1 bits); we use 2^b levels
    everywhere, so a b-bit SULQ really has b bits.

    Sign: the paper writes ``UQ(-log2(x + eta))`` and ``2^round(-DUQ(.)) - eta``. Because the grid
    here has exact end points (no integer zero point) and ``torch.round`` is symmetric
    (``round(-y) = -round(y)``, half to even), quantizing ``-t`` over ``[-hi, -lo]`` gives the same
    levels with the index reversed; we quantize ``t`` directly.

    Gradient: straight-through on both roundings, so ``d x_hat / d x = (x_hat + eta) / (x + eta)``
    inside the range and 0 where ``t`` is clamped (as the uniform fake-quantizer).
    """
    levels = 2 ** bits
    step = torch.as_tensor((hi - lo) / (levels - 1)).clamp_min(1e-8)
    t = torch.log2((x + eta).clamp_min(1e-30))
    # clamp before rounding (same values, the bounds are integers): torch.clamp passes no gradient
    # at its bounds, and most probabilities sit on the lowest level
    q = round_ste(torch.clamp((t - lo) / step, 0, levels - 1))
    return torch.exp2(round_ste(lo + q * step)) - eta


def sulq_error(x: torch.Tensor, eta: float, bits: int, xmin: torch.Tensor | None = None,
               xmax: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(mse, lo, hi)`` of SULQ with shift ``eta`` on ``x``; ``lo/hi = min/max log2(x + eta)``.

    ``log2`` is increasing, so ``lo/hi`` follow from the data's min/max (``xmin``/``xmax`` when the
    exact extremes are known but ``x`` is only a sample).
    """
    xmin = x.min() if xmin is None else xmin
    xmax = x.max() if xmax is None else xmax
    lo = torch.log2((xmin + eta).clamp_min(1e-30))
    hi = torch.log2((xmax + eta).clamp_min(1e-30))
    err = (sulq_quantize(x, eta, lo, hi, bits) - x).pow(2).mean()
    return err, lo, hi


@torch.no_grad()
def sulq_search(x: torch.Tensor, bits: int, etas: tuple[float, ...] = SULQ_ETAS, xmin: torch.Tensor | None = None,
                xmax: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Grid-search the SULQ shift: ``(eta, lo, hi)`` (0-d tensors) with the lowest L2 error on ``x``.

    I&S-ViT searches ``eta`` over :data:`SULQ_ETAS` on the calibration data; ``x`` is clamped at 0
    (post-softmax inputs are probabilities). Ties keep the first (smallest) ``eta``.
    """
    x = x.float().clamp_min(0)
    xmin = x.min() if xmin is None else xmin.float().clamp_min(0)
    xmax = x.max() if xmax is None else xmax.float().clamp_min(0)
    best: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
    best_err = float("inf")
    for eta in etas:
        err, lo, hi = sulq_error(x, eta, bits, xmin, xmax)
        if err.item() < best_err:
            best_err, best = err.item(), (torch.tensor(eta, device=x.device), lo, hi)
    assert best is not None, "sulq_search needs at least one candidate eta"
    return best
