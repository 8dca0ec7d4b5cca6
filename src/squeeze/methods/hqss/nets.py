"""HQSS networks (arXiv 2212.04108), scaled down for CPU: the shadow-feature encoder F, the generator G,
the PatchGAN discriminators, and a replay buffer of generated images (CycleGAN's, Zhu et al. 2017).

Shapes follow the paper's code at reduced width: F = 7x7 conv 3 -> ``feat`` + 2 residual blocks at full
resolution; G = concat(feature, region) -> 7x7 conv -> two stride-2 convs -> residual blocks -> two
transposed convs -> 7x7 conv to 3, added to the region input. Instance norm and reflection padding
throughout, as CycleGAN-style generators. One change: the paper ends G with ``tanh(conv + region)``;
here G outputs ``region + conv`` (last conv zero-initialised), so it starts as the identity and the
small network spends no capacity undoing the tanh (outputs are clamped to [-1, 1] when synthesising).
"""
from __future__ import annotations

import torch
from torch import nn


def _conv_block(cin: int, cout: int, k: int, stride: int = 1) -> list[nn.Module]:
    pad = k // 2
    conv: nn.Module = nn.Conv2d(cin, cout, k, stride, padding=pad, padding_mode="reflect")
    return [conv, nn.InstanceNorm2d(cout, affine=True), nn.ReLU(inplace=True)]


class ResidualBlock(nn.Module):
    """conv-IN-ReLU-conv-IN with an identity skip (reflection padding)."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.body = nn.Sequential(*_conv_block(ch, ch, 3), nn.Conv2d(ch, ch, 3, padding=1, padding_mode="reflect"),
                                  nn.InstanceNorm2d(ch, affine=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ShadowEncoder(nn.Module):
    """HQSS shadow-feature encoder F: (B, 3, H, W) region identity -> (B, feat, H, W) shadow feature."""

    def __init__(self, feat: int = 8, in_channels: int = 3) -> None:
        super().__init__()
        self.net = nn.Sequential(*_conv_block(in_channels, feat, 7), ResidualBlock(feat), ResidualBlock(feat))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ShadowGenerator(nn.Module):
    """HQSS generator G(feature, region): (B, cond, H, W) + (B, 3, H, W) -> (B, 3, H, W) = region + residual.

    Also the Mask-ShadowGAN-style generators (``cond`` = 1 for a mask, 0 for none). H, W must be
    multiples of 4 (two stride-2 stages).
    """

    def __init__(self, cond: int, width: int = 32, blocks: int = 3) -> None:
        super().__init__()
        self.cond = cond
        layers = [*_conv_block(cond + 3, width, 7), *_conv_block(width, width, 3, 2), *_conv_block(width, width, 3, 2)]
        layers += [ResidualBlock(width) for _ in range(blocks)]
        for cin, cout in ((width, width), (width, width // 2)):  # two x2 transposed-conv upsamplings
            layers += [nn.ConvTranspose2d(cin, cout, 3, stride=2, padding=1, output_padding=1),
                       nn.InstanceNorm2d(cout, affine=True), nn.ReLU(inplace=True)]
        self.trunk = nn.Sequential(*layers)
        self.out = nn.Conv2d(width // 2, 3, 7, padding=3, padding_mode="reflect")
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, cond: torch.Tensor | None, region: torch.Tensor) -> torch.Tensor:
        x = region if cond is None or self.cond == 0 else torch.cat([cond, region], 1)
        return region + self.out(self.trunk(x))


class PatchDiscriminator(nn.Module):
    """CycleGAN-style PatchGAN: 4 strided convs (w, 2w, 4w, 8w) + a 1-channel conv, averaged to (B,) (LSGAN)."""

    def __init__(self, in_channels: int = 3, width: int = 32) -> None:
        super().__init__()
        chans = [in_channels, width, 2 * width, 4 * width, 8 * width]
        layers: list[nn.Module] = []
        for i in range(4):
            layers.append(nn.Conv2d(chans[i], chans[i + 1], 4, stride=2 if i < 3 else 1, padding=1))
            if i:
                layers.append(nn.InstanceNorm2d(chans[i + 1]))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
        layers.append(nn.Conv2d(chans[4], 1, 4, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).mean(dim=(1, 2, 3))


class ReplayBuffer(nn.Module):
    """The CycleGAN image pool: the discriminator sees, half of the time, an older generated image.

    Kept as module buffers so engine checkpoints save it and a resumed run continues with the same pool.
    """

    def __init__(self, size: int, shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.size = size
        self.register_buffer("images", torch.zeros(size, *shape))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def push_and_pop(self, batch: torch.Tensor) -> torch.Tensor:
        """Store each image of ``batch`` (B, C, H, W); return a batch where each is swapped, with
        probability 1/2 once the pool is full, for a random stored one (which it replaces)."""
        out = []
        for img in batch.detach():
            n = int(self.count)
            if n < self.size:
                self.images[n] = img
                self.count += 1
                out.append(img)
            elif float(torch.rand(())) < 0.5:
                j = int(torch.randint(self.size, ()))
                out.append(self.images[j].clone())
                self.images[j] = img
            else:
                out.append(img)
        return torch.stack(out)
