"""Evaluation of restoration networks: RGB PSNR/SSIM on 8-bit outputs, and tiled inference for large images.

Restoration papers (UnDeM, HQSS and the demoireing/shadow-removal works they compare with) report
PSNR and SSIM on RGB 8-bit images, computed with scikit-image. Here:

* outputs are clamped to [0, 1] and rounded to 8-bit levels before measuring (as a saved PNG would be);
* PSNR = 10 log10(1 / MSE) over all pixels and channels (data range 1);
* SSIM (Wang et al., IEEE TIP 2004): 11x11 Gaussian window, sigma 1.5, K1 = 0.01, K2 = 0.03, sample
  covariances, valid windows only, computed per channel and averaged (what scikit-image's
  ``structural_similarity(channel_axis=0, gaussian_weights=True, sigma=1.5, use_sample_covariance=True,
  data_range=1)`` returns, up to its crop of the border).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from squeeze.errors import SqueezeError
from squeeze.metrics.sr import SSIM_K, SSIM_SIGMA, SSIM_WIN, quantize_8bit

_WIN_CACHE: dict[str, torch.Tensor] = {}


def _check_pair(out: torch.Tensor, ref: torch.Tensor) -> None:
    if out.shape != ref.shape or out.ndim != 3 or out.shape[0] != 3:
        raise SqueezeError(f"restored image {tuple(out.shape)} and reference {tuple(ref.shape)} must both be "
                           "(3, H, W) of the same shape")


def psnr_rgb(out: torch.Tensor, ref: torch.Tensor) -> float:
    """PSNR (dB, data range 1) between two (3, H, W) images in [0, 1]; identical images give ``inf``."""
    _check_pair(out, ref)
    mse = float((out.double() - ref.double()).pow(2).mean())
    return math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)


def _window() -> torch.Tensor:
    if "w" not in _WIN_CACHE:
        r = torch.arange(SSIM_WIN, dtype=torch.float64) - (SSIM_WIN - 1) / 2
        g = torch.exp(-(r ** 2) / (2 * SSIM_SIGMA ** 2))
        g = g / g.sum()
        _WIN_CACHE["w"] = (g[:, None] * g[None, :])[None, None]  # (1, 1, 11, 11)
    return _WIN_CACHE["w"]


def ssim_rgb(out: torch.Tensor, ref: torch.Tensor) -> float:
    """Mean SSIM over the three channels of two (3, H, W) images in [0, 1] (see the module docstring)."""
    _check_pair(out, ref)
    if min(out.shape[-2:]) < SSIM_WIN:
        raise SqueezeError(f"image {tuple(out.shape[-2:])} is smaller than the {SSIM_WIN}px SSIM window")
    x, y = out.double()[:, None], ref.double()[:, None]  # channels as a batch: (3, 1, H, W)
    win = _window()
    n = SSIM_WIN * SSIM_WIN
    cov = n / (n - 1)
    mx, my = F.conv2d(x, win), F.conv2d(y, win)
    vx = cov * (F.conv2d(x * x, win) - mx * mx)
    vy = cov * (F.conv2d(y * y, win) - my * my)
    vxy = cov * (F.conv2d(x * y, win) - mx * my)
    c1, c2 = SSIM_K[0] ** 2, SSIM_K[1] ** 2
    s = ((2 * mx * my + c1) * (2 * vxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(s.mean())


@torch.no_grad()
def run_tiled(model: nn.Module, x: torch.Tensor, tile: int = 256, overlap: int = 16,
              progress: bool = False) -> torch.Tensor:
    """Run an image-to-image ``model`` on a (C, H, W) image tile by tile; returns (3, H, W).

    Each ``tile`` x ``tile`` piece runs with ``overlap`` pixels of context on every side (clipped at
    the border) and only its centre is kept, so peak memory is one tile's whatever the image size.
    With ``overlap`` at least the network's receptive radius the result equals a whole-image pass.
    """
    if x.ndim != 3:
        raise SqueezeError(f"run_tiled expects one (C, H, W) image, got {tuple(x.shape)}")
    if tile < 8 or overlap < 0:
        raise SqueezeError(f"tile={tile} must be >= 8 and overlap={overlap} >= 0")
    device = next(model.parameters()).device
    h, w = x.shape[-2:]
    out = torch.empty(3, h, w)
    starts = [(y, xx) for y in range(0, h, tile) for xx in range(0, w, tile)]
    for y0, x0 in tqdm(starts, desc="restore", leave=False, disable=not progress):
        y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
        cy0, cx0, cy1, cx1 = max(0, y0 - overlap), max(0, x0 - overlap), min(h, y1 + overlap), min(w, x1 + overlap)
        piece = model(x[None, :, cy0:cy1, cx0:cx1].to(device))[0].float().cpu()
        out[:, y0:y1, x0:x1] = piece[:, y0 - cy0:y1 - cy0, x0 - cx0:x1 - cx0]
    return out


@torch.no_grad()
def evaluate_pairs(model: nn.Module, pairs: Sequence[tuple[torch.Tensor, torch.Tensor]],
                   tile: int = 256) -> dict[str, float]:
    """Mean RGB ``psnr`` and ``ssim`` of ``model`` over ``(degraded (C,H,W), clean (3,H,W))`` pairs.

    Outputs are clamped and rounded to 8-bit levels first; the model runs tiled (``tile`` px).
    """
    if not pairs:
        raise SqueezeError("evaluate_pairs: no evaluation pairs given")
    was_training = model.training
    model.eval()
    psnrs, ssims = [], []
    for degraded, clean in pairs:
        out = quantize_8bit(run_tiled(model, degraded, tile=tile))
        psnrs.append(psnr_rgb(out, clean))
        ssims.append(ssim_rgb(out, clean))
    model.train(was_training)
    return {"psnr": sum(psnrs) / len(psnrs), "ssim": sum(ssims) / len(ssims)}
