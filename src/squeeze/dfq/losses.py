"""Pure loss and prior functions of data-free quantization for ViTs.

* PSAQ-ViT (Li, Jiang, Han, Zhang, "Patch Similarity Aware Data-Free Quantization for Vision
  Transformers", ECCV 2022): patch-similarity entropy from a Gaussian kernel density estimate,
  total variation with a target value.
* SPDFQ / SARDFQ (Zhong et al., "Semantics Prompting Data-Free Quantization for Low-Bit Vision
  Transformers", arXiv 2412.16553): Gaussian-mixture attention priors (APA), soft targets (SL).
* PSAQ-ViT V2 (Li et al., TNNLS 2023): the teacher-student KL divergence; SMI (Hu et al., ICML
  2024): the patch-similarity entropy over the pairs of patches still inverted.

Everything here is a small function of tensors; nothing walks a model.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def gaussian_mixture_prior(grid: tuple[int, int], n_components: int, gen: torch.Generator) -> torch.Tensor:
    """One random 2-D Gaussian-mixture map over a ``grid = (gh, gw)`` patch grid (SPDFQ, APA).

    Means are uniform over the grid, standard deviations uniform in [0.1, 0.35] of the grid side
    per axis, mixture weights Dirichlet(1). Returns a (gh, gw) map that sums to 1, all entries > 0.
    """
    gh, gw = grid
    ys = torch.arange(gh, dtype=torch.float64).view(gh, 1)
    xs = torch.arange(gw, dtype=torch.float64).view(1, gw)
    weights = -torch.rand(n_components, generator=gen, dtype=torch.float64).clamp_min(1e-12).log()
    weights = weights / weights.sum()  # Dirichlet(1) via normalized exponentials
    density = torch.zeros(gh, gw, dtype=torch.float64)
    for k in range(n_components):
        my, mx = torch.rand(2, generator=gen, dtype=torch.float64) * torch.tensor([gh - 1, gw - 1])
        sy, sx = (0.1 + 0.25 * torch.rand(2, generator=gen, dtype=torch.float64)) * torch.tensor([gh, gw])
        bump = torch.exp(-0.5 * (((ys - my) / sy) ** 2 + ((xs - mx) / sx) ** 2)) / (2 * math.pi * sy * sx)
        density += weights[k] * bump
    density = density + 1e-12  # strictly positive, so a distribution even far from every mean
    return (density / density.sum()).float()


def attention_priors(n_images: int, n_heads: int, grid: tuple[int, int], max_components: int,
                     gen: torch.Generator) -> torch.Tensor:
    """Random prior maps, one per image and head: (n_images, n_heads, gh * gw), each row sums to 1.

    Each map draws its own number of components from 1..``max_components`` (SPDFQ: K_APA = 5).
    """
    maps = []
    for _ in range(n_images * n_heads):
        k = int(torch.randint(1, max_components + 1, (1,), generator=gen))
        maps.append(gaussian_mixture_prior(grid, k, gen).flatten())
    return torch.stack(maps).view(n_images, n_heads, grid[0] * grid[1])


def block_weights(n_blocks: int, deep_only: bool = True) -> dict[int, float]:
    """APA weight per block index (0-based): l / L for the 1-based depth l, deep half only by default."""
    first = n_blocks // 2 if deep_only else 0
    return {i: (i + 1) / n_blocks for i in range(first, n_blocks)}


def apa_loss(attn: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
    """MSE between attention rows ``attn`` and ``prior`` (both (B, H, P), rows summing to 1).

    Both maps are multiplied by P first (mean value 1), so the loss does not shrink with the
    number of patches; the paper's plain MSE equals this divided by P^2 (absorbed in alpha).
    """
    p = attn.shape[-1]
    return F.mse_loss(attn * p, prior * p)


def patch_shift(shift: tuple[int, int], grid: tuple[int, int], image_hw: tuple[int, int]) -> tuple[int, int]:
    """A roll of ``shift`` pixels as a roll of whole patches on a ``grid`` (rounded to the nearest patch)."""
    return round(shift[0] * grid[0] / image_hw[0]), round(shift[1] * grid[1] / image_hw[1])


def align_prior(prior: torch.Tensor, grid: tuple[int, int], shift: tuple[int, int], flip: bool) -> torch.Tensor:
    """Move maps (B, H, P) with the image augmentation: roll by ``shift`` patches, then flip (any dtype)."""
    b, h, _ = prior.shape
    maps = prior.view(b, h, *grid).roll(shifts=shift, dims=(2, 3))
    if flip:
        maps = maps.flip(3)
    return maps.reshape(b, h, -1)


def soft_targets(labels: torch.Tensor, n_classes: int, gen: torch.Generator, low: float = 5.0,
                 high: float = 10.0) -> torch.Tensor:
    """Soft targets softmax(z): z = 0 except the label's logit ~ U(low, high) (SPDFQ, SL). (B, C)."""
    z = torch.zeros(len(labels), n_classes)
    z[torch.arange(len(labels)), labels] = low + (high - low) * torch.rand(len(labels), generator=gen)
    return z.softmax(dim=-1)


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of -sum_c t_c log softmax(logits)_c; ``targets`` (B, C) rows sum to 1."""
    return -(targets * logits.log_softmax(dim=-1)).sum(dim=-1).mean()


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Sum of the L2 norms of horizontal, vertical and both diagonal pixel differences (PSAQ-ViT)."""
    diffs = (x[..., :, 1:] - x[..., :, :-1], x[..., 1:, :] - x[..., :-1, :],
             x[..., 1:, 1:] - x[..., :-1, :-1], x[..., 1:, :-1] - x[..., :-1, 1:])
    return sum(torch.linalg.vector_norm(d) for d in diffs)  # type: ignore[return-value]


