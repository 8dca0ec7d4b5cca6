"""Export float and quantized squeeze models to ONNX files that ONNX Runtime runs with integer kernels.

Exporter: torch's TorchScript-based ("legacy", ``dynamo=False``) exporter at opset 17. The dynamo
exporter needs the ``onnxscript`` package, which squeeze does not depend on; the legacy exporter
traces timm ViTs reliably on torch 2.14 and names every node after its module scope
(``/blocks/blocks.0/attn/qkv/MatMul``), which is how squeeze finds the node of each quantized layer.
It emits ``MatMul`` (+ ``Add``) for Linear layers on 3-D tokens and ``Gemm`` for 2-D inputs (a ViT
head), and folds eval-mode BatchNorm into the preceding Conv.

Int8 static QDQ (Jacob et al., CVPR 2018, "Quantization and Training of Neural Networks for Efficient
Integer-Arithmetic-Only Inference"): onnxruntime.quantization's ``quantize_static`` inserts
QuantizeLinear/DequantizeLinear pairs, unsigned 8-bit activations, signed symmetric per-channel
weights. We reuse ORT's inserter rather than writing QDQ nodes by hand because it already knows
each operator's legal placement (bias as int32 with scale ``s_x * s_w``, Gemm/Conv/MatMul weight
axes) that ORT's fusion pass expects; squeeze supplies the run's own calibrated activation scales
and zero points through ``TensorQuantOverrides`` and, when the run's weight grid fits exactly into
signed int8 (codes ``c - z`` within +-127), its per-channel weight scales too, so the artifact
computes what the fake-quant model computed. Tensors the run does not quantize at 8 bits (nearest
mode only) are calibrated by ORT's MinMax on the zoo's calibration images.

Shipped files get short internal names (:mod:`squeeze.deploy.names`); the float export keeps the scope
names, which the quantizers need. Every writer goes through :func:`atomic_path`: a temporary file next to
the target, renamed only when the export succeeded, so a failure leaves no file behind.
"""
from __future__ import annotations

import copy
import os
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from squeeze.deploy.names import compact_file, compact_names
from squeeze.deploy.plan import DeployPlan, act_is_static_u8
from squeeze.errors import SqueezeError
from squeeze.quant import primitives as P
from squeeze.quant.modules import QUANT_LAYERS, QuantMatMul, iter_quantizers
from squeeze.train.checkpoint import umask_mode

OPSET = 17
INPUT, OUTPUT = "input", "output"
EXPORTER = f"torch.onnx legacy TorchScript exporter, opset {OPSET}"
CORE_OPS = ("MatMul", "Gemm", "Conv")
INT4_BLOCK = 32
NO_OUTPUT_Q = ("MatMul", "Gemm")  # fused as MatMulIntegerToFloat / QGemm with float output: no extra rounding


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; it replaces ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, umask_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def deployable_copy(qmodel: nn.Module) -> nn.Module:
    """A float copy of a fake-quant model: each weight replaced by its fake-quantized value, quantizers off.

    Its float export carries the run's quantized weights (on their grid), which the int8/int4 passes
    then store as integers.
    """
    model = copy.deepcopy(qmodel).eval()
    with torch.no_grad():
        for mod in model.modules():
            q = getattr(mod, "weight_quantizer", None)
            if isinstance(mod, QUANT_LAYERS) and q is not None and q.calibrated and q.mode == "quant":
                mod.weight.copy_(q.fake_quant(mod.weight))
    for _, q in iter_quantizers(model):
        q.mode = "off"
    return model


