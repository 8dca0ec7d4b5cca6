"""A tiny engine task (conv + batch norm + linear on random data) shared by the engine tests."""
from __future__ import annotations

from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from squeeze.train.engine import StepContext, epoch_indices


class TinyTask:
    """8x8 one-channel images, 3 classes; ``crash_at_epoch`` raises inside that epoch (a simulated kill)."""

    name = "tiny"
    find_unused_parameters = False

    def __init__(self, epochs: int = 3, seed: int = 0, lr: float = 0.1, n: int = 64, batch_size: int = 16,
                 crash_at_epoch: int | None = None) -> None:
        self.epochs, self.seed, self.lr, self.batch_size = epochs, seed, lr, batch_size
        self.crash_at_epoch = crash_at_epoch
        gen = torch.Generator().manual_seed(123)
        self.x = torch.randn(n, 1, 8, 8, generator=gen)
        self.y = torch.randint(0, 3, (n,), generator=gen)

    def identity(self) -> dict[str, Any]:
        return {"lr": self.lr, "epochs": self.epochs, "batch_size": self.batch_size}

    def build(self) -> tuple[nn.Module, list[torch.optim.Optimizer]]:
        model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.2),
                              nn.Flatten(), nn.Linear(256, 3))
        return model, [torch.optim.Adam(model.parameters(), lr=self.lr)]

    def steps_per_epoch(self, world: int) -> int:
        return len(self.x) // self.batch_size

    def batches(self, epoch: int, rank: int, world: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for idx in epoch_indices(len(self.x), self.batch_size, epoch, self.seed, rank, world):
            yield self.x[idx], self.y[idx]

    def train_step(self, ctx: StepContext, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, float]:
        if ctx.epoch == self.crash_at_epoch:
            raise RuntimeError("simulated kill")
        x, y = (t.to(ctx.device) for t in batch)
        loss = F.cross_entropy(ctx.model(x), y)
        ctx.backward(loss)
        return {"loss": loss.item()}

    def evaluate(self, module: nn.Module) -> dict[str, float]:
        module.eval()
        with torch.no_grad():
            acc = (module(self.x).argmax(-1) == self.y).float().mean().item()
        return {"acc": 100.0 * acc}
