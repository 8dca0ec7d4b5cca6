"""Wqer, the weight-quantization half of ERQ (Zhong et al., "ERQ: Error Reduction for Post-Training
Quantization of Vision Transformers", ICML 2024), written from the paper and spec.

A layer's augmented weight ``[W | b]`` (out x k, ``k = D + 1`` with a bias) is quantized in
*halving* steps: while more than one column is still float, the next ``floor(m / 2)`` float
columns ``S`` (in index order) are put on the fixed per-element grid, choosing for each entry between
its floor and ceil grid points by a *rounding refinement* on the proxy ``e^T H e`` (``H`` = second
moment of the quantized input over ``S``, i.e. ``mu mu^T + Sigma``); the output error they leave,
``X_S E^T``, is then absorbed by a ridge update of the still-float columns ``U``
(:func:`~squeeze.methods.erq.ridge.compensation_update`). The bias column is last in index order,
so it is never quantized and always takes part in the compensation.

Grid codes are carried as float64 integers, so the result lies exactly on the grid.
"""
from __future__ import annotations

import torch

from squeeze.methods.erq.ridge import compensation_update


def rounding_codes(w: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int,
                   qmax: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Round-to-nearest, floor and ceil integer codes of ``w`` on a fixed grid (clamped).

    Args:
        w, scale, zero_point: broadcastable tensors (out, k); scale/zero point are fixed.
    Returns:
        ``(rtn, floor, ceil)`` codes (float64 holding integers); ``floor == ceil`` where ``w`` is on
        the grid or clamped, i.e. where no alternative rounding exists.
    """
    t = w.double() / scale.double()
    z = zero_point.double()

    def clamp(c: torch.Tensor) -> torch.Tensor:
        return (c + z).clamp(qmin, qmax)

    return clamp(torch.round(t)), clamp(torch.floor(t)), clamp(torch.ceil(t))


def dequantize_codes(codes: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor) -> torch.Tensor:
    """``(codes - z) * scale`` in float64."""
    return (codes - zero_point.double()) * scale.double()


def proxy(err: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """Per-row rounding proxy ``e^T H e`` for errors ``err`` (rows, k) and ``H`` (k, k)."""
    return ((err @ h) * err).sum(1)


def refine_rounding(err: torch.Tensor, flip_step: torch.Tensor, h: torch.Tensor, max_steps: int,
                    row_block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """ERQ rounding refinement: greedy single-coordinate flips between floor and ceil.

    For each row, repeatedly: ``g = 2 H e``; among coordinates where ``e`` and ``g`` share a sign
    (moving them toward the other rounding lowers the proxy to first order) and that have another
    grid point, take the one with the largest ``|g|`` (k = 1, the paper's best setting) and move it to
    the other rounding; keep the move if ``e^T H e`` decreased, otherwise stop that row. At most
    ``max_steps`` moves per row. Rows are vectorised in blocks of ``row_block``; ``H e`` is updated
    incrementally (one column of ``H`` per move), so a step costs O(rows x k).

    The paper proposes ``e_j - g_j`` snapped to the nearer of floor/ceil; that snap moves only when
    the gradient step reaches past the midpoint, which depends on the activation scale. Flipping and
    testing the exact proxy change ``2 d (He)_j + d^2 H_jj`` instead accepts exactly the moves that
    lower the proxy, whatever the scale (equal to the paper's rule whenever its step reaches the
    other side).

    Args:
        err: (rows, k) current rounding errors ``Q(w) - w``.
        flip_step: (rows, k) change of ``err`` if that entry is flipped to its other rounding
            (0 where there is none).
        h: (k, k) symmetric positive semi-definite proxy matrix.
    Returns:
        ``(err, flipped)``: refined errors and the boolean mask of entries flipped an odd number of
        times.
    """
    err, step = err.double().clone(), flip_step.double().clone()
    h = h.double()
    flipped = torch.zeros_like(err, dtype=torch.bool)
    diag = torch.diagonal(h)
    for r0 in range(0, err.shape[0], row_block):
        e, d_all, f = err[r0:r0 + row_block], step[r0:r0 + row_block], flipped[r0:r0 + row_block]
        he = e @ h  # (b, k); views above share storage, so edits land in err/step/flipped
        active = torch.ones(e.shape[0], dtype=torch.bool, device=e.device)
        for _ in range(max_steps):
            cand = (e * he > 0) & (d_all != 0) & active[:, None]
            best, j = torch.where(cand, he.abs(), torch.full_like(he, -1.0)).max(1)
            d = d_all.gather(1, j[:, None]).squeeze(1)
            change = 2 * d * he.gather(1, j[:, None]).squeeze(1) + d * d * diag[j]
            active = (best > 0) & (change < 0)
            if not bool(active.any()):
                break
            rows = active.nonzero().squeeze(1)
            jj, dd = j[rows], d[rows]
            e[rows, jj] += dd
            d_all[rows, jj] = -dd
            f[rows, jj] = ~f[rows, jj]
            he[rows] += dd[:, None] * h[jj]
    return err, flipped


def _quantize_chunk(w_s: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int, qmax: int,
                    h: torch.Tensor | None, max_steps: int, row_block: int) -> torch.Tensor:
    """Codes of one chunk: RTN, then (if ``h`` is given) refined between floor and ceil."""
    codes, lo, hi = rounding_codes(w_s, scale, zero_point, qmin, qmax)
    if h is None or max_steps == 0:
        return codes
    alt = lo + hi - codes  # the other rounding (equal to codes where floor == ceil)
    err = dequantize_codes(codes, scale, zero_point) - w_s
    step = dequantize_codes(alt, scale, zero_point) - dequantize_codes(codes, scale, zero_point)
    _, flipped = refine_rounding(err, step, h, max_steps, row_block)
    return torch.where(flipped, alt, codes)


def wqer_quantize(w: torch.Tensor, gram: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor,
                  qmin: int, qmax: int, coefficient: float, refine_steps: int = 100, ridge: bool = True,
                  row_block: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize the first ``n = scale.shape[1]`` columns of ``w`` by ERQ's halving Wqer.

    Args:
        w: (out, k) augmented float weight ``[W | b]`` (``k = n + 1``) or ``W`` (``k = n``, no bias).
        gram: (k, k) ``A^T A`` of the layer's quantized input (with the ones column for a bias).
        scale, zero_point: (out, n) fixed grid of each weight entry (per-row, or dual uniform).
        qmin, qmax: integer code range.
        coefficient: relative ridge strength of the compensation.
        refine_steps: rounding-refinement moves per row and chunk (0 = plain round-to-nearest).
        ridge: compensate the float columns after each chunk.
        row_block: rows refined together.
    Returns:
        ``(codes, w_new)``: (out, n) integer codes (float64) and the (out, k) float64 weight after
        compensation, whose first ``n`` columns equal the dequantized codes. Without a bias the last
        column is never compensated for and is rounded to nearest at the end.
    """
    w = w.double().clone()
    gram = gram.double()
    n, k = scale.shape[1], w.shape[1]
    codes = torch.empty(w.shape[0], n, dtype=torch.float64, device=w.device)
    start = 0
    while k - start > 1:
        take = (k - start) // 2
        s_idx = torch.arange(start, start + take, device=w.device)
        u_idx = torch.arange(start + take, k, device=w.device)
        sc, zp = scale[:, start:start + take], zero_point[:, start:start + take]
        h = gram[start:start + take, start:start + take] if refine_steps > 0 else None
        c = _quantize_chunk(w[:, s_idx], sc, zp, qmin, qmax, h, refine_steps, row_block)
        q = dequantize_codes(c, sc, zp)
        if ridge:
            w[:, u_idx] += compensation_update(gram, s_idx, u_idx, q - w[:, s_idx], coefficient)
        w[:, s_idx], codes[:, start:start + take] = q, c
        start += take
    if start < n:  # bias-less layer: the last weight column, round to nearest
        c = rounding_codes(w[:, start:n], scale[:, start:n], zero_point[:, start:n], qmin, qmax)[0]
        w[:, start:n], codes[:, start:n] = dequantize_codes(c, scale[:, start:n], zero_point[:, start:n]), c
    return codes, w
