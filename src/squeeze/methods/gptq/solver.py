"""The GPTQ solver (Frantar, Ashkboos, Hoefler, Alistarh, "GPTQ: Accurate Post-Training
Quantization for Generative Pre-trained Transformers", ICLR 2023), written from the paper.

Quantizes the columns of ``W`` one at a time; the rounding error of each column is spread over the
not-yet-quantized columns using the inverse Hessian ``H^-1`` of the layer's squared output error
(``H = 2 X^T X``), via its upper Cholesky factor, processed in lazy blocks of ``blocksize`` columns.
"""
from __future__ import annotations

from typing import Callable

import torch

ColumnQuantizer = Callable[[torch.Tensor, int], torch.Tensor]


def damped_inverse_cholesky(h: torch.Tensor, percdamp: float) -> torch.Tensor:
    """Upper Cholesky factor of ``(H + damp*I)^-1`` with ``damp = percdamp * mean(diag H)``."""
    damp = percdamp * torch.diag(h).mean()
    h = h + damp * torch.eye(h.shape[0], dtype=h.dtype, device=h.device)
    lower = torch.linalg.cholesky(h)
    inv = torch.cholesky_inverse(lower)
    return torch.linalg.cholesky(inv, upper=True)


@torch.no_grad()
def gptq_quantize(w: torch.Tensor, h: torch.Tensor, quant: ColumnQuantizer, blocksize: int = 128,
                  percdamp: float = 0.01, act_order: bool = False) -> torch.Tensor:
    """Return dequantized weights minimizing ``||(W - Q) X^T||`` greedily, column by column.

    Args:
        w: (rows, cols) float weight; ``cols`` is the input dimension.
        h: (cols, cols) Hessian proxy ``X^T X`` (any positive scale).
        quant: ``quant(column, j) -> dequantized column`` on the fixed grid of column ``j``.
        blocksize: columns per lazy-update block.
        percdamp: relative diagonal damping.
        act_order: process columns by decreasing ``diag(H)`` (largest activations first).
    """
    w = w.detach().double().clone()
    h = h.detach().double().to(w.device).clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    cols = w.shape[1]
    perm = torch.argsort(torch.diag(h), descending=True) if act_order else torch.arange(cols, device=w.device)
    w, h = w[:, perm], h[perm][:, perm]
    hinv = damped_inverse_cholesky(h, percdamp)
    q = torch.zeros_like(w)
    for start in range(0, cols, blocksize):
        end = min(start + blocksize, cols)
        w_blk = w[:, start:end].clone()
        err_blk = torch.zeros_like(w_blk)
        hinv_blk = hinv[start:end, start:end]
        for i in range(end - start):
            col = w_blk[:, i]
            qcol = quant(col.float(), int(perm[start + i])).double()
            q[:, start + i] = qcol
            err = (col - qcol) / hinv_blk[i, i]
            w_blk[:, i:] -= err[:, None] * hinv_blk[i, i:][None, :]  # feedback inside the block
            err_blk[:, i] = err
        w[:, end:] -= err_blk @ hinv[start:end, end:]  # lazy update of the remaining columns
    return q[:, torch.argsort(perm)].float()
