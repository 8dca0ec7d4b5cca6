"""ERQ (Zhong, Hu, Lin, Chen, Ji, "ERQ: Error Reduction for Post-Training Quantization of Vision
Transformers", ICML 2024; TPAMI extension): model walk and per-layer glue.

Steps (spec ``quantization.md`` section 2.1):

* **Init / A0.** RepQ-ViT quantizers (per-channel post-LayerNorm inputs, log-sqrt2 post-softmax,
  percentile-MSE elsewhere); activation quantizers calibrated block by block with activation
  quantization on and float weights, then (``reparam_init``) RepQ-ViT's scale reparameterization.
* **Capture.** One full-precision pass (every quantizer off) accumulating each layer's statistics
  of its quantized FP input (:mod:`squeeze.methods.erq.capture`).
* **A1 Aqer.** Each Linear with an input quantizer: ridge correction of ``[W | b]`` against the
  error caused by quantizing its input (:func:`~squeeze.methods.erq.ridge.aqer_update`). Skipped
  where the calibration set gives no more rows than unknowns per output (the classifier head sees
  one row per image: 32 rows for 385-769 inputs), where the fit only memorises the calibration
  images (held-out error 1.3-2.2x *higher* than without it, on training-split images).
* **B0.** Per-row weight grids on the Aqer-updated weights (percentile-MSE search, candidates include
  1.0), optionally dual uniform for post-LN layers (:mod:`squeeze.methods.erq.duq`).
* **B1 Wqer.** Halving quantization with rounding refinement and ridge compensation
  (:func:`~squeeze.methods.erq.wqer.wqer_quantize`); convolutions (the patch embedding) get the same
  halving and ridge on the im2col of their FP input but no refinement, with ten times the ridge.
  Weights end exactly on the grid and their fake-quantizers are switched on.
"""
from __future__ import annotations

import torch
from torch import nn
from tqdm import tqdm

from squeeze.config import register_method
from squeeze.errors import SqueezeError
from squeeze.methods.erq.capture import Layer, LayerStats, collect_stats
from squeeze.methods.erq.config import ERQConfig
from squeeze.methods.erq.duq import dual_uniform_params, outlier_columns
from squeeze.methods.erq.ridge import aqer_update
from squeeze.methods.erq.wqer import wqer_quantize
from squeeze.methods.repq_vit.method import reparameterize_stage
from squeeze.methods.steps import calibrate_activations, quantize_weight_rtn
from squeeze.quant import primitives as P
from squeeze.quant.attach import Roles, attach_quantizers, probe_roles
from squeeze.quant.calibrate import Stage, walk
from squeeze.quant.modules import QuantConv2d, QuantLinear
from squeeze.quant.prepare import attention_modules

CONV_RIDGE_FACTOR = 10.0  # the official code regularizes the patch-embedding conv ten times harder
DUQ_OUTLIER_FRACTION = 20  # outlier columns = out_features // 20, as in the official code


def check_vit(model: nn.Module) -> None:
    """Refuse models ERQ is not defined for: no Linear layers, or no recognised attention block."""
    if not any(isinstance(m, QuantLinear) for m in model.modules()):
        raise SqueezeError("erq needs a vision transformer, but the model has no nn.Linear layers; "
                           "use rtn or gptq for other models")
    if not attention_modules(model):
        raise SqueezeError("erq is a ViT method, but no supported attention block was found (timm or "
                           "transformers ViT/DeiT/Dinov2/Swin); use gptq or rtn for this model")


def _activation_stage(roles: Roles, reparam: bool):
    """Stage handler of the init walk: activation quantizers (weights float), then reparameterize."""
    def handle(stage: Stage) -> None:
        calibrate_activations(stage)
        if reparam:
            reparameterize_stage(stage, roles)
    return handle


def _augmented_weight(layer: Layer) -> torch.Tensor:
    """``[W | b]`` (``W`` flattened to (out, in)) as float64; ``W`` alone without a bias."""
    w = layer.weight.detach().reshape(layer.weight.shape[0], -1).double()
    if layer.bias is None:
        return w
    return torch.cat([w, layer.bias.detach().double()[:, None]], 1)


@torch.no_grad()
def _set_augmented(layer: Layer, w_aug: torch.Tensor) -> None:
    n = layer.weight[0].numel()
    layer.weight.copy_(w_aug[:, :n].reshape(layer.weight.shape).to(layer.weight.dtype))
    if layer.bias is not None:
        layer.bias.copy_(w_aug[:, n].to(layer.bias.dtype))


