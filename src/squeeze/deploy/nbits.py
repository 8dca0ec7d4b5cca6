"""4-bit weight-only MatMul for ONNX Runtime: the ``com.microsoft.MatMulNBits`` contrib operator.

Written here rather than through ``onnxruntime.quantization.matmul_nbits_quantizer`` because that
module needs the ``onnx_ir`` package, which squeeze does not depend on, and because writing the
node ourselves lets a squeeze run's own per-channel 4-bit grid be stored *exactly* (every block of a
column gets that column's scale and zero point).

Layout (ORT ContribOperators.md, MatMulNBits): for ``Y = A @ W`` with ``W`` of shape ``(K, N)``,
each column ``n`` is cut into ``ceil(K / block)`` blocks along ``K``; ``B`` is uint8
``(N, k_blocks, block * bits / 8)`` with two 4-bit codes per byte (even index in the low nibble),
``scales`` is float ``(N * k_blocks)``, ``zero_points`` uint8 ``(N * ceil(k_blocks / 2))`` packed the
same way, and ``w = (q - zero_point) * scale``. ``accuracy_level=4`` lets MLAS quantize ``A`` to int8
per block and use integer dot products.
"""
from __future__ import annotations

from typing import Any

import numpy as np

BITS = 4
QMAX = (1 << BITS) - 1


def pack_nibbles(codes: np.ndarray) -> np.ndarray:
    """Pack codes in ``0..15`` along the last axis (even length) two per byte, low nibble first."""
    codes = codes.astype(np.uint8)
    return (codes[..., 0::2] | (codes[..., 1::2] << 4)).astype(np.uint8)


def block_minmax_params(w: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray]:
    """Asymmetric 4-bit ``(scale, zero_point)`` per ``(column, block)`` of ``w`` (K, N), RTN min-max.

    The range always contains 0 so the zero point is an integer in ``0..15``. Returns arrays of
    shape ``(N, k_blocks)``.
    """
    k, n = w.shape
    k_blocks = -(-k // block)
    padded = np.zeros((k_blocks * block, n), dtype=np.float32)
    padded[:k] = w
    view = padded.reshape(k_blocks, block, n)
    lo = np.minimum(view.min(1), 0.0).T  # (N, k_blocks)
    hi = np.maximum(view.max(1), 0.0).T
    scale = np.maximum((hi - lo) / QMAX, 1e-12).astype(np.float32)
    zero = np.clip(np.round(-lo / scale), 0, QMAX).astype(np.uint8)
    return scale, zero


def quantize_blocks(w: np.ndarray, scale: np.ndarray, zero: np.ndarray, block: int) -> dict[str, np.ndarray]:
    """MatMulNBits tensors ``B``, ``scales``, ``zero_points`` for ``w`` (K, N) on the given block grid.

    ``scale`` / ``zero`` have shape ``(N, k_blocks)``; the last block is zero-padded to ``block``.
    """
    k, n = w.shape
    k_blocks = scale.shape[1]
    padded = np.zeros((k_blocks * block, n), dtype=np.float32)
    padded[:k] = w
    cols = padded.T.reshape(n, k_blocks, block)  # (N, k_blocks, block)
    codes = np.clip(np.round(cols / scale[..., None]) + zero[..., None], 0, QMAX)
    zp = zero if k_blocks % 2 == 0 else np.concatenate([zero, np.zeros((n, 1), np.uint8)], axis=1)
    return {"B": pack_nibbles(codes), "scales": scale.reshape(-1).astype(np.float32),
            "zero_points": pack_nibbles(zp).reshape(-1)}


def dequantize_blocks(tensors: dict[str, np.ndarray], k: int, n: int, block: int) -> np.ndarray:
    """Inverse of :func:`quantize_blocks` (the reference the tests compare ORT against), ``(K, N)``."""
    packed = tensors["B"]
    codes = np.stack([packed & 0xF, packed >> 4], axis=-1).reshape(n, -1, block).astype(np.float32)
    k_blocks = codes.shape[1]
    zp = np.stack([tensors["zero_points"] & 0xF, tensors["zero_points"] >> 4], axis=-1).reshape(n, -1)[:, :k_blocks]
    scale = tensors["scales"].reshape(n, k_blocks)
    w = (codes - zp[..., None]) * scale[..., None]
    return w.reshape(n, -1)[:, :k].T


def replace_matmuls(model: Any, block: int = 32, exact: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
                    accuracy_level: int = 4) -> int:
    """Rewrite every ``MatMul(A, W)`` with a constant 2-D ``W`` in ``model`` (ModelProto) to MatMulNBits.

    Args:
        block: block size along K (a power of two >= 16).
        exact: ``initializer name -> (scale (N,), zero_point (N,))`` of a run's per-column 4-bit grid;
            those columns keep the run's grid in every block instead of a min-max fit.
    Returns the number of nodes rewritten. Unused float initializers are removed.
    """
    from onnx import helper, numpy_helper  # noqa: PLC0415

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    count, new_nodes = 0, []
    for node in graph.node:
        w_init = inits.get(node.input[1]) if node.op_type == "MatMul" and len(node.input) == 2 else None
        if w_init is None or len(w_init.dims) != 2:
            new_nodes.append(node)
            continue
        w = numpy_helper.to_array(w_init).astype(np.float32)
        k, n = w.shape
        if exact and w_init.name in exact:
            s, z = exact[w_init.name]
            kb = -(-k // block)
            scale, zero = np.repeat(s[:, None], kb, 1).astype(np.float32), np.repeat(z[:, None], kb, 1).astype(np.uint8)
        else:
            scale, zero = block_minmax_params(w, block)
        tensors = quantize_blocks(w, scale, zero, block)
        prefix = f"{node.name or w_init.name}_nbits"
        names = [f"{prefix}_{key}" for key in ("B", "scales", "zero_points")]
        for name, key in zip(names, ("B", "scales", "zero_points")):
            graph.initializer.append(numpy_helper.from_array(tensors[key], name))
        new_nodes.append(helper.make_node("MatMulNBits", [node.input[0], *names], list(node.output),
                                          name=f"{prefix}", domain="com.microsoft", K=k, N=n, bits=BITS,
                                          block_size=block, accuracy_level=accuracy_level))
        count += 1
    del graph.node[:]
    graph.node.extend(new_nodes)
    used = {i for node in graph.node for i in node.input}
    keep = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    if count and not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return count
