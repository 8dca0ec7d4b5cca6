"""Registry entry for ``vit-fmnist`` (checkpoint committed under ``zoo/checkpoints``)."""
from __future__ import annotations

import functools
import json

import torch

from squeeze.data.fashion_mnist import load_fashion_mnist
from squeeze.errors import SqueezeError
from squeeze.train.checkpoint import load_tensors
from squeeze.train.classifier import evaluate_top1
from squeeze.zoo.recipes import CHECKPOINTS
from squeeze.zoo.registry import ZooModel, register_model
from squeeze.zoo.vit_fmnist import VitFmnistArch, build_vit_fmnist


def fmnist_calib(n: int, seed: int) -> torch.Tensor:
    """``n`` Fashion-MNIST *training* images chosen by ``seed`` (normalized, (n, 1, 28, 28))."""
    x, _ = load_fashion_mnist("train")
    idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:n]
    return x[idx]


def fmnist_top1(model: torch.nn.Module) -> float:
    """Top-1 (%) on the full 10,000-image Fashion-MNIST test set."""
    return evaluate_top1(model, *load_fashion_mnist("test"))


HOLDOUT_SEED, HOLDOUT_N = 10_000, 2_000


@functools.lru_cache(maxsize=1)
def _holdout_set() -> tuple[torch.Tensor, torch.Tensor]:
    x, y = load_fashion_mnist("train")
    idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(HOLDOUT_SEED))[:HOLDOUT_N]
    return x[idx], y[idx]


def fmnist_holdout_top1(model: torch.nn.Module) -> float:
    """Top-1 (%) on 2,000 Fashion-MNIST *training* images fixed by their own seed (hyper-parameter choice).

    The zoo models saw these images in training, so the float score is higher than on the test set;
    what it measures is how much a compression method loses, without looking at the test set.
    """
    return evaluate_top1(model, *_holdout_set())


@register_model("vit-fmnist", "DeiT-style ViT (4 blocks, width 128, patch 4) trained on Fashion-MNIST; top-1")
def load_vit_fmnist() -> ZooModel:
    """The committed vit-fmnist checkpoint with Fashion-MNIST calibration, test and held-out data."""
    meta_path = CHECKPOINTS / "vit-fmnist.json"
    if not meta_path.exists():
        raise SqueezeError("vit-fmnist checkpoint missing; run `squeeze train vit-fmnist` to create it")
    meta = json.loads(meta_path.read_text())
    model = build_vit_fmnist(VitFmnistArch(**meta["arch"]))
    state = load_tensors(CHECKPOINTS / "vit-fmnist.safetensors")
    model.load_state_dict({k: v.float() for k, v in state.items()})
    return ZooModel("vit-fmnist", model, "top1", fmnist_calib, fmnist_top1, (1, 28, 28),
                    {"source": "squeeze train vit-fmnist", "fp_top1_recorded": str(meta["test_top1_fp32"])},
                    holdout=fmnist_holdout_top1)
