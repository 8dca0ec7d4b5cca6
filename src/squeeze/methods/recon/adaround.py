"""AdaRound (Nagel, Amjad, van Baalen, Louizos, Blankevoort, "Up or Down? Adaptive Rounding for
Post-Training Quantization", ICML 2020) as a ViT PTQ baseline.

Layer-wise: every weight layer, in execution order, learns its rounding (:mod:`.rounding`) so that
its output on the *quantized* model's input (upstream layers already rounded, activations
quantized with fixed, calibrated ranges) matches the float layer's output on the float input (the
paper's asymmetric reconstruction). The ERQ paper's "AdaRound*" row runs it on RepQ-ViT's
activation quantizers, the default here.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from squeeze.config import register_method
from squeeze.methods.recon.common import ReconConfig, ReconPlan, recon_handler
from squeeze.quant.attach import attach_quantizers, probe_roles
from squeeze.quant.reconstruct import float_copy, paired_walk


@dataclass
class AdaRoundConfig(ReconConfig):
    """AdaRound. Example: ``make_config("adaround", wbits=4, abits=4, calib=128, iters=300)``.

    Fields are those of :class:`~squeeze.methods.recon.common.ReconConfig`.
    """

    method = "adaround"


@register_method(AdaRoundConfig, "AdaRound (ICML'20): layer-wise learned rounding on RepQ-ViT activation quantizers")
def apply_adaround(model: nn.Module, config: AdaRoundConfig, batches: list[torch.Tensor]) -> None:
    """Quantize a prepared model in place with AdaRound."""
    fp_model = float_copy(model)
    roles = probe_roles(model, batches[0][:1])
    attach_quantizers(model, config, roles, config.act_scheme, weight_estimator=config.weight_estimator)  # type: ignore[arg-type]
    plan = ReconPlan(mode="layer", input_source="quant")
    paired_walk(model, fp_model, batches, recon_handler(fp_model, roles, config, plan), desc="adaround")
