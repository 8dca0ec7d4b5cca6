"""Losses of HQSS's generation stage (arXiv 2212.04108): focal frequency loss, LSGAN terms, chroma L1,
and a forward pass through a frozen copy of a network (the paper's per-step deep copy).

Focal frequency loss (Jiang et al., "Focal Frequency Loss for Image Reconstruction and Synthesis",
ICCV 2021): with orthonormal 2-D DFTs ``Fp``, ``Ft`` of prediction and target, the per-frequency
squared distance ``d = |Fp - Ft|^2`` is weighted by ``w = |Fp - Ft|^alpha`` normalised by its maximum
per image and channel (a constant: no gradient flows through it), and ``mean(w * d)`` is the loss; so
the frequencies a generator gets most wrong weigh most (alpha = 1, its default).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call


def focal_frequency_loss(pred: torch.Tensor, target: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """Focal frequency loss between (B, C, H, W) images (see the module docstring)."""
    fp = torch.fft.fft2(pred.float(), norm="ortho")
    ft = torch.fft.fft2(target.float(), norm="ortho")
    dist = (fp - ft).abs().pow(2)  # (B, C, H, W) squared distance per frequency
    with torch.no_grad():
        w = dist.sqrt().pow(alpha)
        w = w / w.amax(dim=(-2, -1), keepdim=True).clamp_min(1e-12)
        w = torch.nan_to_num(w, nan=0.0).clamp(0, 1)
    return (w * dist).mean()


def lsgan_loss(scores: torch.Tensor, real: bool) -> torch.Tensor:
    """Least-squares GAN loss (Mao et al. 2017): mean (D(x) - 1)^2 for real, mean D(x)^2 for fake."""
    return F.mse_loss(scores, torch.full_like(scores, 1.0 if real else 0.0))


def chroma_l1(pred: torch.Tensor, target: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """L1 between the a, b channels (1:3 of scaled Lab) of ``pred`` and ``target`` inside ``region`` (B,1,H,W)."""
    return F.l1_loss(pred[:, 1:] * region, target[:, 1:] * region)


def frozen(module: nn.Module, *args: torch.Tensor) -> torch.Tensor:
    """``module(*args)`` with its current parameters detached: gradients reach the inputs only.

    Equivalent to the paper's per-step deep copy of G and F for the cycle terms, without copying.
    """
    params = {k: v.detach() for k, v in module.named_parameters()}
    return functional_call(module, params, args)
