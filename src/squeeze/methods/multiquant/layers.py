"""MultiQuant building blocks: a multi-branch quantized convolution and a switchable batch norm.

Channel layout of every tensor inside the network body at a given bit width (see ``BranchPlan``):
``[branch start | branch start+1 | ... (full branches, C each) | partial branch (P, odd bits only)]``.
Full branches are one grouped convolution over the active slice of the 4-branch weight tensor;
the partial branch is a separate, narrower, ordinary convolution (MBQuant, Zhong et al., 2023), with
its own weights or (``shared_partial``, the authors' code) the leading channels of the next branch's.
With ``branches=1``, per-bit weight ranges and ``fixed_wbits=None`` the same layer is the
Any-Precision-style baseline: one shared float weight quantized to the switched bit width; ``dorefa`` swaps
the learnable-range quantizers for Any-Precision DNN's own (Yu et al., AAAI 2021).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from squeeze.methods.multiquant.config import MAX_BITS, MIN_BITS, BranchPlan
from squeeze.methods.multiquant.quantizers import (
    activation_range_init, dorefa_activation, dorefa_weight, quantize_activation, quantize_weight, weight_range_init,
    weight_range_mse,
)

_NBITS = MAX_BITS - MIN_BITS + 1  # one column of activation ranges per bit width 2..8


class BranchConv2d(nn.Module):
    """``branches`` independent quantized convolutions ``c_in -> c_out`` plus a partial ``p_in -> p_out`` one.

    Parameters: ``weight`` (branches*c_out, c_in, k, k) in grouped-conv layout; ``partial_weight``
    (p_out, p_in, k, k) when ``p_out > 0`` and not ``shared_partial`` (then the partial branch convolves with
    ``weight[j*c_out : j*c_out + p_out, :p_in]`` of the branch j after the active full ones); quantizer
    ranges ``w_lo/w_hi`` (branch, 1 or 7 bit columns) and ``a_lo/a_hi`` (branch, 7 bit columns); row
    ``branches`` belongs to the partial branch. ``dorefa``: quantize with :func:`dorefa_weight` and
    :func:`dorefa_activation` instead (the ranges are then unused; no partial branch).
    """

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, branches: int, p_in: int = 0,
                 p_out: int = 0, fixed_wbits: int | None = 2, shared_partial: bool = False,
                 dorefa: bool = False) -> None:
        super().__init__()
        if dorefa and p_out:
            raise ValueError("Any-Precision DNN's quantizers are for the single-branch network (no partial branch)")
        self.c_in, self.c_out, self.kernel, self.stride, self.branches = c_in, c_out, kernel, stride, branches
        self.p_in, self.p_out, self.fixed_wbits, self.shared_partial = p_in, p_out, fixed_wbits, shared_partial
        self.dorefa = dorefa
        self.weight = nn.Parameter(torch.zeros(branches * c_out, c_in, kernel, kernel))
        own = p_out and not shared_partial
        self.partial_weight = nn.Parameter(torch.zeros(p_out, p_in, kernel, kernel)) if own else None
        rows, wcols = branches + (1 if p_out else 0), (1 if fixed_wbits else _NBITS)
        self.w_lo = nn.Parameter(torch.full((rows, wcols), -1.0))
        self.w_hi = nn.Parameter(torch.full((rows, wcols), 1.0))
        self.a_lo = nn.Parameter(torch.zeros(rows, _NBITS))
        self.a_hi = nn.Parameter(torch.ones(rows, _NBITS))
        self.bits, self.plan = MAX_BITS, BranchPlan(0, branches, False)
        self.init_activations = False  # True: set a_lo/a_hi of the current bit from the next input

    def extra_repr(self) -> str:
        return (f"{self.c_in}->{self.c_out} x{self.branches}, k={self.kernel}, s={self.stride}, "
                f"partial {self.p_in}->{self.p_out}{' (shared)' if self.shared_partial else ''}, "
                f"wbits={self.fixed_wbits or 'switched'}{', dorefa' if self.dorefa else ''}")

    def configure(self, bits: int, plan: BranchPlan) -> None:
        """Select the bit width and the active branches for the following forward passes."""
        self.bits, self.plan = bits, plan

    @torch.no_grad()
    def init_from_float(self, conv: nn.Conv2d, noise: float = 0.0, gen: torch.Generator | None = None,
                        weight_init: str = "std") -> None:
        """Tile a float conv into every branch; the partial branch takes its leading channels. ``noise`` > 0
        adds independent N(0, (noise * std(w))^2) to every branch but the first (drawn from ``gen``, on CPU).
        ``weight_init``: weight ranges at +-3 std (``std``, the paper) or at the MSE-optimal range of every
        bit-width column (``mse``)."""
        w = conv.weight.detach().to(self.weight)
        tiled = w.repeat(self.branches, 1, 1, 1)
        if noise > 0 and self.branches > 1:
            n = len(w)
            tiled[n:] += noise * w.std() * torch.randn(tiled[n:].shape, generator=gen).to(w)
        self.weight.copy_(tiled)
        # identical for every branch: they start as (perturbed) copies of w
        self._init_weight_ranges(slice(0, self.branches), w, weight_init)
        if self.p_out:
            part = w[: self.p_out, : self.p_in]
            if self.partial_weight is not None:
                self.partial_weight.copy_(part)
            self._init_weight_ranges(slice(self.branches, self.branches + 1), part, weight_init)

    def _init_weight_ranges(self, rows: slice, w: torch.Tensor, weight_init: str) -> None:
        """Set ``w_lo/w_hi[rows]`` from weights ``w``, one range per bit-width column."""
        col_bits = [self.fixed_wbits] if self.fixed_wbits else range(MIN_BITS, MAX_BITS + 1)
        for col, bits in enumerate(col_bits):
            lo, hi = weight_range_mse(w, bits) if weight_init == "mse" else weight_range_init(w)
            self.w_lo[rows, col], self.w_hi[rows, col] = float(lo), float(hi)

    def _partial_weight(self, nxt: int) -> torch.Tensor:
        """(p_out, p_in, k, k) float weights of the partial branch; ``nxt``: the branch after the full ones."""
        if not self.p_out:
            raise RuntimeError("odd bit width on a layer built without a partial branch")
        if self.partial_weight is not None:
            return self.partial_weight
        if nxt >= self.branches:
            raise RuntimeError(f"a shared partial branch needs a branch after the active ones (got {nxt})")
        return self.weight[nxt * self.c_out: nxt * self.c_out + self.p_out, : self.p_in]

    def _weight_col(self) -> int:
        return 0 if self.fixed_wbits else self.bits - MIN_BITS

    @torch.no_grad()
    def _init_ranges(self, xf: torch.Tensor, xp: torch.Tensor | None) -> None:
        """Paper init of activation ranges for the active branches at the current bit width."""
        col, plan = self.bits - MIN_BITS, self.plan
        for i in range(plan.full):
            lo, hi = activation_range_init(xf[:, i])
            self.a_lo[plan.start + i, col], self.a_hi[plan.start + i, col] = lo, hi
        if xp is not None:
            lo, hi = activation_range_init(xp)
            self.a_lo[self.branches, col], self.a_hi[self.branches, col] = lo, hi

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (N, full*c_in [+ p_in], H, W) -> (N, full*c_out [+ p_out], H', W')."""
        plan, b = self.plan, self.bits
        n, s, col, wcol = plan.full, plan.start, b - MIN_BITS, self._weight_col()
        wbits = self.fixed_wbits or b
        xf = x[:, : n * self.c_in].unflatten(1, (n, self.c_in))  # (N, n, C_in, H, W)
        xp = x[:, n * self.c_in:] if plan.partial else None
        w = self.weight[s * self.c_out:(s + n) * self.c_out].unflatten(0, (n, self.c_out))
        if self.dorefa:
            xq, wq = dorefa_activation(xf, b).flatten(1, 2), dorefa_weight(w, wbits).flatten(0, 1)
        else:
            if self.init_activations:
                self._init_ranges(xf, xp)
            xq = quantize_activation(xf, self.a_lo[s:s + n, col].view(1, n, 1, 1, 1),
                                     self.a_hi[s:s + n, col].view(1, n, 1, 1, 1), b).flatten(1, 2)
            wq = quantize_weight(w, self.w_lo[s:s + n, wcol].view(n, 1, 1, 1, 1),
                                 self.w_hi[s:s + n, wcol].view(n, 1, 1, 1, 1), wbits).flatten(0, 1)
        pad = self.kernel // 2
        out = F.conv2d(xq, wq, None, self.stride, pad, 1, n)
        if xp is None:
            return out
        g = self.branches
        xpq = quantize_activation(xp, self.a_lo[g, col], self.a_hi[g, col], b)
        wpq = quantize_weight(self._partial_weight(s + n), self.w_lo[g, wcol], self.w_hi[g, wcol], wbits)
        return torch.cat([out, F.conv2d(xpq, wpq, None, self.stride, pad)], dim=1)


class SwitchableBatchNorm2d(nn.Module):
    """One ``BatchNorm2d`` per bit width, sized to that width's active channels (full*C [+ P])."""

    def __init__(self, width: int, partial: int, plans: dict[int, BranchPlan]) -> None:
        super().__init__()
        self.width, self.partial, self.plans = width, partial, dict(plans)
        sizes = {b: p.full * width + (partial if p.partial else 0) for b, p in plans.items()}
        self.bns = nn.ModuleDict({str(b): nn.BatchNorm2d(c) for b, c in sizes.items()})
        self.bits = max(plans)

    def configure(self, bits: int, plan: BranchPlan) -> None:
        self.bits = bits

    @torch.no_grad()
    def init_from_float(self, bn: nn.BatchNorm2d) -> None:
        """Tile the float statistics and affine parameters into every per-bit norm."""
        for bits, plan in self.plans.items():
            target = self.bns[str(bits)]
            for name in ("weight", "bias", "running_mean", "running_var"):
                src = getattr(bn, name).detach()
                parts = [src.repeat(plan.full)] + ([src[: self.partial]] if plan.partial else [])
                getattr(target, name).copy_(torch.cat(parts).to(getattr(target, name)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bns[str(self.bits)](x)
