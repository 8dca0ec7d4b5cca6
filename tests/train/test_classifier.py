"""The classifier recipe on the engine: trains, logs test top-1, and resumes to the same weights."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from squeeze.train.classifier import ClassifierRecipe, decay_groups, train_classifier
from squeeze.train.engine import EngineConfig
from squeeze.zoo.resnet_fmnist import ResNetFmnistArch, build_resnet_fmnist

ARCH = ResNetFmnistArch(widths=(4, 8, 8), blocks=1)
RECIPE = ClassifierRecipe(epochs=2, batch_size=16, lr=0.05, optimizer="sgd", warmup_epochs=0.5)


def _data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 28, 28, generator=gen), torch.randint(0, 10, (n,), generator=gen)


def test_classifier_trains_and_resumes_exactly(tmp_path: Path) -> None:
    data, test = _data(64, 0), _data(32, 1)
    build = lambda: build_resnet_fmnist(ARCH)  # noqa: E731
    full = train_classifier("tiny-resnet", build, data, test, RECIPE, EngineConfig(tmp_path / "a", progress=False))
    assert [r["epoch"] for r in full.log] == [1, 2] and "test_top1" in full.log[-1]
    first = train_classifier("tiny-resnet", build, data, test, RECIPE,
                             EngineConfig(tmp_path / "b", progress=False, max_epochs=1))
    assert len(first.log) == 1
    rest = train_classifier("tiny-resnet", build, data, test, RECIPE,
                            EngineConfig(tmp_path / "b", resume=True, progress=False))
    a, b = full.module.state_dict(), rest.module.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert replace(RECIPE, optimizer="adamw").optimizer == "adamw"


def test_decay_groups_decay_kernels_only_and_respect_exempt_names() -> None:
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2), torch.nn.Flatten(),
                              torch.nn.Linear(2, 3))
    decayed, plain = decay_groups(net.named_parameters(), 0.1)
    assert (decayed["weight_decay"], plain["weight_decay"]) == (0.1, 0.0)
    assert [id(p) for p in decayed["params"]] == [id(net[0].weight), id(net[3].weight)]
    assert [id(p) for p in plain["params"]] == [id(net[0].bias), id(net[1].weight), id(net[1].bias), id(net[3].bias)]
    decayed, plain = decay_groups(net.named_parameters(), 0.1, exempt=lambda name: name.startswith("3."))
    assert [id(p) for p in decayed["params"]] == [id(net[0].weight)] and len(plain["params"]) == 5
