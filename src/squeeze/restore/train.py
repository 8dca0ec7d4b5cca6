"""Training a :class:`~squeeze.restore.nets.RestoreNet` through the shared engine (resumable, progress bar).

The caller supplies ``make_batch(step)``, a pure function of the global step index (seeded inside)
returning ``(inputs (B, C, P, P), clean targets (B, 3, P, P))`` in [0, 1]; this module turns it into a
:class:`squeeze.train.engine.Task`: Adam with a cosine learning-rate decay to ``lr * lr_min``, the
:func:`~squeeze.restore.losses.restoration_loss`, and an optional evaluation after every epoch.
Used by UnDeM (demoireing on pseudo pairs, AAAI 2024) and HQSS (shadow removal, arXiv 2212.04108).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterator

import torch
from torch import nn

from squeeze.errors import SqueezeError
from squeeze.restore.losses import restoration_loss
from squeeze.restore.nets import RestoreNet
from squeeze.train.engine import EngineConfig, StepContext, fit

RESTORE_TRAIN_VERSION = 1
MAX_EPOCH_STEPS = 200  # automatic epoch length: the largest divisor of ``steps`` up to this


@dataclass(frozen=True)
class RestoreTrainConfig:
    """Schedule and network shape of one restoration training run.

    Attributes:
        steps: optimizer steps in total.
        batch: patches per step (global; split over processes).
        patch: patch side in pixels (recorded; ``make_batch`` produces the patches).
        lr: Adam learning rate, cosine-decayed to ``lr * lr_min`` over ``steps``.
        seed: model initialisation seed (the data's randomness lives in ``make_batch``).
        width, levels, blocks, in_channels: the :class:`RestoreNet` shape.
        edge_weight: weight of the Sobel-edge L1 term; loss_scales: scales of the multi-scale loss.
        steps_per_epoch: steps between checkpoints/evaluations (0: the largest divisor of ``steps``
            that is at most 200).
        lr_min: final learning rate as a fraction of ``lr``.
    """

    steps: int
    batch: int
    patch: int
    lr: float
    seed: int
    width: int = 32
    levels: int = 3
    in_channels: int = 3
    blocks: int = 2
    edge_weight: float = 0.1
    loss_scales: int = 1
    steps_per_epoch: int = 0
    lr_min: float = 0.05
    version: int = RESTORE_TRAIN_VERSION

    def __post_init__(self) -> None:
        if min(self.steps, self.batch, self.patch) < 1 or not self.lr > 0:
            raise SqueezeError(f"restore training: steps={self.steps}, batch={self.batch}, patch={self.patch} "
                               f"and lr={self.lr} must all be positive")
        if self.patch < 2 ** (self.levels - 1) or self.patch < 8:
            raise SqueezeError(f"restore training: patch {self.patch} px is smaller than the network's "
                               f"{max(8, 2 ** (self.levels - 1))} px minimum; use a larger patch")
        if self.steps_per_epoch < 0 or (self.steps_per_epoch and self.steps % self.steps_per_epoch):
            raise SqueezeError(f"restore training: steps {self.steps} must be a multiple of steps_per_epoch "
                               f"{self.steps_per_epoch}")
        if not 0 <= self.lr_min <= 1 or self.edge_weight < 0 or self.loss_scales < 1:
            raise SqueezeError("restore training: lr_min must be in [0, 1], edge_weight >= 0, loss_scales >= 1")
        if self.version != RESTORE_TRAIN_VERSION:
            raise SqueezeError(f"restore training config version {self.version} is not supported "
                               f"(this is {RESTORE_TRAIN_VERSION})")
        RestoreNet(self.in_channels, self.width, self.levels, self.blocks)  # validates the shape

    @property
    def epoch_steps(self) -> int:
        """Steps per engine epoch (see ``steps_per_epoch``)."""
        if self.steps_per_epoch:
            return self.steps_per_epoch
        return max(d for d in range(1, min(self.steps, MAX_EPOCH_STEPS) + 1) if self.steps % d == 0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def build_net(self) -> RestoreNet:
        return RestoreNet(self.in_channels, self.width, self.levels, self.blocks)


def cosine_lr(step: int, total: int, lr: float, lr_min: float) -> float:
    """Cosine decay from ``lr`` at step 0 to ``lr * lr_min`` at step ``total``."""
    frac = min(1.0, step / max(1, total))
    return lr * (lr_min + (1 - lr_min) * 0.5 * (1 + math.cos(math.pi * frac)))


class RestoreTask:
    """Engine task: train a RestoreNet on ``make_batch(step)`` patches (see the module docstring)."""

    find_unused_parameters = False

    def __init__(self, name: str, make_batch: Callable[[int], tuple[torch.Tensor, torch.Tensor]],
                 cfg: RestoreTrainConfig, evaluate: Callable[[nn.Module], dict[str, float]] | None = None,
                 identity: str = "") -> None:
        self.name, self.make_batch, self.cfg, self.eval_fn, self.data_identity = name, make_batch, cfg, evaluate, identity
        self.epochs = cfg.steps // cfg.epoch_steps
        self.seed = cfg.seed

    def identity(self) -> dict[str, Any]:
        return {"restore": self.cfg.to_dict(), "data": self.data_identity}

    def build(self) -> tuple[nn.Module, list[torch.optim.Optimizer]]:
        net = self.cfg.build_net()
        return net, [torch.optim.Adam(net.parameters(), lr=self.cfg.lr)]

    def steps_per_epoch(self, world: int) -> int:
        return self.cfg.epoch_steps

    def batches(self, epoch: int, rank: int, world: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.cfg.batch % world:
            raise SqueezeError(f"batch {self.cfg.batch} does not split over {world} processes; use a multiple")
        for i in range(self.cfg.epoch_steps):
            x, y = self.make_batch(epoch * self.cfg.epoch_steps + i)
            _check_batch(x, y, self.cfg)
            yield x[rank::world], y[rank::world]

    def train_step(self, ctx: StepContext, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, float]:
        x, y = (t.to(ctx.device) for t in batch)
        for opt in ctx.optimizers:
            for group in opt.param_groups:
                group["lr"] = cosine_lr(ctx.step, ctx.total_steps, self.cfg.lr, self.cfg.lr_min)
        loss = restoration_loss(ctx.model(x), y, self.cfg.edge_weight, self.cfg.loss_scales)
        ctx.backward(loss)
        return {"loss": float(loss.detach())}

    def evaluate(self, module: nn.Module) -> dict[str, float]:
        return dict(self.eval_fn(module)) if self.eval_fn is not None else {}


def _check_batch(x: torch.Tensor, y: torch.Tensor, cfg: RestoreTrainConfig) -> None:
    """Refuse batches that do not match the config (a caller bug surfaces at the first step)."""
    if x.ndim != 4 or y.ndim != 4 or x.shape[0] != y.shape[0] or x.shape[-2:] != y.shape[-2:]:
        raise SqueezeError(f"make_batch returned inputs {tuple(x.shape)} and targets {tuple(y.shape)}; expected "
                           f"(B, {cfg.in_channels}, P, P) and (B, 3, P, P)")
    if x.shape[1] != cfg.in_channels or y.shape[1] != 3 or x.shape[0] != cfg.batch:
        raise SqueezeError(f"make_batch returned inputs {tuple(x.shape)} and targets {tuple(y.shape)}; expected "
                           f"({cfg.batch}, {cfg.in_channels}, P, P) and ({cfg.batch}, 3, P, P)")


def train_restorer(name: str, make_batch: Callable[[int], tuple[torch.Tensor, torch.Tensor]],
                   cfg: RestoreTrainConfig, engine: EngineConfig,
                   evaluate: Callable[[nn.Module], dict[str, float]] | None = None,
                   identity: str = "") -> nn.Module:
    """Train a RestoreNet on ``make_batch`` through :func:`squeeze.train.engine.fit`; returns it in eval mode.

    ``name`` + ``cfg`` + ``identity`` (a caller string naming the data, e.g. a pseudo-pair source and
    its seed) form the checkpoint identity, so ``engine.resume`` only continues the same run.
    """
    task = RestoreTask(name, make_batch, cfg, evaluate, identity)
    return fit(task, engine).module.eval()