def export_float(model: nn.Module, sample: torch.Tensor, path: str | Path) -> Path:
    """Export ``model`` (float) to ONNX at ``path`` with a dynamic batch axis; atomic.

    Image-to-image models (4-D input and output, e.g. super-resolution) also get dynamic height and
    width, so the file runs on whole test images; classifiers keep the traced spatial size.
    """
    path = Path(path)
    model = model.eval()
    with torch.no_grad():
        image_out = sample.ndim == 4 and model(sample).ndim == 4
    axes_in = {0: "batch", 2: "height", 3: "width"} if image_out else {0: "batch"}
    axes_out = {0: "batch", 2: "out_height", 3: "out_width"} if image_out else {0: "batch"}
    with atomic_path(path) as tmp, warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's deprecation and tracer warnings
        try:
            torch.onnx.export(model, (sample,), str(tmp), dynamo=False, opset_version=OPSET,
                              input_names=[INPUT], output_names=[OUTPUT], do_constant_folding=True,
                              dynamic_axes={INPUT: axes_in, OUTPUT: axes_out})
        except Exception as exc:  # noqa: BLE001 (tracing failures of user models)
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise SqueezeError(f"ONNX export failed ({type(exc).__name__}: {first}); the model must be "
                               "traceable by torch.onnx.export") from exc
    return path


def module_of_node(node_name: str) -> str:
    """Qualified module name from a legacy-exporter node name.

    ``/blocks/blocks.0/attn/qkv/MatMul`` -> ``blocks.0.attn.qkv``: scope parts are local names, except
    that a container's child is written ``parent.index``, which replaces the parent part.
    """
    parts = [p for p in node_name.split("/") if p][:-1]
    names: list[str] = []
    for part in parts:
        if names and part.startswith(names[-1] + "."):
            names[-1] = part
        else:
            names.append(part)
    return ".".join(names)


def map_nodes(graph: Any, modules: set[str]) -> dict[str, Any]:
    """``module name -> NodeProto`` of the MatMul/Gemm/Conv that computes each named module."""
    found: dict[str, Any] = {}
    for node in graph.node:
        if node.op_type in CORE_OPS:
            name = module_of_node(node.name)
            if name in modules and name not in found:
                found[name] = node
    return found


def quantized_modules(qmodel: nn.Module) -> dict[str, nn.Module]:
    """Layers and attention matmuls of ``qmodel`` that have at least one quantizer in ``quant`` mode."""
    def active(q: Any) -> bool:
        return q is not None and q.mode == "quant"

    out = {}
    for name, mod in qmodel.named_modules():
        if isinstance(mod, QUANT_LAYERS) and (active(mod.weight_quantizer) or active(mod.input_quantizer)):
            out[name] = mod
        elif isinstance(mod, QuantMatMul) and (active(mod.a_quantizer) or active(mod.b_quantizer)):
            out[name] = mod
    return out


def _input_quantizers(mod: nn.Module) -> list[tuple[int, Any]]:
    """``(ONNX input index, quantizer)`` of the activation operands of a layer / matmul."""
    if isinstance(mod, QuantMatMul):
        return [(0, mod.a_quantizer), (1, mod.b_quantizer)]
    return [(0, mod.input_quantizer)]


def activation_overrides(modules: dict[str, nn.Module], nodes: dict[str, Any]) -> tuple[dict[str, list], int]:
    """ORT ``TensorQuantOverrides`` with the run's per-tensor uint8 activation scales and zero points.

    Returns the overrides and the number of tensors where two consumers disagree (the first wins).
    """
    overrides: dict[str, list] = {}
    conflicts = 0
    for name, node in nodes.items():
        for index, q in _input_quantizers(modules[name]):
            if q is None or q.mode != "quant" or not act_is_static_u8(q.spec.to_dict()):
                continue
            entry = {"scale": np.array(q.scale.reshape(-1)[0].item(), dtype=np.float32),
                     "zero_point": np.array(int(q.zero_point.reshape(-1)[0].item()), dtype=np.uint8)}
            tensor = node.input[index]
            if tensor in overrides and overrides[tensor][0] != entry:
                conflicts += 1
                continue
            overrides[tensor] = [entry]
    return overrides, conflicts


# Ops between a Conv and the next quantized layer that commute with quantizing their input instead of
# their output: pure permutations (any scale) and Relu (when the target zero point is 0, the uint8 clamp
# at code 0 *is* the Relu).
PERMUTE_OPS = ("DepthToSpace", "SpaceToDepth", "Reshape", "Transpose", "Flatten")


