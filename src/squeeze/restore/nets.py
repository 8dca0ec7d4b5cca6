"""A small multi-scale residual restoration network for image restoration on CPU (demoireing, shadow removal).

:class:`RestoreNet` is a compact U-Net in the spirit of the multi-scale demoireing networks the UnDeM
paper trains (MBCNN, Zheng et al. CVPR 2020; ESDNet, Yu et al. ECCV 2022): moire and shadows span
several scales, so features are processed at ``levels`` resolutions (each half the previous one),
with residual blocks at every level, skip connections across, and the network predicts a residual
that is added to the degraded input. No attention blocks, no learned frequency bases: it is sized to
train in minutes on two CPU cores (about 60-200 K parameters at width 16-32).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from squeeze.errors import SqueezeError


def level_channels(width: int, level: int) -> int:
    """Channels at resolution level ``level`` (0 = full): ``width * (1 + level / 2)``, rounded.

    Growing slower than the usual doubling keeps the coarse levels cheap on CPU.
    """
    return int(round(width * (1 + level / 2)))


class ResBlock(nn.Module):
    """conv3x3 - LeakyReLU - conv3x3 with an identity skip (no normalisation, as in EDSR-style restorers)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.leaky_relu(self.conv1(x), 0.2))


class RestoreNet(nn.Module):
    """Multi-scale residual restoration network (MBCNN/ESDNet-flavoured U-Net, sized for CPU).

    Input (B, in_channels, H, W): channels 0..2 the degraded RGB image in [0, 1], any further channels
    side information (e.g. a shadow mask). Output (B, 3, H, W) = input RGB + predicted residual (not
    clamped, so training gradients never vanish at the range limits). Any H, W: the input is
    reflect-padded to a multiple of ``2 ** (levels - 1)`` and the output cropped back.
    """

    def __init__(self, in_channels: int = 3, width: int = 32, levels: int = 3, blocks: int = 2) -> None:
        super().__init__()
        if in_channels < 3:
            raise SqueezeError(f"RestoreNet needs at least 3 input channels (RGB first), got {in_channels}")
        if width < 4 or levels < 1 or blocks < 1:
            raise SqueezeError(f"RestoreNet width={width} (>= 4), levels={levels} (>= 1), blocks={blocks} (>= 1) "
                               "out of range")
        self.in_channels, self.width, self.levels, self.blocks = in_channels, width, levels, blocks
        chans = [level_channels(width, lv) for lv in range(levels)]
        self.head = nn.Conv2d(in_channels, chans[0], 3, padding=1)
        self.enc = nn.ModuleList(nn.Sequential(*[ResBlock(c) for _ in range(blocks)]) for c in chans)
        # stride-2 convs go from level l to l+1; upsampling is bilinear + 1x1 conv back to level l's width
        self.down = nn.ModuleList(nn.Conv2d(chans[lv], chans[lv + 1], 3, stride=2, padding=1)
                                  for lv in range(levels - 1))
        self.up = nn.ModuleList(nn.Conv2d(chans[lv + 1], chans[lv], 1) for lv in range(levels - 1))
        self.dec = nn.ModuleList(nn.Sequential(*[ResBlock(chans[lv]) for _ in range(blocks)])
                                 for lv in range(levels - 1))
        self.tail = nn.Conv2d(chans[0], 3, 3, padding=1)
        nn.init.zeros_(self.tail.weight)  # start as the identity map: output = degraded input
        nn.init.zeros_(self.tail.bias)

    @property
    def multiple(self) -> int:
        """Spatial sizes are padded to a multiple of this."""
        return 2 ** (self.levels - 1)

    def config(self) -> dict[str, int]:
        """The constructor arguments (saved with the weights)."""
        return {"in_channels": self.in_channels, "width": self.width, "levels": self.levels, "blocks": self.blocks}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise SqueezeError(f"RestoreNet expects (B, {self.in_channels}, H, W) inputs, got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        ph, pw = (-h) % self.multiple, (-w) % self.multiple
        # reflect padding needs pad < size; replicate works for any size
        mode = "reflect" if ph < h and pw < w else "replicate"
        xp = F.pad(x, (0, pw, 0, ph), mode=mode) if ph or pw else x
        feats = []
        f = self.head(xp)
        for lv in range(self.levels):
            f = self.enc[lv](f)
            if lv < self.levels - 1:
                feats.append(f)
                f = self.down[lv](F.leaky_relu(f, 0.2))
        for lv in reversed(range(self.levels - 1)):
            f = F.interpolate(f, size=feats[lv].shape[-2:], mode="bilinear", align_corners=False)
            f = self.dec[lv](self.up[lv](f) + feats[lv])  # (B, chans[lv], H_lv, W_lv)
        out = xp[:, :3] + self.tail(F.leaky_relu(f, 0.2))
        return out[..., :h, :w]


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
