"""Quantization primitives against PyTorch's own fake-quantize ops and hand-computed values."""
import math

import pytest
import torch

from squeeze.quant import primitives as P


def test_per_tensor_affine_matches_torch() -> None:
    torch.manual_seed(0)
    x = torch.randn(1000) * 3
    lo, hi = P.minmax_range(x.reshape(1, -1), 1)
    scale, zp = P.params_from_range(lo, hi, 8, symmetric=False)
    ours = P.fake_quantize(x, scale.reshape(()), zp.reshape(()), 0, 255)
    ref = torch.fake_quantize_per_tensor_affine(x, float(scale), int(zp), 0, 255)
    assert torch.allclose(ours, ref, atol=1e-6)


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_per_channel_affine_matches_torch(bits: int) -> None:
    torch.manual_seed(1)
    w = torch.randn(6, 10) * torch.linspace(0.1, 4, 6)[:, None]
    g = P.Granularity("channel", 0)
    v, dim = g.view(w)
    scale, zp = P.params_from_range(*P.minmax_range(v, dim), bits, symmetric=False)
    ours = P.fake_quantize(v, scale, zp, 0, 2 ** bits - 1).reshape(w.shape)
    ref = torch.fake_quantize_per_channel_affine(w, scale.reshape(-1), zp.reshape(-1).int(), 0, 0, 2 ** bits - 1)
    assert torch.allclose(ours, ref, atol=1e-6)


def test_symmetric_grid_and_zero_exact() -> None:
    x = torch.tensor([-1.0, 0.0, 0.5, 2.0])
    scale, zp = P.params_from_range(torch.tensor(-1.0), torch.tensor(2.0), 4, symmetric=True)
    assert float(zp) == 0 and math.isclose(float(scale), 2.0 / 7, rel_tol=1e-6)
    out = P.fake_quantize(x, scale, zp, -8, 7)
    assert out[1] == 0 and torch.allclose(out[3], torch.tensor(2.0))


def test_group_view_and_channel_last() -> None:
    w = torch.arange(24.0).reshape(2, 12)
    v, dim = P.Granularity("group", group_size=4).view(w)
    assert v.shape == (6, 4) and dim == 1
    a = torch.randn(3, 5, 7)
    v, dim = P.Granularity("channel", -1).view(a)
    assert v.shape == (15, 7) and dim == 0
    with pytest.raises(ValueError):
        P.Granularity("group", group_size=5).view(w)


def test_percentile_range_is_quantile() -> None:
    x = torch.arange(1, 1001, dtype=torch.float32).reshape(1, -1)
    lo, hi = P.percentile_range(x, 1, 0.99)
    assert float(hi) == 990 and float(lo) == 11


def test_mse_search_beats_minmax_with_outlier() -> None:
    torch.manual_seed(2)
    x = torch.randn(1, 4000)
    x[0, 0] = 60.0  # one outlier ruins min-max ranges
    mse = P.quant_error(x, 1, *P.percentile_mse_range(x, 1, 4, False, (0.99, 0.999, 0.9999, 1.0)), 4, False)
    mm = P.quant_error(x, 1, *P.minmax_range(x, 1), 4, False)
    omse = P.quant_error(x, 1, *P.omse_range(x, 1, 4, False), 4, False)
    assert mse < mm and omse < mm


def test_log2_quantizers_hand_values() -> None:
    delta = torch.tensor(1.0)
    x = torch.tensor([1.0, 0.5, 0.3, 0.25, 1e-6, 0.0])
    # log2, 3 bits: indices round(-log2 x) = 0, 1, 2 (1.74), 2, 20 -> zero, inf -> zero
    assert torch.allclose(P.log2_quantize(x, delta, 3, False), torch.tensor([1.0, 0.5, 0.25, 0.25, 0.0, 0.0]))
    # log-sqrt2: index round(-2 log2 x): 0.3 -> 3.47 -> 3 -> 2^-1.5
    out = P.log2_quantize(x, delta, 3, True)
    assert math.isclose(float(out[2]), 2 ** -1.5, rel_tol=1e-6)
    assert float(out[1]) == 0.5 and float(out[4]) == 0.0


def test_round_ste_gradient_is_identity() -> None:
    x = torch.tensor([0.2, 1.7], requires_grad=True)
    P.round_ste(x).sum().backward()
    assert torch.equal(x.grad, torch.ones(2))
