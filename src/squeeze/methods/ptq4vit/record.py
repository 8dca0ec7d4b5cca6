"""Float targets and squared output gradients for PTQ4ViT's Hessian-guided search.

PTQ4ViT weighs each layer's output error by the squared gradient of the task loss with respect to
that output (diagonal Fisher approximation of the output Hessian). Without labels the loss is the
cross-entropy between the float model's logits and its own arg-max prediction (a pseudo-label):
the KL between the float prediction and itself has zero gradient at the float model, so a
pseudo-label (or a quantized prediction, as in the authors' sequential code) is needed.

Cost control, so that the 12-block ``dinov2-s14`` stays cheap on a CPU:

* one float forward/backward pass over the calibration set (in micro-batches) stores, per block,
  its float input and the gradient at its output; a block's inner layers then get their outputs
  and gradients from a *local* forward/backward of that block alone, when the walk reaches it;
* only a fixed random subset of rows (token positions) -- or of (sample, head) slices for the
  attention matmuls -- is kept per layer (:class:`RowPicker`), identical in every pass.

All hooks are removed in ``finally``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from squeeze.quant.modules import QuantConv2d, QuantMatMul

Batch = tuple[int, int, int, int]  # (calibration batch j, first sample, samples here, samples in batch j)


@dataclass
class RowPicker:
    """Chooses which rows/slices of a layer's tensors the search uses, identically in every pass.

    A tensor of calibration batch ``j`` is cut into *units* along its flattened leading dims: rows
    ``(sample, token)`` for Linear layers, slices ``(sample, head)`` for matmul operands and outputs;
    the units of one sample are contiguous, so a micro-batch holds a contiguous range of them.
    ``rows`` / ``slices`` are the budgets over the whole calibration set (split over batches).
    """

    rows: int
    slices: int
    n_samples: int  # calibration samples
    seed: int = 0
    _cache: dict[tuple[int, int, int], torch.Tensor] = field(default_factory=dict, repr=False)

    def indices(self, j: int, units_total: int, budget: int, samples: int) -> torch.Tensor:
        """Sorted unit indices kept for calibration batch ``j`` (the same for every tensor of that shape)."""
        k = min(units_total, max(1, math.ceil(budget * samples / self.n_samples)))
        key = (j, units_total, k)
        if key not in self._cache:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + j * 7_919 + units_total)
            self._cache[key] = torch.randperm(units_total, generator=gen)[:k].sort().values
        return self._cache[key]

    def take(self, t: torch.Tensor, batch: Batch, matmul: bool) -> torch.Tensor:
        """The kept units of ``t`` (batch first), from the sub-range of samples ``t`` covers."""
        j, first, samples, batch_samples = batch
        if matmul:  # (b, H, N, K) -> slices (b*H, N, K)
            units, budget = t.reshape(-1, *t.shape[-2:]), self.slices
        else:  # (b, ..., d) -> rows (b*..., d)
            units, budget = t.reshape(-1, t.shape[-1]), self.rows
        per_sample = units.shape[0] // samples
        idx = self.indices(j, per_sample * batch_samples, budget, batch_samples).to(t.device)
        lo, hi = first * per_sample, (first + samples) * per_sample
        local = idx[(idx >= lo) & (idx < hi)] - lo
        return units[local]


def select(picker: RowPicker, module: nn.Module, t: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Rows/slices of a module's tensor kept for the search (convolutions keep everything)."""
    if isinstance(module, QuantConv2d):
        return t
    return picker.take(t, batch, isinstance(module, QuantMatMul))


