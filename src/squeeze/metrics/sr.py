"""PSNR and SSIM on the luma (Y) channel with a border shave, as super-resolution papers report them.

Conventions follow the EDSR / DFSQ evaluation (and MATLAB's ``rgb2ycbcr``): RGB in [0, 1] is turned
into ITU-R BT.601 "studio swing" luma ``Y = 16 + 65.481 R + 128.553 G + 24.966 B`` (range 16..235
on a 0..255 scale), a border of ``shave`` pixels (= the scale factor) is removed on every side,
and the metrics are computed with a data range of 255:

* PSNR = 10 log10(255^2 / MSE).
* SSIM (Wang et al., "Image quality assessment: from error visibility to structural similarity",
  IEEE TIP 2004) with an 11x11 Gaussian window of sigma 1.5, K1 = 0.01, K2 = 0.03, sample
  covariances (N - 1 normalisation) and only the windows that fit inside the image ("valid"),
  which is what scikit-image's ``structural_similarity(gaussian_weights=True, sigma=1.5,
  use_sample_covariance=True, data_range=255)`` computes over its cropped interior.

Inputs are float tensors shaped (3, H, W) or (N, 3, H, W); they are rounded to 8-bit levels first
(``quantize_8bit``) when the caller asks, as SR test scripts save PNGs before measuring.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from squeeze.errors import SqueezeError

BT601 = (65.481, 128.553, 24.966)  # RGB in [0, 1] -> Y in [16, 235]
SSIM_SIGMA = 1.5
SSIM_WIN = 11
SSIM_K = (0.01, 0.03)


def rgb_to_y(img: torch.Tensor) -> torch.Tensor:
    """BT.601 luma of an RGB image in [0, 1], on the 0..255 scale: (..., 3, H, W) -> (..., H, W)."""
    if img.ndim < 3 or img.shape[-3] != 3:
        raise SqueezeError(f"expected RGB images shaped (..., 3, H, W), got {tuple(img.shape)}")
    w = torch.tensor(BT601, dtype=torch.float64, device=img.device).view(3, 1, 1)
    return 16.0 + (img.double() * w).sum(-3)


def quantize_8bit(img: torch.Tensor) -> torch.Tensor:
    """Clamp to [0, 1] and round to the 256 levels of an 8-bit image (still float in [0, 1])."""
    return img.clamp(0, 1).mul(255).round().div(255)


def _shaved_y(sr: torch.Tensor, hr: torch.Tensor, shave: int) -> tuple[torch.Tensor, torch.Tensor]:
    if sr.shape != hr.shape:
        raise SqueezeError(f"SR output {tuple(sr.shape)} and reference {tuple(hr.shape)} differ in shape")
    ys, yh = rgb_to_y(sr), rgb_to_y(hr)
    if shave > 0:
        ys, yh = ys[..., shave:-shave, shave:-shave], yh[..., shave:-shave, shave:-shave]
    if ys.shape[-1] < 1 or ys.shape[-2] < 1:
        raise SqueezeError(f"image {tuple(sr.shape[-2:])} is too small for a border shave of {shave}")
    return ys, yh


def psnr_y(sr: torch.Tensor, hr: torch.Tensor, shave: int) -> float:
    """PSNR (dB) on the Y channel after removing ``shave`` border pixels; (3, H, W) images in [0, 1].

    Identical images give ``inf``.
    """
    ys, yh = _shaved_y(sr, hr, shave)
    mse = float((ys - yh).pow(2).mean())
    return math.inf if mse == 0 else 10.0 * math.log10(255.0 ** 2 / mse)


def _gaussian_window(size: int, sigma: float) -> torch.Tensor:
    """Normalised 2-D Gaussian window (size, size), float64."""
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(r ** 2) / (2 * sigma ** 2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim_y(sr: torch.Tensor, hr: torch.Tensor, shave: int) -> float:
    """Mean SSIM on the Y channel (0..255 scale) after the border shave; (3, H, W) images in [0, 1].

    Gaussian-weighted statistics over valid 11x11 windows (Wang et al. 2004; see module docstring).
    """
    ys, yh = _shaved_y(sr, hr, shave)
    if min(ys.shape[-2:]) < SSIM_WIN:
        raise SqueezeError(f"image {tuple(ys.shape[-2:])} after the shave is smaller than the {SSIM_WIN}px "
                           "SSIM window; use larger images")
    x, y = ys.reshape(1, 1, *ys.shape[-2:]), yh.reshape(1, 1, *yh.shape[-2:])
    win = _gaussian_window(SSIM_WIN, SSIM_SIGMA)[None, None]
    n = SSIM_WIN * SSIM_WIN
    cov_norm = n / (n - 1)  # sample covariance, as in the reference implementation

    def filt(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, win)

    mx, my = filt(x), filt(y)
    vx = cov_norm * (filt(x * x) - mx * mx)
    vy = cov_norm * (filt(y * y) - my * my)
    vxy = cov_norm * (filt(x * y) - mx * my)
    c1, c2 = (SSIM_K[0] * 255) ** 2, (SSIM_K[1] * 255) ** 2
    s = ((2 * mx * my + c1) * (2 * vxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(s.mean())
