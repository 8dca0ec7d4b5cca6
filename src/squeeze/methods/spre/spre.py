"""SpRe: a training-only spatial branch per 3x3 conv, merged into one exactly-N:M conv afterwards
(Zhang et al., "Spatial Re-parameterization for N:M Sparsity", TPAMI 2025, sec. 3).

Training: ``y = BN_a(conv(x, W_a * M)) + BN_b(conv(x, W_b * M * S))`` where M is the main branch's
SR-STE N:M mask and S (kh, kw) marks the kernel positions that layer-wise unstructured pruning at the
same density keeps denser than N/M (:func:`squeeze.sparse.masks.spatial_mask`). Both are recomputed
from W_a on every forward. Merging folds both batch norms and adds the kernels; the extra branch's
support is inside M, so the merged kernel has exactly M's pattern.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from squeeze.errors import SqueezeError
from squeeze.methods.spre.config import SpReConfig
from squeeze.sparse import masks as K
from squeeze.sparse.layers import SRSTEWeight, check_layer, is_dense, set_submodule


def fold_bn(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel ``(scale, shift)`` with ``bn(y) == scale * y + shift`` in eval mode."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return scale, bn.bias - bn.running_mean * scale


def merge_kernels(w_a: torch.Tensor, bn_a: nn.BatchNorm2d, w_b: torch.Tensor, bn_b: nn.BatchNorm2d,
                  mask: torch.Tensor, spatial: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Deploy kernel ``t_a W_a M + t_b W_b M S`` and bias ``b_a + b_b`` (SpRe sec. 3.3).

    Shapes: ``w_*``/``mask`` (O, I, kh, kw), ``spatial`` (kh, kw); returns ((O, I, kh, kw), (O,)).
    """
    t_a, b_a = fold_bn(bn_a)
    t_b, b_b = fold_bn(bn_b)
    kernel = t_a[:, None, None, None] * (w_a * mask) + t_b[:, None, None, None] * (w_b * mask * spatial)
    return kernel, b_a + b_b


class SpReConv2d(nn.Module):
    """A (3x3 conv, BN) pair with SpRe's extra branch; returns the *normalized* sum, so the paired BN
    in the parent is replaced by ``nn.Identity``.

    The extra branch starts as a copy of the conv with its BN scale and shift at 0 (deviation: the
    paper trains both branches from scratch; here we fine-tune from a dense checkpoint and the
    network must start as that checkpoint under the N:M mask).
    """

    nm_layer = True

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d, cfg: SpReConfig) -> None:
        super().__init__()
        self.method, self.n, self.m, self.decay = "spre", cfg.n, cfg.m, cfg.decay
        self.stride, self.padding, self.dilation = conv.stride, conv.padding, conv.dilation
        self.weight = nn.Parameter(conv.weight.detach().clone())
        self.bn = copy.deepcopy(bn)
        self.extra_weight = nn.Parameter(conv.weight.detach().clone())
        self.extra_bn = copy.deepcopy(bn)
        nn.init.zeros_(self.extra_bn.weight)
        nn.init.zeros_(self.extra_bn.bias)
        self.register_buffer("mask", K.nm_mask(self.weight, cfg.n, cfg.m))
        self.register_buffer("spatial", K.spatial_mask(self.weight.detach(), cfg.n, cfg.m))
        self.register_buffer("perm", torch.arange(conv.out_channels))

    @torch.no_grad()
    def update_masks(self, training: bool) -> None:
        """M and S follow the main weights at every forward (SR-STE style, SpRe's per-iteration S)."""
        self.mask.copy_(K.nm_mask(self.weight, self.n, self.m))
        self.spatial.copy_(K.spatial_mask(self.weight.detach(), self.n, self.m))

    def backward_weight(self) -> torch.Tensor:
        return self.weight.detach() * self.mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.update_masks(self.training)
        main = F.conv2d(x, SRSTEWeight.apply(self.weight, self.mask, self.decay), None, self.stride, self.padding,
                        self.dilation)
        extra_mask = self.mask & self.spatial  # (O, I, kh, kw) & (kh, kw): support inside M
        extra = F.conv2d(x, self.extra_weight * extra_mask, None, self.stride, self.padding, self.dilation)
        return self.bn(main) + self.extra_bn(extra)

    @torch.no_grad()
    def merged(self) -> nn.Conv2d:
        """The deploy conv (bias, no BN) equal to this module in eval mode."""
        self.update_masks(False)
        kernel, bias = merge_kernels(self.weight, self.bn, self.extra_weight, self.extra_bn, self.mask, self.spatial)
        o, i, kh, kw = kernel.shape
        conv = nn.Conv2d(i, o, (kh, kw), self.stride, self.padding, self.dilation, bias=True)
        conv.weight.copy_(kernel)
        conv.bias.copy_(bias)
        return conv.to(kernel.device)


def spre_pairs(model: nn.Module, cfg: SpReConfig) -> list[tuple[str, str]]:
    """Explicit (conv, bn) pairs by sibling names ``convK``/``bnK`` (never by module order, the
    pitfall of the reference code): square ``cfg.kernel`` convs with groups 1 not kept dense."""
    pairs = []
    for parent_name, parent in model.named_modules():
        for child_name, child in parent.named_children():
            if not (child_name.startswith("conv") and type(child) is nn.Conv2d):
                continue
            full = f"{parent_name}.{child_name}" if parent_name else child_name
            bn = getattr(parent, "bn" + child_name[4:], None)
            if child.kernel_size == (cfg.kernel, cfg.kernel) and isinstance(bn, nn.BatchNorm2d) \
                    and not is_dense(full, cfg.dense):
                pairs.append((full, full[: len(full) - len(child_name)] + "bn" + child_name[4:]))
    return pairs


def attach_spre(model: nn.Module, cfg: SpReConfig) -> list[tuple[str, str]]:
    """Swap every (3x3 conv, BN) pair for :class:`SpReConv2d` + ``nn.Identity`` (in place)."""
    pairs = spre_pairs(model, cfg)
    if not pairs:
        raise SqueezeError(f"the model has no {cfg.kernel}x{cfg.kernel} conv followed by a sibling batch norm "
                           "(convK/bnK) for SpRe's extra branch")
    for conv_name, _ in pairs:
        check_layer(conv_name, model.get_submodule(conv_name), cfg)
    for conv_name, bn_name in pairs:
        conv, bn = model.get_submodule(conv_name), model.get_submodule(bn_name)
        set_submodule(model, conv_name, SpReConv2d(conv, bn, cfg).to(conv.weight.device))
        set_submodule(model, bn_name, nn.Identity())
    return pairs


@torch.no_grad()
def merge_spre(model: nn.Module) -> list[str]:
    """Replace every :class:`SpReConv2d` with its merged deploy conv (in place); returns their names."""
    names = [name for name, mod in model.named_modules() if isinstance(mod, SpReConv2d)]
    for name in names:
        set_submodule(model, name, model.get_submodule(name).merged())
    return names
