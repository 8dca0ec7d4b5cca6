"""RestoreNet shapes and padding, the restoration loss against an independent edge filter, RGB PSNR/SSIM
against scikit-image, and tiled inference against a whole-image pass."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.ndimage import correlate

from squeeze.errors import SqueezeError
from squeeze.restore.evaluate import evaluate_pairs, psnr_rgb, run_tiled, ssim_rgb
from squeeze.restore.losses import edge_maps, restoration_loss
from squeeze.restore.nets import RestoreNet, count_parameters


def _randomized(net: RestoreNet) -> RestoreNet:
    torch.manual_seed(0)
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.1)
    return net.eval()


@pytest.mark.parametrize("size", [(16, 16), (13, 21), (5, 7)])
def test_any_size_in_and_out(size: tuple[int, int]) -> None:
    net = _randomized(RestoreNet(in_channels=4, width=8, levels=3, blocks=1))
    x = torch.rand(2, 4, *size)
    with torch.no_grad():
        y = net(x)
    assert y.shape == (2, 3, *size)
    assert torch.isfinite(y).all()


def test_starts_as_identity_and_is_small() -> None:
    net = RestoreNet(width=16, levels=3, blocks=2)
    x = torch.rand(1, 3, 24, 24)
    with torch.no_grad():
        assert torch.equal(net(x), x)  # zero-initialised tail: output = degraded input
    assert 30_000 < count_parameters(net) < 200_000


def test_bad_shapes_refused() -> None:
    with pytest.raises(SqueezeError, match="at least 3 input channels"):
        RestoreNet(in_channels=2)
    with pytest.raises(SqueezeError, match="expects"):
        RestoreNet(width=8)(torch.rand(1, 4, 8, 8))


def test_edge_maps_match_scipy_correlation() -> None:
    rng = np.random.default_rng(0)
    img = rng.random((1, 2, 9, 11))
    got = edge_maps(torch.from_numpy(img)).numpy()
    sobel_x = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], float)
    ref = correlate(img[0, 1], sobel_x, mode="constant")[1:-1, 1:-1]  # interior = valid correlation
    np.testing.assert_allclose(got[0, 4], ref, atol=1e-10)  # channel 1, kernel 0
    ref_t = correlate(img[0, 0], sobel_x.T, mode="constant")[1:-1, 1:-1]
    np.testing.assert_allclose(got[0, 1], ref_t, atol=1e-10)


def test_restoration_loss_values() -> None:
    t = torch.rand(2, 3, 16, 16)
    assert float(restoration_loss(t, t)) == 0.0
    shifted = t + 0.1  # a constant offset has no edges: loss is the L1 alone, at each of 2 scales
    assert math.isclose(float(restoration_loss(shifted, t, edge_weight=1.0)), 0.1, rel_tol=1e-5)
    assert math.isclose(float(restoration_loss(shifted, t, scales=2)), 0.2, rel_tol=1e-5)
    with pytest.raises(SqueezeError, match="same shape"):
        restoration_loss(t, t[:, :, :8])


def test_psnr_and_ssim_match_scikit_image() -> None:
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    rng = np.random.default_rng(1)
    ref = rng.integers(0, 256, (3, 32, 40)).astype(np.float64) / 255
    out = np.clip(ref + rng.normal(0, 0.05, ref.shape), 0, 1)
    a, b = torch.from_numpy(out), torch.from_numpy(ref)
    assert math.isclose(psnr_rgb(a, b), peak_signal_noise_ratio(ref, out, data_range=1.0), rel_tol=1e-9)
    sk = structural_similarity(ref, out, channel_axis=0, gaussian_weights=True, sigma=1.5,
                               use_sample_covariance=True, data_range=1.0)
    assert math.isclose(ssim_rgb(a, b), sk, abs_tol=1e-6)
    assert psnr_rgb(b, b) == math.inf


def test_tiled_equals_whole_pass_and_evaluate() -> None:
    net = _randomized(RestoreNet(width=8, levels=2, blocks=1))
    x = torch.rand(3, 37, 45)
    with torch.no_grad():
        whole = net(x[None])[0]
    tiled = run_tiled(net, x, tile=16, overlap=12)
    assert torch.allclose(tiled, whole, atol=1e-5)
    scores = evaluate_pairs(RestoreNet(width=8), [(x, x.clamp(0, 1).mul(255).round().div(255))])
    assert scores["psnr"] == math.inf and math.isclose(scores["ssim"], 1.0, abs_tol=1e-9)
