"""Pure N:M mask math (no modules, no state): grouping views, magnitude masks, transposable masks,
unstructured masks, Bi-Mask backward masks and its permutation score.

Grouping convention (explicit, tested): N:M groups run along the **input** dimension.
``Linear`` weight (O, I): groups of M consecutive input features per output row.
``Conv2d`` weight (O, I, kh, kw): viewed NHWC-style as (O*kh*kw, I), so every kernel position of every
output channel has its own groups along the input channels (SpRe, Zhang et al., TPAMI 2025, sec. 3;
SR-STE, Zhou et al., ICLR 2021). Consequence: each kernel position keeps exactly N/M of its weights.
The backward (input-gradient) view groups along the **output** dimension: (I*kh*kw, O).
"""
from __future__ import annotations

import itertools
import math
from functools import lru_cache

import torch

from squeeze.errors import SqueezeError


def fwd_matrix(w: torch.Tensor) -> torch.Tensor:
    """(O, I) or (O, I, kh, kw) weight -> (rows, I) matrix whose rows hold the input-channel groups."""
    if w.ndim == 2:
        return w
    return w.permute(0, 2, 3, 1).reshape(-1, w.shape[1])


def fwd_unmatrix(mat: torch.Tensor, shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
    """Inverse of :func:`fwd_matrix` for a weight of ``shape``."""
    if len(shape) == 2:
        return mat.reshape(shape)
    o, i, kh, kw = shape
    return mat.reshape(o, kh, kw, i).permute(0, 3, 1, 2).contiguous()


def bwd_matrix(w: torch.Tensor) -> torch.Tensor:
    """Weight -> (I*kh*kw, O): rows are the input-gradient reductions, grouped along output channels."""
    if w.ndim == 2:
        return w.t()
    return w.permute(1, 2, 3, 0).reshape(-1, w.shape[0])


def bwd_unmatrix(mat: torch.Tensor, shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
    """Inverse of :func:`bwd_matrix`."""
    if len(shape) == 2:
        return mat.t().contiguous()
    o, i, kh, kw = shape
    return mat.reshape(i, kh, kw, o).permute(3, 0, 1, 2).contiguous()


def check_nm_args(n: int, m: int) -> None:
    """Refuse N:M ratios that are not a proper sparsity (``0 < N < M``)."""
    if not (isinstance(n, int) and isinstance(m, int)) or not 0 < n < m:
        raise SqueezeError(f"N:M = {n}:{m} is not a sparsity pattern; need integers with 0 < N < M (e.g. 2:4)")


def nm_mask_rows(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep the ``n`` largest of every ``m`` consecutive entries of each row (SR-STE's N:M rule).

    Args:
        scores: (R, K) non-negative importance (usually |w|); K must be a multiple of ``m``.
    Returns:
        bool (R, K) mask with exactly ``n`` True per group (ties broken by ``topk``).
    """
    r, k = scores.shape
    if k % m:
        raise SqueezeError(f"grouped dimension {k} is not a multiple of M={m}")
    groups = scores.reshape(r, k // m, m)
    idx = groups.topk(n, dim=-1).indices
    mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, idx, True)
    return mask.reshape(r, k)


def nm_mask(w: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Magnitude N:M mask of a Linear/Conv2d weight along the input dimension (bool, ``w``'s shape)."""
    return fwd_unmatrix(nm_mask_rows(fwd_matrix(w.detach().abs()), n, m), w.shape)


def group_counts(mask: torch.Tensor, m: int, backward: bool = False) -> torch.Tensor:
    """Non-zeros per group of ``m`` (forward grouping, or the backward one along O): (rows, K/m) ints."""
    mat = bwd_matrix(mask) if backward else fwd_matrix(mask)
    r, k = mat.shape
    return (mat != 0).reshape(r, k // m, m).sum(-1)


def is_nm(mask: torch.Tensor, n: int, m: int, backward: bool = False) -> bool:
    """True when every group of ``m`` holds at most ``n`` non-zeros (kept weights may be exactly 0)."""
    return bool((group_counts(mask, m, backward) <= n).all())


def unstructured_mask(w: torch.Tensor, density: float) -> torch.Tensor:
    """Layer-wise unstructured magnitude mask keeping ``round(density * numel)`` largest |w| (Han et al.)."""
    k = max(1, round(density * w.numel()))
    flat = w.detach().abs().reshape(-1)
    idx = flat.topk(k).indices
    return torch.zeros_like(flat, dtype=torch.bool).scatter_(0, idx, True).reshape(w.shape)


# --- transposable masks (Hubara et al., "Accelerated Sparse Neural Training", NeurIPS 2021) ---------------

def _blocks(mat: torch.Tensor, m: int) -> torch.Tensor:
    """(P, O, I) -> (P*O/m*I/m, m, m) tiles of m x m."""
    p, o, i = mat.shape
    return mat.reshape(p, o // m, m, i // m, m).permute(0, 1, 3, 2, 4).reshape(-1, m, m)


def _unblocks(tiles: torch.Tensor, shape: tuple[int, int, int], m: int) -> torch.Tensor:
    p, o, i = shape
    return tiles.reshape(p, o // m, i // m, m, m).permute(0, 1, 3, 2, 4).reshape(p, o, i)


def transposable_greedy_tiles(tiles: torch.Tensor, n: int) -> torch.Tensor:
    """Greedy 2-approximation: visit entries by descending score, keep one while its row and column
    both hold fewer than ``n`` kept entries. ``tiles``: (B, m, m) scores -> bool mask of that shape."""
    b, m, _ = tiles.shape
    order = tiles.reshape(b, -1).argsort(dim=1, descending=True)
    rows_n = torch.zeros(b, m, dtype=torch.long)
    cols_n = torch.zeros(b, m, dtype=torch.long)
    keep = torch.zeros(b, m * m, dtype=torch.bool)
    ar = torch.arange(b)
    for step in range(m * m):  # vectorised over all tiles, m*m sequential visits
        flat = order[:, step]
        r, c = flat // m, flat % m
        ok = (rows_n[ar, r] < n) & (cols_n[ar, c] < n)
        keep[ar, flat] |= ok
        rows_n[ar, r] += ok.long()
        cols_n[ar, c] += ok.long()
    return keep.reshape(b, m, m)


@lru_cache(maxsize=16)
def transposable_patterns(n: int, m: int) -> torch.Tensor:
    """Every m x m 0/1 matrix with exactly ``n`` ones per row and per column, as (P, m*m) floats.

    Enumerated row by row with column capacities; 90 patterns for 2:4, 24 for 1:4."""
    out: list[list[int]] = []
    rows = list(itertools.combinations(range(m), n))

    def grow(prefix: list[tuple[int, ...]], cap: list[int]) -> None:
        if len(prefix) == m:
            out.append([int(c in row) for row in prefix for c in range(m)])
            return
        for row in rows:
            if all(cap[c] > 0 for c in row):
                for c in row:
                    cap[c] -= 1
                grow(prefix + [row], cap)
                for c in row:
                    cap[c] += 1

    grow([], [n] * m)
    return torch.tensor(out, dtype=torch.float32)


def pattern_count(n: int, m: int) -> int:
    """How many exact patterns exist (cheap upper bound check before enumerating)."""
    return math.comb(m, n) ** m if m <= 4 else 10 ** 9


def transposable_exact_tiles(tiles: torch.Tensor, n: int) -> torch.Tensor:
    """Exact max-|w| transposable mask per tile by scoring every pattern (small m only)."""
    b, m, _ = tiles.shape
    pats = transposable_patterns(n, m)
    best = (tiles.reshape(b, -1).float() @ pats.t()).argmax(dim=1)
    return pats[best].reshape(b, m, m).bool()


def transposable_mask(w: torch.Tensor, n: int, m: int, solver: str = "auto") -> torch.Tensor:
    """Mask that is N:M along the input dim *and* along the output dim at every kernel position.

    ``solver``: ``exact`` (pattern enumeration, m <= 4), ``greedy`` (2-approximation) or ``auto``
    (exact when m <= 4). Needs O and I both multiples of ``m``. Returns bool in ``w``'s shape.
    """
    if w.ndim == 2:
        mat = w.detach().abs()[None]
    else:
        mat = w.detach().abs().permute(2, 3, 0, 1).reshape(-1, w.shape[0], w.shape[1])  # (kh*kw, O, I)
    p, o, i = mat.shape
    if o % m or i % m:
        raise SqueezeError(f"transposable N:M needs both weight dims divisible by M={m}, got O={o}, I={i}")
    use_exact = solver == "exact" or (solver == "auto" and pattern_count(n, m) <= 10_000)
    tiles = _blocks(mat, m)
    keep = transposable_exact_tiles(tiles, n) if use_exact else transposable_greedy_tiles(tiles, n)
    full = _unblocks(keep, (p, o, i), m)
    if w.ndim == 2:
        return full[0]
    return full.reshape(w.shape[2], w.shape[3], o, i).permute(2, 3, 0, 1).contiguous()


# --- Bi-Mask (Zhang et al., "Bi-directional Masks for Efficient N:M Sparse Training", ICML 2023) ------------

def backward_mask(w: torch.Tensor, fwd: torch.Tensor, perm: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Bi-Mask backward mask: N:M along the output dim (in ``perm`` order) of the forward-sparse weight.

    Steps (sec. 3.2): take |W * Mf| in the backward view (I*kh*kw, O), reorder the O axis by ``perm``,
    keep the top ``n`` of each ``m`` consecutive outputs, intersect with Mf, undo the reordering.
    Returns bool in ``w``'s shape; it is a subset of ``fwd``.
    """
    sparse = bwd_matrix((w.detach() * fwd).abs())  # (K, O)
    fmask = bwd_matrix(fwd)
    keep = nm_mask_rows(sparse[:, perm], n, m) & fmask[:, perm]
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(len(perm), device=perm.device)
    return bwd_unmatrix(keep[:, inv], w.shape)


def permutation_score(fwd: torch.Tensor, perm: torch.Tensor, n: int, m: int) -> int:
    """Forward-kept weights that survive the backward N:M selection under ``perm``:
    sum over backward groups of min(#forward-kept in the group, n) (Bi-Mask's eligibility criterion)."""
    mat = bwd_matrix(fwd)[:, perm]
    r, o = mat.shape
    counts = mat.reshape(r, o // m, m).sum(-1)
    return int(counts.clamp(max=n).sum())


def search_permutation(fwd: torch.Tensor, current: torch.Tensor, n: int, m: int, candidates: int,
                       gen: torch.Generator) -> tuple[torch.Tensor, int]:
    """Best of ``current`` and ``candidates`` random output-channel permutations by
    :func:`permutation_score` (the current one is scored too, so the objective never drops)."""
    best, best_score = current, permutation_score(fwd, current, n, m)
    for _ in range(candidates):
        cand = torch.randperm(len(current), generator=gen).to(current.device)
        score = permutation_score(fwd, cand, n, m)
        if score > best_score:
            best, best_score = cand, score
    return best, best_score


def spatial_mask(w: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """SpRe spatial mask S (kh, kw): positions where layer-wise unstructured magnitude pruning at density
    n/m keeps a larger fraction of the (O*I) weights than N:M allows (SpRe, sec. 3.2)."""
    kept = unstructured_mask(w, n / m).float().mean(dim=(0, 1))  # per-position density (kh, kw)
    return kept > n / m
