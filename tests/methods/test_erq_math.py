"""ERQ math: ridge steps against a least-squares reference, Wqer on the grid and better than RTN,
rounding refinement monotone in its proxy, DUQ outlier columns."""
import numpy as np
import torch

from squeeze.methods.erq.duq import dual_uniform_params, outlier_columns
from squeeze.methods.erq.ridge import aqer_update, compensation_update, relative_lambda
from squeeze.methods.erq.wqer import (dequantize_codes, proxy, refine_rounding, rounding_codes,
                                      wqer_quantize)
from squeeze.quant import primitives as P


def _inputs(n: int, d: int, seed: int = 0) -> torch.Tensor:
    """Correlated float64 activations with a few outlier channels, like post-LN ViT inputs."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(d, d, generator=g, dtype=torch.float64) / d ** 0.5 + torch.eye(d, dtype=torch.float64)
    x = torch.randn(n, d, generator=g, dtype=torch.float64) @ mix
    x[:, :2] *= 4.0
    return x


def _ones(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)


def _act_quant(x: torch.Tensor, bits: int) -> torch.Tensor:
    scale, zp = P.params_from_range(x.min().reshape(1, 1), x.max().reshape(1, 1), bits, False)
    return P.dequantize(P.quantize(x, scale, zp, 0, 2 ** bits - 1), scale, zp)


def _ridge_reference(a: np.ndarray, r: np.ndarray, lam: float) -> np.ndarray:
    """argmin ||a d - r||^2 + lam ||d||^2 by ordinary least squares on the stacked system."""
    stacked = np.vstack([a, np.sqrt(lam) * np.eye(a.shape[1])])
    rhs = np.vstack([r, np.zeros((a.shape[1], r.shape[1]))])
    return np.linalg.lstsq(stacked, rhs, rcond=None)[0]


def test_aqer_matches_lstsq_and_reduces_output_error() -> None:
    torch.manual_seed(0)
    n, d, out = 400, 24, 10
    x = _inputs(n, d)
    xq = _act_quant(x, 4)
    w, b = torch.randn(out, d, dtype=torch.float64), torch.randn(out, dtype=torch.float64)
    y = x @ w.T + b
    a = _ones(xq)
    w_aug = torch.cat([w, b[:, None]], 1)
    r = y - a @ w_aug.T  # = (x - xq) W^T
    gram, atr = a.T @ a, a.T @ r
    for c in (1e-3, 1e-1):
        delta = aqer_update(gram, atr, c)  # (out, d+1)
        lam = relative_lambda(gram, c)
        assert abs(lam - c * float(torch.diagonal(gram).mean())) < 1e-9 * lam
        ref = _ridge_reference(a.numpy(), r.numpy(), lam).T
        np.testing.assert_allclose(delta.numpy(), ref, rtol=1e-6, atol=1e-8)
        before = (a @ w_aug.T - y).pow(2).sum()
        after = (a @ (w_aug + delta).T - y).pow(2).sum()
        assert after < 0.9 * before, (c, float(after), float(before))


def test_relative_lambda_follows_the_data_scale() -> None:
    x = _inputs(100, 8)
    gram = _ones(x).T @ _ones(x)
    assert relative_lambda(100 * gram, 0.1) == 100 * relative_lambda(gram, 0.1)
    assert relative_lambda(torch.zeros(3, 3, dtype=torch.float64), 0.1) > 0  # dead inputs: still solvable


def test_compensation_matches_lstsq() -> None:
    x = _ones(_inputs(300, 12, seed=1))
    gram = x.T @ x
    s_idx, u_idx = torch.arange(0, 6), torch.arange(6, 13)
    err = torch.randn(5, 6, dtype=torch.float64) * 0.1
    delta = compensation_update(gram, s_idx, u_idx, err, 0.01)
    lam = relative_lambda(gram[u_idx][:, u_idx], 0.01)
    target = -(x[:, s_idx] @ err.T)  # the free columns should reproduce minus the chunk's output error
    ref = _ridge_reference(x[:, u_idx].numpy(), target.numpy(), lam).T
    np.testing.assert_allclose(delta.numpy(), ref, rtol=1e-6, atol=1e-9)


def _grid(w: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    scale, zp = P.params_from_range(*P.minmax_range(w.float(), 1), bits, False)
    return scale.double().expand_as(w), zp.double().expand_as(w)


def test_refinement_never_increases_proxy_and_stays_on_floor_or_ceil() -> None:
    torch.manual_seed(2)
    rows, k = 64, 20
    x = _inputs(200, k, seed=2)
    h = x.T @ x / len(x)
    w = torch.randn(rows, k, dtype=torch.float64)
    scale, zp = _grid(w, 3)
    codes, lo, hi = rounding_codes(w, scale, zp, 0, 7)
    err = dequantize_codes(codes, scale, zp) - w
    alt = lo + hi - codes
    step = dequantize_codes(alt, scale, zp) - dequantize_codes(codes, scale, zp)
    new_err, flipped = refine_rounding(err, step, h, max_steps=100, row_block=16)
    assert flipped.any()
    assert torch.all(proxy(new_err, h) <= proxy(err, h) + 1e-12)
    assert proxy(new_err, h).sum() < 0.99 * proxy(err, h).sum()  # greedy k=1: modest but real gain
    new_codes = torch.where(flipped, alt, codes)
    np.testing.assert_allclose(new_err.numpy(), (dequantize_codes(new_codes, scale, zp) - w).numpy(), atol=1e-12)
    assert torch.all((new_codes == lo) | (new_codes == hi))
    # zero steps: unchanged
    same, none = refine_rounding(err, step, h, max_steps=0, row_block=16)
    assert torch.equal(same, err) and not none.any()


def test_wqer_is_on_grid_and_beats_rtn() -> None:
    torch.manual_seed(3)
    n, d, out, bits = 600, 32, 16, 3
    a = _ones(_inputs(n, d, seed=3))
    gram = a.T @ a
    w = torch.cat([torch.randn(out, d, dtype=torch.float64), torch.randn(out, 1, dtype=torch.float64)], 1)
    scale, zp = _grid(w[:, :d], bits)
    rtn = w.clone()
    rtn[:, :d] = dequantize_codes(rounding_codes(w[:, :d], scale, zp, 0, 7)[0], scale, zp)
    err_rtn = (a @ (rtn - w).T).pow(2).sum()
    errors = {}
    for refine in (0, 100):
        for ridge in (False, True):
            codes, w_new = wqer_quantize(w, gram, scale, zp, 0, 2 ** bits - 1, 0.01, refine, ridge, row_block=5)
            assert torch.equal(codes, codes.round()) and codes.min() >= 0 and codes.max() <= 7
            assert torch.equal(w_new[:, :d], dequantize_codes(codes, scale, zp))  # exactly on the grid
            errors[(refine, ridge)] = float((a @ (w_new - w).T).pow(2).sum())
            if not ridge:
                assert torch.equal(w_new[:, d], w[:, d])  # the bias only moves by compensation
    assert abs(errors[(0, False)] - float(err_rtn)) < 1e-9 * float(err_rtn)  # no refine, no ridge = RTN
    assert errors[(100, False)] < errors[(0, False)]
    assert errors[(0, True)] < 0.8 * float(err_rtn), errors
    assert errors[(100, True)] <= float(err_rtn)


def test_wqer_without_bias_rounds_last_column() -> None:
    a = _inputs(300, 9, seed=4)
    w = torch.randn(4, 9, dtype=torch.float64)
    scale, zp = _grid(w, 4)
    codes, w_new = wqer_quantize(w, a.T @ a, scale, zp, 0, 15, 0.1)
    assert torch.equal(w_new, dequantize_codes(codes, scale, zp))


def test_outlier_columns_and_dual_params() -> None:
    torch.manual_seed(5)
    w = torch.randn(40, 30) * 0.1
    w[:, [3, 17]] *= 20  # columns scaled up, as a reparameterization does
    mask = outlier_columns(w, count=2)
    assert mask.nonzero().flatten().tolist() == [3, 17]
    scale, zp = dual_uniform_params(w, mask, 3, False, (0.99, 1.0))
    assert scale.shape == w.shape and zp.shape == w.shape
    assert scale[:, 3].mean() > 3 * scale[:, 0].mean()  # outlier columns get their own, wider grid
    assert torch.equal(scale[:, 0], scale[:, 1])
    q = P.dequantize(P.quantize(w, scale, zp, 0, 7), scale, zp)
    s1, z1 = P.params_from_range(*P.minmax_range(w, 1), 3, False)
    single = P.dequantize(P.quantize(w, s1, z1, 0, 7), s1, z1)
    assert (q - w).pow(2).sum() < 0.5 * (single - w).pow(2).sum()
