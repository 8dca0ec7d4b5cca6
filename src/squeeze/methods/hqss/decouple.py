"""HQSS data decoupling (arXiv 2212.04108, after G2R-ShadowNet, Liu et al. CVPR 2021).

From a shadow image and its shadow mask only, HQSS builds two *region identities*: the shadow region
``S = image * mask`` and a non-shadow region ``NS = image * M_ns``, where ``M_ns`` is the shape of
*another* training image's shadow mask placed where it does not overlap this image's shadow, with
``area(M_ns) / area(shadow)`` in [0.8, 1.2] (fallback: a random other mask whose part outside the
shadow is at least 5 % of the shadow area, cut to that part). The networks work in CIELab scaled to
[-1, 1] (``L / 50 - 1``, ``2 (ab + 128) / 255 - 1``); the blanked background is RGB black, i.e.
``L = -1`` and neutral a, b, as in the paper's code.

squeeze adds two things, both noted in docs/methods/hqss.md: each candidate mask may also be used
flipped or turned (the 8 symmetries of the square), which multiplies the candidates a small training
set offers, and :func:`soft_region` (a dilated region and a feathered compositing weight) so a pasted
pseudo shadow gets a penumbra.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from squeeze.errors import SqueezeError
from squeeze.metrics.shadow import lab_to_rgb, rgb_to_lab

MIN_MASK_PIXELS = 10  # the paper skips samples with fewer shadow pixels
FALLBACK_FRACTION = 0.05
FALLBACK_TRIES = 100


def lab_norm(rgb: torch.Tensor) -> torch.Tensor:
    """RGB in [0, 1] (..., 3, H, W) -> CIELab scaled to [-1, 1] (the paper's normalisation)."""
    lab = rgb_to_lab(rgb)
    return torch.cat([lab[..., :1, :, :] / 50 - 1, 2 * (lab[..., 1:, :, :] + 128) / 255 - 1], dim=-3)


def lab_denorm(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`lab_norm`: scaled Lab (..., 3, H, W) -> RGB in [0, 1]."""
    lab = torch.cat([(x[..., :1, :, :] + 1) * 50, (x[..., 1:, :, :] + 1) * 255 / 2 - 128], dim=-3)
    return lab_to_rgb(lab)


def check_shadow_pair(image: torch.Tensor, mask: torch.Tensor, where: str = "image") -> torch.Tensor:
    """Validate a (3, H, W) image and its (1, H, W) / (H, W) mask; returns the mask as (1, H, W) in {0, 1}.

    Refuses a mask of another size, an empty mask and an all-shadow mask with one line each.
    """
    if image.ndim != 3 or image.shape[0] != 3:
        raise SqueezeError(f"{where}: expected an RGB image (3, H, W), got {tuple(image.shape)}")
    m = mask if mask.ndim == 3 else mask[None]
    if m.ndim != 3 or m.shape[0] != 1 or m.shape[-2:] != image.shape[-2:]:
        raise SqueezeError(f"{where}: the shadow mask is {tuple(m.shape[-2:])} but the image is "
                           f"{tuple(image.shape[-2:])}; give each image its mask at the same size")
    m = (m > 0.5).float()
    count = int(m.sum())
    if count < MIN_MASK_PIXELS:
        raise SqueezeError(f"{where}: the shadow mask is empty ({count} shadow pixels); HQSS learns from the "
                           "shadow region, so drop this image or fix its mask")
    if count == m.numel():
        raise SqueezeError(f"{where}: the shadow mask covers the whole image; HQSS needs a non-shadow region too, "
                           "so drop this image or fix its mask")
    return m


def dihedral(mask: torch.Tensor, k: int) -> torch.Tensor:
    """Symmetry ``k`` (0..7) of the square applied to (..., H, W): ``k % 4`` quarter turns, flipped if ``k >= 4``."""
    out = torch.rot90(mask, k % 4, dims=(-2, -1))
    return out.flip(-1) if k >= 4 else out


def pairing_candidates(masks: torch.Tensor, min_ratio: float, max_ratio: float) -> list[torch.Tensor]:
    """For each mask i of ``masks`` (N, 1, S, S), the candidates ``(j, k)`` (rows of a (C, 2) tensor).

    Candidate = another image's mask j under symmetry k that does not overlap mask i and whose area is
    ``min_ratio``..``max_ratio`` times mask i's (the paper's precomputed pairing map).
    """
    n, _, h, w = masks.shape
    if h != w:
        raise SqueezeError(f"mask pairing needs square masks (they are resized to size x size), got {h}x{w}")
    flat = masks.reshape(n, -1).float()
    variants = torch.stack([dihedral(masks, k).reshape(n, -1).float() for k in range(8)])  # (8, N, HW)
    overlap = torch.einsum("kjp,ip->ikj", variants, flat)  # (N_i, 8, N_j) overlapping pixels
    area = flat.sum(1)
    ratio = area[None, None, :] / area[:, None, None]
    ok = (overlap == 0) & (ratio >= min_ratio) & (ratio <= max_ratio)
    ok[torch.arange(n), :, torch.arange(n)] = False  # never pair an image with its own mask
    return [torch.stack([ok[i].nonzero()[:, 1], ok[i].nonzero()[:, 0]], 1) for i in range(n)]


def pick_nonshadow_mask(i: int, masks: torch.Tensor, candidates: list[torch.Tensor],
                        gen: np.random.Generator) -> torch.Tensor:
    """``M_ns`` (1, S, S) for image i: a random candidate, else the paper's fallback (see module docstring)."""
    n = masks.shape[0]
    own = masks[i] > 0.5
    if len(candidates[i]):
        j, k = candidates[i][int(gen.integers(len(candidates[i])))].tolist()
        return dihedral(masks[j], k).float()
    need = FALLBACK_FRACTION * float(own.sum())
    for _ in range(FALLBACK_TRIES):
        j, k = int(gen.integers(n)), int(gen.integers(8))
        if j == i and n > 1:
            continue
        part = (dihedral(masks[j], k) > 0.5) & ~own
        if float(part.sum()) >= max(need, MIN_MASK_PIXELS):
            return part.float()
    free = (~own).float()  # last resort: the whole non-shadow area (a wider region identity)
    return free


def region_identities(image: torch.Tensor, mask: torch.Tensor,
                      mask_ns: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(S, NS)`` in scaled Lab (3, H, W): the shadow region and the non-shadow region on a black background."""
    return lab_norm(image * mask), lab_norm(image * mask_ns)


def dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Binary dilation of (..., 1, H, W) by a square of side ``2 radius + 1``."""
    if radius <= 0:
        return mask
    shape = mask.shape
    m = mask.reshape(-1, 1, *shape[-2:]).float()
    return F.max_pool2d(m, 2 * radius + 1, stride=1, padding=radius).reshape(shape)


def feather(mask: torch.Tensor, sigma: float) -> torch.Tensor:
    """A compositing weight (..., 1, H, W): the mask blurred by a Gaussian of ``sigma`` px (0 = the mask)."""
    if sigma <= 0:
        return mask.float()
    radius = max(1, math.ceil(3 * sigma))
    r = torch.arange(-radius, radius + 1, dtype=torch.float32)
    g = torch.exp(-r ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    shape = mask.shape
    m = F.pad(mask.reshape(-1, 1, *shape[-2:]).float(), (radius,) * 4, mode="replicate")
    m = F.conv2d(F.conv2d(m, g.view(1, 1, 1, -1)), g.view(1, 1, -1, 1))
    return m.reshape(shape)


def composite(image: torch.Tensor, shadowed: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Paste ``shadowed`` into ``image`` with the weight map: ``image (1 - w) + shadowed w`` (RGB)."""
    return image * (1 - weight) + shadowed.clamp(0, 1) * weight
