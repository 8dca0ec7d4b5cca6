"""I&S-ViT (Zhong, Hu, Lin, Chen, Ji, "I&S-ViT: An Inclusive & Stable Method for Pushing the Limit
of Post-Training ViTs Quantization", arXiv 2311.10126, 2023), written from the paper.

Quantizers: RepQ-ViT's (percentile-MSE ranges; per-channel quantizers on the post-LayerNorm inputs
of qkv / fc1; per-channel weights) with the post-softmax quantizer replaced by SULQ, the
shift-uniform-log2 quantizer (``QuantSpec(bits, kind="sulq")``; ``log2`` and ``uniform`` for the
ablation). Smooth optimization strategy (SOS), each stage block by block with the engine of
:mod:`squeeze.quant.reconstruct` (units: every block, plus each layer outside the blocks -- patch
embedding conv and head -- on its own):

1. float weights, quantized activations; inputs of each unit cached from the *float* model,
   targets the float outputs; Linear/Conv weights and biases trained;
2. RepQ-ViT reparameterization of the per-channel post-LN quantizers to per-tensor ones
   (lossless: the weights are still float);
3. per-channel weight quantizers calibrated, then the same reconstruction with everything
   quantized, inputs from the *quantized* model; the latent float weights move through the
   straight-through estimator while every quantizer parameter stays frozen.

``stages=1`` is the single-stage ablation: RepQ-ViT initialisation (calibrate, reparameterize,
round), then only stage 3.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch import nn

from squeeze.config import QuantConfig, register_method
from squeeze.devices import model_device
from squeeze.errors import SqueezeError
from squeeze.methods.recon.common import check_recon_fields, execution_order
from squeeze.methods.repq_vit.method import reparameterize_stage
from squeeze.methods.steps import calibrate_activations, round_weights, weight_layers
from squeeze.quant.attach import Roles, attach_quantizers, probe_roles, softmax_spec
from squeeze.quant.calibrate import Stage, find_blocks, walk
from squeeze.quant.modules import QuantConv2d, QuantLinear, QuantMatMul
from squeeze.quant.prepare import attention_modules
from squeeze.quant.quantizer import Quantizer
from squeeze.quant.reconstruct import (InputSource, ReconOptions, UnitData, block_data, float_copy, layer_data,
                                       paired_walk, reconstruct, unit_forward)

SOFTMAX_QUANTIZERS = ("sulq", "log2", "uniform")
Layer = QuantLinear | QuantConv2d


@dataclass
class ISViTConfig(QuantConfig):
    """I&S-ViT. Example: ``make_config("isvit", wbits=3, abits=3, calib=128, iters=300)``.

    Attributes:
        softmax_quantizer: post-softmax quantizer: ``sulq`` (default), ``log2`` or ``uniform``.
        stages: 3 (stage 1 + reparameterization + stage 3, the paper) or 1 (single stage: one
            reconstruction with everything quantized, the ablation).
        iters: Adam steps per unit and stage (paper: 1000 at W3/W4, 200 at W6 on ImageNet). The
            default 100 is sized for a CPU; on ``vit-fmnist`` W3A3, 50 / 100 / 200 steps gave
            87.3 / 87.6 / 87.3 % top-1 (one calibration seed).
        recon_batch: calibration samples drawn at random per step (paper: 64); a value above
            ``calib`` is clamped to ``calib`` with a warning.
        lr: Adam learning rate with cosine decay to 0 (paper: 4e-5 over 1000 steps; the default
            1e-4 lets the weights move about as far in the ~100 steps a CPU run affords).
        weight_estimator: per-channel weight range search: ``mse`` (percentile search, RepQ-ViT)
            or ``minmax``.
    """

    method = "isvit"
    softmax_quantizer: str = "sulq"
    stages: int = 3
    iters: int = 100
    recon_batch: int = 32
    lr: float = 1e-4
    weight_estimator: str = "mse"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.softmax_quantizer not in SOFTMAX_QUANTIZERS:
            raise SqueezeError(f"softmax_quantizer={self.softmax_quantizer!r}; use sulq, log2 or uniform")
        if self.stages not in (1, 3):
            raise SqueezeError(f"stages={self.stages!r}; use 3 (I&S-ViT) or 1 (single-stage ablation)")
        if self.weight_estimator not in ("minmax", "mse", "omse"):
            raise SqueezeError(f"weight_estimator={self.weight_estimator!r}; use minmax, mse or omse")
        check_recon_fields(self.iters, self.recon_batch, self.lr)


def require_attention_blocks(model: nn.Module) -> None:
    """Refuse models without recognised attention inside a stack of blocks (one clear line)."""
    _, blocks = find_blocks(model)
    if not attention_modules(model) or not blocks:
        raise SqueezeError("isvit needs a vision transformer with attention blocks (timm ViT/DeiT/Swin or "
                           "transformers ViT/DeiT/Dinov2); this model has none; use gptq, rtn or brecq instead")


def attach_isvit_quantizers(model: nn.Module, config: ISViTConfig, roles: Roles) -> None:
    """RepQ-ViT quantizers with the post-softmax quantizer of ``config.softmax_quantizer``."""
    attach_quantizers(model, config, roles, "repq", weight_estimator=config.weight_estimator)
    device = model_device(model)
    for name, mod in model.named_modules():
        if isinstance(mod, QuantMatMul) and name.endswith("matmul2") and mod.a_quantizer is not None:
            _, abits = config.bits_for(name)
            # on the model's device: SULQ installs its parameters on the device of its (empty) buffers
            mod.a_quantizer = Quantizer(softmax_spec(abits, "repq", kind=config.softmax_quantizer)).to(device)


def _units(stage: Stage, fp_stage: Stage, fp_model: nn.Module) -> Iterator[tuple[str, nn.Module, list[Layer], UnitData]]:
    """The stage's reconstruction units with their data: the block, or each layer in execution order.

    Layer data is collected lazily, after the previous layer of the stage was reconstructed.
    """
    layers = weight_layers(stage)
    if stage.module is not None:
        yield stage.name, stage.module, [m for _, m in layers], block_data(stage, fp_stage)
        return
    for name, layer in execution_order(stage, layers):
        yield name, layer, [layer], layer_data(stage, fp_stage, layer, fp_model.get_submodule(name))


def _reconstruct_units(stage: Stage, fp_stage: Stage, fp_model: nn.Module, config: ISViTConfig,
                       source: InputSource, label: str) -> None:
    """Train the Linear/Conv weights and biases of each unit (quantizer parameters frozen)."""
    for name, unit, layers, data in _units(stage, fp_stage, fp_model):
        params = [p for layer in layers for p in (layer.weight, layer.bias) if p is not None]
        options = ReconOptions(config.iters, config.recon_batch, source, seed=config.seed, desc=f"{label} {name}")
        reconstruct(unit_forward(unit, data), data, [{"params": params, "lr": config.lr}], options, [unit])


def stage1_handler(fp_model: nn.Module, config: ISViTConfig) -> Callable[[Stage, Stage], None]:
    """Stage 1: calibrate activations (weights float), reconstruct on the float model's inputs."""
    def handle(stage: Stage, fp_stage: Stage) -> None:
        calibrate_activations(stage)
        _reconstruct_units(stage, fp_stage, fp_model, config, "fp", "stage 1")
    return handle