def tv_target_scale(x: torch.Tensor) -> float:
    """Factor taking PSAQ-ViT's TV target (2500-3000 for 32 images of 3x224x224) to ``x``'s size.

    The norms grow with the square root of the number of pixel values.
    """
    return math.sqrt(x.numel() / (32 * 3 * 224 * 224))


def patch_cosine_similarity(features: torch.Tensor) -> torch.Tensor:
    """Pairwise cosine similarities of patch features (B, P, D) -> (B, P * (P - 1) / 2), i < j."""
    f = F.normalize(features, dim=-1)
    sim = f @ f.transpose(1, 2)
    i, j = torch.triu_indices(sim.shape[1], sim.shape[2], offset=1, device=sim.device)
    return sim[:, i, j]


def patch_pairs(keep: torch.Tensor) -> torch.Tensor:
    """For patches ``keep`` (B, P) bool, whether both patches of each pair i < j are kept: (B, P * (P - 1) / 2).

    Pairs are in :func:`patch_cosine_similarity`'s order.
    """
    i, j = torch.triu_indices(keep.shape[1], keep.shape[1], offset=1, device=keep.device)
    return keep[:, i] & keep[:, j]


def kde_entropy(samples: torch.Tensor, bandwidth: float = 0.01, n_points: int = 10,
                valid: torch.Tensor | None = None) -> torch.Tensor:
    """Differential entropy of a Gaussian kernel density estimate, per row (PSAQ-ViT). (B, M) -> (B,).

    The density is evaluated at ``n_points`` evenly spaced points between each row's min and max
    and the entropy -integral p log p is taken with the trapezoid rule. ``valid`` (B, M) bool keeps
    only some samples of each row (SMI: the pairs of patches still inverted); None keeps all.
    """
    if valid is None:
        valid = torch.ones_like(samples, dtype=torch.bool)
    lo = samples.masked_fill(~valid, float("inf")).min(dim=1, keepdim=True).values
    hi = samples.masked_fill(~valid, float("-inf")).max(dim=1, keepdim=True).values
    steps = torch.linspace(0, 1, n_points, device=samples.device, dtype=samples.dtype)
    points = lo + (hi - lo) * steps  # (B, n_points)
    z = (points.unsqueeze(-1) - samples.unsqueeze(1)) / bandwidth  # (B, n_points, M)
    weight = valid.unsqueeze(1).to(samples.dtype)
    kernel = torch.exp(-0.5 * z * z) * weight
    density = kernel.sum(dim=-1) / weight.sum(dim=-1).clamp_min(1) / (bandwidth * math.sqrt(2 * math.pi))
    integrand = -density * torch.log(density + 1e-10)
    return torch.trapezoid(integrand, points, dim=-1)


def lr_at(step: int, total: int, base: float, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to 0 (PSAQ-ViT's schedule)."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * base * (1 + math.cos(math.pi * progress))


def kl_divergence(teacher_logits: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of KL(softmax(teacher) || softmax(student)); both (B, C) (PSAQ-ViT V2)."""
    log_t = teacher_logits.log_softmax(dim=-1)
    return (log_t.exp() * (log_t - student_logits.log_softmax(dim=-1))).sum(dim=-1).mean()


def batchnorm_statistics_loss(x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """ZeroQ's distance of each image's per-channel statistics to a batch norm layer's running ones.

    ``x``: (N, C, H, W) input of the layer; ``mean`` / ``var``: (C,) running statistics. Every image's
    channel mean and std (over H x W) is compared with them: the squared L2 distance summed over images
    and channels, divided by N (Cai et al., CVPR 2020, eq. 2 as their released code computes it: per
    image, not over the batch as DeepInversion does).
    """
    flat = x.flatten(2)  # (N, C, H*W)
    img_mean = flat.mean(dim=2)
    img_std = (flat.var(dim=2) + 1e-6).sqrt()  # eps: the gradient of sqrt at 0
    return ((img_mean - mean).pow(2).sum() + (img_std - (var + 1e-6).sqrt()).pow(2).sum()) / x.shape[0]
