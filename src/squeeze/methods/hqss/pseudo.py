"""Stage 2 inputs: the pseudo (or real) training pairs of each variant, and the batch sampler.

Every pair is ``(input (4, S, S) = RGB + mask, target (3, S, S))`` for the removal network:

* ``hqss``: for a training image I with shadow mask m and a fresh non-shadow mask M_ns, the frozen F, G
  make ``P_s = G(F(S), NS')`` (the image's own shadow feature paired with the non-shadow region
  identity NS' on M_ns dilated by ``dilate`` px); P_s is pasted into I with M_ns feathered by
  ``feather`` px; input = (that image, M_ns), target = I. I's real shadow stays in both (it is outside
  the given mask), so the network learns to remove the shadow where the mask says.
* ``darken``: the same, with ``P_s = I * (1 - d)``; ``d`` is one constant, the mean relative darkness
  of the training images' shadow regions against their lit regions (measured from images and masks).
* ``mask-shadowgan``: an unpaired shadow-free image B with a random training mask m_r (randomly
  turned), ``P = G_fs(B, dilate(m_r))`` pasted with m_r feathered; input = (that, m_r), target = B.
* ``paired``: the real simulated shadow images with their masks and shadow-free targets.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import nn

from squeeze.methods.hqss.config import HQSSConfig
from squeeze.methods.hqss.decouple import (composite, dihedral, dilate, feather, lab_denorm, lab_norm,
                                           pairing_candidates, pick_nonshadow_mask)
from squeeze.train.engine import derived_seed

Pool = tuple[torch.Tensor, torch.Tensor]  # inputs (P, 4, S, S), targets (P, 3, S, S)
CHUNK = 32  # images per generator pass when synthesising


def darkening_constant(images: torch.Tensor, masks: torch.Tensor) -> float:
    """``d`` = 1 - mean over images of (mean RGB inside the shadow / mean RGB outside it)."""
    ratios = []
    for img, m in zip(images, masks):
        inside, outside = img[:, m[0] > 0.5].mean(), img[:, m[0] <= 0.5].mean()
        ratios.append(float(inside / outside.clamp_min(1e-3)))
    return float(np.clip(1.0 - np.mean(ratios), 0.0, 0.95))


def _nonshadow_masks(cfg: HQSSConfig, masks: torch.Tensor, seed_part: int) -> torch.Tensor:
    """``variants_per_image`` M_ns per training image, (N * V, 1, S, S), image-major order."""
    cands = pairing_candidates(masks, cfg.min_ratio, cfg.max_ratio)
    gen = np.random.default_rng(derived_seed(cfg.seed, seed_part, 53))
    return torch.stack([pick_nonshadow_mask(i, masks, cands, gen) for i in range(len(masks))
                        for _ in range(cfg.variants_per_image)])


@torch.no_grad()
def hqss_pool(cfg: HQSSConfig, images: torch.Tensor, masks: torch.Tensor, encoder: nn.Module,
              generator: nn.Module) -> Pool:
    """HQSS pseudo pairs (see the module docstring)."""
    v = cfg.variants_per_image
    imgs, ms = images.repeat_interleave(v, 0), masks.repeat_interleave(v, 0)
    m_ns = _nonshadow_masks(cfg, masks, 1)
    encoder.eval(), generator.eval()
    shadows = []
    for s in range(0, len(imgs), CHUNK):
        img, m, mn = imgs[s:s + CHUNK], ms[s:s + CHUNK], dilate(m_ns[s:s + CHUNK], cfg.dilate)
        p = generator(encoder(lab_norm(img * m)), lab_norm(img * mn)).clamp(-1, 1)
        shadows.append(lab_denorm(p))
    x = composite(imgs, torch.cat(shadows), feather(m_ns, cfg.feather))
    return torch.cat([x, m_ns], 1), imgs


def darken_pool(cfg: HQSSConfig, images: torch.Tensor, masks: torch.Tensor) -> Pool:
    """Constant-darkening pseudo pairs (see the module docstring)."""
    v = cfg.variants_per_image
    imgs = images.repeat_interleave(v, 0)
    m_ns = _nonshadow_masks(cfg, masks, 1)
    d = darkening_constant(images, masks)
    x = composite(imgs, imgs * (1 - d), feather(m_ns, cfg.feather))
    return torch.cat([x, m_ns], 1), imgs


@torch.no_grad()
def mask_shadowgan_pool(cfg: HQSSConfig, clean: torch.Tensor, masks: torch.Tensor, g_fs: nn.Module) -> Pool:
    """Mask-ShadowGAN-style pseudo pairs on the unpaired shadow-free images (see the module docstring)."""
    v = cfg.variants_per_image
    frees = clean.repeat_interleave(v, 0)
    gen = np.random.default_rng(derived_seed(cfg.seed, 2, 53))
    m_r = torch.stack([dihedral(masks[int(gen.integers(len(masks)))], int(gen.integers(8))) for _ in frees])
    g_fs.eval()
    shadows = [g_fs(dilate(m_r[s:s + CHUNK], cfg.dilate), frees[s:s + CHUNK] * 2 - 1).clamp(-1, 1) * 0.5 + 0.5
               for s in range(0, len(frees), CHUNK)]
    x = composite(frees, torch.cat(shadows), feather(m_r, cfg.feather))
    return torch.cat([x, m_r], 1), frees


def paired_pool(images: torch.Tensor, masks: torch.Tensor, targets: torch.Tensor) -> Pool:
    """The real pairs: (shadow image + mask, shadow-free image)."""
    return torch.cat([images, masks], 1), targets


def batch_sampler(pool: Pool, batch: int, seed: int) -> Callable[[int], tuple[torch.Tensor, torch.Tensor]]:
    """``make_batch(step)``: ``batch`` pairs drawn from ``pool``, each under a random symmetry of the
    square (the same for input and target); a pure function of ``step``."""
    inputs, targets = pool

    def make_batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        gen = np.random.default_rng(derived_seed(seed, step, 71))
        idx = gen.integers(len(inputs), size=batch)
        ks = gen.integers(8, size=batch)
        xs = torch.stack([dihedral(inputs[int(i)], int(k)) for i, k in zip(idx, ks)])
        ys = torch.stack([dihedral(targets[int(i)], int(k)) for i, k in zip(idx, ks)])
        return xs.contiguous().clamp(0, 1), ys.contiguous().clamp(0, 1)

    return make_batch