def tied_output_overrides(graph: Any, nodes: dict[str, Any], overrides: dict[str, list]) -> dict[str, list]:
    """Give a quantized Conv's output the scale of the quantized input it feeds through Relu/permutations.

    Without this ORT calibrates the Conv output on its own (MinMax) and the artifact rounds twice --
    Conv -> Q_ort -> DQ -> Relu -> Q_run -- where the fake-quant run rounds once; with the run's entry on
    both tensors the artifact rounds exactly once, as the run does, and ORT fuses Relu away and drops the
    now-identical DQ -> Q pair (Conv -> Conv stays in uint8). Returns overrides for the Conv outputs only.
    """
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    tied: dict[str, list] = {}
    for node in nodes.values():
        if node.op_type != "Conv":
            continue
        tensor, relu = node.output[0], False
        while len(consumers.get(tensor, [])) == 1 and tensor not in overrides:
            nxt = consumers[tensor][0]
            if nxt.op_type not in PERMUTE_OPS + ("Relu",):
                break
            relu |= nxt.op_type == "Relu"
            tensor = nxt.output[0]
        entry = overrides.get(tensor, [{}])[0]  # a node output: an activation entry, never a weight's
        if tensor != node.output[0] and "scale" in entry and (not relu or int(entry["zero_point"]) == 0):
            tied[node.output[0]] = [entry]
    return tied


