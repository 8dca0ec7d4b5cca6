"""The arbitrary-bit-width ResNet: MultiQuant's multi-branch body, or the Any-Precision shared-weight one.

MBQuant (Zhong et al., arXiv 2305.08117), section 3 / authors' CIFAR ResNet-20: the float stem conv
(shared) is tiled over the active branches, every body conv (3x3 and 1x1 shortcut) is a
:class:`BranchConv2d` followed by a :class:`SwitchableBatchNorm2d`, and after the last block the
branches' pooled features are averaged (split along channels, mean) before the shared float
classifier. Odd bit widths add a narrower partial branch; its last conv widens to the full stage
width and its identity path is zero-padded to match.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from squeeze.errors import SqueezeError
from squeeze.methods.multiquant.config import BRANCHES, BranchPlan, MultiQuantConfig, branch_plan
from squeeze.methods.multiquant.layers import BranchConv2d, SwitchableBatchNorm2d
from squeeze.zoo.resnet_fmnist import ResNetFmnist, ResNetFmnistArch


def plans_for(cfg: MultiQuantConfig) -> dict[int, BranchPlan]:
    """Branch plan of every bit width in ``cfg.bits`` (Any-Precision: always the single branch)."""
    if not cfg.multi_branch:
        return {b: BranchPlan(0, 1, False) for b in cfg.bits}
    return {b: branch_plan(b, cfg.amortize) for b in cfg.bits}


def fit_partial(x: torch.Tensor, full_channels: int, p_out: int) -> torch.Tensor:
    """Identity path: keep the full-branch channels, then slice or zero-pad the partial part to ``p_out``."""
    full, part = x[:, :full_channels], x[:, full_channels:]
    if part.shape[1] == p_out:
        return x
    if part.shape[1] > p_out:
        return torch.cat([full, part[:, :p_out]], dim=1)
    return torch.cat([full, F.pad(part, (0, 0, 0, 0, 0, p_out - part.shape[1]))], dim=1)


class MultiBitBlock(nn.Module):
    """Basic residual block with multi-branch quantized convs and per-bit batch norms."""

    def __init__(self, c_in: int, c_out: int, stride: int, p_in: int, p_mid: int, p_out: int, branches: int,
                 wbits: int | None, plans: dict[int, BranchPlan], shared: bool = False, dorefa: bool = False) -> None:
        super().__init__()
        self.c_in, self.p_out = c_in, p_out
        self.conv1 = BranchConv2d(c_in, c_out, 3, stride, branches, p_in, p_mid, wbits, shared, dorefa)
        self.bn1 = SwitchableBatchNorm2d(c_out, p_mid, plans)
        self.conv2 = BranchConv2d(c_out, c_out, 3, 1, branches, p_mid, p_out, wbits, shared, dorefa)
        self.bn2 = SwitchableBatchNorm2d(c_out, p_out, plans)
        self.shortcut: nn.Sequential | None = None
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(BranchConv2d(c_in, c_out, 1, stride, branches, p_in, p_out, wbits, shared,
                                                       dorefa),
                                          SwitchableBatchNorm2d(c_out, p_out, plans))
        self.full, self.has_partial = 1, False

    def configure(self, bits: int, plan: BranchPlan) -> None:
        self.full, self.has_partial = plan.full, plan.partial

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        if self.shortcut is not None:
            identity = self.shortcut(x)
        else:
            identity = fit_partial(x, self.full * self.c_in, self.p_out if self.has_partial else 0)
        return F.relu(out + identity)


def partial_widths(widths: tuple[int, ...], cfg: MultiQuantConfig) -> list[int]:
    """Per-stage width of the odd-bit partial branch: ``cfg.partial_widths``, else ``partial_ratio`` of each."""
    if not cfg.partial_widths:
        return [max(1, round(cfg.partial_ratio * w)) for w in widths]
    if len(cfg.partial_widths) != len(widths) or any(p > w for p, w in zip(cfg.partial_widths, widths)):
        raise SqueezeError(f"partial_widths {list(cfg.partial_widths)} must give one width per stage, each at most "
                           f"the stage's {list(widths)}")
    return list(cfg.partial_widths)


class MultiBitResNet(nn.Module):
    """A ResNet-20-shaped network that runs at any bit width of ``cfg.bits`` (call :meth:`set_bits`)."""

    def __init__(self, arch: ResNetFmnistArch, cfg: MultiQuantConfig) -> None:
        super().__init__()
        self.arch, self.bits_list = arch, tuple(cfg.bits)
        self.plans = plans_for(cfg)
        branches = BRANCHES if cfg.multi_branch else 1
        wbits = 2 if cfg.multi_branch else None  # MultiQuant: weights fixed at 2 bits; Any-Precision: switched
        odd = cfg.multi_branch and any(b % 2 for b in cfg.bits)
        self.partial = partial_widths(arch.widths, cfg) if odd else [0] * len(arch.widths)
        w1 = arch.widths[0]
        self.conv1 = nn.Conv2d(arch.in_chans, w1, 3, 1, 1, bias=False)  # float, shared
        self.bn1 = nn.BatchNorm2d(w1)
        stages, c_in, p_in = [], w1, self.partial[0]
        for s, (width, p) in enumerate(zip(arch.widths, self.partial)):
            blocks = []
            for i in range(arch.blocks):
                last = s == len(arch.widths) - 1 and i == arch.blocks - 1
                p_out = width if (last and p) else p  # the last conv widens the partial branch to full width
                blocks.append(MultiBitBlock(c_in, width, (1 if s == 0 else 2) if i == 0 else 1, p_in, p, p_out,
                                            branches, wbits, self.plans, cfg.partial_source == "next", cfg.dorefa))
                c_in, p_in = width, p
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.fc = nn.Linear(arch.widths[-1], arch.num_classes)  # float, shared
        self.bits, self.plan = max(cfg.bits), self.plans[max(cfg.bits)]
        self.set_bits(self.bits)

    def set_bits(self, bits: int) -> None:
        """Run at activation bit width ``bits`` (one of the trained widths) from now on."""
        if bits not in self.plans:
            raise SqueezeError(f"this network was trained for bit widths {list(self.bits_list)}, not {bits}")
        self.bits, self.plan = bits, self.plans[bits]
        for m in self.modules():
            if m is not self and hasattr(m, "configure"):
                m.configure(bits, self.plan)

    def branch_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_chans, H, W) images -> (N, branches_used, width) pooled features of each active branch
        (the partial branch's last conv already widens it to the full width)."""
        stem = F.relu(self.bn1(self.conv1(x)))
        h = stem.repeat(1, self.plan.full, 1, 1)
        if self.plan.partial:
            h = torch.cat([h, stem[:, : self.partial[0]]], dim=1)
        h = self.layer3(self.layer2(self.layer1(h)))
        return h.mean((2, 3)).unflatten(1, (-1, self.arch.widths[-1]))

    def forward(self, x: torch.Tensor, with_partial: bool = False
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor | None]:
        """(N, in_chans, H, W) images -> (N, classes) logits at the current bit width (branches averaged).
        ``with_partial``: also return the classifier's logits on the partial branch alone (None at even widths)."""
        feats = self.branch_features(x)
        logits = self.fc(feats.mean(1))
        if not with_partial:
            return logits
        return logits, (self.fc(feats[:, -1]) if self.plan.partial else None)

    @torch.no_grad()
    def init_from_float(self, net: ResNetFmnist, noise: float = 0.0, seed: int = 0, weight_init: str = "std") -> None:
        """Copy the float stem/classifier and tile every float body layer into the branches (spec section 8);
        ``noise``: see ``MultiQuantConfig.branch_noise`` (drawn from ``seed``, the same on every process);
        ``weight_init``: see ``MultiQuantConfig.weight_init``."""
        gen = torch.Generator().manual_seed(seed)
        self.conv1.load_state_dict(net.conv1.state_dict())
        self.bn1.load_state_dict(net.bn1.state_dict())
        self.fc.load_state_dict(net.fc.state_dict())
        for mine, theirs in zip((self.layer1, self.layer2, self.layer3), (net.layer1, net.layer2, net.layer3)):
            for mb, fb in zip(mine, theirs):
                mb.conv1.init_from_float(fb.conv1, noise, gen, weight_init)
                mb.conv2.init_from_float(fb.conv2, noise, gen, weight_init)
                mb.bn1.init_from_float(fb.bn1)
                mb.bn2.init_from_float(fb.bn2)
                if mb.shortcut is not None:
                    mb.shortcut[0].init_from_float(fb.shortcut[0], noise, gen, weight_init)
                    mb.shortcut[1].init_from_float(fb.shortcut[1])

    def quantizer_parameters(self) -> list[nn.Parameter]:
        """The learnable ranges (optimised by Adam, the rest by SGD)."""
        return [p for n, p in self.named_parameters() if n.rsplit(".", 1)[-1] in ("w_lo", "w_hi", "a_lo", "a_hi")]
