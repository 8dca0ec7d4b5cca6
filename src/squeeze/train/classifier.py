"""A small resumable image-classification trainer used by the zoo recipes (e.g. ``vit-fmnist``).

AdamW + linear warm-up + cosine decay, label smoothing, random-crop/flip augmentation on tensors.
A checkpoint is written atomically after every epoch; ``resume=True`` continues from it exactly
(model, optimizer, RNG state and epoch counter are restored).
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from squeeze.train.checkpoint import (
    atomic_save_tensors, load_tensors, optimizer_from_flat, optimizer_to_flat, write_json,
)


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


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up to 1, then cosine decay to 0."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


@torch.no_grad()
def evaluate_top1(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 500) -> float:
    """Top-1 accuracy in percent of ``model`` on tensors ``x``/``y``."""
    model.eval()
    correct = 0
    for i in tqdm(range(0, len(x), batch_size), desc="evaluate", leave=False):
        correct += (model(x[i:i + batch_size]).argmax(-1) == y[i:i + batch_size]).sum().item()
    return 100.0 * correct / len(x)


def train_classifier(
    model: nn.Module,
    data: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    recipe: ClassifierRecipe,
    workdir: Path,
    resume: bool = False,
    on_epoch: Callable[[int, float], None] | None = None,
) -> list[dict]:
    """Train ``model`` in place; write ``workdir/last.safetensors`` and ``workdir/log.json`` each epoch."""
    workdir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(recipe.seed)
    gen = torch.Generator().manual_seed(recipe.seed)
    x, y = data
    steps_per_epoch = len(x) // recipe.batch_size
    total, warmup = recipe.epochs * steps_per_epoch, int(recipe.warmup_epochs * steps_per_epoch)
    decay = [p for n, p in model.named_parameters() if p.ndim > 1 and "pos_embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim > 1 and "pos_embed" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": recipe.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=recipe.lr)
    start, log = 0, []
    ckpt = workdir / "last.safetensors"
    if resume and ckpt.exists():
        start, log = _restore(model, opt, gen, ckpt, workdir / "state.json")
    for epoch in range(start, recipe.epochs):
        model.train()
        perm = torch.randperm(len(x), generator=gen)
        t0, running = time.time(), 0.0
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{recipe.epochs}", leave=False)
        for i in bar:
            step = epoch * steps_per_epoch + i
            for group in opt.param_groups:
                group["lr"] = recipe.lr * lr_factor(step, total, warmup)
            idx = perm[i * recipe.batch_size:(i + 1) * recipe.batch_size]
            xb = augment(x[idx], recipe.crop_pad, recipe.hflip, gen)
            loss = F.cross_entropy(model(xb), y[idx], label_smoothing=recipe.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            running = 0.98 * running + 0.02 * loss.item() if i else loss.item()
            bar.set_postfix(loss=f"{running:.3f}")
        acc = evaluate_top1(model, *test)
        log.append({"epoch": epoch + 1, "loss": running, "test_top1": acc, "seconds": time.time() - t0})
        tqdm.write(json.dumps(log[-1]))
        _save(model, opt, gen, epoch + 1, log, ckpt, workdir / "state.json", recipe)
        if on_epoch is not None:
            on_epoch(epoch + 1, acc)
    return log


def _save(model: nn.Module, opt: torch.optim.Optimizer, gen: torch.Generator, epoch: int, log: list[dict],
          ckpt: Path, state_path: Path, recipe: ClassifierRecipe) -> None:
    tensors, meta = optimizer_to_flat(opt)
    tensors.update({f"model.{k}": v for k, v in model.state_dict().items()})
    tensors["rng.torch"] = torch.get_rng_state()
    tensors["rng.gen"] = gen.get_state()
    atomic_save_tensors(ckpt, tensors)
    write_json(state_path, {"epoch": epoch, "log": log, "recipe": asdict(recipe), **meta})


def _restore(model: nn.Module, opt: torch.optim.Optimizer, gen: torch.Generator, ckpt: Path,
             state_path: Path) -> tuple[int, list[dict]]:
    tensors = load_tensors(ckpt)
    state = json.loads(state_path.read_text())
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    optimizer_from_flat(opt, tensors, state)
    torch.set_rng_state(tensors["rng.torch"])
    gen.set_state(tensors["rng.gen"])
    return int(state["epoch"]), list(state["log"])
