"""Pure quantizer math of MultiQuant / MBQuant (Zhong et al., "MBQuant: A Novel Multi-Branch Topology Method
for Arbitrary Bit-width Network Quantization", arXiv 2305.08117; first titled "MultiQuant").

Both quantizers normalise a tensor into [0, 1] with a learnable range ``(lo, hi)``, round onto a uniform
grid with a straight-through estimator, and do **not** scale back: the batch norm after every convolution
absorbs the scale. Gradients reach ``lo``/``hi`` through the normalisation (inside the clamp range).
"""
from __future__ import annotations

import math

import torch

from squeeze.quant.primitives import round_ste

_EPS = 1e-6
# E|x| of a standard normal is sqrt(2/pi); sqrt(1 - 2/pi) turns the std of a ReLU'd normal into sigma.
_HALF_NORMAL = math.sqrt(1.0 - 2.0 / math.pi)


def normalize(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """``clamp((x - lo) / (hi - lo), 0, 1)``; ``lo``/``hi`` broadcast against ``x``."""
    return ((x - lo) / (hi - lo).clamp_min(_EPS)).clamp(0.0, 1.0)


def quantize_weight(w: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, bits: int) -> torch.Tensor:
    """Weights onto ``2**bits`` levels in [-1, 1] (2 bits: {-1, -1/3, 1/3, 1})."""
    levels = 2 ** bits - 1
    return 2.0 * round_ste(normalize(w, lo, hi) * levels) / levels - 1.0


def quantize_activation(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, bits: int) -> torch.Tensor:
    """Activations onto ``2**bits`` levels in [0, 1]."""
    levels = 2 ** bits - 1
    return round_ste(normalize(x, lo, hi) * levels) / levels


def weight_range_init(w: torch.Tensor, k: float = 3.0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(-k std, +k std)`` of one branch's weights (the paper's initialisation)."""
    std = w.detach().float().std()
    return -k * std, k * std


def activation_range_init(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(min x, 3 std(x) / sqrt(1 - 2/pi))`` of one branch's input activations."""
    x = x.detach().float()
    return x.min(), 3.0 * x.std() / _HALF_NORMAL


def soft_cross_entropy(logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``-sum softmax(teacher) * log_softmax(student)``; (N, C) inputs."""
    return -(teacher_logits.softmax(-1) * logits.log_softmax(-1)).sum(-1).mean()
