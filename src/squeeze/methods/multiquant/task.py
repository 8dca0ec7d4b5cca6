"""MultiQuant training as an engine task: every (or a sampled set of) bit width(s) per step, widest first,
with in-place distillation from the widest (MBQuant, Zhong et al., arXiv 2305.08117, section 3.4)."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from squeeze.devices import model_device
from squeeze.methods.multiquant.config import MultiQuantConfig
from squeeze.methods.multiquant.network import MultiBitResNet
from squeeze.methods.multiquant.quantizers import soft_cross_entropy
from squeeze.methods.multiquant.reorder import order_by_importance
from squeeze.train.classifier import SubsetBatches, decay_groups, lr_factor
from squeeze.train.engine import StepContext, derived_seed
from squeeze.zoo.resnet_fmnist import ResNetFmnist


def step_bits(bits: tuple[int, ...], train_bits: int, step: int, seed: int) -> list[int]:
    """Bit widths trained at ``step``, widest first: all of them, or the widest, the narrowest and
    ``train_bits - 2`` others drawn from ``(seed, step)`` (identical on every rank)."""
    ordered = sorted(bits, reverse=True)
    if not train_bits or train_bits >= len(bits):
        return ordered
    middle = ordered[1:-1]
    gen = torch.Generator().manual_seed(derived_seed(seed, step, 13))
    picked = [middle[i] for i in torch.randperm(len(middle), generator=gen)[: train_bits - 2].tolist()]
    return [ordered[0], *sorted(picked, reverse=True), ordered[-1]]


def distill_loss(logits: torch.Tensor, labels: torch.Tensor, teacher: torch.Tensor | None) -> torch.Tensor:
    """CE for the teacher (``teacher=None``); otherwise 1/2 (soft CE to the teacher + CE to the labels)."""
    ce = F.cross_entropy(logits, labels)
    if teacher is None:
        return ce
    return 0.5 * (soft_cross_entropy(logits, teacher) + ce)


@torch.no_grad()
def evaluate_bits(net: MultiBitResNet, x: torch.Tensor, y: torch.Tensor, bits: int, batch_size: int = 500) -> float:
    """Top-1 (%) of ``net`` at activation bit width ``bits`` on ``x``/``y`` (restores train/eval mode)."""
    was_training, before = net.training, net.bits
    net.eval()
    net.set_bits(bits)
    device = model_device(net)
    correct = 0
    try:
        for i in range(0, len(x), batch_size):
            logits = net(x[i:i + batch_size].to(device))
            correct += (logits.argmax(-1).cpu() == y[i:i + batch_size]).sum().item()
    finally:
        net.set_bits(before)
        net.train(was_training)
    return 100.0 * correct / len(x)


class MultiQuantTask(SubsetBatches):
    """Engine task for :class:`MultiQuantConfig` (every variant), started from a float network."""

    find_unused_parameters = True  # branches and per-bit norms sit idle at some bit widths

    def __init__(self, cfg: MultiQuantConfig, float_net: ResNetFmnist, float_tag: str,
                 data: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor]) -> None:
        self.cfg, self.float_net, self.float_tag, self.data, self.test = cfg, float_net, float_tag, data, test
        self.name, self.epochs, self.seed = cfg.variant, cfg.epochs, cfg.seed

    def identity(self) -> dict[str, Any]:
        return {"config": self.cfg.identity(), "float_weights": self.float_tag, "train_size": len(self.data[0])}

    def build(self) -> tuple[nn.Module, list[torch.optim.Optimizer]]:
        net = MultiBitResNet(self.float_net.arch, self.cfg)
        start = self.float_net
        if self.cfg.multi_branch and self.cfg.partial_init == "importance":
            start = order_by_importance(self.float_net, self._start_images())
        net.init_from_float(start, self.cfg.branch_noise, self.cfg.seed, self.cfg.weight_init)
        quant = net.quantizer_parameters()
        ids = {id(p) for p in quant}
        weights = [(n, p) for n, p in net.named_parameters() if id(p) not in ids]
        sgd = torch.optim.SGD(decay_groups(weights, self.cfg.weight_decay), lr=self.cfg.lr, momentum=self.cfg.momentum)
        return net, [sgd, torch.optim.Adam(quant, lr=self.cfg.quant_lr)]

    def _start_images(self) -> torch.Tensor:
        """The one training batch that sets the start (channel order, quantizer ranges); the same on every rank."""
        return next(iter(self.batches(-1, 0, 1)))[0]

    @torch.no_grad()
    def prepare(self, module: nn.Module, device: torch.device) -> None:
        """Paper init of activation ranges: one no-grad training batch per bit width."""
        x = self._start_images()
        was_training = module.training
        module.train()
        convs = [m for m in module.modules() if hasattr(m, "init_activations")]
        try:
            for bits in tqdm(self.cfg.bits, desc="init quantizers", leave=False):
                module.set_bits(bits)
                for m in convs:
                    m.init_activations = True
                module(x.to(device))
                for m in convs:
                    m.init_activations = False
        finally:
            for m in convs:
                m.init_activations = False
            module.set_bits(max(self.cfg.bits))
            module.train(was_training)

    def train_step(self, ctx: StepContext, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, float]:
        factor = lr_factor(ctx.step, ctx.total_steps)
        for opt, base in zip(ctx.optimizers, (self.cfg.lr, self.cfg.quant_lr)):
            for group in opt.param_groups:
                group["lr"] = base * factor
        x, y = (t.to(ctx.device) for t in batch)
        bits_now = step_bits(self.cfg.bits, self.cfg.train_bits, ctx.step, self.cfg.seed)
        teacher, losses = None, []
        for i, bits in enumerate(bits_now):
            ctx.module.set_bits(bits)
            last = i == len(bits_now) - 1
            # DDP: accumulate every width's gradients locally, all-reduce once with the last backward
            with ctx.no_sync(not last):
                logits, partial = ctx.model(x, with_partial=True)
                use_teacher = teacher if self.cfg.distill else None
                loss = distill_loss(logits, y, use_teacher)
                if partial is not None and self.cfg.partial_loss:
                    loss = loss + self.cfg.partial_loss * distill_loss(partial, y, use_teacher)
                ctx.backward(loss)
            if bits == self.cfg.teacher_bits:
                teacher = logits.detach()
            losses.append(loss.item())
        ctx.module.set_bits(max(self.cfg.bits))
        return {"loss": sum(losses) / len(losses), "loss_widest": losses[0]}

    def evaluate(self, module: nn.Module) -> dict[str, float]:
        n = self.cfg.eval_subset or len(self.test[0])
        x, y = self.test[0][:n], self.test[1][:n]
        bits = tqdm(self.cfg.bits, desc="evaluate bit widths", leave=False)
        return {f"top1_a{b}": evaluate_bits(module, x, y, b) for b in bits}
