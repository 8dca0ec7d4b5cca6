"""GPTQ as a ViT/CNN PTQ method: GPTQ weights on the same activation quantizers as the baselines.

The ERQ/I&S-ViT papers' "GPTQ*" rows run GPTQ on RepQ-ViT's activation quantizers; that is the
default here (``act_scheme="repq"``), and ``minmax``/``percentile`` give GPTQ on RTN's quantizers.
Per stage: calibrate activations (and reparameterize), accumulate ``H = X^T X`` of each layer's
*quantized* input over the calibration set, then solve each layer with :func:`gptq_quantize`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from squeeze.config import QuantConfig, register_method
from squeeze.errors import SqueezeError
from squeeze.methods.gptq.solver import gptq_quantize
from squeeze.methods.repq_vit.method import reparameterize_stage
from squeeze.methods.steps import calibrate_activations, quantize_weight_rtn, weight_layers
from squeeze.quant import primitives as P
from squeeze.quant.attach import Roles, attach_quantizers, check_schemes, probe_roles
from squeeze.quant.calibrate import Stage, walk
from squeeze.quant.modules import QuantConv2d, QuantLinear


@dataclass
class GPTQConfig(QuantConfig):
    """GPTQ. Example: ``make_config("gptq", wbits=4, abits=8, calib=32)``.

    Attributes:
        act_scheme: activation quantizers: ``repq`` (RepQ-ViT's, default), ``minmax`` or ``percentile``.
        weight_estimator: per-channel weight range: ``minmax`` (GPTQ paper) or ``mse``.
        blocksize, percdamp, act_order: solver options (see :func:`gptq_quantize`).
    """

    method = "gptq"
    act_scheme: str = "repq"
    weight_estimator: str = "minmax"
    blocksize: int = 128
    percdamp: float = 0.01
    act_order: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check_schemes(self.act_scheme, self.weight_estimator)
        if not 0 < self.percdamp < 1:
            raise SqueezeError("percdamp must be in (0, 1), e.g. 0.01")


def layer_rows(layer: QuantLinear | QuantConv2d, x: torch.Tensor) -> torch.Tensor:
    """The layer's input as (samples, in_features) rows matching ``weight.reshape(out, -1)``."""
    if isinstance(layer, QuantConv2d):
        cols = F.unfold(x, layer.kernel_size, layer.dilation, layer.padding, layer.stride)  # (N, C*k*k, L)
        return cols.transpose(1, 2).reshape(-1, cols.shape[1])
    return x.reshape(-1, x.shape[-1])


def collect_hessians(stage: Stage, layers: list[tuple[str, QuantLinear | QuantConv2d]]) -> dict[str, torch.Tensor]:
    """``X^T X / n`` of each layer's quantized input over one pass of the stage (hooks removed)."""
    hess = {n: torch.zeros(l.weight[0].numel(), l.weight[0].numel(), dtype=torch.float64, device=l.weight.device)
            for n, l in layers}
    count = {n: 0 for n, _ in layers}

    def hook(name: str, layer: QuantLinear | QuantConv2d):
        def fn(_m: nn.Module, args: tuple) -> None:
            x = args[0] if layer.input_quantizer is None else layer.input_quantizer(args[0])
            rows = layer_rows(layer, x.detach()).double()
            hess[name] += rows.T @ rows
            count[name] += rows.shape[0]
        return fn

    handles = [l.register_forward_pre_hook(hook(n, l)) for n, l in layers]
    try:
        stage.run()
    finally:
        for h in handles:
            h.remove()
    return {n: hess[n] / max(1, count[n]) for n in hess}


def gptq_layer(layer: QuantLinear | QuantConv2d, h: torch.Tensor, config: GPTQConfig) -> None:
    """Replace ``layer.weight`` by its GPTQ-quantized values on the weight quantizer's grid."""
    quantize_weight_rtn(layer)  # fixes the per-row grid from the original weight
    q = layer.weight_quantizer
    assert q is not None
    qmin, qmax = P.int_range(q.spec.bits, q.spec.symmetric)
    scale, zp = q.scale.reshape(-1), q.zero_point.reshape(-1)  # per output row

    def quant_col(col: torch.Tensor, _j: int) -> torch.Tensor:
        return P.dequantize(P.quantize(col, scale, zp, qmin, qmax), scale, zp)

    w2d = layer.weight.detach().reshape(layer.weight.shape[0], -1)
    new = gptq_quantize(w2d, h, quant_col, config.blocksize, config.percdamp, config.act_order)
    with torch.no_grad():
        layer.weight.copy_(new.reshape(layer.weight.shape))


def gptq_stage(roles: Roles, config: GPTQConfig):
    """Stage handler: activations (+ RepQ reparam), Hessians, then GPTQ per layer."""
    def handle(stage: Stage) -> None:
        calibrate_activations(stage)
        if config.act_scheme == "repq":
            reparameterize_stage(stage, roles)
        layers = weight_layers(stage)
        solvable = [(n, l) for n, l in layers
                    if l.weight_quantizer.spec.granularity.kind == "channel"  # type: ignore[union-attr]
                    and getattr(l, "groups", 1) == 1]
        hessians = collect_hessians(stage, solvable)
        for name, layer in layers:
            if name in hessians:
                gptq_layer(layer, hessians[name], config)
            else:
                quantize_weight_rtn(layer)  # grouped/depthwise convs: documented RTN fallback
    return handle


@register_method(GPTQConfig, "GPTQ weights (ICLR'23) on RepQ-ViT or RTN activation quantizers")
def apply_gptq(model: nn.Module, config: GPTQConfig, batches: list[torch.Tensor]) -> None:
    """Quantize a prepared model in place with GPTQ."""
    roles = probe_roles(model, batches[0][:1])
    attach_quantizers(model, config, roles, config.act_scheme, weight_estimator=config.weight_estimator)  # type: ignore[arg-type]
    walk(model, batches, gptq_stage(roles, config), desc="gptq")
