"""Hessian-guided scale search of PTQ4ViT (Yuan et al., ECCV 2022, Sec. 4.2), as pure functions.

For a layer with float output ``O`` and quantized output ``O_hat``, the task-loss change is
approximated to second order by ``E[(O_hat - O)^T H_O (O_hat - O)]``; PTQ4ViT replaces the output
Hessian ``H_O`` by the diagonal of the Fisher information, i.e. the squared gradients of the task
loss with respect to ``O``. A scale candidate is scored by ``sum(g^2 * (O_hat - O)^2)``; with
``g2 = None`` the score is the plain output squared error (the paper's "base PTQ" ablation).

Candidates are scaled versions of the min-max range (the paper's ``alpha * interval`` grid), so the
min-max choice (``alpha = 1``) is always among them and the search never scores worse than min-max.
Weights (per output channel) are searched per channel: channel ``j`` of the weight affects only
output channel ``j``, so one forward per candidate scores every channel at once.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from squeeze.methods.ptq4vit.twin import gelu_delta1, softmax_delta1, twin_gelu_quantize, twin_softmax_quantize
from squeeze.quant import primitives as P

FakeQuant = Callable[[torch.Tensor], torch.Tensor]


def weighted_error(out: torch.Tensor, target: torch.Tensor, g2: torch.Tensor | None,
                   keep_dim: int | None = None) -> torch.Tensor:
    """``sum(g2 * (out - target)^2)``: a scalar, or one value per index of ``keep_dim``."""
    err = (out - target).pow(2)
    if g2 is not None:
        err = err * g2
    if keep_dim is None:
        return err.sum()
    keep_dim %= err.dim()
    return err.sum([d for d in range(err.dim()) if d != keep_dim])


def alpha_grid(n: int, lo: float = 0.01, hi: float = 1.2) -> list[float]:
    """``n`` evenly spaced range factors in ``[lo, hi]`` plus exactly 1.0 (min-max), sorted."""
    grid = torch.linspace(lo, hi, max(n, 2)).tolist() if n > 1 else []
    return sorted(set(grid) | {1.0})


@dataclass
class Candidate:
    """One parameter choice for a per-tensor activation quantizer.

    ``fq`` fake-quantizes a tensor with it; ``params`` are what the quantizer installs
    (``("uniform", scale, zero_point)`` or ``("twin", delta1, delta2)``).
    """

    fq: FakeQuant
    params: tuple


def uniform_candidates(lo: torch.Tensor, hi: torch.Tensor, bits: int, symmetric: bool,
                       alphas: Sequence[float]) -> list[Candidate]:
    """Per-tensor affine grids over ``alpha * [lo, hi]`` (``lo``/``hi``: the data's min and max)."""
    qmin, qmax = P.int_range(bits, symmetric)
    lo, hi = lo.reshape(1, 1), hi.reshape(1, 1)
    out = []
    for a in alphas:
        scale, zp = P.params_from_range(lo * a, hi * a, bits, symmetric)
        out.append(Candidate(lambda t, s=scale, z=zp: P.fake_quantize(t, s, z, qmin, qmax), ("uniform", scale, zp)))
    return out


def softmax_candidates(bits: int, max_m: int) -> list[Candidate]:
    """Post-softmax twin grids with split ``2^-m``, ``m = 0 .. max_m-1`` (``m = 0``: one plain grid)."""
    out = []
    for m in range(max_m):
        d1 = softmax_delta1(m, bits)
        out.append(Candidate(lambda t, d=d1: twin_softmax_quantize(t, d, bits), ("twin", d1, 1.0 / 2 ** (bits - 1))))
    return out


def gelu_candidates(lo: torch.Tensor, hi: torch.Tensor, bits: int, alphas: Sequence[float]) -> list[Candidate]:
    """Post-GELU twin grids: positive step ``alpha * hi/(n-1)``, negative step tied by a power of two.

    ``lo``/``hi`` are the data's min and max; the negative range always covers ``lo``.
    """
    n = 2 ** (bits - 1)
    base = hi.clamp_min(1e-8).reshape(()) / (n - 1)
    neg_max = (-lo).clamp_min(0).reshape(())
    out = []
    for a in alphas:
        d2 = base * a
        d1 = gelu_delta1(d2, neg_max, bits)
        out.append(Candidate(lambda t, p=d1, q=d2: twin_gelu_quantize(t, p, q, bits), ("twin", d1, d2)))
    return out


@torch.no_grad()
def best_candidate(candidates: Sequence[Candidate], score: Callable[[FakeQuant], torch.Tensor]) -> Candidate:
    """The candidate with the lowest ``score(candidate.fq)`` (first one on ties)."""
    errors = torch.stack([score(c.fq).reshape(()) for c in candidates])
    return candidates[int(errors.argmin())]


@torch.no_grad()
def search_weight_channels(w: torch.Tensor, forward: Callable[[torch.Tensor], torch.Tensor], target: torch.Tensor,
                           g2: torch.Tensor | None, bits: int, symmetric: bool, alphas: Sequence[float],
                           out_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-output-channel weight ranges ``alpha_j * [min_j, max_j]`` minimizing the weighted output error.

    Args:
        w: weight, output channels first. forward: ``forward(w_hat) -> output`` on fixed inputs.
        target, g2: float output and squared gradients (same shape as the output).
        out_dim: dimension of the output that indexes output channels (-1 linear, 1 conv).
    Returns:
        ``(scale, zero_point)`` of shape ``(C, 1)`` (the core's per-channel weight layout).
    """
    qmin, qmax = P.int_range(bits, symmetric)
    w2d = w.reshape(w.shape[0], -1)
    lo, hi = P.minmax_range(w2d, 1)  # (C, 1)
    best_err = torch.full((w.shape[0],), float("inf"), device=w.device)
    best_scale, best_zp = P.params_from_range(lo, hi, bits, symmetric)
    for a in alphas:
        scale, zp = P.params_from_range(lo * a, hi * a, bits, symmetric)
        w_hat = P.fake_quantize(w2d, scale, zp, qmin, qmax).reshape(w.shape)
        err = weighted_error(forward(w_hat), target, g2, out_dim)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_scale = torch.where(better[:, None], scale, best_scale)
        best_zp = torch.where(better[:, None], zp, best_zp)
    return best_scale, best_zp