@dataclass
class LayerRecord:
    """Float outputs and squared output gradients of one layer, one tensor per calibration batch."""

    out: dict[int, list[torch.Tensor]] = field(default_factory=dict)
    g2: dict[int, list[torch.Tensor]] = field(default_factory=dict)

    def cat(self, j: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Output and squared gradient (``None`` without gradients) of calibration batch ``j``."""
        g2 = torch.cat(self.g2[j], 0) if self.g2.get(j) else None
        return torch.cat(self.out[j], 0), g2


def _first_tensor(out: Any) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if hasattr(out, "logits"):
        return out.logits
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise TypeError(f"cannot find the output tensor in {type(out).__name__}")


def pseudo_label_loss(logits: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy of ``logits`` against their own arg-max (per-sample gradients, no mean)."""
    flat = logits.reshape(-1, logits.shape[-1])
    return F.cross_entropy(flat, flat.detach().argmax(-1), reduction="sum")


def _layer_hooks(named: dict[str, nn.Module], records: dict[str, LayerRecord], picker: RowPicker,
                 batch_ref: list[Batch], order: list[str]) -> list[Any]:
    """Forward hooks storing each layer's (kept) output and, via a tensor hook, its squared gradient."""
    def make(name: str, module: nn.Module) -> Callable[..., None]:
        def hook(_m: nn.Module, _args: tuple, out: torch.Tensor) -> None:
            batch = batch_ref[0]
            rec = records.setdefault(name, LayerRecord())
            if name not in order:
                order.append(name)
            rec.out.setdefault(batch[0], []).append(select(picker, module, out.detach(), batch))
            if out.requires_grad:
                out.register_hook(lambda g: rec.g2.setdefault(batch[0], []).append(
                    select(picker, module, g.detach().pow(2), batch)))
        return hook
    return [m.register_forward_hook(make(n, m)) for n, m in named.items()]


@dataclass
class BlockCache:
    """Per block: float inputs ``(args, kwargs)`` and output gradients, one entry per micro-batch."""

    inputs: list[list[tuple[Batch, tuple, dict]]]
    grads: list[list[torch.Tensor]]


def global_pass(fp_model: nn.Module, blocks: list[nn.Module], outside: dict[str, nn.Module],
                batches: list[torch.Tensor], picker: RowPicker, micro: int,
                hessian: bool) -> tuple[BlockCache, dict[str, LayerRecord], list[str]]:
    """One float forward/backward: block inputs and output gradients, plus records of ``outside`` layers.

    Gradients are of :func:`pseudo_label_loss`; with ``hessian=False`` none are taken (weights 1).
    """
    cache = BlockCache([[] for _ in blocks], [[] for _ in blocks])
    records: dict[str, LayerRecord] = {}
    order: list[str] = []
    batch_ref: list[Batch] = [(0, 0, 0, 0)]

    def pre(i: int) -> Callable[..., None]:
        def hook(_m: nn.Module, args: tuple, kwargs: dict) -> None:
            det = tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in args)
            cache.inputs[i].append((batch_ref[0], det, dict(kwargs)))
        return hook

    def post(i: int) -> Callable[..., None]:
        def hook(_m: nn.Module, _a: tuple, out: Any) -> None:
            hidden = _first_tensor(out)
            if hidden.requires_grad:
                hidden.register_hook(lambda g: cache.grads[i].append(g.detach()))
        return hook

    handles = _layer_hooks(outside, records, picker, batch_ref, order)
    for i, block in enumerate(blocks):
        handles.append(block.register_forward_pre_hook(pre(i), with_kwargs=True))
        handles.append(block.register_forward_hook(post(i)))
    try:
        with torch.set_grad_enabled(hessian):
            for j, data in enumerate(batches):
                for first in range(0, len(data), micro):
                    x = data[first:first + micro]
                    batch_ref[0] = (j, first, len(x), len(data))
                    if hessian and x.is_floating_point():
                        x = x.clone().requires_grad_(True)
                    out = _first_tensor(fp_model(x))
                    if hessian:
                        pseudo_label_loss(out).backward()
    finally:
        for h in handles:
            h.remove()
    return cache, records, order


def block_pass(block: nn.Module, prefix: str, cache: BlockCache, i: int, picker: RowPicker,
               hessian: bool) -> tuple[dict[str, LayerRecord], list[str]]:
    """Records of the quantizable layers inside float block ``i`` from a local forward/backward.

    Returns the records keyed by qualified name (``prefix.sub.name``) and the execution order.
    """
    named = {f"{prefix}.{n}": m for n, m in block.named_modules()
             if isinstance(m, (nn.Linear, nn.Conv2d, QuantMatMul))}
    records: dict[str, LayerRecord] = {}
    order: list[str] = []
    batch_ref: list[Batch] = [(0, 0, 0, 0)]
    handles = _layer_hooks(named, records, picker, batch_ref, order)
    try:
        with torch.set_grad_enabled(hessian):
            for k, (batch, args, kwargs) in enumerate(cache.inputs[i]):
                batch_ref[0] = batch
                if hessian:
                    args = (args[0].clone().requires_grad_(True), *args[1:])
                out = _first_tensor(block(*args, **kwargs))
                if hessian:
                    out.backward(cache.grads[i][k])
    finally:
        for h in handles:
            h.remove()
    return records, order
