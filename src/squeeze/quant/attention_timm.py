"""Attention adapters for timm: ViT/DeiT ``Attention`` and Swin ``WindowAttention``.

Each recognised module has its class swapped in place (``module.__class__ = Quant...``) to a
subclass whose ``forward`` computes attention with explicit matmuls, and receives two
:class:`~squeeze.quant.modules.QuantMatMul` children. Parameters, buffers, state-dict keys and
``isinstance`` checks are unchanged; timm's fused ``scaled_dot_product_attention`` branch is never
taken, whatever ``fused_attn`` says.

Convention (RepQ-ViT, Lin et al., ICCV 2023, which makes both attention matmuls quantizable):

* ``matmul1(q, k.transpose(-2, -1)) * scale`` -- the softmax scale is applied *after* the first
  matmul, so ``matmul1.a_quantizer`` sees the un-scaled (normed) queries and
  ``matmul1.b_quantizer`` the transposed keys. timm's own unfused path scales ``q`` first; the
  two orders agree to float rounding.
* relative position bias / masks are added to the scores, the softmax stays in float;
* ``matmul2(probs, v)`` -- ``matmul2.a_quantizer`` is the post-softmax quantizer.

Only the exact classes are adapted (``type(m) is Attention``): a subclass may have its own
``forward`` that this code does not know.
"""
from __future__ import annotations

import torch
from timm.layers import Attention
from timm.models.swin_transformer import WindowAttention
from torch import nn

from squeeze.quant.modules import QuantMatMul


def _mask_bias(scores: torch.Tensor, attn_mask: torch.Tensor | None, is_causal: bool) -> torch.Tensor | None:
    """Additive score bias with SDPA semantics: causal wins; a bool mask marks positions to keep."""
    n_q, n_k = scores.shape[-2:]
    if is_causal:
        return torch.full((n_q, n_k), float("-inf"), dtype=scores.dtype, device=scores.device).triu_(1)
    if attn_mask is not None and attn_mask.dtype == torch.bool:
        return torch.zeros_like(attn_mask, dtype=scores.dtype).masked_fill_(~attn_mask, float("-inf"))
    return attn_mask


def _add_matmuls(module: nn.Module) -> None:
    module.matmul1 = QuantMatMul()
    module.matmul2 = QuantMatMul()


class QuantTimmAttention(Attention):
    """timm ``Attention`` (ViT, DeiT, ...) with quantizable ``matmul1`` / ``matmul2``.

    Honours ``q_norm``/``k_norm``, ``attn_mask``/``is_causal``, ``attn_drop``, the optional output
    ``norm`` (``scale_norm``) and ``gate`` of timm 1.0.x, ``proj`` and ``proj_drop``.
    """

    matmul1: QuantMatMul
    matmul2: QuantMatMul

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None,
                is_causal: bool = False) -> torch.Tensor:
        b, n, _ = x.shape
        gate_layer = getattr(self, "gate", None)
        gate = gate_layer(x).sigmoid() if gate_layer is not None else None
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)

        scores = self.matmul1(q, k.transpose(-2, -1)) * self.scale
        bias = _mask_bias(scores, attn_mask, is_causal)
        if bias is not None:
            scores = scores + bias
        probs = self.attn_drop(scores.softmax(dim=-1))
        out = self.matmul2(probs, v)

        out = out.transpose(1, 2).reshape(b, n, self.num_heads * self.head_dim)
        norm = getattr(self, "norm", None)
        if norm is not None:
            out = norm(out)
        if gate is not None:
            out = out * gate
        return self.proj_drop(self.proj(out))


class QuantWindowAttention(WindowAttention):
    """timm Swin ``WindowAttention`` with quantizable ``matmul1`` / ``matmul2``.

    The relative position bias and the shifted-window mask (``0 / -100`` per window, shape
    ``(num_windows, N, N)``) are added to the scaled scores before the float softmax.
    """

    matmul1: QuantMatMul
    matmul2: QuantMatMul

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b_windows, n, _ = x.shape
        qkv = self.qkv(x).reshape(b_windows, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)

        scores = self.matmul1(q, k.transpose(-2, -1)) * self.scale
        scores = scores + self._get_rel_pos_bias()
        if mask is not None:
            num_win = mask.shape[0]
            scores = scores.view(-1, num_win, self.num_heads, n, n) + mask[None, :, None]
            scores = scores.view(-1, self.num_heads, n, n)
        probs = self.attn_drop(self.softmax(scores))
        out = self.matmul2(probs, v)

        out = out.transpose(1, 2).reshape(b_windows, n, -1)
        return self.proj_drop(self.proj(out))


_SWAPS: dict[type, type] = {Attention: QuantTimmAttention, WindowAttention: QuantWindowAttention}


def adapt_timm_attention(module: nn.Module) -> bool:
    """Adapt ``module`` in place if it is exactly a supported timm attention class.

    Returns ``True`` if it was adapted by this call (already-adapted modules return ``False``).
    """
    target = _SWAPS.get(type(module))
    if target is None:
        return False
    module.__class__ = target
    _add_matmuls(module)
    return True