def stage2_reparameterize(model: nn.Module, roles: Roles, batches: list[torch.Tensor]) -> None:
    """Stage 2: per-channel post-LN quantizers -> per-tensor (RepQ-ViT), float outputs unchanged."""
    walk(model, batches, lambda stage: reparameterize_stage(stage, roles), desc="isvit stage 2")


def stage3_handler(fp_model: nn.Module, config: ISViTConfig, roles: Roles) -> Callable[[Stage, Stage], None]:
    """Stage 3: calibrate weight quantizers, reconstruct everything quantized on quantized inputs.

    With ``config.stages == 1`` the activations are first calibrated and reparameterized here.
    """
    def handle(stage: Stage, fp_stage: Stage) -> None:
        if config.stages == 1:
            calibrate_activations(stage)
            reparameterize_stage(stage, roles)
        round_weights(stage)
        _reconstruct_units(stage, fp_stage, fp_model, config, "quant", "stage 3")
    return handle


@register_method(ISViTConfig, "I&S-ViT (arXiv'23): SULQ post-softmax + three-stage smooth block reconstruction")
def apply_isvit(model: nn.Module, config: ISViTConfig, batches: list[torch.Tensor]) -> None:
    """Quantize a prepared vision transformer in place with I&S-ViT."""
    require_attention_blocks(model)
    fp_model = float_copy(model)
    roles = probe_roles(model, batches[0][:1])
    attach_isvit_quantizers(model, config, roles)
    if config.stages == 3:
        paired_walk(model, fp_model, batches, stage1_handler(fp_model, config), desc="isvit stage 1")
        stage2_reparameterize(model, roles, batches)
    paired_walk(model, fp_model, batches, stage3_handler(fp_model, config, roles), desc="isvit stage 3")
