"""Which real CPU kernel a quantized run maps to, or why none does.

A fake-quant run is *deployable* when every quantizer it uses has an integer kernel in ONNX Runtime's
CPU execution provider (MLAS):

* ``int8-static`` -- W8A8 with uniform per-channel weights and uniform **per-tensor 8-bit**
  activations: exported as QuantizeLinear/DequantizeLinear (QDQ) pairs with unsigned 8-bit
  activations and signed symmetric per-channel weights (U8S8, the layout VNNI/AVX2 ``vpmaddubsw``
  multiply natively), which ORT fuses into QLinearMatMul / MatMulIntegerToFloat / QLinearConv at load;
* ``int4-weight`` -- weight-only runs (activations at 16 bits or more) with 4-bit or lower uniform
  weights: ORT's block-quantized ``MatMulNBits`` contrib operator.

Everything else (W4A4-style low-bit activations, log2 / log-sqrt2 / SULQ softmax quantizers,
per-channel activation quantizers, weights below 8 bits multiplied by quantized activations) has
no CPU kernel. Such runs are refused unless the user asks for the *nearest* deployable
configuration (``--nearest``), which is then always labelled ``simulated: true``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from squeeze.errors import SqueezeError

Kind = Literal["int8-static", "int4-weight"]
WEIGHT_ONLY_ABITS = 16  # activations at or above this width are treated as float (weight-only run)


@dataclass(frozen=True)
class DeployPlan:
    """What :func:`plan_export` decided.

    Attributes:
        kind: the kernel family the artifact targets.
        simulated: ``True`` when the artifact is only the nearest deployable configuration of the run
            (its numbers do not measure the run's own settings).
        reasons: why the run itself is not deployable (empty when it is).
        wbits, abits: the run's widest weight / activation quantizer (``abits`` 32 = float activations).
    """

    kind: Kind
    simulated: bool
    reasons: list[str] = field(default_factory=list)
    wbits: int = 32
    abits: int = 32

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "simulated": self.simulated, "reasons": list(self.reasons),
                "wbits": self.wbits, "abits": self.abits}


def is_weight(name: str) -> bool:
    """Whether a quantizer name denotes a weight quantizer (``...weight_quantizer``)."""
    return name.endswith("weight_quantizer")


def act_is_static_u8(spec: dict[str, Any]) -> bool:
    """Whether an activation quantizer spec maps 1:1 onto a per-tensor uint8 QuantizeLinear."""
    return spec["kind"] == "uniform" and spec["bits"] == 8 and spec["granularity"]["kind"] == "tensor" \
        and not spec["symmetric"]


def _reasons(weights: list[dict[str, Any]], acts: list[dict[str, Any]], wbits: int, abits: int) -> list[str]:
    """Human-readable reasons why these quantizer specs have no CPU integer kernel."""
    found: list[str] = []
    if any(s["kind"] != "uniform" for s in weights):
        found.append("non-uniform weight quantizers")
    if any(s["bits"] > 8 for s in weights):
        found.append(f"{wbits}-bit weights (no kernel above 8 bits)")
    kinds = sorted({s["kind"] for s in acts if s["kind"] != "uniform"})
    if kinds:
        found.append(f"{'/'.join(kinds)} activation (softmax) quantizers")
    if any(s["granularity"]["kind"] != "tensor" for s in acts if s["kind"] == "uniform"):
        found.append("per-channel activation quantizers")
    if acts and abits < WEIGHT_ONLY_ABITS and any(s["bits"] != 8 for s in acts if s["kind"] == "uniform"):
        found.append(f"{abits}-bit activations (integer kernels take 8-bit activations)")
    wmin = min((s["bits"] for s in weights), default=wbits)
    if acts and abits < WEIGHT_ONLY_ABITS and wmin < 8:
        found.append(f"{wmin}-bit weights with quantized activations (no W{wmin}A8 CPU kernel)")
    if acts and any(s["symmetric"] for s in acts if s["kind"] == "uniform" and s["bits"] == 8):
        found.append("signed (symmetric) activations (CPU kernels want unsigned 8-bit activations)")
    return found


def plan_export(quantizers: dict[str, dict[str, Any]], nearest: bool = False, int4_weight: bool = False,
                label: str = "this run") -> DeployPlan:
    """Decide the deployable form of a run from its quantizers (``name -> {"spec", "mode"}``).

    Args:
        quantizers: the ``quantizers`` table of a saved run (or of a live model, see
            :func:`quantizer_table`); only quantizers in ``quant`` mode count.
        nearest: allow exporting the nearest deployable configuration of a run that has none.
        int4_weight: ask for the 4-bit weight-only artifact whatever the run's settings.
        label: how the run is named in the error message.

    Raises:
        SqueezeError: the run has no deployable form and ``nearest`` is false (names ``--nearest``).
    """
    active = {n: q["spec"] for n, q in quantizers.items() if q.get("mode") == "quant"}
    weights = [s for n, s in active.items() if is_weight(n)]
    acts = [s for n, s in active.items() if not is_weight(n)]
    if not weights:
        raise SqueezeError(f"{label} has no calibrated weight quantizers; quantize it with `squeeze quantize` first")
    wbits = max(s["bits"] for s in weights)
    abits = max((s["bits"] for s in acts), default=32)
    weight_only = not acts or abits >= WEIGHT_ONLY_ABITS
    if int4_weight:
        exact = weight_only and wbits <= 4 and all(s["kind"] == "uniform" for s in weights)
        why = [] if exact else [f"W{wbits}A{abits} run exported as 4-bit weight-only"]
        return DeployPlan("int4-weight", not exact, why, wbits, abits)
    reasons = _reasons(weights, [] if weight_only else acts, wbits, abits)
    if weight_only and not reasons and wbits > 4:
        reasons = [f"W{wbits} weight-only run (no {wbits}-bit weight-only kernel is exported)"]
    kind: Kind = "int4-weight" if weight_only else "int8-static"
    if reasons and not nearest:
        target = "W8A8 int8-static QDQ" if kind == "int8-static" else "int4 weight-only MatMulNBits"
        raise SqueezeError(f"{label} (W{wbits}A{abits}) has no CPU integer kernel: {'; '.join(reasons)}; "
                           f"pass --nearest to export the nearest deployable configuration ({target}), "
                           "labelled simulated: true")
    return DeployPlan(kind, bool(reasons), reasons, wbits, abits)


def quantizer_table(model: Any) -> dict[str, dict[str, Any]]:
    """``name -> {"spec", "mode"}`` of a live fake-quant model (the saved file's ``quantizers`` table)."""
    from squeeze.quant.modules import iter_quantizers  # noqa: PLC0415

    return {n: {"spec": q.spec.to_dict(), "mode": q.mode} for n, q in iter_quantizers(model)}
