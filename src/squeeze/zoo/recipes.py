"""Recipes that reproduce the zoo's committed checkpoints (``squeeze train MODEL``), on the shared engine."""
from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from squeeze.data.fashion_mnist import load_fashion_mnist
from squeeze.errors import SqueezeError
from squeeze.report import package_versions
from squeeze.train.checkpoint import atomic_save_tensors, write_json
from squeeze.train.classifier import ClassifierRecipe, train_classifier
from squeeze.train.engine import EngineConfig

CHECKPOINTS = Path(__file__).parent / "checkpoints"
VIT_FMNIST_RECIPE = ClassifierRecipe(epochs=18, batch_size=128, lr=1e-3, weight_decay=0.05)


def train_fmnist_classifier(name: str, build: Callable[[], nn.Module], arch: dict[str, Any], recipe: ClassifierRecipe,
                            engine: EngineConfig, out: Path = CHECKPOINTS, extra: dict[str, Any] | None = None,
                            subset: int | None = None) -> float:
    """Train zoo model ``name`` on Fashion-MNIST and write ``out/NAME.{safetensors,json}`` (float16).

    Returns the final test top-1 (the last epoch; no checkpoint picking on test). ``subset`` trains
    on the first ``subset`` training images (smoke runs only; the checkpoint is then not written).
    """
    x, y = load_fashion_mnist("train")
    if subset:
        x, y = x[:subset], y[:subset]
    identity = {"arch": arch, **(extra or {})}
    result = train_classifier(name, build, (x, y), load_fashion_mnist("test"), recipe, engine, identity)
    top1 = result.log[-1]["test_top1"] if result.log else float("nan")
    finished = bool(result.log) and result.log[-1]["epoch"] == recipe.epochs
    if result.rank != 0 or subset or not finished:
        return top1
    weights = {k: v.to(torch.float16) for k, v in result.module.state_dict().items()}
    atomic_save_tensors(out / f"{name}.safetensors", weights)
    write_json(out / f"{name}.json", {
        "name": name, "arch": arch, "recipe": asdict(recipe), **(extra or {}), "test_top1_fp32": top1,
        "log": result.log, "command": f"squeeze train {name}",
        "engine": {"accelerator": engine.accelerator, "devices": engine.devices, "nodes": engine.nodes},
        "versions": package_versions(),
    })
    return top1


def train_vit_fmnist(engine: EngineConfig, out: Path = CHECKPOINTS, recipe: ClassifierRecipe = VIT_FMNIST_RECIPE,
                     subset: int | None = None) -> float:
    """Train ``vit-fmnist`` from scratch (AdamW, 18 epochs) and write its checkpoint."""
    from squeeze.zoo.vit_fmnist import VitFmnistArch, build_vit_fmnist  # noqa: PLC0415

    arch = VitFmnistArch()
    return train_fmnist_classifier("vit-fmnist", lambda: build_vit_fmnist(arch, drop_path_rate=0.05), asdict(arch),
                                   recipe, engine, out, {"drop_path_rate": 0.05}, subset)


def train_resnet_fmnist(engine: EngineConfig, out: Path = CHECKPOINTS, recipe: ClassifierRecipe | None = None,
                        subset: int | None = None) -> float:
    """Train ``resnet-fmnist`` (ResNet-20) from scratch (SGD, 20 epochs) and write its checkpoint."""
    from squeeze.zoo.resnet_fmnist import RESNET_FMNIST_RECIPE, ResNetFmnistArch, build_resnet_fmnist  # noqa: PLC0415

    arch = ResNetFmnistArch()
    return train_fmnist_classifier("resnet-fmnist", lambda: build_resnet_fmnist(arch), arch.to_dict(),
                                   recipe or RESNET_FMNIST_RECIPE, engine, out, None, subset)


def _edsr(name: str) -> Callable[..., float]:
    """The recipe of an EDSR zoo model (``edsr-x2``, ``edsr-x4``); returns its test PSNR-Y."""
    def train(engine: EngineConfig, out: Path = CHECKPOINTS, recipe: Any = None, subset: int | None = None) -> float:
        from squeeze.zoo.edsr import train_edsr  # noqa: PLC0415

        return train_edsr(name, engine, out, recipe, subset)
    return train


def train_lm_shakespeare(engine: EngineConfig, out: Path = CHECKPOINTS, recipe: Any = None,
                         subset: int | None = None) -> float:
    """Train ``lm-shakespeare`` (byte-level Llama-style LM) and write its checkpoint; returns val bits/byte."""
    from squeeze.zoo.lm_shakespeare import train_lm_shakespeare as train  # noqa: PLC0415

    return train(engine, out, recipe, subset)


RECIPES = {"vit-fmnist": train_vit_fmnist, "resnet-fmnist": train_resnet_fmnist, "edsr-x2": _edsr("edsr-x2"),
           "edsr-x4": _edsr("edsr-x4"), "lm-shakespeare": train_lm_shakespeare}


def train_recipe(name: str, workdir: Path, resume: bool = False, engine: EngineConfig | None = None,
                 epochs: int | None = None, subset: int | None = None) -> dict:
    """Run the recipe that reproduces zoo model ``name``'s committed checkpoint.

    ``engine`` sets devices/nodes/accelerator (its workdir is replaced by ``workdir/name``);
    ``epochs``/``subset`` shorten the recipe for smoke runs (the committed checkpoint is then left alone).
    """
    if name == "dinov2-s14":  # a closed-form linear probe, not an epoch loop: stays off the engine
        from squeeze.zoo.dinov2 import train_dinov2_probe  # noqa: PLC0415

        return {"model": name, "result": train_dinov2_probe()}
    if name not in RECIPES:
        raise SqueezeError(f"no training recipe for {name!r}; recipes exist for {', '.join([*RECIPES, 'dinov2-s14'])}")
    engine = replace(engine or EngineConfig(workdir), workdir=Path(workdir) / name, resume=resume)
    kwargs: dict[str, Any] = {"subset": subset}
    if epochs is not None:
        from squeeze.zoo.edsr import SRRecipe  # noqa: PLC0415
        from squeeze.zoo.lm_shakespeare import LMRecipe  # noqa: PLC0415
        from squeeze.zoo.resnet_fmnist import RESNET_FMNIST_RECIPE  # noqa: PLC0415

        base = {"vit-fmnist": VIT_FMNIST_RECIPE, "resnet-fmnist": RESNET_FMNIST_RECIPE,
                "lm-shakespeare": LMRecipe()}.get(name, SRRecipe())
        kwargs["recipe"] = replace(base, epochs=epochs)
        kwargs["out"] = Path(workdir) / name / "export"
    metric = "test_psnr_y" if name.startswith("edsr-") else "val_bpb" if name == "lm-shakespeare" else "test_top1"
    return {"model": name, metric: RECIPES[name](engine, **kwargs)}
