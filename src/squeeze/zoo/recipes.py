"""Recipes that reproduce the zoo's committed checkpoints (``squeeze train MODEL``)."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from squeeze.data.fashion_mnist import load_fashion_mnist
from squeeze.train.checkpoint import atomic_save_tensors, write_json
from squeeze.train.classifier import ClassifierRecipe, train_classifier
from squeeze.zoo.vit_fmnist import VitFmnistArch, build_vit_fmnist

CHECKPOINTS = Path(__file__).parent / "checkpoints"
VIT_FMNIST_RECIPE = ClassifierRecipe(epochs=18, batch_size=128, lr=1e-3, weight_decay=0.05)


def train_vit_fmnist(workdir: Path, resume: bool = False, out: Path = CHECKPOINTS,
                     recipe: ClassifierRecipe = VIT_FMNIST_RECIPE) -> float:
    """Train ``vit-fmnist`` from scratch and write ``out/vit-fmnist.{safetensors,json}`` (float16).

    Returns the final Fashion-MNIST test top-1 (the last epoch, no checkpoint picking on test).
    """
    arch = VitFmnistArch()
    torch.manual_seed(recipe.seed)
    model = build_vit_fmnist(arch, drop_path_rate=0.05)
    log = train_classifier(model, load_fashion_mnist("train"), load_fashion_mnist("test"), recipe,
                           workdir, resume=resume)
    top1 = log[-1]["test_top1"]
    weights = {k: v.to(torch.float16) for k, v in model.state_dict().items()}
    atomic_save_tensors(out / "vit-fmnist.safetensors", weights)
    write_json(out / "vit-fmnist.json", {
        "name": "vit-fmnist", "arch": asdict(arch), "recipe": asdict(recipe), "drop_path_rate": 0.05,
        "test_top1_fp32": top1, "log": log, "command": "squeeze train vit-fmnist",
    })
    return top1


def train_recipe(name: str, workdir: Path, resume: bool = False) -> dict:
    """Run the recipe that reproduces zoo model ``name``'s committed checkpoint."""
    from squeeze.errors import SqueezeError  # noqa: PLC0415

    if name == "vit-fmnist":
        return {"model": name, "test_top1": train_vit_fmnist(workdir / name, resume=resume)}
    if name == "dinov2-s14":
        from squeeze.zoo.dinov2 import train_dinov2_probe  # noqa: PLC0415

        return {"model": name, "result": train_dinov2_probe()}
    raise SqueezeError(f"no training recipe for {name!r}; recipes exist for vit-fmnist and dinov2-s14")
