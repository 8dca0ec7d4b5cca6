"""PSAQ-ViT V2's student: the float model quantized with min-max round-to-nearest, learning by distillation.

Li, Chen, Xiao, Gu, "PSAQ-ViT V2: Toward Accurate and General Data-Free Quantization for Vision
Transformers" (TNNLS 2023): the synthetic images and the quantized student evolve in turn under the
float teacher. The images move to where the student disagrees with the teacher; the student learns
to agree on them. Only the images are kept: the bench calibrates its own PTQ backend on them.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class Student:
    """A fake-quantized copy of the teacher whose float weights learn (straight-through rounding)."""

    net: nn.Module
    lr: float
    params: list[nn.Parameter] = field(init=False)
    opt: torch.optim.Optimizer = field(init=False)
    _grads: list[torch.Tensor] | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.params = [p.requires_grad_(True) for p in self.net.parameters()]
        self.opt = torch.optim.Adam(self.params, lr=self.lr)

    def accumulate(self, loss: torch.Tensor) -> None:
        """Gradient of the distillation ``loss`` for the student's weights, applied by :meth:`step`.

        The graph is kept: the same forward also carries the images' gradient, which must be taken
        before the weights change in place.
        """
        grads = torch.autograd.grad(loss, self.params, retain_graph=True, allow_unused=True)
        self._grads = [torch.zeros_like(p) if g is None else g for p, g in zip(self.params, grads)]

    def step(self) -> None:
        """One Adam step with the accumulated gradient (none pending: nothing happens)."""
        if self._grads is None:
            return
        for p, g in zip(self.params, self._grads):
            p.grad = g
        self.opt.step()
        self._grads = None


def minmax_student(model: nn.Module, images: torch.Tensor, wbits: int, abits: int, lr: float) -> Student:
    """The student: ``model`` quantized by min-max RTN (PSAQ-ViT's naive quantizer) on ``images``.

    Per-channel weight and per-tensor activation ranges are calibrated once, on the chunk's starting
    noise, and stay fixed; the weights then learn. ``model`` itself is untouched (a copy is quantized).
    """
    from squeeze.api import quantize  # noqa: PLC0415 (the registry sits above the dfq package)
    from squeeze.config import make_config  # noqa: PLC0415

    config = make_config("rtn", wbits=wbits, abits=abits, calib=len(images), batch_size=len(images))
    return Student(quantize(model, config, images).eval(), lr)