def exact_int8_weight(mod: nn.Module, limit: int = 127) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-output-channel ``(scale, signed codes)`` that reproduce the fake-quant weight in int8, if any.

    A uniform per-channel grid ``w = s * (c - z)`` with integer ``z`` equals ``s * k`` with
    ``k = c - z``; it fits a symmetric int8 tensor when ``|k| <= limit`` (127, or 63 for 7-bit storage).
    Returns the codes in the layer's (out, in...) layout, or ``None`` when they do not fit.
    """
    q = mod.weight_quantizer
    if q is None or q.mode != "quant" or q.spec.kind != "uniform" or q.spec.granularity.kind != "channel" \
            or q.spec.granularity.axis != 0:
        return None
    codes = (q.int_codes(mod.weight).float() - q.zero_point).reshape(mod.weight.shape)
    if codes.abs().max() > limit or not torch.equal(q.zero_point, q.zero_point.round()):
        return None
    return q.scale.reshape(-1).float().numpy(), codes.numpy()


def weight_overrides(modules: dict[str, nn.Module], nodes: dict[str, Any], initializers: dict[str, Any],
                     limit: int = 127) -> dict[str, list]:
    """Per-channel overrides that make ORT store each run weight exactly (see :func:`exact_int8_weight`).

    Only applied when the ONNX initializer holds the layer's weight unchanged (not BatchNorm-folded).
    """
    from onnx import numpy_helper  # noqa: PLC0415

    overrides: dict[str, list] = {}
    for name, node in nodes.items():
        mod = modules[name]
        if isinstance(mod, QuantMatMul) or len(node.input) < 2 or node.input[1] not in initializers:
            continue
        exact = exact_int8_weight(mod, limit)
        if exact is None:
            continue
        scale, codes = exact
        stored = numpy_helper.to_array(initializers[node.input[1]])
        trans_b = any(a.name == "transB" and a.i == 1 for a in node.attribute)
        transposed = node.op_type == "MatMul" or (node.op_type == "Gemm" and not trans_b)  # stored (in, out)
        axis = 1 if transposed else 0
        layout = codes.T if transposed else codes
        expected = layout * (scale[None, :] if transposed else scale.reshape(-1, *[1] * (codes.ndim - 1)))
        if stored.shape != layout.shape or not np.allclose(stored, expected, rtol=1e-5, atol=1e-7):
            continue
        overrides[node.input[1]] = [{"axis": axis, "scale": np.array(s, dtype=np.float32),
                                     "zero_point": np.array(0, dtype=np.int8)} for s in scale]
    return overrides


class _CalibReader:
    """ORT ``CalibrationDataReader`` over a tensor of calibration inputs, a few samples per batch."""

    def __init__(self, calib: torch.Tensor, batch: int = 8) -> None:
        self._batches = [b.float().numpy() for b in calib.split(batch)]
        self._i = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._i >= len(self._batches):
            return None
        self._i += 1
        return {INPUT: self._batches[self._i - 1]}

    def rewind(self) -> None:
        self._i = 0


def quantize_int8_static(float_path: Path, out: Path, calib: torch.Tensor, qmodel: nn.Module | None = None,
                         reduce_range: bool | None = None) -> dict[str, Any]:
    """Int8 static QDQ (U8S8, per-channel weights) of a float ONNX file; atomic.

    With ``qmodel`` (the fake-quant run, already exported as ``float_path`` via :func:`deployable_copy`)
    only its quantized layers are quantized, with its own activation scales and exact weights where
    they fit; without it every MatMul/Gemm/Conv is quantized with ORT MinMax ranges.
    ``reduce_range`` stores weights in 7 bits (+-63): on x86 CPUs without VNNI, MLAS multiplies u8 x s8
    with ``vpmaddubsw``, whose int16 pair sums saturate with full-range weights (measured on an AVX2
    machine: top-1 agreement with the fake-quant ViT 96 % at 8 bits, 99 % at 7 bits). ``None`` picks
    7 bits exactly when the exporting CPU lacks VNNI/AMX (:func:`squeeze.deploy.latency.has_vnni`).
    """
    import onnx  # noqa: PLC0415
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static  # noqa: PLC0415

    if reduce_range is None:
        from squeeze.deploy.latency import has_vnni  # noqa: PLC0415

        reduce_range = not has_vnni()
    graph = onnx.load(str(float_path)).graph
    nodes_to_quantize, overrides, tied, conflicts, missing = None, {}, {}, 0, []
    if qmodel is not None:
        modules = quantized_modules(qmodel)
        nodes = map_nodes(graph, set(modules))
        missing = sorted(set(modules) - set(nodes))
        if missing and not nodes:
            raise SqueezeError(f"no quantized layer of the run was found in the ONNX graph (e.g. {missing[0]})")
        nodes_to_quantize = [n.name for n in nodes.values()]
        overrides, conflicts = activation_overrides(modules, nodes)
        tied = tied_output_overrides(graph, nodes, overrides)
        overrides.update(tied)
        overrides.update(weight_overrides(modules, nodes, {i.name: i for i in graph.initializer},
                                          63 if reduce_range else 127))
    extra = {"ActivationSymmetric": False, "WeightSymmetric": True, "QDQDisableWeightAdjustForInt32Bias": True,
             "TensorQuantOverrides": overrides, "OpTypesToExcludeOutputQuantization": list(NO_OUTPUT_Q)}
    with atomic_path(out) as tmp:
        quantize_static(str(float_path), str(tmp), _CalibReader(calib), quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=list(CORE_OPS), nodes_to_quantize=nodes_to_quantize,
                        per_channel=True, reduce_range=reduce_range, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax, extra_options=extra)
        compact_file(tmp)
    n_weights = sum(1 for v in overrides.values() if "axis" in v[0])
    return {"nodes": len(nodes_to_quantize) if nodes_to_quantize is not None else "all",
            "weight_storage_bits": 7 if reduce_range else 8,
            "act_overrides": len(overrides) - n_weights - len(tied), "tied_outputs": len(tied),
            "exact_weights": n_weights, "override_conflicts": conflicts,
            "unmapped_layers": missing[:20]}  # quantized in the run but not found in the graph: left float


def quantize_int8_dynamic(float_path: Path, out: Path) -> dict[str, Any]:
    """Int8 dynamic quantization (weights int8 per-channel, activations quantized per call); atomic."""
    from onnxruntime.quantization import QuantType, quantize_dynamic  # noqa: PLC0415

    with atomic_path(out) as tmp:
        quantize_dynamic(str(float_path), str(tmp), per_channel=True, weight_type=QuantType.QInt8)
        compact_file(tmp)
    return {"ops": "MatMul/Gemm/Conv (ORT defaults)"}


def exact_int4_grids(qmodel: nn.Module, graph: Any) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``initializer -> (scale (N,), zero point (N,))`` for MatMul weights on a run's per-channel <=4-bit grid.

    Zero points are shifted by ``-qmin`` so the codes ``c - qmin`` lie in ``0..15``; only used when the
    initializer holds the run's fake-quant weight transposed (checked numerically).
    """
    from onnx import numpy_helper  # noqa: PLC0415

    modules = quantized_modules(qmodel)
    inits = {i.name: i for i in graph.initializer}
    found = {}
    for name, node in map_nodes(graph, set(modules)).items():
        q = getattr(modules[name], "weight_quantizer", None)
        if node.op_type != "MatMul" or node.input[1] not in inits or q is None or q.mode != "quant" \
                or q.spec.kind != "uniform" or q.spec.bits > 4 or q.spec.granularity.kind != "channel" \
                or q.spec.granularity.axis != 0:
            continue
        qmin = P.int_range(q.spec.bits, q.spec.symmetric)[0]
        weight = q.fake_quant(modules[name].weight).detach().numpy()
        if not np.allclose(numpy_helper.to_array(inits[node.input[1]]), weight.T, rtol=1e-5, atol=1e-7):
            continue
        found[node.input[1]] = (q.scale.reshape(-1).float().numpy(),
                                (q.zero_point.reshape(-1) - qmin).round().numpy().astype(np.uint8))
    return found


