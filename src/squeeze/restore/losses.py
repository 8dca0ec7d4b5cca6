"""Restoration losses: pixel L1 plus an L1 on edge maps, optionally at several scales.

MBCNN's training loss (used by UnDeM with MBCNN, Zheng et al. CVPR 2020) is, per output scale,
L1 plus 0.25 x L1 between Sobel edge maps that include the two diagonal directions. ESDNet adds a
VGG16 perceptual loss; squeeze downloads nothing, so the edge term stands in for it. Edge maps are
computed per colour channel with four 3x3 Sobel kernels (horizontal, vertical, both diagonals).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from squeeze.errors import SqueezeError


def sobel_kernels(dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> torch.Tensor:
    """The four 3x3 Sobel kernels (0 deg, 90 deg, 45 deg, 135 deg), shape (4, 1, 3, 3)."""
    gx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
    d1 = torch.tensor([[0.0, 1.0, 2.0], [-1.0, 0.0, 1.0], [-2.0, -1.0, 0.0]])
    k = torch.stack([gx, gx.t(), d1, d1.flip(1)])
    return k[:, None].to(dtype=dtype, device=device)


def edge_maps(img: torch.Tensor) -> torch.Tensor:
    """Sobel responses of every channel: (B, C, H, W) -> (B, 4C, H-2, W-2) (valid convolution)."""
    b, c, h, w = img.shape
    k = sobel_kernels(img.dtype, img.device)
    out = F.conv2d(img.reshape(b * c, 1, h, w), k)  # (B*C, 4, H-2, W-2)
    return out.reshape(b, c * 4, h - 2, w - 2)


def restoration_loss(pred: torch.Tensor, target: torch.Tensor, edge_weight: float = 0.1,
                     scales: int = 1) -> torch.Tensor:
    """``sum over scales of [L1(pred, target) + edge_weight * L1(edges(pred), edges(target))]``.

    ``pred``, ``target``: (B, 3, H, W). Scale s > 0 compares 2**s average-pooled versions (MBCNN's
    multi-scale supervision applied to a single output); scales too small for a 3x3 edge are skipped.
    """
    if pred.shape != target.shape or pred.ndim != 4:
        raise SqueezeError(f"restoration_loss: prediction {tuple(pred.shape)} and target {tuple(target.shape)} "
                           "must both be (B, C, H, W) of the same shape")
    if scales < 1 or edge_weight < 0:
        raise SqueezeError(f"restoration_loss: scales={scales} must be >= 1 and edge_weight={edge_weight} >= 0")
    total = pred.new_zeros(())
    p, t = pred, target
    for s in range(scales):
        if s:
            p, t = F.avg_pool2d(p, 2), F.avg_pool2d(t, 2)
        if min(p.shape[-2:]) < 3:
            break
        total = total + F.l1_loss(p, t)
        if edge_weight:
            total = total + edge_weight * F.l1_loss(edge_maps(p), edge_maps(t))
    return total
