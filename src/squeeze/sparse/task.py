"""N:M sparse fine-tuning as a :mod:`squeeze.train.engine` task, from a float zoo checkpoint.

The network starts as the committed ``resnet-fmnist`` (or ``vit-fmnist``) weights, gets its N:M layers
(:func:`prepare_sparse`) and is fine-tuned for a short schedule (``subset`` random images per epoch,
cosine learning rate). The engine checkpoints every epoch, including masks, permutations and step
counters (module buffers), so a run resumes exactly.
"""
from __future__ import annotations

import copy
import json
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from squeeze.errors import SqueezeError
from squeeze.sparse.config import NMConfig
from squeeze.sparse.layers import bake, sparsify
from squeeze.train.classifier import SubsetBatches, decay_groups, evaluate_top1, lr_factor
from squeeze.train.engine import StepContext

DEFAULT_LR = {"resnet-fmnist": 0.01, "vit-fmnist": 2e-4}  # SGD fine-tune / AdamW fine-tune


def build_base(model: str, arch: dict[str, Any] | None = None) -> nn.Module:
    """An untrained float network of zoo model ``model`` with architecture ``arch`` (default: zoo's)."""
    if model == "resnet-fmnist":
        from squeeze.zoo.resnet_fmnist import ResNetFmnistArch, build_resnet_fmnist  # noqa: PLC0415

        return build_resnet_fmnist(ResNetFmnistArch.from_dict(arch) if arch else ResNetFmnistArch())
    if model == "vit-fmnist":
        from squeeze.zoo.vit_fmnist import VitFmnistArch, build_vit_fmnist  # noqa: PLC0415

        return build_vit_fmnist(VitFmnistArch(**arch) if arch else VitFmnistArch())
    raise SqueezeError(f"model {model!r} is not supported for N:M files; use resnet-fmnist or vit-fmnist")


def load_float(model: str) -> tuple[nn.Module, float, dict[str, Any]]:
    """The committed float checkpoint of ``model`` (eval mode), its recorded test top-1 and its arch dict."""
    from squeeze.train.checkpoint import load_tensors  # noqa: PLC0415
    from squeeze.zoo.recipes import CHECKPOINTS  # noqa: PLC0415

    meta_path = CHECKPOINTS / f"{model}.json"
    if not meta_path.is_file():
        raise SqueezeError(f"{model} checkpoint missing; run `squeeze train {model}` to create it")
    meta = json.loads(meta_path.read_text())
    net = build_base(model, meta["arch"])
    net.load_state_dict({k: v.float() for k, v in load_tensors(CHECKPOINTS / f"{model}.safetensors").items()})
    return net.eval(), float(meta["test_top1_fp32"]), meta["arch"]


def prepare_sparse(net: nn.Module, cfg: NMConfig) -> dict[str, Any]:
    """Install the method's training layers in ``net`` (in place); returns ``{"layers", "pairs"}``:
    the N:M layer names (including SpRe's) and SpRe's (conv, bn) pairs."""
    pairs: list[tuple[str, str]] = []
    if cfg.method == "spre":
        from squeeze.methods.spre.spre import attach_spre  # noqa: PLC0415

        # validate the plain SR-STE layers first, so a refusal leaves the model untouched
        from squeeze.sparse.layers import check_layer, sparse_candidates  # noqa: PLC0415

        for name, mod in sparse_candidates(net, cfg):
            check_layer(name, mod, cfg)
        pairs = attach_spre(net, cfg)
    layers = sparsify(net, cfg)
    return {"layers": sorted([*layers, *(c for c, _ in pairs)]), "pairs": [list(p) for p in pairs]}


def finalize(net: nn.Module) -> nn.Module:
    """A deploy copy of a trained network: SpRe branches merged, every mask baked into plain layers."""
    from squeeze.methods.spre.spre import merge_spre  # noqa: PLC0415

    out = copy.deepcopy(net).eval()
    merge_spre(out)
    bake(out)
    return out


class NMTask(SubsetBatches):
    """Engine task: fine-tune ``float_net`` under ``cfg``'s N:M method (or dense, the baseline)."""

    find_unused_parameters = False

    def __init__(self, cfg: NMConfig, float_net: nn.Module, float_tag: str, data: tuple[torch.Tensor, torch.Tensor],
                 test: tuple[torch.Tensor, torch.Tensor]) -> None:
        self.cfg, self.float_net, self.float_tag, self.data, self.test = cfg, float_net, float_tag, data, test
        self.name, self.epochs, self.seed = f"nm-{cfg.method}-{cfg.n}of{cfg.m}", cfg.epochs, cfg.seed
        self.lr = cfg.lr or DEFAULT_LR[cfg.model]
        self.hflip = cfg.model == "resnet-fmnist"  # the N:M pages train the ViT without flips
        self.info: dict[str, Any] = {"layers": [], "pairs": []}

    def identity(self) -> dict[str, Any]:
        return {"config": self.cfg.to_dict(), "float_weights": self.float_tag, "train_size": len(self.data[0])}

    def build(self) -> tuple[nn.Module, list[torch.optim.Optimizer]]:
        net = copy.deepcopy(self.float_net).train()
        self.info = prepare_sparse(net, self.cfg)
        groups = decay_groups(net.named_parameters(), self.cfg.weight_decay)
        if self.cfg.model == "vit-fmnist":
            return net, [torch.optim.AdamW(groups, lr=self.lr)]
        return net, [torch.optim.SGD(groups, lr=self.lr, momentum=0.9, nesterov=True)]

    def train_step(self, ctx: StepContext, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, float]:
        factor = lr_factor(ctx.step, ctx.total_steps)
        for opt in ctx.optimizers:
            for group in opt.param_groups:
                group["lr"] = self.lr * factor
        x, y = (t.to(ctx.device) for t in batch)
        loss = F.cross_entropy(ctx.model(x), y)
        ctx.backward(loss)
        return {"loss": loss.item()}

    def evaluate(self, module: nn.Module) -> dict[str, float]:
        n = self.cfg.eval_subset or len(self.test[0])
        was_training = module.training
        try:
            return {"test_top1": evaluate_top1(module, self.test[0][:n], self.test[1][:n])}
        finally:
            module.train(was_training)
