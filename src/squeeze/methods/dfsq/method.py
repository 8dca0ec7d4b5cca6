"""DFSQ glue: pick the layers, attach quantizers, calibrate on float activations, register the methods.

``dfsq`` and ``uniform-norm`` quantize the selected Conv2d layers only (see
:class:`~squeeze.methods.dfsq.config.ChannelNormConfig`): weights per output channel, asymmetric
uniform min-max (no clipping search, DFSQ Sec. 4); inputs with a :class:`ChannelNormQuantizer`.
Calibration follows the paper's pipeline, which dumps the *float* network's inputs of every
quantized layer and clusters them: two passes of the float model over the calibration batches
(probe: sign of each input; observe: normalized samples), then per-layer point selection.

:func:`quantize_layers_rtn` gives the min-max / percentile baselines the same layer set (the
registered ``rtn`` / ``percentile`` methods quantize every layer they find).
"""
from __future__ import annotations

import copy
import fnmatch

import torch
from torch import nn
from tqdm import tqdm

from squeeze.config import QuantConfig, register_method
from squeeze.errors import SqueezeError
from squeeze.methods.dfsq.config import ChannelNormConfig, DFSQConfig, UniformNormConfig
from squeeze.methods.dfsq.quantizer import ChannelNormQuantizer, Kind
from squeeze.methods.steps import calibrate_activations, round_weights
from squeeze.quant.attach import attach_quantizers, probe_roles, weight_spec
from squeeze.quant.calibrate import find_blocks, walk
from squeeze.quant.modules import QUANT_LAYERS, QuantConv2d
from squeeze.quant.quantizer import Quantizer


def select_layers(model: nn.Module, patterns: list[str] | tuple[str, ...] = ()) -> list[str]:
    """Names of the (prepared) model's Conv2d layers to quantize, in module order.

    ``patterns``: shell patterns on module names; empty = the convs of the repeated block stack
    (residual blocks), or every conv but the first and last when the model has no such stack.
    """
    convs = [n for n, m in model.named_modules() if isinstance(m, QuantConv2d)]
    if not convs:
        raise SqueezeError("the model has no Conv2d layer to quantize (prepare it first, or use another method)")
    if patterns:
        chosen = [n for n in convs if any(fnmatch.fnmatch(n, p) for p in patterns)]
        if not chosen:
            shown = ", ".join(convs[:6]) + (", ..." if len(convs) > 6 else "")
            raise SqueezeError(f"layers={list(patterns)} match no Conv2d layer; the model's convs are: {shown}")
        return chosen
    stack_name, blocks = find_blocks(model)
    if blocks:
        ids = {id(m) for b in blocks for m in b.modules()}
        chosen = [n for n, m in model.named_modules() if isinstance(m, QuantConv2d) and id(m) in ids]
        if chosen:
            return chosen
    if len(convs) < 3:
        raise SqueezeError(f"the model has {len(convs)} Conv2d layer(s) and no residual-block stack; "
                           "name the layers to quantize with layers=[...]")
    return convs[1:-1]


def attach_channel_norm(model: nn.Module, config: ChannelNormConfig, kind: Kind) -> list[ChannelNormQuantizer]:
    """Give each selected conv a min-max weight quantizer (calibrated, off) and a channel-norm input quantizer."""
    quantizers = []
    for i, name in enumerate(select_layers(model, config.layers)):
        layer = model.get_submodule(name)
        wbits, abits = config.bits_for(name)
        layer.weight_quantizer = Quantizer(weight_spec(wbits, "minmax"))
        layer.weight_quantizer.calibrate(layer.weight)
        extra = {}
        if isinstance(config, DFSQConfig):
            extra = {"restarts": config.restarts, "iters": config.kmeans_iters, "tol": config.kmeans_tol}
        quantizer = ChannelNormQuantizer(abits, kind, config.max_samples, seed=config.seed * 1009 + i, **extra)
        layer.input_quantizer = quantizer
        quantizers.append(quantizer)
    return quantizers


