"""Reusable per-stage calibration steps that methods compose inside the block walk."""
from __future__ import annotations

from torch import nn

from squeeze.quant.calibrate import Stage
from squeeze.quant.modules import QuantConv2d, QuantLinear, QuantMatMul
from squeeze.quant.quantizer import Quantizer


def act_quantizers(stage: Stage) -> list[Quantizer]:
    """Input quantizers of the stage's layers and operand quantizers of its matmuls."""
    found: list[Quantizer | None] = []
    for _, mod in stage.members:
        if isinstance(mod, QuantMatMul):
            found += [mod.a_quantizer, mod.b_quantizer]
        else:
            found.append(mod.input_quantizer)
    return [q for q in found if q is not None]


def weight_layers(stage: Stage) -> list[tuple[str, QuantLinear | QuantConv2d]]:
    """The stage's layers that carry a weight quantizer."""
    return [(n, m) for n, m in stage.members
            if isinstance(m, (QuantLinear, QuantConv2d)) and m.weight_quantizer is not None]


def calibrate_activations(stage: Stage) -> None:
    """Observe the stage's activation quantizers on the cached inputs, then fix their ranges."""
    quantizers = act_quantizers(stage)
    if not quantizers:
        return
    for q in quantizers:
        q.mode = "observe"
    stage.run()
    for q in quantizers:
        q.finalize()
        q.mode = "quant"


def rtn_stage(stage: Stage) -> None:
    """Round-to-nearest for one stage: weights from their own ranges, then activations observed and fixed."""
    round_weights(stage)
    calibrate_activations(stage)


def round_weights(stage: Stage) -> None:
    """Round-to-nearest: set each weight quantizer's range from its weight and switch it on."""
    for _, layer in weight_layers(stage):
        quantize_weight_rtn(layer)


def quantize_weight_rtn(layer: QuantLinear | QuantConv2d) -> None:
    """Calibrate ``layer.weight_quantizer`` on the current weight and enable it."""
    q = layer.weight_quantizer
    assert q is not None
    q.calibrate(layer.weight)
    q.mode = "quant"


def block_modules(stage: Stage) -> list[tuple[str, nn.Module]]:
    """All submodules of a block stage (empty for prefix/suffix), with qualified names."""
    if stage.module is None:
        return []
    return [(f"{stage.name}.{n}" if n else stage.name, m) for n, m in stage.module.named_modules()]
