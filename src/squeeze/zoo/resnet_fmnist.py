"""``resnet-fmnist``: a CIFAR-style ResNet-20 for 1-channel 28x28 Fashion-MNIST images.

Architecture from He et al., "Deep Residual Learning for Image Recognition" (CVPR 2016), section 4.2
(the CIFAR-10 ResNets): a 3x3 stem with 16 channels, three stages of ``blocks`` basic blocks with
16/32/64 channels (the second and third start with stride 2), global average pooling and one linear
classifier; 6n+2 = 20 layers for n = 3. Shortcuts that change shape use a 1x1 convolution with
batch norm ("option B"), which MultiQuant (``squeeze.methods.multiquant``) also quantizes.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from squeeze.errors import SqueezeError
from squeeze.train.checkpoint import load_tensors
from squeeze.train.classifier import ClassifierRecipe
from squeeze.zoo.recipes import CHECKPOINTS
from squeeze.zoo.registry import ZooModel, register_model
from squeeze.zoo.vit_fmnist_entry import fmnist_calib, fmnist_top1

NAME = "resnet-fmnist"
# SGD + Nesterov, lr 0.1, cosine over 20 epochs (CIFAR ResNet practice, shortened for 2 CPU cores).
RESNET_FMNIST_RECIPE = ClassifierRecipe(epochs=20, batch_size=128, lr=0.1, weight_decay=5e-4, warmup_epochs=1.0,
                                        label_smoothing=0.0, crop_pad=2, hflip=True, seed=0, optimizer="sgd")


@dataclass(frozen=True)
class ResNetFmnistArch:
    """Shape of ``resnet-fmnist`` (stored next to its checkpoint)."""

    in_chans: int = 1
    num_classes: int = 10
    widths: tuple[int, int, int] = (16, 32, 64)
    blocks: int = 3  # per stage; 3 -> ResNet-20

    def to_dict(self) -> dict:
        d = asdict(self)
        d["widths"] = list(self.widths)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ResNetFmnistArch":
        return cls(**{**d, "widths": tuple(d["widths"])})


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus shortcut, then ReLU (1x1 conv + BN shortcut on shape change)."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNetFmnist(nn.Module):
    """CIFAR-style ResNet (stem, 3 stages, pool, fc); input (N, in_chans, H, W) -> logits (N, classes)."""

    def __init__(self, arch: ResNetFmnistArch = ResNetFmnistArch()) -> None:
        super().__init__()
        self.arch = arch
        w1, w2, w3 = arch.widths
        self.conv1 = nn.Conv2d(arch.in_chans, w1, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(w1)
        stages, c_in = [], w1
        for width, stride in zip(arch.widths, (1, 2, 2)):
            blocks = [BasicBlock(c_in if i == 0 else width, width, stride if i == 0 else 1)
                      for i in range(arch.blocks)]
            stages.append(nn.Sequential(*blocks))
            c_in = width
        self.layer1, self.layer2, self.layer3 = stages
        self.fc = nn.Linear(w3, arch.num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.fc(out.mean((2, 3)))


def build_resnet_fmnist(arch: ResNetFmnistArch = ResNetFmnistArch()) -> ResNetFmnist:
    """An untrained ``resnet-fmnist`` network."""
    return ResNetFmnist(arch)


def load_resnet_fmnist_float() -> tuple[ResNetFmnist, dict]:
    """The committed float checkpoint as a float32 eval-mode network, with its recipe JSON."""
    meta_path = CHECKPOINTS / f"{NAME}.json"
    if not meta_path.exists():
        raise SqueezeError(f"{NAME} checkpoint missing; run `squeeze train {NAME}` to create it")
    meta = json.loads(meta_path.read_text())
    model = build_resnet_fmnist(ResNetFmnistArch.from_dict(meta["arch"]))
    state = load_tensors(CHECKPOINTS / f"{NAME}.safetensors")
    model.load_state_dict({k: v.float() for k, v in state.items()})
    return model.eval(), meta


@register_model(NAME, "CIFAR-style ResNet-20 (16/32/64) trained on Fashion-MNIST; top-1")
def load_resnet_fmnist() -> ZooModel:
    """The committed resnet-fmnist checkpoint with Fashion-MNIST calibration and test data."""
    model, meta = load_resnet_fmnist_float()
    return ZooModel(NAME, model, "top1", fmnist_calib, fmnist_top1, (1, 28, 28),
                    {"source": f"squeeze train {NAME}", "fp_top1_recorded": str(meta["test_top1_fp32"])})
