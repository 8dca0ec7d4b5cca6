"""Bit-packing of unsigned integer codes (any width 1..16) into a uint8 stream and back."""
from __future__ import annotations

import numpy as np
import torch


def pack_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack non-negative integer codes (< 2**bits) into ``ceil(n * bits / 8)`` bytes, little-endian bits."""
    values = codes.reshape(-1).to(torch.int64).numpy().astype(np.uint32)
    if values.size and int(values.max()) >= 2 ** bits:
        raise ValueError(f"code {int(values.max())} does not fit in {bits} bits")
    # (n, bits) matrix of bit planes, least significant first
    planes = ((values[:, None] >> np.arange(bits, dtype=np.uint32)[None, :]) & 1).astype(np.uint8)
    return torch.from_numpy(np.packbits(planes.reshape(-1), bitorder="little"))


def unpack_codes(packed: torch.Tensor, bits: int, count: int) -> torch.Tensor:
    """Inverse of :func:`pack_codes`: the first ``count`` codes as int64."""
    flat = np.unpackbits(packed.numpy().astype(np.uint8), bitorder="little")
    if flat.size < count * bits:
        raise ValueError(f"packed data holds {flat.size // bits} codes, expected {count}")
    planes = flat[: count * bits].reshape(count, bits).astype(np.int64)
    return torch.from_numpy((planes << np.arange(bits, dtype=np.int64)[None, :]).sum(1))
