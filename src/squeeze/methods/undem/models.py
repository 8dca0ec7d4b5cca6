"""UnDeM's moire generation networks (scaled down for CPU) and the CycleGAN-lite baseline's pair of translators.

Paper: Zhang et al., "Learning Image Demoireing from Unpaired Real Data", AAAI 2024. The moire-feature
encoder E_m and content encoder E_c are a 7x7 conv plus two instance-normalised residual blocks at full
resolution; the generator G takes ``concat(E_m(moire reference), clean)``, goes down twice by stride-2
convs, through residual blocks, up twice by transposed convs, and adds its output to the clean input;
the discriminator D is four strided convs and a 1-channel conv, averaged to one LSGAN score per image.
Widths and block counts come from :class:`squeeze.methods.undem.config.UnDeMConfig` (paper: 16-channel
encoders, 128-channel generator with 6 blocks, D widths 64..512).
"""
from __future__ import annotations

import torch
from torch import nn


class NormResBlock(nn.Module):
    """Reflection-padded conv-IN-ReLU-conv-IN residual block (the CycleGAN/UnDeM block)."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(ch, ch, 3), nn.InstanceNorm2d(ch), nn.ReLU(True),
                                  nn.ReflectionPad2d(1), nn.Conv2d(ch, ch, 3), nn.InstanceNorm2d(ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class FeatureEncoder(nn.Module):
    """E_m / E_c: (B, 3, H, W) -> (B, ch, H, W) features (7x7 conv + 2 residual blocks, full resolution)."""

    def __init__(self, ch: int = 16) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(3, ch, 7), nn.InstanceNorm2d(ch), nn.ReLU(True),
                                 NormResBlock(ch), NormResBlock(ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class MoireGenerator(nn.Module):
    """G(feat, clean): (B, feat_ch, H, W) + (B, 3, H, W) -> pseudo moire image clean + residual, (B, 3, H, W).

    ``feat_ch = 0`` makes a plain image translator (the CycleGAN-lite baseline). H and W must be
    multiples of 4 (two stride-2 stages).
    """

    def __init__(self, feat_ch: int, width: int = 32, blocks: int = 2) -> None:
        super().__init__()
        self.feat_ch = feat_ch
        w2 = width
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(feat_ch + 3, width, 7), nn.InstanceNorm2d(width),
                                   nn.ReLU(True)]
        for _ in range(2):
            layers += [nn.Conv2d(width, w2, 3, stride=2, padding=1), nn.InstanceNorm2d(w2), nn.ReLU(True)]
        layers += [NormResBlock(w2) for _ in range(blocks)]
        for out in (width, width // 2):
            layers += [nn.ConvTranspose2d(w2, out, 3, stride=2, padding=1, output_padding=1), nn.InstanceNorm2d(out),
                       nn.ReLU(True)]
            w2 = out
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(w2, 3, 7)]
        self.net = nn.Sequential(*layers)

    def forward(self, feat: torch.Tensor | None, clean: torch.Tensor) -> torch.Tensor:
        x = clean if feat is None or self.feat_ch == 0 else torch.cat([feat, clean], 1)
        return clean + self.net(x)


class PatchDiscriminator(nn.Module):
    """D: four stride-2 4x4 convs (LeakyReLU) and a 1-channel conv, averaged to one LSGAN score: (B,)."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        chans = [3, width, width * 2, width * 4, width * 4]
        layers: list[nn.Module] = []
        for i in range(4):
            layers += [nn.Conv2d(chans[i], chans[i + 1], 4, stride=2, padding=1)]
            if i:
                layers += [nn.InstanceNorm2d(chans[i + 1])]
            layers += [nn.LeakyReLU(0.2, True)]
        layers += [nn.Conv2d(chans[-1], 1, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).mean((1, 2, 3))


class UnDeMGenerator(nn.Module):
    """One complexity group's networks: moire encoder, content encoder, generator, discriminator."""

    def __init__(self, enc_ch: int, width: int, blocks: int, disc_width: int) -> None:
        super().__init__()
        self.enc_m = FeatureEncoder(enc_ch)
        self.enc_c = FeatureEncoder(enc_ch)
        self.gen = MoireGenerator(enc_ch, width, blocks)
        self.disc = PatchDiscriminator(disc_width)

    def synthesize(self, moire_ref: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
        """Pseudo moire for ``clean`` carrying the moire features of ``moire_ref`` (unclamped)."""
        return self.gen(self.enc_m(moire_ref), clean)


class CycleGANLite(nn.Module):
    """CycleGAN-style unpaired translation (Zhu et al., ICCV 2017), scaled down: clean->moire and moire->clean
    generators with one discriminator per domain; no moire-feature input, no grouping, no filtering."""

    def __init__(self, width: int, blocks: int, disc_width: int) -> None:
        super().__init__()
        self.c2m = MoireGenerator(0, width, blocks)
        self.m2c = MoireGenerator(0, width, blocks)
        self.disc_m = PatchDiscriminator(disc_width)
        self.disc_c = PatchDiscriminator(disc_width)

    def synthesize(self, moire_ref: torch.Tensor | None, clean: torch.Tensor) -> torch.Tensor:
        return self.c2m(None, clean)


def lsgan(scores: torch.Tensor, target: float) -> torch.Tensor:
    """Least-squares GAN loss: mean (score - target)^2."""
    return (scores - target).pow(2).mean()
