"""Compact N:M model files: kept values + a packed bitmask per sparse layer, safetensors + JSON header.

Layout of ``model.nm.safetensors`` (no pickle anywhere):

* ``{layer}.weight.values``: float32 non-zeros of the layer's forward matrix (:func:`masks.fwd_matrix`,
  rows of input-channel groups) in row-major order;
* ``{layer}.weight.bitmask``: uint8, the same matrix's non-zero pattern, 1 bit per weight (numpy
  ``packbits`` order, big-endian bits);
* every other tensor of the state dict as is;
* metadata ``format=squeeze-nm``, ``format_version``, ``squeeze`` = JSON header with the model name and
  architecture, N, M, the sparse layers (shape, kept count), SpRe's merged (conv, bn) pairs, the config.

A 2:4 layer costs 4 bytes per kept value + 1/8 byte per weight, 0.53x of float32.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save as save_bytes
from torch import nn

from squeeze.errors import SqueezeError
from squeeze.sparse import masks as K
from squeeze.train.checkpoint import atomic_save_tensors, read_format_file

FORMAT = "squeeze-nm"
FORMAT_VERSION = 1
FILENAME = "model.nm.safetensors"


def pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """bool tensor -> uint8 bytes (8 weights per byte)."""
    return torch.from_numpy(np.packbits(mask.reshape(-1).cpu().numpy().astype(np.uint8)))


def unpack_bits(packed: torch.Tensor, count: int) -> torch.Tensor:
    """Inverse of :func:`pack_bits` for ``count`` entries (bool, flat)."""
    bits = np.unpackbits(packed.cpu().numpy().astype(np.uint8))[:count]
    return torch.from_numpy(bits.astype(bool))


def encode_layer(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, bitmask) of a weight's non-zeros in forward-matrix order."""
    mat = K.fwd_matrix(w.detach().float().cpu()).contiguous()
    nz = mat != 0
    return mat[nz].contiguous(), pack_bits(nz)


def decode_layer(values: torch.Tensor, bitmask: torch.Tensor, shape: list[int]) -> torch.Tensor:
    """Dense weight of ``shape`` from :func:`encode_layer`'s output (validated)."""
    rows = shape[0] * int(np.prod(shape[2:])) if len(shape) == 4 else shape[0]
    cols = shape[1]
    if bitmask.numel() * 8 < rows * cols:
        raise SqueezeError(f"bitmask holds {bitmask.numel() * 8} bits, the layer needs {rows * cols}")
    nz = unpack_bits(bitmask, rows * cols).reshape(rows, cols)
    if int(nz.sum()) != values.numel():
        raise SqueezeError(f"bitmask marks {int(nz.sum())} weights but {values.numel()} values are stored")
    mat = torch.zeros(rows, cols)
    mat[nz] = values.float()
    return K.fwd_unmatrix(mat, tuple(shape))


def save_nm(model: nn.Module, path: str | Path, info: dict[str, Any]) -> dict[str, int]:
    """Write ``model`` (plain modules; sparse layers listed in ``info["layers"]``) compactly.

    ``info`` needs ``model``, ``arch``, ``n``, ``m``, ``layers`` (names), optionally ``merged`` (SpRe
    (conv, bn) name pairs) and ``config``. Refuses layers that are not N:M. Returns
    ``{"file_bytes", "dense_bytes"}`` (``dense_bytes``: the same state dict as float32 safetensors).
    """
    path = Path(path)
    target = path / FILENAME if path.suffix != ".safetensors" else path
    n, m = int(info["n"]), int(info["m"])
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    tensors: dict[str, torch.Tensor] = {}
    layers = {}
    for name in info["layers"]:
        w = state.pop(f"{name}.weight")
        if not K.is_nm(w, n, m):
            raise SqueezeError(f"layer {name} is not {n}:{m} sparse; bake the masks before saving")
        values, bits = encode_layer(w)
        tensors[f"{name}.weight.values"], tensors[f"{name}.weight.bitmask"] = values, bits
        layers[name] = {"shape": list(w.shape), "kept": values.numel()}
    tensors.update({k: v.contiguous() for k, v in state.items()})
    header = {"model": info["model"], "arch": info.get("arch"), "n": n, "m": m, "layers": layers,
              "merged": info.get("merged", []), "config": info.get("config")}
    atomic_save_tensors(target, tensors, metadata={"format": FORMAT, "format_version": str(FORMAT_VERSION),
                                                    "squeeze": json.dumps(header)})
    dense = len(save_bytes({k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}))
    return {"file_bytes": target.stat().st_size, "dense_bytes": dense}


def read_nm(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Header and raw tensors of a compact N:M file (format and version validated)."""
    target, meta, tensors = read_format_file(path, FILENAME, FORMAT, FORMAT_VERSION, "N:M file", "squeeze train nm")
    try:
        header = json.loads(meta["squeeze"])
        int(header["n"]), int(header["m"]), dict(header["layers"])
    except (KeyError, TypeError, ValueError) as exc:
        raise SqueezeError(f"{target} has a corrupt header ({exc}); re-export it") from exc
    return header, tensors


def nm_violations(path: str | Path) -> dict[str, str]:
    """``{layer: reason}`` for every sparse layer of the file that is not exactly N:M (empty when clean)."""
    header, tensors = read_nm(path)
    n, m = int(header["n"]), int(header["m"])
    bad = {}
    for name, layout in header["layers"].items():
        values, bits = tensors.get(f"{name}.weight.values"), tensors.get(f"{name}.weight.bitmask")
        if values is None or bits is None:
            bad[name] = "values or bitmask missing"
            continue
        try:
            w = decode_layer(values, bits, layout["shape"])
        except SqueezeError as exc:
            bad[name] = str(exc)
            continue
        if w.shape[1] % m:
            bad[name] = f"{w.shape[1]} inputs do not split into groups of {m}"
            continue
        counts = K.group_counts(w, m)
        if (counts > n).any():
            bad[name] = f"{int((counts > n).sum())} of {counts.numel()} groups keep more than {n} of {m}"
    return bad


def check_nm(path: str | Path) -> list[str]:
    """Names of the sparse layers in ``path`` that are not exactly N:M (empty list: the file passes)."""
    return sorted(nm_violations(path))


def load_nm(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the eval-mode network saved by :func:`save_nm` (refuses files that fail :func:`check_nm`)."""
    from squeeze.sparse.task import build_base  # noqa: PLC0415 (avoid an import cycle)

    header, tensors = read_nm(path)
    bad = nm_violations(path)
    if bad:
        name = sorted(bad)[0]
        raise SqueezeError(f"{path}: layer {name} is not {header['n']}:{header['m']} ({bad[name]})")
    net = build_base(header["model"], header.get("arch"))
    for conv_name, bn_name in header["merged"]:
        conv = net.get_submodule(conv_name)
        conv.bias = nn.Parameter(torch.zeros(conv.out_channels))
        parent, _, attr = bn_name.rpartition(".")
        setattr(net.get_submodule(parent) if parent else net, attr, nn.Identity())
    state = {k: v for k, v in tensors.items() if not k.endswith((".weight.values", ".weight.bitmask"))}
    for name, layout in header["layers"].items():
        state[f"{name}.weight"] = decode_layer(tensors[f"{name}.weight.values"], tensors[f"{name}.weight.bitmask"],
                                               layout["shape"])
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise SqueezeError(f"{path} does not match the {header['model']} architecture (missing {missing[:3]}, "
                           f"unexpected {unexpected[:3]})")
    return net.eval(), header
