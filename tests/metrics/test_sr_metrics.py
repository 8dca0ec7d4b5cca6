"""PSNR-Y / SSIM-Y against scikit-image's implementations with matching settings."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from squeeze.errors import SqueezeError
from squeeze.metrics.sr import psnr_y, quantize_8bit, rgb_to_y, ssim_y

skm = pytest.importorskip("skimage.metrics")
skc = pytest.importorskip("skimage.color")


def _pair(seed: int = 0, size: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    hr = torch.rand(3, size, size + 6, generator=gen)
    sr = (hr + 0.05 * torch.randn(hr.shape, generator=gen)).clamp(0, 1)
    return quantize_8bit(sr), quantize_8bit(hr)


def _sk_y(img: torch.Tensor) -> np.ndarray:
    # scikit-image's rgb2ycbcr is the same BT.601 studio-swing transform (Y in 16..235)
    return skc.rgb2ycbcr(img.permute(1, 2, 0).double().numpy())[..., 0]


def test_luma_matches_scikit_image_rgb2ycbcr() -> None:
    sr, _ = _pair()
    assert np.allclose(rgb_to_y(sr).numpy(), _sk_y(sr), atol=1e-9)


@pytest.mark.parametrize("shave", [2, 4])
def test_psnr_matches_scikit_image(shave: int) -> None:
    sr, hr = _pair(1)
    ref = skm.peak_signal_noise_ratio(_sk_y(hr)[shave:-shave, shave:-shave], _sk_y(sr)[shave:-shave, shave:-shave],
                                      data_range=255)
    assert psnr_y(sr, hr, shave) == pytest.approx(ref, abs=1e-6)


def test_ssim_matches_scikit_image() -> None:
    sr, hr = _pair(2)
    s = 2
    a, b = _sk_y(sr)[s:-s, s:-s], _sk_y(hr)[s:-s, s:-s]
    ref = skm.structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=True,
                                    data_range=255)
    assert ssim_y(sr, hr, s) == pytest.approx(ref, abs=1e-6)
    assert ssim_y(hr, hr, s) == pytest.approx(1.0)


def test_identical_images_and_bad_input() -> None:
    _, hr = _pair(3)
    assert math.isinf(psnr_y(hr, hr, 2))
    with pytest.raises(SqueezeError, match="differ in shape"):
        psnr_y(hr[:, :-1], hr, 2)
    with pytest.raises(SqueezeError, match="too small"):
        psnr_y(hr[:, :4, :4], hr[:, :4, :4], 2)
    with pytest.raises(SqueezeError, match="RGB"):
        rgb_to_y(hr[:1])
