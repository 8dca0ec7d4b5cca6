"""DFQ's pure math (squeeze.methods.cle.primitives) against independent computations."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from squeeze.methods.cle import primitives as P


def test_fold_batchnorm_matches_conv_then_batchnorm() -> None:
    torch.manual_seed(0)
    w, b = torch.randn(5, 3, 3, 3), torch.randn(5)
    mean, var, gamma, beta = torch.randn(5), torch.rand(5) + 0.1, torch.randn(5), torch.randn(5)
    x = torch.randn(2, 3, 7, 7)
    ref = F.batch_norm(F.conv2d(x, w, b, padding=1), mean, var, gamma, beta, training=False, eps=1e-3)
    fw, fb = P.fold_batchnorm(w, b, mean, var, gamma, beta, 1e-3)
    torch.testing.assert_close(F.conv2d(x, fw, fb, padding=1), ref, rtol=1e-4, atol=1e-5)
    fw0, fb0 = P.fold_batchnorm(w, None, mean, var, gamma, beta, 1e-3)  # a conv without bias
    torch.testing.assert_close(fb0, beta - mean * gamma / torch.sqrt(var + 1e-3))


@pytest.mark.parametrize("depthwise", [False, True])
def test_equalization_balances_ranges_and_keeps_the_function(depthwise: bool) -> None:
    torch.manual_seed(1)
    w1 = torch.randn(6, 4, 3, 3) * torch.logspace(-2, 1, 6).view(6, 1, 1, 1)  # very unequal channel ranges
    b1 = torch.randn(6)
    w2 = torch.randn(6, 1, 3, 3) if depthwise else torch.randn(5, 6, 1, 1)
    s = P.equalization_scales(P.output_ranges(w1), P.input_ranges(w2, depthwise))
    nw1, nb1 = P.scale_output(w1, b1, s)
    nw2 = P.scale_input(w2, s, depthwise)
    torch.testing.assert_close(P.output_ranges(nw1), P.input_ranges(nw2, depthwise))
    expected = torch.sqrt(P.output_ranges(w1) * P.input_ranges(w2, depthwise))
    torch.testing.assert_close(P.output_ranges(nw1), expected)
    x = torch.randn(2, 4, 8, 8)
    groups = 6 if depthwise else 1
    ref = F.conv2d(F.relu(F.conv2d(x, w1, b1, padding=1)), w2, groups=groups)
    out = F.conv2d(F.relu(F.conv2d(x, nw1, nb1, padding=1)), nw2, groups=groups)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


def test_equalization_scales_leave_dead_channels_alone() -> None:
    s = P.equalization_scales(torch.tensor([0.0, 4.0, 1.0]), torch.tensor([2.0, 0.0, 4.0]))
    torch.testing.assert_close(s, torch.tensor([1.0, 1.0, 0.5]))


def test_bounded_scales_keep_relu6_channels_below_the_clip() -> None:
    s = torch.tensor([0.2, 0.2, 3.0, 0.5])
    mean, std = torch.tensor([1.0, 5.0, 1.0, -1.0]), torch.tensor([0.5, 0.5, 0.5, 0.1])
    out = P.bounded_scales(s, mean, std, upper=6.0, n_std=6.0)
    hi = mean + 6 * std  # 4, 8, 4, -0.4
    assert out[1] == 1.0  # may reach 6: untouched
    assert out[0] == pytest.approx(4 / 6) and out[2] == 3.0 and out[3] == 0.5
    assert bool(((hi / out)[[0, 2, 3]] <= 6.0 + 1e-6).all())


def test_relu_means_match_sampling() -> None:
    rng = np.random.default_rng(0)
    mean, std = np.array([-1.0, 0.0, 2.0, 5.5]), np.array([1.0, 2.0, 0.5, 1.0])
    z = rng.normal(mean, std, size=(400_000, 4))
    torch.testing.assert_close(P.relu_mean(torch.tensor(mean), torch.tensor(std)),
                               torch.tensor(np.maximum(z, 0).mean(0)), rtol=0, atol=0.01)
    torch.testing.assert_close(P.clipped_relu_mean(torch.tensor(mean), torch.tensor(std), 6.0),
                               torch.tensor(np.clip(z, 0, 6).mean(0)), rtol=0, atol=0.01)
    assert P.relu_mean(torch.tensor([-2.0, 3.0]), torch.zeros(2)).tolist() == [0.0, 3.0]


def test_absorbed_bias_is_what_three_std_leave() -> None:
    c = P.absorbed_bias(torch.tensor([4.0, 1.0, -3.0]), torch.tensor([1.0, 1.0, 1.0]))
    assert c.tolist() == [1.0, 0.0, 0.0]


@pytest.mark.parametrize("kind", ["conv", "depthwise", "linear"])
def test_bias_correction_is_the_mean_output_error(kind: str) -> None:
    """For a constant input per channel the output error of W_q against W is exactly the correction."""
    torch.manual_seed(2)
    shape = {"conv": (4, 3, 3, 3), "depthwise": (3, 1, 3, 3), "linear": (4, 3)}[kind]
    w = torch.randn(shape)
    wq = torch.round(w * 4) / 4
    mean = torch.rand(3) + 0.5
    corr = P.bias_correction(w, wq, mean, kind == "depthwise")
    if kind == "linear":
        err = mean @ (wq - w).T
    else:
        x = mean.view(1, 3, 1, 1).expand(1, 3, 5, 5)
        groups = 3 if kind == "depthwise" else 1
        err = (F.conv2d(x, wq, groups=groups) - F.conv2d(x, w, groups=groups))[0, :, 0, 0]
    torch.testing.assert_close(corr, err.flatten(), rtol=1e-4, atol=1e-5)
