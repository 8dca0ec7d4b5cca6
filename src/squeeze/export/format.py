"""The squeeze quantized-model file: ``model.safetensors`` holding bit-packed integer weights,
scales, zero points, the remaining float tensors, and JSON metadata (config, quantizer specs).

Loading never unpickles: only safetensors and JSON are read. A file written by a newer format
version, or a corrupt/truncated file, is refused with a one-line :class:`SqueezeError`.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from squeeze.errors import SqueezeError
from squeeze.export.packing import pack_codes, unpack_codes
from squeeze.quant import primitives as P
from squeeze.quant.custom import custom_headers, install_custom
from squeeze.quant.modules import QUANT_LAYERS, iter_quantizers
from squeeze.quant.quantizer import Quantizer, QuantSpec
from squeeze.train.checkpoint import atomic_save_tensors, read_format_file

FORMAT = "squeeze-quant"
FORMAT_VERSION = 1
FILENAME = "model.safetensors"


def _packed_weights(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Integer codes of every uniformly weight-quantized layer, bit-packed, with their layout."""
    tensors, layers = {}, {}
    for name, mod in model.named_modules():
        q = getattr(mod, "weight_quantizer", None)
        if not isinstance(mod, QUANT_LAYERS) or q is None or not q.calibrated or q.spec.kind != "uniform":
            continue
        qmin, _ = P.int_range(q.spec.bits, q.spec.symmetric)
        codes = q.int_codes(mod.weight) - qmin
        tensors[f"{name}.weight.packed"] = pack_codes(codes, q.spec.bits)
        layers[name] = {"bits": q.spec.bits, "qmin": qmin, "shape": list(mod.weight.shape)}
    return tensors, layers


def save(model: nn.Module, path: str | Path) -> Path:
    """Write a quantized model to ``path`` (a folder, or a ``.safetensors`` file); returns the file.

    Weights go as ``bits``-bit packed codes; the file is written to a temp name and renamed.
    """
    meta = getattr(model, "squeeze_meta", None)
    if meta is None:
        raise SqueezeError("this model was not produced by squeeze.quantize; quantize it first")
    path = Path(path)
    target = path if path.suffix == ".safetensors" else path / FILENAME
    tensors, layers = _packed_weights(model)
    skip = {f"{n}.weight" for n in layers}
    for key, value in model.state_dict().items():
        if key not in skip and value.numel() > 0:
            tensors[key] = value
    quantizers = {n: {"spec": q.spec.to_dict(), "mode": q.mode} for n, q in iter_quantizers(model)}
    header = {**meta, "layers": layers, "quantizers": quantizers, "custom_quantizers": custom_headers(model)}
    atomic_save_tensors(target, tensors, metadata={"format": FORMAT, "format_version": str(FORMAT_VERSION),
                                                    "squeeze": json.dumps(header)})
    return target


def read_file(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read header and tensors of a squeeze file, validating format and version."""
    _, meta, tensors = read_format_file(path, FILENAME, FORMAT, FORMAT_VERSION, "quantized model", "squeeze quantize")
    return json.loads(meta["squeeze"]), tensors


def load(path: str | Path, model: nn.Module | None = None) -> nn.Module:
    """Rebuild a quantized model whose outputs equal the fake-quant model that was saved.

    Args:
        path: folder or file written by :func:`save`.
        model: the float architecture to fill (copied, not modified). Defaults to the zoo model
            named in the file.
    """
    from squeeze.quant.prepare import prepare_model  # noqa: PLC0415 (avoid import cycle)

    header, tensors = read_file(path)
    if model is None:
        from squeeze.zoo.registry import load_model  # noqa: PLC0415

        if not header.get("model"):
            raise SqueezeError("the file names no zoo model; pass the float model: squeeze.load(path, model)")
        model = load_model(header["model"]).model
    model = copy.deepcopy(model).eval()
    prepare_model(model)
    _install_quantizers(model, header["quantizers"], tensors)
    install_custom(model, header.get("custom_quantizers", {}))
    for name, layout in header["layers"].items():
        tensors[f"{name}.weight"] = _unpack_weight(model.get_submodule(name), layout,
                                                   tensors.pop(f"{name}.weight.packed"))
    _load_state(model, tensors)
    model.squeeze_meta = {k: v for k, v in header.items() if k not in ("layers", "quantizers", "custom_quantizers")}
    return model


def _install_quantizers(model: nn.Module, specs: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    for qname, info in specs.items():
        parent_name, _, attr = qname.rpartition(".")
        quantizer = Quantizer(QuantSpec.from_dict(info["spec"]))
        quantizer.mode = info["mode"]
        for buf in ("scale", "zero_point"):
            value = tensors.pop(f"{qname}.{buf}", None)
            if value is not None:
                setattr(quantizer, buf, value)
        setattr(model.get_submodule(parent_name), attr, quantizer)


def _unpack_weight(layer: nn.Module, layout: dict[str, Any], packed: torch.Tensor) -> torch.Tensor:
    q: Quantizer = layer.weight_quantizer  # type: ignore[assignment]
    shape = torch.Size(layout["shape"])
    view_shape = q.spec.granularity.view(torch.empty(shape))[0].shape
    codes = unpack_codes(packed, layout["bits"], shape.numel()).reshape(view_shape) + layout["qmin"]
    return P.dequantize(codes.float(), q.scale, q.zero_point).reshape(shape)


def _load_state(model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    for key in tensors:
        owner, _, attr = key.rpartition(".")
        mod = model.get_submodule(owner)
        if attr == "bias" and getattr(mod, "bias", 0) is None:  # bias created by a reparameterization
            mod.bias = nn.Parameter(torch.zeros_like(tensors[key]))
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    missing = [k for k in missing if not k.endswith(("scale", "zero_point"))]
    if missing or unexpected:
        raise SqueezeError(f"saved file does not match the model (missing {missing[:3]}, unexpected "
                           f"{unexpected[:3]}); load it with the architecture it was saved from")
