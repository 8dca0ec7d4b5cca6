"""Per-layer quantization sensitivity: which layers of a quantized model cost the most accuracy.

The question a user asks after ``squeeze quantize`` misses its target: which layers to keep at higher
precision. On the quantized model (its calibrated quantizers, no recalibration), each quantized layer (a
linear or conv layer, or an attention matmul) in turn has its quantizers switched off while every other layer
stays quantized; the metric gained is what keeping that layer in float is worth. ``alone=True`` also measures
the opposite view, the layer quantized alone with every other layer in float. This is the per-layer analysis
of AIMET's QuantAnalyzer; the answer feeds ``--set overrides=...``. For methods that also rewrite weights
(GPTQ, ERQ, the reconstruction methods), a layer switched off keeps its rewritten float weights, so the
"float" reference is that model's, not the original's.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterable, Iterator

from torch import nn

from squeeze.errors import SqueezeError
from squeeze.quant.modules import QUANT_LAYERS, QuantMatMul
from squeeze.quant.quantizer import Mode, Quantizer

_SLOTS = ("input_quantizer", "weight_quantizer", "a_quantizer", "b_quantizer")


def layer_quantizers(model: nn.Module) -> dict[str, list[Quantizer]]:
    """The active (``quant`` mode) quantizers of every quantized layer, keyed by the layer's module name."""
    groups: dict[str, list[Quantizer]] = {}
    for name, module in model.named_modules():
        if isinstance(module, (*QUANT_LAYERS, QuantMatMul)):
            active = [q for slot in _SLOTS if isinstance(q := getattr(module, slot, None), Quantizer)
                      and q.mode == "quant"]
            if active:
                groups[name] = active
    return groups


@contextlib.contextmanager
def switched(quantizers: Iterable[Quantizer], mode: Mode) -> Iterator[None]:
    """Put ``quantizers`` in ``mode`` for the block and restore each one's previous mode on exit, error or not."""
    saved = [(q, q.mode) for q in quantizers]
    try:
        for q, _ in saved:
            q.mode = mode
        yield
    finally:
        for q, previous in saved:
            q.mode = previous


def per_layer(model: nn.Module, evaluate: Callable[[nn.Module], float], alone: bool = False,
              progress: bool = True) -> dict[str, Any]:
    """Measure ``evaluate`` with each layer's quantizers off in turn (and, with ``alone``, with only them on).

    Returns ``{"quant", "float", "layers"}``: the quantized and all-float metrics, and one row per layer with
    ``without`` (the metric with that layer in float), ``recovered`` (``without - quant``) and, with ``alone``,
    ``alone`` and ``cost`` (``float - alone``). Rows are in the model's order; :func:`ranked` sorts them.
    The model's quantizer modes are as they were when it returns.
    """
    from tqdm import tqdm  # noqa: PLC0415

    groups = layer_quantizers(model)
    if not groups:
        raise SqueezeError("the model has no active quantizers; pass a run saved by `squeeze quantize`")
    every = [q for qs in groups.values() for q in qs]
    quant = evaluate(model)
    with switched(every, "off"):
        float_metric = evaluate(model)
    rows = []
    for name, qs in tqdm(groups.items(), desc="layers", total=len(groups), disable=not progress):
        with switched(qs, "off"):
            row: dict[str, Any] = {"layer": name, "without": evaluate(model)}
        row["recovered"] = row["without"] - quant
        if alone:
            with switched(every, "off"), switched(qs, "quant"):
                row["alone"] = evaluate(model)
            row["cost"] = float_metric - row["alone"]
        rows.append(row)
    return {"quant": quant, "float": float_metric, "layers": rows}


def ranked(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Layers by the metric that keeping them in float recovers, most first (ties: model order)."""
    return sorted(rows, key=lambda r: -r["recovered"])


def suggest_overrides(rows: list[dict[str, Any]], top: int, wbits: int = 8,
                      abits: int = 8) -> dict[str, dict[str, int]]:
    """A ``QuantConfig.overrides`` value keeping the ``top`` layers that recover the most at wider bits.

    Only layers whose float version helps (``recovered > 0``) are named; exact module names, so each
    pattern matches its one layer.
    """
    if top < 0:
        raise SqueezeError(f"--top {top} must be >= 0")
    return {r["layer"]: {"wbits": wbits, "abits": abits} for r in ranked(rows)[:top] if r["recovered"] > 0}
