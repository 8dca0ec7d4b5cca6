"""DFSQ math: channel-wise normalization, the universal set, pinned-zero K-means and point selection.

Hong et al., "Distribution-Flexible Subset Quantization for Post-Quantizing Super-Resolution
Networks" (DFSQ). Pure functions on tensors, vectorized over channels (and K-means restarts):

* :func:`normalize_channels`: per-sample, per-channel normalization of a conv input (N, C, H, W):
  ``(x - mu) / max|x - mu|`` into [-1, 1] (signed inputs), or ``x / max|x|`` into [0, 1] (post-ReLU).
* :func:`universal_set`: the "multi-word additive log-scale" set U: 4 words, word i in
  ``{1, 2^-i, 2^-(i+4), 0}``, a point is the mean of the words (189 non-negative values), +-.
* :func:`kmeans_pinned_zero`: 1-D Lloyd iterations, one row per (restart, channel), centroid 0 held
  at 0; a row stops updating once its largest centroid move is below ``tol``, exactly as if each
  row ran its own loop.
* :func:`select_points`: K-means with K = 2^b (zero pinned, the rest initialised from random samples),
  each centroid snapped to its nearest point of U, scored by squared error; best of ``restarts``.

1-D nearest-point search uses sorted points and the midpoints between neighbours
(``torch.searchsorted``), so memory stays O(rows x samples) even at 256 points. K-means sorts each
row's samples once and keeps prefix sums, so an iteration costs O(K log M) per row (all rows at once).
"""
from __future__ import annotations

import itertools
from functools import lru_cache

import torch

EPS = 1e-8


@lru_cache(maxsize=8)
def _universe(words: int, signed: bool) -> tuple[float, ...]:
    choices = [(1.0, 2.0 ** -i, 2.0 ** -(i + words), 0.0) for i in range(1, words + 1)]
    values = {sum(c) / words for c in itertools.product(*choices)}
    if signed:
        values |= {-v for v in values}
    return tuple(sorted(values))


def universal_set(words: int = 4, signed: bool = True) -> torch.Tensor:
    """DFSQ's universal set U, sorted (float32): 189 values in [0, 1], or 377 in [-1, 1] when ``signed``.

    Word ``i`` (1..words) takes a value in ``{1, 2^-i, 2^-(i+words), 0}``; a point is the words' mean.
    """
    if not 1 <= words <= 6:
        raise ValueError(f"words={words} must be in 1..6")
    return torch.tensor(_universe(words, signed), dtype=torch.float32)


def uniform_points(bits: int, signed: bool) -> torch.Tensor:
    """The ``uniform-norm`` baseline's grid: 2^bits affine levels over [-1, 1] (or [0, 1]), 0 included.

    Signed: step ``2 / (2^b - 1)`` with an integer zero point (min-max affine quantization of the
    normalized range); unsigned: ``linspace(0, 1, 2^b)``.
    """
    levels = 2 ** bits
    if not signed:
        return torch.linspace(0.0, 1.0, levels)
    step = 2.0 / (levels - 1)
    zero = round(1.0 / step)
    return (torch.arange(levels, dtype=torch.float32) - zero) * step


