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


class _RangeQuant(torch.autograd.Function):
    """``round(clamp((x - lo) / (hi - lo), 0, 1) * levels) / levels``, straight-through round, one node.

    Same values and gradients as writing that formula with autograd ops and ``round_ste``, with about a
    third of the elementwise passes: on CPU the composed form spent more time in fake-quant arithmetic
    than in the convolutions. With ``u = (x - lo) / d``, ``d = hi - lo``, inside ``0 < u < 1``:
    ``dq/dx = 1/d``, ``dq/dlo = (u - 1)/d``, ``dq/dhi = -u/d``; outside the range every gradient is 0.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, levels: int) -> torch.Tensor:
        d = hi - lo
        inv = 1.0 / d.clamp_min(_EPS)
        u = (x - lo).mul_(inv)
        ctx.save_for_backward(u, inv, d > _EPS)
        ctx.shapes = (lo.shape, hi.shape)
        return u.clamp(0.0, 1.0).mul_(levels).round_().div_(levels)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        u, inv, live = ctx.saved_tensors
        g_in = grad * ((u > 0) & (u < 1))
        grad_x = g_in * inv if ctx.needs_input_grad[0] else None
        grad_lo = grad_hi = None
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            s_u = (g_in * u).sum_to_size(inv.shape)  # reduce over the broadcast dims of lo/hi
            s_1 = g_in.sum_to_size(inv.shape)
            s_u = s_u * live  # where hi - lo is clamped at _EPS only the numerator's -1/d term is left
            grad_lo = ((s_u - s_1) * inv).sum_to_size(ctx.shapes[0])
            grad_hi = (-s_u * inv).sum_to_size(ctx.shapes[1])
        return grad_x, grad_lo, grad_hi, None


def quantize_weight(w: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, bits: int) -> torch.Tensor:
    """Weights onto ``2**bits`` levels in [-1, 1] (2 bits: {-1, -1/3, 1/3, 1})."""
    return 2.0 * _RangeQuant.apply(w, lo, hi, 2 ** bits - 1) - 1.0


def quantize_activation(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, bits: int) -> torch.Tensor:
    """Activations onto ``2**bits`` levels in [0, 1]."""
    return _RangeQuant.apply(x, lo, hi, 2 ** bits - 1)


def dorefa_weight(w: torch.Tensor, bits: int) -> torch.Tensor:
    """Any-Precision DNN's weights (Yu et al., AAAI 2021; DoReFa-Net's rule): ``tanh(w)`` scaled into [0, 1] by
    its largest magnitude ``M``, rounded onto ``2**bits`` levels (straight-through), mapped to [-1, 1] and
    multiplied by ``M`` (not differentiated). ``w``: (branches, ...); every leading index is one weight tensor.

    Any-Precision DNN multiplies by ``mean |w|`` instead. In training any positive factor per layer cancels in
    the batch norm that follows (forward and gradient); only the running statistics see it. With ``M`` the
    quantized weight is close to ``tanh(w) ~ w`` at high bit widths, so the float network's statistics still
    fit when training starts from it (with ``mean |w|``, about a tenth of the float scale, 20 steps left
    the evaluation at chance)."""
    t = torch.tanh(w)
    top = t.abs().amax(dim=tuple(range(1, w.dim())), keepdim=True)
    levels = 2 ** bits - 1
    return (2.0 * round_ste((t / (2.0 * top) + 0.5) * levels) / levels - 1.0) * top.detach()


def dorefa_activation(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Any-Precision DNN's activations: ``clamp(x, 0, 1)`` on ``2**bits`` levels (straight-through round; no
    gradient outside [0, 1]). The fixed range relies on the batch norm before it to scale the signal."""
    levels = 2 ** bits - 1
    return round_ste(x.clamp(0.0, 1.0) * levels) / levels


def weight_range_init(w: torch.Tensor, k: float = 3.0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(-k std, +k std)`` of one branch's weights (the paper's initialisation)."""
    std = w.detach().float().std()
    return -k * std, k * std


def weight_range_mse(w: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(-k std, +k std)`` with the ``k`` of a grid (0.3..5 in steps of 0.02) that minimises the
    mean squared error between ``w`` and its ``bits``-bit quantization rescaled to the range (a deviation
    from the paper's fixed k = 3, which at 2 bits sends 95 % of a Gaussian's weights to +-std)."""
    w = w.detach().float().flatten()
    std = w.std()
    ks = torch.arange(0.3, 5.0 + 1e-9, 0.02)
    errors = torch.stack([(quantize_weight(w, -k * std, k * std, bits) * (k * std) - w).pow(2).mean() for k in ks])
    k = ks[int(errors.argmin())]
    return -k * std, k * std


def activation_range_init(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(min x, 3 std(x) / sqrt(1 - 2/pi))`` of one branch's input activations."""
    x = x.detach().float()
    return x.min(), 3.0 * x.std() / _HALF_NORMAL


def soft_cross_entropy(logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``-sum softmax(teacher) * log_softmax(student)``; (N, C) inputs."""
    return -(teacher_logits.softmax(-1) * logits.log_softmax(-1)).sum(-1).mean()
