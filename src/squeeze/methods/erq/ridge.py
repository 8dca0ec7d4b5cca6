"""Ridge-regression math of ERQ (Zhong et al., "ERQ: Error Reduction for Post-Training Quantization
of Vision Transformers", ICML 2024), written from the paper and spec.

Everything works on *sufficient statistics* accumulated over calibration tokens, never on the token
matrices themselves, so memory is ``(D+1)^2`` per layer whatever the calibration-set size:

* ``gram = A^T A`` with ``A = [X_q, 1]`` (tokens x (D+1)), ``X_q`` the layer's activation
  quantizer applied to its full-precision input ``X``;
* ``atr = A^T R`` with ``R = Y - A [W | b]^T = (X - X_q) W^T`` the output error caused by
  activation quantization alone (``Y = X W^T + b`` is the float output).

The ridge strength is relative: ``lambda = c * mean(diag(gram))``, so it follows the token count and
activation scale instead of being an absolute constant tuned to ImageNet (the official code's
``lambda = 0.1 * coe``). All solves run in float64.
"""
from __future__ import annotations

import torch


def relative_lambda(gram: torch.Tensor, coefficient: float) -> float:
    """``coefficient * mean(diag(gram))``, floored at a tiny positive value (all-zero inputs)."""
    scale = float(torch.diagonal(gram).double().mean()) if gram.numel() else 0.0
    return max(coefficient * scale, 1e-12)


def ridge_solve(gram: torch.Tensor, rhs: torch.Tensor, coefficient: float) -> torch.Tensor:
    """``(gram + lambda I)^-1 rhs`` in float64 with ``lambda = relative_lambda(gram, coefficient)``.

    Args:
        gram: (k, k) symmetric positive semi-definite matrix ``A^T A``.
        rhs: (k, m) right-hand sides.
    Returns:
        (k, m) float64 solution.
    """
    g = gram.double()
    lam = relative_lambda(g, coefficient)
    system = g + lam * torch.eye(g.shape[0], dtype=g.dtype, device=g.device)
    lower, info = torch.linalg.cholesky_ex(system)
    if int(info) == 0:
        return torch.cholesky_solve(rhs.double(), lower)
    return torch.linalg.solve(system, rhs.double())  # numerically indefinite: fall back to LU


def aqer_update(gram: torch.Tensor, atr: torch.Tensor, coefficient: float) -> torch.Tensor:
    """Aqer correction of ``[W | b]``: ``delta^T`` with ``delta = (A^T A + lambda I)^-1 A^T R``.

    Minimises ``||A (W_aug + delta^T)^T - Y||^2 + lambda ||delta||^2`` over the calibration tokens,
    i.e. the float weights absorb the output error caused by quantizing this layer's input.

    Args:
        gram: (D+1, D+1) ``A^T A`` (or (D, D) for a bias-less layer, without the ones column).
        atr: (D+1, out) ``A^T R``.
    Returns:
        (out, D+1) float64 increment to add to ``[W | b]``.
    """
    return ridge_solve(gram, atr, coefficient).T


def compensation_update(gram: torch.Tensor, quantized: torch.Tensor, free: torch.Tensor,
                        err: torch.Tensor, coefficient: float) -> torch.Tensor:
    """Wqer ridge compensation of the still-float columns ``U`` for the rounding error of ``S``.

    ``delta_U = -(X_U^T X_U + lambda I)^-1 X_U^T X_S E^T`` (then transposed), which minimises
    ``||X_S E^T + X_U delta_U^T||^2 + lambda ||delta_U||^2``: the output error of the newly
    quantized columns is cancelled, as far as possible, by the columns that are still float.

    Args:
        gram: (k, k) ``A^T A`` of the whole augmented input.
        quantized: indices ``S`` (|S|,) just quantized; ``free``: indices ``U`` (|U|,) still float.
        err: (out, |S|) quantization error ``E = Q(W_S) - W_S``.
    Returns:
        (out, |U|) float64 increment for ``W_U``.
    """
    g_uu = gram[free][:, free]
    g_us = gram[free][:, quantized]
    return -ridge_solve(g_uu, g_us.double() @ err.double().T, coefficient).T
