"""Pure tensor math of data-free quantization (Nagel et al., "Data-Free Quantization Through Weight
Equalization and Bias Correction", ICCV 2019): batch norm folding, cross-layer equalization scales,
high-bias absorption and analytic bias correction. No module walking here (see ``graph.py`` / ``method.py``).

Conv weights are (out, in / groups, kh, kw); a *depthwise* conv (groups == in == out) has (C, 1, kh, kw),
so its input channel i and output channel i are the same row.
"""
from __future__ import annotations

import math

import torch


def fold_batchnorm(weight: torch.Tensor, bias: torch.Tensor | None, mean: torch.Tensor, var: torch.Tensor,
                   gamma: torch.Tensor, beta: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of ``bn(conv(x))`` as one conv: ``w * g / sqrt(var + eps)``, ``(b - mean) * that + beta``."""
    k = gamma / torch.sqrt(var + eps)  # (out,)
    b = bias if bias is not None else torch.zeros_like(mean)
    return weight * k.reshape(-1, *([1] * (weight.dim() - 1))), (b - mean) * k + beta


def output_ranges(weight: torch.Tensor) -> torch.Tensor:
    """max |w| of each output channel, (out,)."""
    return weight.abs().flatten(1).amax(1)


def input_ranges(weight: torch.Tensor, depthwise: bool) -> torch.Tensor:
    """max |w| over everything that multiplies input channel i, (in,)."""
    if depthwise:
        return output_ranges(weight)
    return weight.abs().transpose(0, 1).flatten(1).amax(1)


def equalization_scales(r1: torch.Tensor, r2: torch.Tensor) -> torch.Tensor:
    """Per-channel s = sqrt(r1 / r2) (Nagel et al. eq. 11): dividing the first layer's output channel by s
    and multiplying the second layer's input channel by s leaves both with range sqrt(r1 * r2).
    Channels where either range is 0 keep s = 1 (nothing to balance)."""
    ok = (r1 > 0) & (r2 > 0)
    return torch.where(ok, torch.sqrt(r1 / torch.where(ok, r2, torch.ones_like(r2))), torch.ones_like(r1))


def bounded_scales(s: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, upper: float,
                   n_std: float) -> torch.Tensor:
    """Equalization scales for a channel clipped at ``upper`` (ReLU6): where the channel may reach the clip
    (mean + n_std * std >= upper) s = 1; elsewhere s is raised to at least hi / upper so the rescaled
    channel stays below the clip too. Then clip(x / s) = clip(x) / s for all but the tail beyond n_std."""
    hi = mean + n_std * std
    return torch.where(hi < upper, torch.maximum(s, hi / upper), torch.ones_like(s))


def scale_output(weight: torch.Tensor, bias: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The first layer of a pair after equalization: output channel i divided by s_i (weight and bias)."""
    return weight / s.reshape(-1, *([1] * (weight.dim() - 1))), bias / s


def scale_input(weight: torch.Tensor, s: torch.Tensor, depthwise: bool) -> torch.Tensor:
    """The second layer of a pair after equalization: input channel i multiplied by s_i."""
    if depthwise:
        return weight * s.reshape(-1, *([1] * (weight.dim() - 1)))
    return weight * s.reshape(1, -1, *([1] * (weight.dim() - 2)))


def absorbed_bias(mean: torch.Tensor, std: torch.Tensor, n_std: float = 3.0) -> torch.Tensor:
    """c = max(0, mean - n_std * std): the part of a pre-ReLU channel that is (almost) never clipped, so
    ``relu(x) = relu(x - c) + c`` holds for all but ~0.1 % of values at n_std = 3 (Nagel et al. Sec. 4.1.1)."""
    return torch.clamp(mean - n_std * std, min=0)


def input_response(weight: torch.Tensor, x: torch.Tensor, depthwise: bool) -> torch.Tensor:
    """(out,) output of a conv (or linear) layer for a constant input x_i on channel i (padding ignored):
    the sum over input channels and kernel taps of w[j, i, ...] * x_i."""
    if depthwise:
        return weight.flatten(1).sum(1) * x
    return (weight.reshape(weight.shape[0], weight.shape[1], -1).sum(2) * x.reshape(1, -1)).sum(1)


def normal_cdf(z: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1 + torch.erf(z / math.sqrt(2)))


def relu_mean(mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """E[max(z, 0)] for z ~ N(mean, std^2), per channel: mean * Phi(mean/std) + std * phi(mean/std)
    (Nagel et al. eq. 18-19; a zero std gives max(mean, 0))."""
    safe = torch.clamp(std, min=1e-12)
    z = mean / safe
    pdf = torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    out = mean * normal_cdf(z) + safe * pdf
    return torch.where(std > 0, out, torch.clamp(mean, min=0))


def clipped_relu_mean(mean: torch.Tensor, std: torch.Tensor, upper: float) -> torch.Tensor:
    """E[min(max(z, 0), upper)] for z ~ N(mean, std^2): E[relu(z)] - E[relu(z - upper)]."""
    return relu_mean(mean, std) - relu_mean(mean - upper, std)


def bias_correction(weight: torch.Tensor, quantized: torch.Tensor, input_mean: torch.Tensor,
                    depthwise: bool) -> torch.Tensor:
    """(out,) expected output error E[(W_q - W) x] = (W_q - W) E[x], to be subtracted from the bias."""
    return input_response(quantized - weight, input_mean, depthwise)
