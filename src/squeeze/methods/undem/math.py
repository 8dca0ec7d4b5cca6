"""UnDeM's pure math: moire-complexity scores and grouping, the Laplacian-gap quality score of pseudo pairs,
adaptive per-group thresholds, tiling, and the naive sinusoidal-overlay baseline.

Paper: Zhang et al., "Learning Image Demoireing from Unpaired Real Data", AAAI 2024 (UnDeM).
Every function works on float tensors in [0, 1] shaped (B, 3, H, W) unless stated otherwise.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from squeeze.errors import SqueezeError

LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])
GRAY = (0.299, 0.587, 0.114)  # ITU-R BT.601 luma weights (what OpenCV's RGB->gray uses)


def gray(img: torch.Tensor) -> torch.Tensor:
    """BT.601 luma: (B, 3, H, W) -> (B, 1, H, W)."""
    w = torch.tensor(GRAY, dtype=img.dtype, device=img.device).view(1, 3, 1, 1)
    return (img * w).sum(1, keepdim=True)


def laplacian(img: torch.Tensor) -> torch.Tensor:
    """3x3 Laplacian of a (B, 1, H, W) image, valid region: (B, 1, H-2, W-2)."""
    return F.conv2d(img, LAPLACIAN.to(img).view(1, 1, 3, 3))


def colorfulness(img: torch.Tensor) -> torch.Tensor:
    """Hasler-Suesstrunk colourfulness per image on the 0..255 scale: (B,).

    ``rg = R - G``, ``yb = (R + G) / 2 - B``; ``C = sqrt(std_rg^2 + std_yb^2) + 0.3 sqrt(mean_rg^2 + mean_yb^2)``.
    """
    x = img * 255.0
    rg = x[:, 0] - x[:, 1]
    yb = 0.5 * (x[:, 0] + x[:, 1]) - x[:, 2]
    std = torch.sqrt(rg.flatten(1).var(1, unbiased=False) + yb.flatten(1).var(1, unbiased=False))
    mean = torch.sqrt(rg.flatten(1).mean(1) ** 2 + yb.flatten(1).mean(1) ** 2)
    return std + 0.3 * mean


def edge_strength(img: torch.Tensor) -> torch.Tensor:
    """Mean absolute 3x3 Laplacian of the gray image on the 0..255 scale: (B,)."""
    return laplacian(gray(img) * 255.0).abs().flatten(1).mean(1)


def complexity_groups(c: torch.Tensor, e: torch.Tensor, groups: int = 4) -> torch.Tensor:
    """UnDeM's moire-complexity classes (0-based) from colourfulness ``c`` and edge strength ``e`` (both (N,)).

    The lowest quarter by ``C * E`` is class 0 (weak moire); the rest, sorted by ``E / C`` ascending, is
    cut into ``groups - 1`` equal parts (classes 1..groups-1). ``groups = 1`` puts everything in class 0.
    """
    n = c.numel()
    if c.shape != e.shape or c.ndim != 1:
        raise SqueezeError("complexity_groups: colourfulness and edge strength must be (N,) tensors")
    if groups < 1 or n < groups:
        raise SqueezeError(f"complexity_groups: {n} patches cannot form {groups} groups; use more moire images")
    labels = torch.zeros(n, dtype=torch.long)
    if groups == 1:
        return labels
    order = torch.argsort(c * e, stable=True)
    low = n // 4
    rest = order[low:]
    ratio = e[rest] / c[rest].clamp_min(1e-6)
    rest = rest[torch.argsort(ratio, stable=True)]
    for k, part in enumerate(torch.tensor_split(rest, groups - 1)):
        labels[part] = k + 1
    return labels


def laplacian_gap(clean: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """UnDeM's pseudo-pair quality score: mean |Lap(gray(clean)) - Lap(gray(fake))| on 8-bit levels, (B,).

    A generator that broke the image content (not just added moire) gives a large gap.
    """
    if clean.shape != fake.shape:
        raise SqueezeError(f"laplacian_gap: clean {tuple(clean.shape)} and fake {tuple(fake.shape)} differ")
    q = [torch.round(gray(t.clamp(0, 1) * 255.0)) for t in (clean, fake)]  # uint8-like gray, as in the paper
    return (laplacian(q[0]) - laplacian(q[1])).abs().flatten(1).mean(1)


def keep_mask(scores: torch.Tensor, groups: torch.Tensor, keep: tuple[float, ...]) -> tuple[torch.Tensor, list[float]]:
    """Adaptive filtering: in each group keep the ``keep[g]`` fraction with the smallest scores.

    Returns the boolean keep mask (N,) and each group's threshold (the largest kept score; ``inf``
    for an empty group). Ties at the threshold are kept.
    """
    mask = torch.zeros_like(scores, dtype=torch.bool)
    thresholds = []
    for g, frac in enumerate(keep):
        idx = (groups == g).nonzero().flatten()
        if idx.numel() == 0:
            thresholds.append(math.inf)
            continue
        k = max(1, int(math.ceil(frac * idx.numel())))
        thr = float(torch.sort(scores[idx]).values[k - 1])
        thresholds.append(thr)
        mask[idx] = scores[idx] <= thr
    return mask, thresholds


def tile_image(img: np.ndarray, tile: int) -> list[np.ndarray]:
    """Non-overlapping ``tile`` x ``tile`` tiles of an (H, W, C) array (row-major; remainders dropped)."""
    h, w = img.shape[:2]
    return [img[y:y + tile, x:x + tile] for y in range(0, h - tile + 1, tile) for x in range(0, w - tile + 1, tile)]


def overlay_moire(clean: torch.Tensor, gen: torch.Generator, amp: tuple[float, float] = (0.1, 0.4),
                  freq: tuple[float, float] = (0.05, 0.35)) -> torch.Tensor:
    """The naive synthetic baseline: multiply each channel by ``1 + a cos(2 pi <f_c, x> + phi_c + warp(x))``.

    Channel-specific frequencies ``f_c`` (cycles per pixel, a shared random direction rotated a little
    per channel), phases and a smooth sinusoidal warp; amplitude ``a`` in ``amp``. (B, 3, H, W) -> same.
    """
    b, _, h, w = clean.shape
    yy, xx = torch.meshgrid(torch.arange(h, dtype=clean.dtype), torch.arange(w, dtype=clean.dtype), indexing="ij")
    out = torch.empty_like(clean)
    for i in range(b):
        r = torch.rand(8, generator=gen, dtype=torch.float64).tolist()
        a = amp[0] + (amp[1] - amp[0]) * r[0]
        base_f = freq[0] + (freq[1] - freq[0]) * r[1]
        theta = 2 * math.pi * r[2]
        warp = 6.0 * r[3] * torch.sin(2 * math.pi * (xx * math.cos(theta) - yy * math.sin(theta)) / max(h, w) * (1 + 2 * r[4]))
        for c in range(3):
            t = theta + 0.15 * (c - 1) * (1 + r[5])
            f = base_f * (1 + 0.1 * (c - 1) * r[6])
            phase = 2 * math.pi * (r[7] + c / 3)
            wave = torch.cos(2 * math.pi * f * (xx * math.cos(t) + yy * math.sin(t)) + phase + warp)
            out[i, c] = clean[i, c] * (1 + a * wave)
    return out.clamp(0, 1)
