"""Image classification on the shared training engine (:mod:`squeeze.train.engine`), for zoo recipes.

AdamW (or SGD with Nesterov momentum) + linear warm-up + cosine decay per step, label smoothing,
random-crop/flip augmentation on tensors. Checkpointing, exact resume, distributed runs and logs
come from the engine.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from squeeze.devices import model_device
from squeeze.errors import SqueezeError
from squeeze.train.engine import EngineConfig, FitResult, StepContext, derived_seed, epoch_indices, fit


@dataclass
class ClassifierRecipe:
    """Hyper-parameters of a classification recipe (stored beside the checkpoint)."""

    epochs: int = 20
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    crop_pad: int = 2
    hflip: bool = True
    seed: int = 0
    optimizer: str = "adamw"  # "adamw" or "sgd" (Nesterov momentum 0.9)

    def __post_init__(self) -> None:
        if self.optimizer not in ("adamw", "sgd"):
            raise SqueezeError(f"optimizer {self.optimizer!r} is unknown; use adamw or sgd")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise SqueezeError("epochs, batch_size and lr must be positive")


def augment(x: torch.Tensor, pad: int, hflip: bool, gen: torch.Generator) -> torch.Tensor:
    """Random crop after padding with the image minimum, and random horizontal flip.

    Args:
        x: (N, C, H, W) batch. Returns a tensor of the same shape.
    """
    n, _, h, w = x.shape
    if pad > 0:
        fill = float(x.min())
        padded = F.pad(x, (pad, pad, pad, pad), value=fill)
        dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
        dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
        rows = (dy[:, None] + torch.arange(h))[:, None, :, None]  # (N, 1, H, 1)
        cols = (dx[:, None] + torch.arange(w))[:, None, None, :]  # (N, 1, 1, W)
        batch = torch.arange(n)[:, None, None, None]
        chans = torch.arange(x.shape[1])[None, :, None, None]
        x = padded[batch, chans, rows, cols]
    if hflip:
        flip = torch.rand(n, generator=gen) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    return x


def augmented_batches(data: tuple[torch.Tensor, torch.Tensor], batch_size: int, epoch: int, seed: int, rank: int,
                      world: int, size: int | None = None, pad: int = 2,
                      hflip: bool = True) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """This rank's shuffled, augmented ``(x, y)`` batches of one epoch (``size``: images per epoch).

    The shuffle and the augmentation are seeded from ``(seed, epoch, rank)``, so a resumed run sees the
    same batches as an uninterrupted one.
    """
    x, y = data
    gen = torch.Generator().manual_seed(derived_seed(seed, epoch, rank, 11))
    for idx in epoch_indices(len(x), batch_size, epoch, seed, rank, world, size):
        yield augment(x[idx], pad, hflip, gen), y[idx]


def lr_factor(step: int, total: int, warmup: int = 0, floor: float = 0.0) -> float:
    """Learning-rate multiplier: linear warm-up to 1 over ``warmup`` steps, then cosine decay to ``floor``.

    The schedule every squeeze training task uses (classifier recipes, MultiQuant, N:M, EDSR, UIO).
    """
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return floor + (1 - floor) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


@torch.no_grad()
def evaluate_top1(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 500) -> float:
    """Top-1 accuracy in percent of ``model`` on tensors ``x``/``y``."""
    model.eval()
    device = model_device(model)
    correct = 0
    for i in tqdm(range(0, len(x), batch_size), desc="evaluate", leave=False):
        logits = model(x[i:i + batch_size].to(device))
        correct += (logits.argmax(-1).cpu() == y[i:i + batch_size]).sum().item()
    return 100.0 * correct / len(x)


def decay_groups(named: Iterable[tuple[str, nn.Parameter]], weight_decay: float,
                 exempt: Callable[[str], bool] = lambda name: False) -> list[dict[str, Any]]:
    """Two optimizer groups: weight matrices and kernels (ndim > 1) decayed; biases, norms and ``exempt`` names not."""
    decay, no_decay = [], []
    for name, p in named:
        (decay if p.ndim > 1 and not exempt(name) else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class SubsetBatches:
    """Engine-task mixin: epochs of ``cfg.subset`` shuffled, augmented training images (0 = all of ``data``).

    The task sets ``cfg`` (with ``subset``, ``batch_size``, ``seed``), ``data`` and, to turn flips off, ``hflip``.
    """

    cfg: Any
    data: tuple[torch.Tensor, torch.Tensor]
    hflip: bool = True

    def _epoch_size(self) -> int:
        return min(self.cfg.subset or len(self.data[0]), len(self.data[0]))

    def steps_per_epoch(self, world: int) -> int:
        return self._epoch_size() // self.cfg.batch_size

    def batches(self, epoch: int, rank: int, world: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        yield from augmented_batches(self.data, self.cfg.batch_size, epoch, self.cfg.seed, rank, world,
                                     self._epoch_size(), hflip=self.hflip)


class ClassifierTask:
    """Supervised classification of in-memory tensors as an engine :class:`~squeeze.train.engine.Task`.

    Args:
        name: run name (also the first field of the checkpoint identity).
        build_model: creates the untrained network (called after the engine seeded everything).
        data, test: ``(images (N, C, H, W), labels (N,))`` CPU tensors.
        recipe: hyper-parameters.
        extra_identity: JSON-able facts that also define the run (architecture, ...).
    """

    find_unused_parameters = False

    def __init__(self, name: str, build_model: Callable[[], nn.Module], data: tuple[torch.Tensor, torch.Tensor],
                 test: tuple[torch.Tensor, torch.Tensor], recipe: ClassifierRecipe,
                 extra_identity: dict[str, Any] | None = None) -> None:
        self.name, self.build_model, self.data, self.test, self.recipe = name, build_model, data, test, recipe
        self.extra_identity = extra_identity or {}
        self.epochs, self.seed = recipe.epochs, recipe.seed

    def identity(self) -> dict[str, Any]:
        return {"recipe": asdict(self.recipe), "train_size": len(self.data[0]), **self.extra_identity}

    def build(self) -> tuple[nn.Module, list[torch.optim.Optimizer]]:
        model = self.build_model()
        groups = decay_groups(model.named_parameters(), self.recipe.weight_decay, lambda n: "pos_embed" in n)
        if self.recipe.optimizer == "sgd":
            return model, [torch.optim.SGD(groups, lr=self.recipe.lr, momentum=0.9, nesterov=True)]
        return model, [torch.optim.AdamW(groups, lr=self.recipe.lr)]

    def steps_per_epoch(self, world: int) -> int:
        return len(self.data[0]) // self.recipe.batch_size

    def batches(self, epoch: int, rank: int, world: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        yield from augmented_batches(self.data, self.recipe.batch_size, epoch, self.recipe.seed, rank, world,
                                     pad=self.recipe.crop_pad, hflip=self.recipe.hflip)

    def train_step(self, ctx: StepContext, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, float]:
        r = self.recipe
        warmup = int(r.warmup_epochs * ctx.total_steps / r.epochs)
        for opt in ctx.optimizers:
            for group in opt.param_groups:
                group["lr"] = r.lr * lr_factor(ctx.step, ctx.total_steps, warmup)
        xb, yb = (t.to(ctx.device) for t in batch)
        loss = F.cross_entropy(ctx.model(xb), yb, label_smoothing=r.label_smoothing)
        ctx.backward(loss)
        return {"loss": loss.item()}

    def evaluate(self, module: nn.Module) -> dict[str, float]:
        return {"test_top1": evaluate_top1(module, *self.test)}


def train_classifier(name: str, build_model: Callable[[], nn.Module], data: tuple[torch.Tensor, torch.Tensor],
                     test: tuple[torch.Tensor, torch.Tensor], recipe: ClassifierRecipe, engine: EngineConfig,
                     extra_identity: dict[str, Any] | None = None) -> FitResult:
    """Train a classifier with the shared engine; returns the trained module and the per-epoch log."""
    return fit(ClassifierTask(name, build_model, data, test, recipe, extra_identity), engine)
