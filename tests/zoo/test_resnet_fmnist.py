"""resnet-fmnist: the CIFAR ResNet-20 shape, its recipe, and a clear error without its checkpoint."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import squeeze.zoo.resnet_fmnist as rf
from squeeze.errors import SqueezeError
from squeeze.zoo.recipes import train_recipe


def test_resnet20_shape() -> None:
    net = rf.build_resnet_fmnist()
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(convs) + 1 == 20  # 19 3x3 convs + the classifier (the 1x1 shortcuts are not counted)
    assert 0.26e6 < sum(p.numel() for p in net.parameters()) < 0.28e6
    assert net(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert rf.ResNetFmnistArch.from_dict(rf.ResNetFmnistArch().to_dict()) == rf.ResNetFmnistArch()


def test_recipe_is_sgd_cosine() -> None:
    r = rf.RESNET_FMNIST_RECIPE
    assert (r.optimizer, r.lr, r.epochs, r.batch_size) == ("sgd", 0.1, 20, 128)


def test_missing_checkpoint_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rf, "CHECKPOINTS", tmp_path)
    with pytest.raises(SqueezeError, match="squeeze train resnet-fmnist"):
        rf.load_resnet_fmnist()


def test_unknown_recipe(tmp_path: Path) -> None:
    with pytest.raises(SqueezeError, match="no training recipe"):
        train_recipe("no-such-model", tmp_path)
