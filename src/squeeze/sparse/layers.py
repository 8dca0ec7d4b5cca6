"""N:M sparse-training layers and the module swap that installs them.

* SR-STE (Zhou et al., "Learning N:M Fine-grained Structured Sparse Neural Networks From Scratch",
  ICLR 2021): forward with W*M (M recomputed from |W| every step), backward passes the dense gradient
  plus ``lambda * (1 - M) * W`` (:class:`SRSTEWeight`).
* Bi-Mask (Zhang et al., ICML 2023): forward W*Mf; input gradient with W*Mb (Mb N:M along outputs);
  weight gradient dense + SR-STE decay (:class:`BiMaskOp`).
* Transposable masks (Hubara et al., NeurIPS 2021): mask N:M in both directions, refreshed every
  ``refresh`` steps, plain straight-through gradient.
* magnitude (one-shot from the float weights, frozen, ASP-style) and unstructured (layer-wise
  magnitude at density N/M, recomputed each step, SR-STE gradient).
"""
from __future__ import annotations

import fnmatch
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from squeeze.errors import SqueezeError
from squeeze.sparse import masks as K
from squeeze.sparse.config import NMConfig
from squeeze.train.engine import derived_seed

DYNAMIC = ("sr-ste", "bimask", "bimask-no-perm", "unstructured")  # masks recomputed every forward


class SRSTEWeight(torch.autograd.Function):
    """``w * mask`` forward; backward ``grad + decay * (~mask) * w`` (SR-STE's sparse-refined STE)."""

    @staticmethod
    def forward(ctx: Any, w: torch.Tensor, mask: torch.Tensor, decay: float) -> torch.Tensor:
        ctx.save_for_backward(w, mask)
        ctx.decay = decay
        return w * mask

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        w, mask = ctx.saved_tensors
        return grad + ctx.decay * (~mask) * w, None, None


