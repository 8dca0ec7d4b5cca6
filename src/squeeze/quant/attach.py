"""Attach quantizers to a prepared model following an activation *scheme*.

Roles are found with one probing forward pass (hooks, always removed), not by module names:
``post_ln`` maps each LayerNorm to the Linear layers that consume its output tensor directly
(qkv / fc1 in pre-norm ViTs), and ``first`` lists layers fed by the model input itself (the patch
embedding), whose input is not quantized (the ViT-PTQ convention, RepQ-ViT Sec. 4).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from squeeze.config import QuantConfig
from squeeze.quant.modules import QuantConv2d, QuantLinear, QuantMatMul
from squeeze.quant.primitives import Granularity
from squeeze.quant.quantizer import Quantizer, QuantSpec

ActScheme = Literal["minmax", "percentile", "repq"]
WEIGHT_PERCENTILES = (0.97, 0.98, 0.99, 0.995, 0.9995, 0.9997, 0.9999, 0.99995, 0.99999, 1.0)
ACT_PERCENTILES = (0.999, 0.9999, 0.99999)


@dataclass
class Roles:
    """Structural facts about a model found by probing (see module docstring)."""

    post_ln: dict[str, list[str]] = field(default_factory=dict)
    first: set[str] = field(default_factory=set)

    @property
    def post_ln_layers(self) -> set[str]:
        return {name for names in self.post_ln.values() for name in names}


def probe_roles(model: nn.Module, sample: torch.Tensor) -> Roles:
    """Run ``model(sample)`` once with hooks recording which tensors feed which layers.

    A LayerNorm counts as ``post_ln`` only when its output feeds Linear layers and nothing returns it
    onward: in post-norm models (BERT) the LayerNorm output is also a block's output and the residual
    stream, so folding scales into it would change the function.
    """
    producers: dict[int, tuple[str, torch.Tensor]] = {}  # keep tensors alive so ids stay unique
    escaped: set[str] = set()
    roles = Roles()

    def on_output(mod: nn.Module, _inp: tuple, out: object, name: str) -> None:
        if not isinstance(out, torch.Tensor):
            return
        if isinstance(mod, nn.LayerNorm):
            producers[id(out)] = (name, out)
        elif id(out) in producers:
            escaped.add(producers[id(out)][0])

    def on_input(_m: nn.Module, args: tuple, name: str) -> None:
        if args[0] is sample:
            roles.first.add(name)
        if id(args[0]) in producers:
            roles.post_ln.setdefault(producers[id(args[0])][0], []).append(name)

    handles = []
    for name, mod in model.named_modules():
        handles.append(mod.register_forward_hook(lambda m, i, o, n=name: on_output(m, i, o, n)))
        if isinstance(mod, (QuantLinear, QuantConv2d)):
            handles.append(mod.register_forward_pre_hook(lambda m, a, n=name: on_input(m, a, n)))
    forward_with_hooks(model, sample, handles)
    roles.post_ln = {k: v for k, v in roles.post_ln.items() if k not in escaped}
    return roles


def check_schemes(act_scheme: str, weight_estimator: str) -> None:
    """Validate a method config's activation scheme and weight range estimator (one-line errors)."""
    from squeeze.errors import SqueezeError  # noqa: PLC0415

    if act_scheme not in ("repq", "minmax", "percentile"):
        raise SqueezeError(f"act_scheme={act_scheme!r}; use repq, minmax or percentile")
    if weight_estimator not in ("minmax", "mse", "omse"):
        raise SqueezeError(f"weight_estimator={weight_estimator!r}; use minmax, mse or omse")


def forward_with_hooks(model: nn.Module, sample: torch.Tensor | list[torch.Tensor], handles: list) -> None:
    """Run ``model`` on ``sample`` (or on each batch of a list) without gradients, then remove every hook
    handle (also on error)."""
    try:
        with torch.no_grad():
            for batch in sample if isinstance(sample, list) else [sample]:
                model(batch)
    finally:
        for h in handles:
            h.remove()


def weight_spec(bits: int, estimator: str = "minmax") -> QuantSpec:
    """Per-output-channel asymmetric uniform weights (``mse`` = RepQ-ViT percentile search)."""
    return QuantSpec(bits, granularity=Granularity("channel", 0), estimator=estimator,  # type: ignore[arg-type]
                     percentiles=WEIGHT_PERCENTILES)


def act_spec(bits: int, scheme: ActScheme, per_channel: bool = False, percentile: float = 0.999) -> QuantSpec:
    """Activation quantizer for a scheme: per-tensor unless ``per_channel`` (last dim)."""
    gran = Granularity("channel", -1) if per_channel else Granularity("tensor")
    estimator = {"minmax": "minmax", "percentile": "percentile", "repq": "mse"}[scheme]
    return QuantSpec(bits, granularity=gran, estimator=estimator, percentile=percentile,  # type: ignore[arg-type]
                     percentiles=ACT_PERCENTILES)


def softmax_spec(bits: int, scheme: ActScheme, percentile: float = 0.999, kind: str | None = None) -> QuantSpec:
    """Post-softmax quantizer: log-sqrt2 for RepQ-ViT, otherwise the scheme's uniform grid.

    ``kind`` forces a quantizer kind instead (``sulq``, ``log2``, ``logsqrt2`` or ``uniform``).
    """
    if kind in ("sulq", "log2", "logsqrt2"):
        return QuantSpec(bits, kind=kind)  # type: ignore[arg-type]
    if kind == "uniform":
        return act_spec(bits, scheme, percentile=percentile)
    if kind is not None:
        raise ValueError(f"unknown post-softmax quantizer kind {kind!r}; use sulq, log2, logsqrt2 or uniform")
    if scheme == "repq":
        return QuantSpec(bits, kind="logsqrt2")
    return act_spec(bits, scheme, percentile=percentile)


def attach_quantizers(model: nn.Module, config: QuantConfig, roles: Roles, scheme: ActScheme,
                      weight_estimator: str = "minmax", percentile: float = 0.999) -> None:
    """Give every quant layer and attention matmul its quantizers (all start in ``off`` mode)."""
    post_ln = roles.post_ln_layers
    for name, mod in model.named_modules():
        wbits, abits = config.bits_for(name)
        if isinstance(mod, (QuantLinear, QuantConv2d)):
            mod.weight_quantizer = Quantizer(weight_spec(wbits, weight_estimator))
            if name not in roles.first:
                per_channel = scheme == "repq" and name in post_ln
                mod.input_quantizer = Quantizer(act_spec(abits, scheme, per_channel, percentile))
        elif isinstance(mod, QuantMatMul) and config.quantize_attention:
            is_softmax = name.endswith("matmul2")
            mod.a_quantizer = Quantizer(softmax_spec(abits, scheme, percentile) if is_softmax
                                        else act_spec(abits, scheme, percentile=percentile))
            mod.b_quantizer = Quantizer(act_spec(abits, scheme, percentile=percentile))