def normalize_channels(x: torch.Tensor, signed: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample, per-channel normalization of ``x`` (N, C, H, W): returns ``(u, mu, scale)``.

    ``u = (x - mu) / scale`` with ``mu`` the spatial mean and ``scale = max|x - mu|`` (both (N, C, 1, 1))
    when ``signed``; ``mu = 0`` and ``scale = max|x|`` otherwise. A constant channel gets ``u = 0``.
    """
    if signed:
        mu = x.mean(dim=(2, 3), keepdim=True)
        d = x - mu
    else:
        mu = torch.zeros_like(x[:, :, :1, :1])
        d = x
    scale = d.abs().amax(dim=(2, 3), keepdim=True).clamp_min(EPS)
    return d / scale, mu, scale


def nearest_in_rows(values: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """For each row r, replace ``values[r]`` (R, M) by its nearest entry of ``points[r]`` (R, K).

    ``points`` need not be sorted; duplicates are allowed.
    """
    sorted_pts, _ = points.sort(dim=1)
    mids = (sorted_pts[:, 1:] + sorted_pts[:, :-1]) / 2
    idx = torch.searchsorted(mids.contiguous(), values.contiguous())
    return sorted_pts.gather(1, idx)


def quantize_to_points(u: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Nearest per-channel point: ``u`` (N, C, H, W), ``points`` (C, K) -> same shape as ``u``."""
    n, c, h, w = u.shape
    rows = u.transpose(0, 1).reshape(c, n * h * w)
    q = nearest_in_rows(rows, points.to(u.dtype))
    return q.reshape(c, n, h, w).transpose(0, 1)


Stats = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def sorted_stats(data: torch.Tensor) -> Stats:
    """Rows of ``data`` (R, M) sorted, with prefix sums of values and squares (R, M + 1), float64.

    With them, the count, sum and sum of squares of the samples nearest to each centroid come from
    a binary search of the centroid midpoints: O(K log M) per row and K-means iteration, not O(M).
    """
    xs = data.double().sort(dim=1).values
    zero = torch.zeros(xs.shape[0], 1, dtype=xs.dtype, device=xs.device)
    return xs, torch.cat([zero, xs.cumsum(1)], 1), torch.cat([zero, (xs * xs).cumsum(1)], 1)


def cluster_stats(stats: Stats, points: torch.Tensor) -> Stats:
    """``(count, sum, sum of squares)`` (R, K) of the samples whose nearest point is each column of ``points``.

    ``points`` (R, K) need not be sorted; a value exactly between two points goes to the lower one
    (as in :func:`nearest_in_rows`); of equal points, one gets all the samples.
    """
    xs, c1, c2 = stats
    sp, order = points.double().sort(dim=1)
    mids = (sp[:, 1:] + sp[:, :-1]) / 2
    inner = torch.searchsorted(xs, mids.contiguous(), right=True)  # (R, K-1): samples <= each midpoint
    r = xs.shape[0]
    edges = torch.cat([torch.zeros(r, 1, dtype=inner.dtype, device=xs.device), inner,
                       torch.full((r, 1), xs.shape[1], dtype=inner.dtype, device=xs.device)], 1)
    lo, hi = edges[:, :-1], edges[:, 1:]
    per_sorted = ((hi - lo).double(), c1.gather(1, hi) - c1.gather(1, lo), c2.gather(1, hi) - c2.gather(1, lo))
    count, s1, s2 = (torch.empty_like(t).scatter_(1, order, t) for t in per_sorted)  # back to column order
    return count, s1, s2


def kmeans_pinned_zero(data: torch.Tensor, init: torch.Tensor, iters: int = 100, tol: float = 1e-3,
                       stats: Stats | None = None) -> torch.Tensor:
    """1-D Lloyd K-means per row with centroid 0 pinned at 0 (DFSQ's fast point selection, step 2).

    Args:
        data: (R, M) samples, one row per (restart, channel).
        init: (R, K) initial centroids; column 0 is forced to 0 and stays there.
        iters: at most this many Lloyd iterations.
        tol: a row stops once its largest centroid move is below ``tol`` (frozen from then on).
        stats: :func:`sorted_stats` of ``data`` when the caller already has them.
    Returns:
        (R, K) centroids (dtype of ``data``); an empty cluster keeps its previous centroid.
    """
    stats = stats if stats is not None else sorted_stats(data)
    cent = init.double().clone()
    cent[:, 0] = 0.0
    active = torch.ones(cent.shape[0], dtype=torch.bool, device=data.device)
    for _ in range(iters):
        count, total, _ = cluster_stats(stats, cent)
        new = torch.where(count > 0, total / count.clamp_min(1), cent)
        new[:, 0] = 0.0
        moved = (new - cent).abs().amax(dim=1)
        cent = torch.where(active[:, None], new, cent)
        active &= moved >= tol
        if not active.any():
            break
    return cent.to(data.dtype)


def snap(centroids: torch.Tensor, universe: torch.Tensor) -> torch.Tensor:
    """Each centroid replaced by its nearest value of the sorted 1-D ``universe`` (duplicates possible)."""
    mids = (universe[1:] + universe[:-1]) / 2
    return universe[torch.searchsorted(mids, centroids.contiguous())]


def squared_error(data: torch.Tensor, points: torch.Tensor, stats: Stats | None = None) -> torch.Tensor:
    """Per row, the summed squared error (float64) of ``data`` (R, M) rounded to its nearest ``points`` (R, K)."""
    count, s1, s2 = cluster_stats(stats if stats is not None else sorted_stats(data), points)
    p = points.double()
    return (s2 - 2 * p * s1 + count * p * p).sum(dim=1).clamp_min(0)


def select_points(data: torch.Tensor, bits: int, universe: torch.Tensor, restarts: int = 5, iters: int = 100,
                  tol: float = 1e-3, generator: torch.Generator | None = None) -> torch.Tensor:
    """DFSQ's fast quantization-point selection for every channel at once.

    Args:
        data: (C, M) normalized calibration values per channel.
        bits: K = 2^bits points per channel.
        universe: sorted 1-D candidate set (:func:`universal_set`).
        restarts: independent K-means runs; the one whose snapped points give the lowest squared
            error on the channel's data wins (per channel).
    Returns:
        (C, K) sorted points per channel, each a member of ``universe`` (0 always included).
    """
    c, m = data.shape
    k = 2 ** bits
    # (restarts * C, M): restart r of channel j is row r * C + j
    rep = data.repeat(restarts, 1)
    picks = torch.randint(m, (restarts * c, k - 1), generator=generator, device=data.device)
    init = torch.cat([torch.zeros(restarts * c, 1, device=data.device), rep.gather(1, picks)], dim=1)
    stats = tuple(t.repeat(restarts, 1) for t in sorted_stats(data))  # sort once, share across restarts
    cent = kmeans_pinned_zero(rep, init, iters, tol, stats)
    pts = snap(cent, universe.to(data.device))
    err = squared_error(rep, pts, stats).view(restarts, c)
    best = err.argmin(dim=0)  # (C,)
    chosen = pts.view(restarts, c, k)[best, torch.arange(c, device=data.device)]
    return chosen.sort(dim=1).values
