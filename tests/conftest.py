"""Shared fixtures: tiny random models that run in milliseconds."""
from __future__ import annotations

import os

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    """One intra-op thread: on small shared machines, spinning threads slow small tensors down a lot."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture()
def umask_022():
    """A known umask (022) for tests of the permissions new files and folders get."""
    before = os.umask(0o022)
    yield
    os.umask(before)


@pytest.fixture()
def tiny_vit() -> VisionTransformer:
    """A 2-block, width-32 ViT on 1x16x16 inputs (random weights, eval mode)."""
    torch.manual_seed(0)
    return VisionTransformer(img_size=16, patch_size=4, in_chans=1, num_classes=5, embed_dim=32, depth=2,
                             num_heads=2, mlp_ratio=2.0).eval()


@pytest.fixture()
def tiny_images() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(16, 1, 16, 16)


@pytest.fixture()
def bn_cnn() -> nn.Module:
    """Two conv + batch norm stages on 1x8x8 inputs whose running statistics come from smooth, bright
    "training" images, far from what noise gives (eval mode)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6, momentum=None), nn.ReLU(),
                        nn.Conv2d(6, 8, 3, padding=1), nn.BatchNorm2d(8, momentum=None), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))
    rows = torch.linspace(-1.0, 1.5, 8).view(1, 1, 8, 1)
    with torch.no_grad():
        for _ in range(4):
            net(torch.clamp(rows + 0.3 * torch.randn(32, 1, 8, 8), -2, 2))  # train mode: running statistics
    return net.eval()