def _float_pass(model: nn.Module, batches: list[torch.Tensor], quantizers: list[ChannelNormQuantizer],
                mode: str) -> None:
    """Run the float model over all batches with every DFSQ quantizer in ``mode`` (then back to off)."""
    for q in quantizers:
        q.mode = mode  # type: ignore[assignment]
    try:
        with torch.no_grad():
            for b in batches:
                model(b)
    finally:
        for q in quantizers:
            q.mode = "off"


def calibrate_channel_norm(model: nn.Module, batches: list[torch.Tensor], kind: Kind, config: ChannelNormConfig) -> None:
    """Attach, calibrate on float activations, then switch every selected layer to quantized mode."""
    quantizers = attach_channel_norm(model, config, kind)
    weights = [m.weight_quantizer for m in model.modules() if isinstance(m, QUANT_LAYERS)
               and m.weight_quantizer is not None]
    for w in weights:
        w.mode = "off"
    _float_pass(model, batches, quantizers, "probe")
    _float_pass(model, batches, quantizers, "observe")
    for q in tqdm(quantizers, desc=f"{config.method} points", leave=False):
        q.finalize()
        q.mode = "quant"
    for w in weights:
        w.mode = "quant"


@register_method(DFSQConfig, "DFSQ: channel-normalized subset quantization for super-resolution nets")
def apply_dfsq(model: nn.Module, config: DFSQConfig, batches: list[torch.Tensor]) -> None:
    """Quantize ``model`` (already prepared) in place with DFSQ."""
    calibrate_channel_norm(model, batches, "subset", config)


@register_method(UniformNormConfig, "channel-normalized uniform quantization (DFSQ's baseline)")
def apply_uniform_norm(model: nn.Module, config: UniformNormConfig, batches: list[torch.Tensor]) -> None:
    """Quantize ``model`` (already prepared) in place: DFSQ's normalization with a uniform grid."""
    calibrate_channel_norm(model, batches, "uniform", config)


def quantize_layers_rtn(model: nn.Module, config: QuantConfig, calib: torch.Tensor,
                        layers: list[str] | tuple[str, ...] = (), name: str | None = None) -> nn.Module:
    """A quantized copy of ``model`` with ``rtn`` / ``percentile`` on the DFSQ layer set only.

    The same steps as those methods (per-channel min-max weights, per-tensor min-max or percentile
    input ranges, block-by-block walk), with quantizers removed from every other layer before
    calibration. ``layers`` as in :func:`select_layers`.
    """
    from squeeze.api import calibration_batches  # noqa: PLC0415
    from squeeze.quant.prepare import prepare_model  # noqa: PLC0415

    if config.method not in ("rtn", "percentile"):
        raise SqueezeError(f"quantize_layers_rtn runs rtn or percentile, not {config.method!r}")
    qmodel = copy.deepcopy(model).eval()
    batches = calibration_batches(qmodel, calib, config)
    prepare_model(qmodel)
    keep = set(select_layers(qmodel, layers))
    pct = getattr(config, "percentile", 0.999)
    scheme = "minmax" if config.method == "rtn" else "percentile"
    attach_quantizers(qmodel, config, probe_roles(qmodel, batches[0][:1]), scheme, percentile=pct)
    for lname, mod in qmodel.named_modules():
        if isinstance(mod, QUANT_LAYERS) and lname not in keep:
            mod.input_quantizer = mod.weight_quantizer = None
        elif isinstance(mod, QUANT_LAYERS) and mod.input_quantizer is None and lname in keep:
            raise SqueezeError(f"layer {lname} reads the model input, which rtn leaves unquantized; drop it from layers")

    def stage(s):  # noqa: ANN001, ANN202
        round_weights(s)
        calibrate_activations(s)

    walk(qmodel, batches, stage, desc=config.method)
    qmodel.squeeze_meta = {"model": name, "config": {**config.to_dict(), "layers": sorted(keep)}}
    return qmodel