def apply_aqer(layer: Layer, stats: LayerStats, coefficient: float) -> None:
    """A1: add the ridge correction ``delta^T`` to ``[W | b]`` in place."""
    assert stats.atr is not None
    _set_augmented(layer, _augmented_weight(layer) + aqer_update(stats.gram, stats.atr, coefficient))


@torch.no_grad()
def calibrate_weight_grid(layer: Layer, dual_uniform: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """B0: fix the weight quantizer's grid on the current weight; returns (out, in) scale/zero point."""
    q = layer.weight_quantizer
    assert q is not None
    q.calibrate(layer.weight)
    w2d = layer.weight.detach().reshape(layer.weight.shape[0], -1)
    count = w2d.shape[0] // DUQ_OUTLIER_FRACTION
    if dual_uniform and q.spec.kind == "uniform" and count >= 1 and w2d.shape[1] >= 2:
        mask = outlier_columns(w2d, count)
        q.set_params(*dual_uniform_params(w2d, mask, q.spec.bits, q.spec.symmetric, q.spec.percentiles))
    return q.scale.expand_as(w2d), q.zero_point.expand_as(w2d)


@torch.no_grad()
def apply_wqer(layer: Layer, stats: LayerStats, config: ERQConfig, dual_uniform: bool = False) -> None:
    """B0 + B1: fix the weight grid, quantize by halving Wqer on it, then switch the quantizer on."""
    q = layer.weight_quantizer
    assert q is not None
    is_conv = isinstance(layer, QuantConv2d)
    scale, zp = calibrate_weight_grid(layer, dual_uniform and not is_conv)
    qmin, qmax = P.int_range(q.spec.bits, q.spec.symmetric)
    steps = 0 if is_conv or not config.rounding_refinement else config.refine_steps
    coefficient = config.wqer_lambda * (CONV_RIDGE_FACTOR if is_conv else 1.0)
    codes, w_new = wqer_quantize(_augmented_weight(layer), stats.gram, scale.double(), zp.double(), qmin, qmax,
                                 coefficient, steps, config.ridge_compensation, config.refine_rows)
    # write the grid values exactly as the fake-quantizer computes them (its float dtype)
    w_new[:, : codes.shape[1]] = P.dequantize(codes.to(q.scale.dtype), scale, zp).double()
    _set_augmented(layer, w_new)
    q.mode = "quant"


def _solvable(layer: nn.Module) -> bool:
    """Layers ERQ solves: Linear, and ungrouped conv, with a per-output-channel uniform weight grid."""
    q = getattr(layer, "weight_quantizer", None)
    return (isinstance(layer, (QuantLinear, QuantConv2d)) and q is not None and q.spec.kind == "uniform"
            and q.spec.granularity.kind == "channel" and getattr(layer, "groups", 1) == 1)


@register_method(ERQConfig, "ERQ: Aqer + Wqer error reduction with ridge regression and rounding refinement (ICML'24)")
def apply_erq(model: nn.Module, config: ERQConfig, batches: list[torch.Tensor]) -> None:
    """Quantize a prepared vision transformer in place with ERQ."""
    check_vit(model)
    roles = probe_roles(model, batches[0][:1])
    attach_quantizers(model, config, roles, "repq", weight_estimator="mse")
    walk(model, batches, _activation_stage(roles, config.reparam_init), desc="erq: activations")
    layers = [(n, m) for n, m in model.named_modules()
              if isinstance(m, (QuantLinear, QuantConv2d)) and m.weight_quantizer is not None]
    solvable = [(n, m) for n, m in layers if _solvable(m)]
    aqer_names = {n for n, m in solvable
                  if config.aqer and isinstance(m, QuantLinear) and m.input_quantizer is not None}
    stats = collect_stats(model, batches, solvable, aqer_names)
    post_ln = roles.post_ln_layers
    for name, layer in tqdm(layers, desc="erq: weights", leave=False):
        st = stats.pop(name, None)
        if st is None:
            quantize_weight_rtn(layer)  # grouped conv / non-channel grid: documented RTN fallback
            continue
        # Aqer only where calibration rows outnumber the unknowns per output: the head (one row per
        # image) would otherwise be an underdetermined fit that memorises the calibration images
        if name in aqer_names and st.tokens > st.gram.shape[0]:
            apply_aqer(layer, st, config.aqer_lambda)
        apply_wqer(layer, st, config, config.dual_uniform and name in post_ln)
