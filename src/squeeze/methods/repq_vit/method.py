"""RepQ-ViT (Li, Xiao, Liu, Zhang, "RepQ-ViT: Scale Reparameterization for Post-Training
Quantization of Vision Transformers", ICCV 2023).

Per-channel quantizers on post-LayerNorm activations during calibration, reparameterized into
per-tensor quantizers (folding the channel scales into LayerNorm and the next Linear); log-sqrt2
quantizer for post-softmax probabilities; percentile-MSE range search for the rest.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from squeeze.config import QuantConfig, register_method
from squeeze.methods.repq_vit.reparam import fold_into_layernorm, reparam_targets
from squeeze.methods.steps import block_modules, calibrate_activations, round_weights
from squeeze.quant.attach import Roles, attach_quantizers, probe_roles
from squeeze.quant.calibrate import Stage, walk
from squeeze.quant.modules import QuantLinear
from squeeze.quant.primitives import Granularity
from squeeze.quant.quantizer import Quantizer


@dataclass
class RepQViTConfig(QuantConfig):
    """RepQ-ViT. ``reparam=False`` keeps per-channel post-LN quantizers (ablation, not deployable).

    Example: ``make_config("repq-vit", wbits=4, abits=4, calib=32)``.
    """

    method = "repq-vit"
    reparam: bool = True


def reparameterize_stage(stage: Stage, roles: Roles) -> None:
    """Fold the per-channel post-LN input quantizers of this stage into per-tensor ones."""
    names = dict(stage.members)
    for ln_name, norm in block_modules(stage):
        consumers = [names.get(n) for n in roles.post_ln.get(ln_name, [])]
        if not consumers or not all(isinstance(c, QuantLinear) for c in consumers):
            continue
        if not isinstance(norm, nn.LayerNorm) or norm.weight is None:
            continue  # documented fallback: keep per-channel quantizers
        first = consumers[0].input_quantizer
        assert first is not None and first.calibrated
        r, b, s_bar, z_bar = reparam_targets(first.scale.reshape(-1), first.zero_point.reshape(-1))
        fold_into_layernorm(norm, consumers, r, b)  # type: ignore[arg-type]
        for layer in consumers:
            q = Quantizer(replace(first.spec, granularity=Granularity("tensor")))
            q.set_params(s_bar.reshape(1, 1), z_bar.reshape(1, 1))
            q.mode = "quant"
            layer.input_quantizer = q


def repq_stage(roles: Roles, reparam: bool = True):
    """Stage handler: calibrate activations, reparameterize post-LN quantizers, then weights."""
    def handle(stage: Stage) -> None:
        calibrate_activations(stage)
        if reparam:
            reparameterize_stage(stage, roles)
        round_weights(stage)
    return handle


@register_method(RepQViTConfig, "RepQ-ViT: reparameterized post-LN scales + log-sqrt2 softmax (ICCV'23)")
def apply_repq_vit(model: nn.Module, config: RepQViTConfig, batches: list[torch.Tensor]) -> None:
    """Quantize a prepared ViT in place with RepQ-ViT."""
    roles = probe_roles(model, batches[0][:1])
    attach_quantizers(model, config, roles, "repq", weight_estimator="mse")
    walk(model, batches, repq_stage(roles, config.reparam), desc="repq-vit")
