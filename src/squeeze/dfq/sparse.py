"""SMI's sparse inversion: stop inverting the patches the class token ignores.

Hu, Wei, Shen, Wang, Li, Yuan, Tao, "Sparse Model Inversion: Efficient Inversion of Vision
Transformers for Data-Free Applications" (ICML 2024). A plug-in to a dense inversion: at a few
points of the optimization, each image's least-attended patches (class-token attention of the last
block) are dropped; from then on no token attends to them and their pixels stop changing, so the
inversion spends itself on the foreground instead of on background and spurious detail.

Here a dropped patch keeps its token in the sequence but is masked out of every attention as a key
(its column of the probabilities zeroed, rows renormalized), which for the remaining tokens equals
removing it; the pixels are restored to their value at the drop after every step.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import torch
from torch import nn

from squeeze.dfq import losses


def prune_patches(scores: torch.Tensor, keep: torch.Tensor, ratio: float) -> torch.Tensor:
    """Drop ``floor(ratio * kept)`` of each row's kept patches, lowest ``scores`` first. (B, P) -> (B, P) bool."""
    n_drop = torch.floor(ratio * keep.sum(dim=1)).long()  # (B,)
    order = scores.masked_fill(~keep, float("inf")).argsort(dim=1)  # dropped patches sort last
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
    return keep & (rank >= n_drop.unsqueeze(1))


def mask_keys(probs: torch.Tensor, keep_tokens: torch.Tensor) -> torch.Tensor:
    """Attention ``probs`` (B, H, N, N) with the dropped keys removed: columns zeroed, rows renormalized.

    ``keep_tokens`` is (B, N) bool. Equal to a softmax whose dropped logits are -inf.
    """
    kept = probs * keep_tokens[:, None, None, :].to(probs.dtype)
    return kept / kept.sum(dim=-1, keepdim=True).clamp_min(1e-12)


def pixel_mask(keep: torch.Tensor, grid: tuple[int, int], image_hw: tuple[int, int]) -> torch.Tensor:
    """Kept patches (B, P) as a pixel mask (B, 1, H, W) bool; pixels beyond the grid count as kept."""
    b = keep.shape[0]
    ph, pw = image_hw[0] // grid[0], image_hw[1] // grid[1]
    mask = keep.view(b, 1, *grid).repeat_interleave(ph, dim=2).repeat_interleave(pw, dim=3)
    full = torch.ones(b, 1, *image_hw, dtype=torch.bool, device=keep.device)
    full[:, :, :mask.shape[2], :mask.shape[3]] = mask
    return full


@dataclass
class SparseInversion:
    """Which patches of one chunk are still inverted, and the frozen pixels of the dropped ones."""

    keep: torch.Tensor  # (B, P) bool
    prefix: int  # class / register tokens before the patches (never dropped)
    grid: tuple[int, int]
    frozen: torch.Tensor | None = None  # (B, C, H, W): pixels at the last drop
    view_tokens: torch.Tensor | None = field(default=None, repr=False)  # (B, N) bool, the current view's

    def set_view(self, shift: tuple[int, int], flip: bool, image_hw: tuple[int, int]) -> None:
        """Token mask of an augmented view (roll by ``shift`` pixels, rounded to patches, then flip)."""
        b = self.keep.shape[0]
        patch_shift = losses.patch_shift(shift, self.grid, image_hw)
        maps = losses.align_prior(self.keep.unsqueeze(1), self.grid, patch_shift, flip).squeeze(1)  # (B, P)
        prefix = torch.ones(b, self.prefix, dtype=torch.bool, device=self.keep.device)
        self.view_tokens = torch.cat([prefix, maps], dim=1)

    def drop(self, scores: torch.Tensor, ratio: float, x: torch.Tensor) -> None:
        """Drop the least-attended ``ratio`` of the kept patches (``scores`` (B, P)); freeze ``x``'s pixels."""
        self.keep = prune_patches(scores, self.keep, ratio)
        self.frozen = x.detach().clone()

    def restore(self, x: torch.Tensor) -> None:
        """Put the dropped patches' pixels back to their frozen values (in place, no gradient)."""
        if self.frozen is None:
            return
        mask = pixel_mask(self.keep, self.grid, (x.shape[-2], x.shape[-1]))
        with torch.no_grad():
            x.copy_(torch.where(mask, x, self.frozen))


@contextmanager
def masked_keys(blocks: list[tuple[str, nn.Module]], sparse: SparseInversion | None) -> Iterator[None]:
    """While active, every attention block's ``matmul2`` sees probabilities without the dropped keys."""
    if sparse is None:
        yield
        return

    def pre_hook(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...] | None:
        if sparse.view_tokens is None:
            return None
        return (mask_keys(args[0], sparse.view_tokens), *args[1:])
    handles = [mod.matmul2.register_forward_pre_hook(pre_hook) for _, mod in blocks]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
