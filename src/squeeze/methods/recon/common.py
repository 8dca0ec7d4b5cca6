"""Shared pieces of the reconstruction baselines (AdaRound, BRECQ, QDrop).

All three run on the same activation quantizers as the other ViT methods (RepQ-ViT's by default:
percentile-MSE ranges, per-channel post-LayerNorm quantizers reparameterized to per-tensor,
log-sqrt2 post-softmax), so a comparison isolates the weight rounding / reconstruction part. The
walk is :func:`squeeze.quant.reconstruct.paired_walk`: per stage, activations are calibrated on the
quantized model's inputs, then every unit is reconstructed against the float copy's outputs.

Units: ``layer`` mode (AdaRound) reconstructs every weight layer on its own, in execution order;
``block`` mode (BRECQ, QDrop) reconstructs each transformer block as one unit and the layers
outside the blocks (patch embedding, head) as single layers.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch import nn

from squeeze.config import QuantConfig
from squeeze.errors import SqueezeError
from squeeze.methods.recon.rounding import AdaRoundWeight, adaround, annealed_beta
from squeeze.methods.repq_vit.method import reparameterize_stage
from squeeze.methods.steps import act_quantizers, calibrate_activations, quantize_weight_rtn, weight_layers
from squeeze.quant.attach import Roles, check_schemes
from squeeze.quant.calibrate import Stage
from squeeze.quant.modules import QuantConv2d, QuantLinear
from squeeze.quant.quantizer import Quantizer
from squeeze.quant.reconstruct import (InputSource, ReconOptions, UnitData, block_data, layer_data, reconstruct,
                                       unit_forward)

Layer = QuantLinear | QuantConv2d


@dataclass
class ReconConfig(QuantConfig):
    """Options shared by the reconstruction baselines (not a method itself).

    Attributes:
        act_scheme: activation quantizers: ``repq`` (RepQ-ViT's, default, as GPTQ), ``minmax`` or
            ``percentile``.
        weight_estimator: per-channel weight range before rounding is learned: ``mse`` (percentile
            search, as BRECQ/RepQ-ViT) or ``minmax``.
        iters: Adam steps per unit (the papers use 20000 on ImageNet). The default 100 is sized
            for a CPU: on ``vit-fmnist`` (4 blocks, width 128) a block step with a batch of 32
            costs ~0.1 s on one thread, and accuracy no longer improved beyond ~100 steps.
        recon_batch: calibration samples drawn at random per step; a value above ``calib`` is
            clamped to ``calib`` with a warning.
        lr: Adam learning rate of the rounding logits ``V`` (papers: 1e-3 over 20000 steps; with a
            few hundred steps ``V`` needs a larger step to move).
        reg_weight: weight ``lambda`` of the rounding regulariser (papers: 0.01).
        warmup: fraction of the steps without the rounding regulariser (papers: 0.2).
        beta_start, beta_end: annealing range of the regulariser's exponent (papers: 20 -> 2).
    """

    act_scheme: str = "repq"
    weight_estimator: str = "mse"
    iters: int = 100
    recon_batch: int = 32
    lr: float = 1e-2
    reg_weight: float = 0.01
    warmup: float = 0.2
    beta_start: float = 20.0
    beta_end: float = 2.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_schemes(self.act_scheme, self.weight_estimator)
        check_recon_fields(self.iters, self.recon_batch, self.lr)
        if not 0 <= self.warmup < 1:
            raise SqueezeError(f"warmup={self.warmup} must be in [0, 1), e.g. 0.2")
        if self.reg_weight < 0 or not self.beta_start >= self.beta_end > 0:
            raise SqueezeError("need reg_weight >= 0 and beta_start >= beta_end > 0 (e.g. 20 and 2)")


def check_recon_fields(iters: int, recon_batch: int, lr: float) -> None:
    """Validate the reconstruction fields every method shares (one clear line each)."""
    if not isinstance(iters, int) or iters < 0:
        raise SqueezeError(f"iters={iters!r} must be a non-negative integer, e.g. 300")
    if not isinstance(recon_batch, int) or recon_batch < 1:
        raise SqueezeError(f"recon_batch={recon_batch!r} must be a positive integer, e.g. 32")
    if not lr > 0:
        raise SqueezeError(f"lr={lr} must be positive")


@contextmanager
def learnable_steps(quantizers: list[Quantizer]) -> Iterator[list[torch.Tensor]]:
    """LSQ-style (Esser et al., ICLR 2020) trainable step sizes of calibrated uniform quantizers.

    The ``scale`` buffers become leaf tensors that require grad (the fake-quantizer's
    straight-through rounding gives LSQ's gradient); on exit they are detached and kept positive.
    Zero points and log-domain quantizers stay fixed.
    """
    chosen = [q for q in quantizers if q.spec.kind == "uniform" and q.calibrated and q.mode == "quant"]
    try:
        for q in chosen:
            q.scale = q.scale.detach().clone().requires_grad_(True)
        yield [q.scale for q in chosen]
    finally:
        for q in chosen:
            q.scale = q.scale.detach().clamp_min(1e-8)


@dataclass
class ReconPlan:
    """What a baseline learns: unit mode, input source, LSQ steps, QDrop dropping."""

    mode: str  # "layer" (every weight layer alone) or "block" (blocks; outside layers alone)
    input_source: InputSource
    act_lr: float = 0.0  # learning rate of the activation step sizes; 0 keeps the ranges fixed
    drop_prob: float = 0.0  # QDrop: probability of keeping an activation element float


def execution_order(stage: Stage, layers: list[tuple[str, Layer]]) -> list[tuple[str, Layer]]:
    """``layers`` sorted by when they first run in the stage (hooks removed in ``finally``)."""
    first: dict[int, int] = {}

    def seen(mod: nn.Module, _args: tuple) -> None:  # a pre-hook must return None (else it replaces the input)
        first.setdefault(id(mod), len(first))

    handles = [m.register_forward_pre_hook(seen) for _, m in layers]
    try:
        stage.run()
    finally:
        for h in handles:
            h.remove()
    ran = [(n, m) for n, m in layers if id(m) in first]
    return sorted(ran, key=lambda nm: first[id(nm[1])])


def _regularizer(adas: list[AdaRoundWeight], config: ReconConfig) -> Callable[[int], torch.Tensor]:
    def reg(step: int) -> torch.Tensor:
        beta = annealed_beta(step, config.iters, config.warmup, config.beta_start, config.beta_end)
        if beta is None or config.reg_weight == 0:
            return adas[0].alpha.new_zeros(())
        return config.reg_weight * sum(a.regularizer(beta) for a in adas)  # type: ignore[return-value]
    return reg


def reconstruct_unit(unit: nn.Module, layers: list[Layer], quantizers: list[Quantizer], data: UnitData,
                     config: ReconConfig, plan: ReconPlan, desc: str) -> None:
    """AdaRound the ``layers`` of one unit (plus LSQ steps of ``quantizers``), then bake the rounding."""
    for layer in layers:
        quantize_weight_rtn(layer)  # fixes the grid from the current float weight
    options = ReconOptions(config.iters, config.recon_batch, plan.input_source, fp_input_prob=plan.drop_prob,
                           drop_quantizers=quantizers, drop_prob=plan.drop_prob, seed=config.seed, desc=desc)
    with adaround(layers) as adas, learnable_steps(quantizers if plan.act_lr > 0 else []) as steps:
        groups = [{"params": [a.alpha for a in adas], "lr": config.lr}]
        if steps:
            groups.append({"params": steps, "lr": plan.act_lr})

        def harden() -> None:
            for a in adas:
                a.hard = True
        reconstruct(unit_forward(unit, data), data, groups, options, [unit], _regularizer(adas, config), harden)


def layer_quantizers(layer: Layer) -> list[Quantizer]:
    """The layer's input quantizer, if any (the only activation quantizer of a single-layer unit)."""
    return [layer.input_quantizer] if layer.input_quantizer is not None else []


def recon_handler(fp_model: nn.Module, roles: Roles, config: ReconConfig, plan: ReconPlan
                  ) -> Callable[[Stage, Stage], None]:
    """Paired-walk handler: calibrate activations (+ RepQ reparam), then reconstruct the stage's units."""
    def handle(stage: Stage, fp_stage: Stage) -> None:
        calibrate_activations(stage)
        if config.act_scheme == "repq":
            reparameterize_stage(stage, roles)
        layers = weight_layers(stage)
        if not layers:
            return
        if plan.mode == "block" and stage.module is not None:
            data = block_data(stage, fp_stage)
            reconstruct_unit(stage.module, [m for _, m in layers], act_quantizers(stage), data, config, plan,
                             desc=stage.name)
            return
        ordered = execution_order(stage, layers)
        for name, layer in ordered:
            data = layer_data(stage, fp_stage, layer, fp_model.get_submodule(name))
            reconstruct_unit(layer, [layer], layer_quantizers(layer), data, config, plan, desc=name)
        for _, layer in set(layers) - set(ordered):  # never executed: plain rounding keeps them quantized
            quantize_weight_rtn(layer)
    return handle
