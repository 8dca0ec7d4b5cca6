"""N:M mask math against independent numpy / brute-force references."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from squeeze.errors import SqueezeError
from squeeze.sparse import masks as K


def ref_nm_conv(w: np.ndarray, n: int, m: int) -> np.ndarray:
    """Loop reference: for every output channel and kernel position, groups of m input channels."""
    o, i, kh, kw = w.shape
    mask = np.zeros_like(w, dtype=bool)
    for a, y, x, g in itertools.product(range(o), range(kh), range(kw), range(i // m)):
        vals = np.abs(w[a, g * m:(g + 1) * m, y, x])
        keep = np.argsort(-vals, kind="stable")[:n]
        mask[a, g * m + keep, y, x] = True
    return mask


@pytest.mark.parametrize("n,m", [(2, 4), (1, 4), (2, 8)])
def test_conv_mask_matches_loop_reference(n: int, m: int) -> None:
    torch.manual_seed(0)
    w = torch.randn(8, 16, 3, 3)
    got = K.nm_mask(w, n, m)
    assert torch.equal(got, torch.from_numpy(ref_nm_conv(w.numpy(), n, m)))
    # exactly n per group of m input channels at every kernel position
    counts = got.reshape(8, 16 // m, m, 3, 3).sum(2)
    assert bool((counts == n).all())
    assert K.is_nm(got, n, m) and K.is_nm(w * got, n, m)
    assert not K.is_nm(w, n, m)


def test_linear_mask_groups_run_along_inputs() -> None:
    torch.manual_seed(1)
    w = torch.randn(6, 8)
    got = K.nm_mask(w, 2, 4)
    ref = ref_nm_conv(w.numpy()[:, :, None, None], 2, 4)[:, :, 0, 0]
    assert torch.equal(got, torch.from_numpy(ref))


def test_grouping_views_round_trip() -> None:
    w = torch.randn(4, 8, 3, 3)
    assert torch.equal(K.fwd_unmatrix(K.fwd_matrix(w), w.shape), w)
    assert torch.equal(K.bwd_unmatrix(K.bwd_matrix(w), w.shape), w)
    # forward rows hold input channels of one (output, position): row 0 is w[0, :, 0, 0]
    assert torch.equal(K.fwd_matrix(w)[0], w[0, :, 0, 0])
    assert torch.equal(K.bwd_matrix(w)[0], w[:, 0, 0, 0])


def test_unstructured_mask_keeps_the_largest() -> None:
    torch.manual_seed(2)
    w = torch.randn(8, 8, 3, 3)
    got = K.unstructured_mask(w, 0.25)
    flat = np.abs(w.numpy()).ravel()
    thresh = np.sort(flat)[::-1][round(0.25 * flat.size) - 1]
    assert torch.equal(got, torch.from_numpy(np.abs(w.numpy()) >= thresh))


def brute_transposable(tile: np.ndarray, n: int) -> float:
    """Best kept |w| over every 0/1 m x m matrix with <= n per row and column (2^(m*m) candidates)."""
    m = tile.shape[0]
    bits = ((np.arange(2 ** (m * m))[:, None] >> np.arange(m * m)) & 1).reshape(-1, m, m)
    ok = (bits.sum(1) <= n).all(1) & (bits.sum(2) <= n).all(1)
    return float((bits[ok] * tile).sum((1, 2)).max())


@pytest.mark.parametrize("n", [1, 2])
def test_transposable_exact_is_optimal_and_greedy_within_half(n: int) -> None:
    rng = np.random.default_rng(3)
    for _ in range(5):
        tile = np.abs(rng.standard_normal((4, 4))).astype(np.float32)
        best = brute_transposable(tile, n)
        t = torch.from_numpy(tile)[None]
        exact = K.transposable_exact_tiles(t, n)[0].numpy()
        greedy = K.transposable_greedy_tiles(t, n)[0].numpy()
        assert (tile * exact).sum() == pytest.approx(best, rel=1e-6)
        assert (tile * greedy).sum() >= 0.5 * best - 1e-6
        for mask in (exact, greedy):
            assert (mask.sum(0) <= n).all() and (mask.sum(1) <= n).all()


def test_pattern_counts() -> None:
    assert len(K.transposable_patterns(2, 4)) == 90
    assert len(K.transposable_patterns(1, 4)) == 24


@pytest.mark.parametrize("n,m,shape", [(2, 4, (8, 16, 3, 3)), (1, 4, (8, 8)), (2, 8, (16, 16, 3, 3))])
def test_transposable_is_nm_in_both_directions(n: int, m: int, shape: tuple) -> None:
    torch.manual_seed(4)
    w = torch.randn(shape)
    mask = K.transposable_mask(w, n, m)
    assert K.is_nm(mask, n, m) and K.is_nm(mask, n, m, backward=True)
    assert float(mask.float().mean()) == pytest.approx(n / m, abs=0.02)


def test_backward_mask_against_reference() -> None:
    torch.manual_seed(5)
    w = torch.randn(8, 4, 3, 3)
    fwd = K.nm_mask(w, 2, 4)
    perm = torch.randperm(8)
    got = K.backward_mask(w, fwd, perm, 2, 4)
    ws = (w * fwd).abs().numpy()
    ref = np.zeros_like(fwd.numpy())
    p = perm.numpy()
    for i, y, x, g in itertools.product(range(4), range(3), range(3), range(2)):
        outs = p[g * 4:(g + 1) * 4]  # outputs in permuted order, one backward group
        keep = outs[np.argsort(-ws[outs, i, y, x], kind="stable")[:2]]
        ref[keep, i, y, x] = True
    ref &= fwd.numpy()
    assert torch.equal(got, torch.from_numpy(ref))
    assert bool((got <= fwd).all())
    # N:M along outputs in the permuted order; score counts exactly the kept weights
    assert K.is_nm(got[perm], 2, 4, backward=True)
    assert K.permutation_score(fwd, perm, 2, 4) == int(got.sum())


def test_permutation_search_never_lowers_the_objective() -> None:
    torch.manual_seed(6)
    w = torch.randn(16, 8, 3, 3)
    fwd = K.nm_mask(w, 2, 4)
    current = torch.arange(16)
    for seed in range(5):
        start = K.permutation_score(fwd, current, 2, 4)
        best, score = K.search_permutation(fwd, current, 2, 4, 8, torch.Generator().manual_seed(seed))
        assert score >= start and score == K.permutation_score(fwd, best, 2, 4)
        current = best
    assert K.permutation_score(fwd, current, 2, 4) <= int(fwd.sum())


def test_spatial_mask_reference() -> None:
    torch.manual_seed(7)
    w = torch.randn(8, 8, 3, 3)
    w[:, :, 1, 1] *= 4.0  # a dominant centre: unstructured pruning keeps it denser than 2:4 allows
    flat = np.abs(w.numpy()).ravel()
    thresh = np.sort(flat)[::-1][flat.size // 2 - 1]
    per_position = (np.abs(w.numpy()) >= thresh).mean(axis=(0, 1))
    got = K.spatial_mask(w, 2, 4)
    assert torch.equal(got, torch.from_numpy(per_position > 0.5))
    assert bool(got[1, 1]) and not bool(got.all())


@pytest.mark.parametrize("n,m", [(4, 4), (0, 4), (5, 4)])
def test_bad_ratios(n: int, m: int) -> None:
    with pytest.raises(SqueezeError, match="0 < N < M"):
        K.check_nm_args(n, m)


def test_bad_shapes() -> None:
    with pytest.raises(SqueezeError, match="multiple of M=4"):
        K.nm_mask(torch.randn(4, 6), 2, 4)
    with pytest.raises(SqueezeError, match="divisible by M=4"):
        K.transposable_mask(torch.randn(6, 8), 2, 4)