def quantize_int4_weight(float_path: Path, out: Path, block_size: int = INT4_BLOCK,
                         qmodel: nn.Module | None = None) -> dict[str, Any]:
    """4-bit block-quantized weights for every MatMul with a constant weight (ORT ``MatMulNBits``); atomic.

    Gemm / Conv nodes stay float (MatMulNBits covers MatMul only). With ``qmodel`` (a run exported as
    ``float_path``) its per-channel 4-bit grids are kept exactly (:func:`exact_int4_grids`).
    """
    import onnx  # noqa: PLC0415

    from squeeze.deploy.nbits import replace_matmuls  # noqa: PLC0415

    model = onnx.load(str(float_path))
    exact = exact_int4_grids(qmodel, model.graph) if qmodel is not None else {}
    count = replace_matmuls(model, block_size, exact)
    if count == 0:
        raise SqueezeError("no MatMul with a constant weight to quantize to 4 bits (MatMulNBits covers MatMul "
                           "only, not Conv or Gemm)")
    compact_names(model)
    with atomic_path(out) as tmp:
        onnx.save(model, str(tmp))
    return {"matmulnbits": count, "exact_weights": len(exact), "block_size": block_size, "accuracy_level": 4}


def export_quantized(qmodel: nn.Module, calib: torch.Tensor, out: str | Path, plan: DeployPlan,
                     reduce_range: bool | None = None) -> dict[str, Any]:
    """Export a fake-quant model as the artifact ``plan`` names (``int8-static`` or ``int4-weight``).

    The float export goes to a temporary folder; only the final file lands at ``out`` (atomically).
    Returns facts for ``report.json``'s ``deploy`` section.
    """
    out = Path(out)
    model = deployable_copy(qmodel)
    with tempfile.TemporaryDirectory(prefix="squeeze-onnx-") as work:
        float_path = export_float(model, calib[:1], Path(work) / "float.onnx")
        if plan.kind == "int8-static":
            info = quantize_int8_static(float_path, out, calib, qmodel=qmodel, reduce_range=reduce_range)
        else:
            info = quantize_int4_weight(float_path, out, qmodel=qmodel)
    return {**plan.to_dict(), **info, "format": "onnx", "file": out.name, "bytes": out.stat().st_size,
            "exporter": EXPORTER}


__all__ = ["atomic_path", "deployable_copy", "export_float", "export_quantized", "map_nodes", "module_of_node",
           "quantize_int4_weight", "quantize_int8_dynamic", "quantize_int8_static"]
