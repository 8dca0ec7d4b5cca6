"""Read attention probabilities and outputs of a ViT during synthesis (forward hooks, always removed).

The model is first prepared with :func:`squeeze.quant.prepare.prepare_model` (module swap only,
same function in float), so every recognised attention module -- timm ViT/DeiT/Swin, transformers
ViT/DeiT/Dinov2 -- has a ``matmul2`` child computing ``softmax_probs @ v``. A hook on ``matmul2``
sees the probabilities (B, H, N, N) as its first input and the per-head output (B, H, N, d).
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from squeeze.errors import SqueezeError
from squeeze.quant.prepare import attention_modules, prepare_model


def attention_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The attention modules of ``model`` in order, preparing it in place if needed."""
    if not attention_modules(model):
        prepare_model(model)
    return attention_modules(model)


def require_attention(model: nn.Module, what: str) -> list[tuple[str, nn.Module]]:
    """Attention modules of ``model``, or one clear error naming the component ``what`` that needs them."""
    blocks = attention_blocks(model)
    if not blocks:
        raise SqueezeError(f"{what} needs a vision transformer whose attention can be read (timm ViT/DeiT/Swin "
                           "or transformers ViT/DeiT/Dinov2); this model has none; switch it off "
                           "(e.g. --set apa=false) or use the noise generator")
    return blocks


def patch_grid(n_tokens: int) -> tuple[int, tuple[int, int]]:
    """``(n_prefix, (gh, gw))`` for a token sequence: a square patch grid after 1, 0 or more prefix tokens."""
    for prefix in (1, 0, *range(2, 9)):
        side = math.isqrt(max(n_tokens - prefix, 0))
        if side > 0 and side * side == n_tokens - prefix:
            return prefix, (side, side)
    raise SqueezeError(f"cannot lay {n_tokens} tokens on a square patch grid; attention priors need square inputs")


class AttentionRecorder:
    """Collects, per attention block, the probabilities and/or the output of ``matmul2``.

    ``probs[i]``: (B, H, N, N) of block ``i``; ``outputs[i]``: (B, H, N, d). Lists are cleared
    by :meth:`clear`; hooks live only inside :func:`record_attention`.
    """

    def __init__(self, n_blocks: int, keep_probs: bool, keep_outputs: bool) -> None:
        self.n_blocks = n_blocks
        self.keep_probs, self.keep_outputs = keep_probs, keep_outputs
        self.probs: dict[int, torch.Tensor] = {}
        self.outputs: dict[int, torch.Tensor] = {}

    def hook(self, index: int):
        def fn(_module: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
            if self.keep_probs:
                self.probs[index] = args[0]
            if self.keep_outputs:
                self.outputs[index] = out
        return fn

    def clear(self) -> None:
        self.probs.clear()
        self.outputs.clear()


@contextmanager
def record_attention(model: nn.Module, what: str, keep_probs: bool = True,
                     keep_outputs: bool = False) -> Iterator[AttentionRecorder]:
    """Hook every attention block's ``matmul2`` for the duration of the ``with`` block."""
    blocks = require_attention(model, what)
    rec = AttentionRecorder(len(blocks), keep_probs, keep_outputs)
    handles = [mod.matmul2.register_forward_hook(rec.hook(i)) for i, (_, mod) in enumerate(blocks)]
    try:
        yield rec
    finally:
        for h in handles:
            h.remove()


def cls_attention(probs: torch.Tensor) -> torch.Tensor:
    """Attention from the class token to the patches, (B, H, N, N) -> (B, H, P), rows renormalized.

    Without a class token the rows are averaged over all queries (SPDFQ's Swin variant).
    """
    prefix, _ = patch_grid(probs.shape[-1])
    rows = probs[:, :, 0, prefix:] if prefix else probs.mean(dim=2)
    return rows / rows.sum(dim=-1, keepdim=True).clamp_min(1e-12)