class BiMaskOp(torch.autograd.Function):
    """Linear/conv with separate masks: ``y = op(x, w * fmask)``; ``dx`` uses ``w * bmask``;
    ``dw`` is the dense weight gradient plus the SR-STE decay on weights outside ``fmask``.

    ``conv`` is ``None`` for a linear layer, else ``(stride, padding, dilation)`` (groups = 1).
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None, fmask: torch.Tensor,
                bmask: torch.Tensor, decay: float, conv: tuple | None) -> torch.Tensor:
        ctx.save_for_backward(x, w, fmask, bmask)
        ctx.decay, ctx.conv, ctx.has_bias = decay, conv, bias is not None
        if conv is None:
            return F.linear(x, w * fmask, bias)
        return F.conv2d(x, w * fmask, bias, *conv)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple:
        x, w, fmask, bmask = ctx.saved_tensors
        if ctx.conv is None:
            g2, x2 = g.reshape(-1, g.shape[-1]), x.reshape(-1, x.shape[-1])  # (B*, O), (B*, I)
            gx = g @ (w * bmask)
            gw = g2.t() @ x2
            gb = g2.sum(0) if ctx.has_bias else None
        else:
            stride, padding, dilation = ctx.conv
            # one fused aten call: the input gradient uses w*bmask; the weight gradient never reads w
            gx, gw, gb = torch.ops.aten.convolution_backward(
                g, x, w * bmask, [w.shape[0]] if ctx.has_bias else None, list(stride), list(padding),
                list(dilation), False, [0, 0], 1, [True, True, ctx.has_bias])
        return gx, gw + ctx.decay * (~fmask) * w, gb, None, None, None, None


class _NMState:
    """Shared mask bookkeeping of :class:`NMConv2d` and :class:`NMLinear`."""

    nm_layer = True  # also set by SpRe's layer: statistics walk every module carrying it

    weight: nn.Parameter
    mask: torch.Tensor
    bmask: torch.Tensor
    perm: torch.Tensor
    steps: torch.Tensor

    def _setup(self, cfg: NMConfig, index: int) -> None:
        self.method, self.n, self.m, self.index = cfg.method, cfg.n, cfg.m, index
        self.decay = cfg.decay if cfg.method in (*DYNAMIC, "spre") else 0.0
        self.refresh, self.solver, self.seed = cfg.refresh, cfg.transposable_solver, cfg.seed
        self.permute = bool(getattr(cfg, "permute", False))
        self.perm_every = int(getattr(cfg, "perm_every", 100))
        self.perm_candidates = int(getattr(cfg, "perm_candidates", 10))
        out = self.weight.shape[0]
        self.register_buffer("mask", self._fresh_mask())  # type: ignore[attr-defined]
        self.register_buffer("perm", torch.arange(out))  # type: ignore[attr-defined]
        self.register_buffer("bmask", self.mask.clone())  # type: ignore[attr-defined]
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))  # type: ignore[attr-defined]

    def _fresh_mask(self) -> torch.Tensor:
        w = self.weight.detach()
        if self.method == "transposable":
            return K.transposable_mask(w, self.n, self.m, self.solver)
        if self.method == "unstructured":
            return K.unstructured_mask(w, self.n / self.m)
        return K.nm_mask(w, self.n, self.m)

    @torch.no_grad()
    def update_masks(self, training: bool) -> None:
        """Recompute masks as the method prescribes; count a training step."""
        step = int(self.steps)
        if self.method in DYNAMIC or (self.method == "transposable" and training and step % self.refresh == 0):
            self.mask.copy_(self._fresh_mask())
        if self.method.startswith("bimask") and training:
            if self.permute and step % self.perm_every == 0:
                gen = torch.Generator().manual_seed(derived_seed(self.seed, step, self.index, 17))
                best, _ = K.search_permutation(self.mask, self.perm, self.n, self.m, self.perm_candidates, gen)
                self.perm.copy_(best)
            self.bmask.copy_(K.backward_mask(self.weight, self.mask, self.perm, self.n, self.m))
        if training:
            self.steps += 1

    def sparse_weight(self) -> torch.Tensor:
        """The forward weight with the right gradient rule (SR-STE, STE, or frozen mask)."""
        if self.method == "magnitude":
            return self.weight * self.mask  # one-shot mask: pruned weights get no gradient (ASP)
        return SRSTEWeight.apply(self.weight, self.mask, self.decay)

    def backward_weight(self) -> torch.Tensor:
        """The weight the input gradient is computed with (for statistics)."""
        w = self.weight.detach()
        return w * (self.bmask if self.method.startswith("bimask") else self.mask)


class NMConv2d(_NMState, nn.Conv2d):
    """``nn.Conv2d`` whose weight is N:M-masked along input channels at each kernel position."""

    def __init__(self, conv: nn.Conv2d, cfg: NMConfig, index: int) -> None:
        nn.Conv2d.__init__(self, conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                           conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode)
        self.load_state_dict(conv.state_dict())
        self._setup(cfg, index)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.update_masks(self.training)
        if self.method.startswith("bimask"):
            return BiMaskOp.apply(x, self.weight, self.bias, self.mask, self.bmask, self.decay,
                                  (self.stride, self.padding, self.dilation))
        return F.conv2d(x, self.sparse_weight(), self.bias, self.stride, self.padding, self.dilation, self.groups)


class NMLinear(_NMState, nn.Linear):
    """``nn.Linear`` whose weight is N:M-masked along input features."""

    def __init__(self, lin: nn.Linear, cfg: NMConfig, index: int) -> None:
        nn.Linear.__init__(self, lin.in_features, lin.out_features, lin.bias is not None)
        self.load_state_dict(lin.state_dict())
        self._setup(cfg, index)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.update_masks(self.training)
        if self.method.startswith("bimask"):
            return BiMaskOp.apply(x, self.weight, self.bias, self.mask, self.bmask, self.decay, None)
        return F.linear(x, self.sparse_weight(), self.bias)


NM_LAYERS = (NMConv2d, NMLinear)


def is_dense(name: str, patterns: tuple[str, ...]) -> bool:
    """True when ``name`` matches one of the shell ``patterns`` of layers kept dense."""
    return any(fnmatch.fnmatch(name, p) for p in patterns)


def check_layer(name: str, mod: nn.Module, cfg: NMConfig) -> None:
    """Refuse a layer that cannot hold the pattern (we refuse rather than pad: padding would change the
    stored shape and the meaning of "exactly N:M")."""
    if isinstance(mod, nn.Conv2d) and mod.groups != 1:
        raise SqueezeError(f"layer {name} is a grouped/depthwise conv (groups={mod.groups}); N:M along input "
                           f"channels is undefined there; keep it dense with --set 'dense=[..., \"{name}\"]'")
    w = mod.weight
    if w.shape[1] < cfg.m or w.shape[1] % cfg.m:
        raise SqueezeError(f"layer {name} has {w.shape[1]} inputs, too few or not a multiple of M={cfg.m}; "
                           f"choose an M dividing it or keep it dense (add \"{name}\" to --set dense=[...])")
    needs_out = cfg.method in ("transposable", "bimask", "bimask-no-perm")
    if needs_out and w.shape[0] % cfg.m:
        raise SqueezeError(f"layer {name} has {w.shape[0]} outputs, not a multiple of M={cfg.m}, which "
                           f"{cfg.method} needs for its backward pattern; keep it dense or choose another M")


def sparse_candidates(model: nn.Module, cfg: NMConfig) -> list[tuple[str, nn.Module]]:
    """Conv2d/Linear layers that will be made sparse (all not matching ``cfg.dense``)."""
    return [(name, mod) for name, mod in model.named_modules()
            if type(mod) in (nn.Conv2d, nn.Linear) and not is_dense(name, cfg.dense)]


def set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    """Replace the submodule at dotted ``name``."""
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, new)


def sparsify(model: nn.Module, cfg: NMConfig) -> list[str]:
    """Swap every candidate Conv2d/Linear of ``model`` for its N:M training layer (in place).

    Masks start as the method's mask of the current (float) weights. Everything is validated before
    anything is swapped, so a refused layer leaves the model untouched. Returns the swapped names.
    """
    if not cfg.sparse:
        return []
    layers = sparse_candidates(model, cfg)
    if not layers:
        raise SqueezeError(f"no layer of the model is left to sparsify (dense patterns {list(cfg.dense)})")
    for name, mod in layers:
        check_layer(name, mod, cfg)
    for index, (name, mod) in enumerate(layers):
        new = NMConv2d(mod, cfg, index) if isinstance(mod, nn.Conv2d) else NMLinear(mod, cfg, index)
        set_submodule(model, name, new.to(mod.weight.device))
    return [name for name, _ in layers]


@torch.no_grad()
def layer_stats(model: nn.Module) -> dict[str, dict[str, float]]:
    """Per sparse layer: weights, forward-kept weights, and the backward pattern's N:M coverage.

    ``bwd_nm``: fraction of backward groups (along outputs, in the layer's permuted order) of the weight
    used for the input gradient that hold at most N non-zeros, i.e. that an N:M kernel could run;
    ``bwd_kept``: fraction of forward-kept weights also used by the input gradient.
    """
    out = {}
    for name, mod in model.named_modules():
        if getattr(mod, "nm_layer", False):
            mod.update_masks(False)
            if mod.method.startswith("bimask"):
                mod.bmask.copy_(K.backward_mask(mod.weight, mod.mask, mod.perm, mod.n, mod.m))
            wb = K.bwd_unmatrix(K.bwd_matrix(mod.backward_weight())[:, mod.perm], mod.weight.shape)
            counts = K.group_counts(wb, mod.m, backward=True)
            kept = int(mod.mask.sum())
            out[name] = {"numel": mod.weight.numel(), "kept": kept, "n": mod.n, "m": mod.m,
                         "fwd_nm": float(K.is_nm(mod.mask, mod.n, mod.m)),
                         "bwd_nm": float((counts <= mod.n).float().mean()),
                         "bwd_kept": float((wb != 0).sum()) / max(1, int((mod.weight * mod.mask != 0).sum()))}
    return out


@torch.no_grad()
def bake(model: nn.Module) -> list[str]:
    """Replace every N:M training layer by a plain Conv2d/Linear holding ``W * M`` (in place)."""
    names = []
    for name, mod in list(model.named_modules()):
        if not isinstance(mod, NM_LAYERS):
            continue
        mod.update_masks(False)
        if isinstance(mod, NMConv2d):
            plain: nn.Module = nn.Conv2d(mod.in_channels, mod.out_channels, mod.kernel_size, mod.stride, mod.padding,
                                         mod.dilation, mod.groups, mod.bias is not None, mod.padding_mode)
        else:
            plain = nn.Linear(mod.in_features, mod.out_features, mod.bias is not None)
        plain.weight.copy_(mod.weight * mod.mask)
        if mod.bias is not None:
            plain.bias.copy_(mod.bias)
        set_submodule(model, name, plain.to(mod.weight.device))
        names.append(name)
    return names
