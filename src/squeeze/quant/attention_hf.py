"""Attention adapter for Hugging Face transformers 5.x (ViT, DeiT, Dinov2, BERT).

In transformers 5.x a self-attention module computes q/k/v itself and then calls
``ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation, eager_attention_forward)``
with ``(module, query, key, value, attention_mask, scaling=..., dropout=...)``. The attention
*masks* are built by ``masking_utils`` from ``ALL_MASK_ATTENTION_FUNCTIONS[config._attn_implementation]``
(an unknown name there silently drops the mask). The adaptation is therefore module-level and
needs no tracing:

1. each recognised attention module gets two :class:`~squeeze.quant.modules.QuantMatMul`
   children, ``matmul1`` and ``matmul2`` (its class and forward are untouched);
2. an attention function named :data:`ATTN_IMPLEMENTATION` (``"squeeze_eager"``) is registered
   with ``AttentionInterface.register``, and transformers' eager mask builder is registered under
   the same name with ``AttentionMaskInterface.register`` (additive ``0 / dtype-min`` float masks);
3. ``config._attn_implementation`` is set to that name on the adapted modules' configs and on the
   configs of the ``PreTrainedModel`` s that contain them (the setter recurses into sub-configs).

The function follows the RepQ-ViT convention (Lin et al., ICCV 2023): scores =
``matmul1(q, k^T) * scaling`` (+ mask), float softmax, ``matmul2(probs, v)``; ``matmul2.a_quantizer``
is the post-softmax quantizer. Modules that reach it without ``matmul1``/``matmul2`` (an
unrecognised attention class sharing the config) run their own model file's
``eager_attention_forward`` unchanged. Registration is process-global and idempotent; a config
saved from a prepared model names ``squeeze_eager``, so reset it before ``save_pretrained``.
"""
from __future__ import annotations

import sys
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from squeeze.quant.modules import QuantMatMul

ATTN_IMPLEMENTATION = "squeeze_eager"

# Attention classes whose forward hands (q, k, v) to the attention interface with the eager
# semantics above; qualified names, so transformers is imported only when a model uses it.
HF_ATTENTION_CLASSES: set[str] = {
    "transformers.models.vit.modeling_vit.ViTAttention",
    "transformers.models.deit.modeling_deit.DeiTAttention",
    "transformers.models.dinov2.modeling_dinov2.Dinov2Attention",
    "transformers.models.bert.modeling_bert.BertSelfAttention",
    "transformers.models.bert.modeling_bert.BertCrossAttention",
}


def _qualname(module: nn.Module) -> str:
    return f"{type(module).__module__}.{type(module).__qualname__}"


def _has_matmuls(module: nn.Module) -> bool:
    return isinstance(getattr(module, "matmul1", None), QuantMatMul) and \
        isinstance(getattr(module, "matmul2", None), QuantMatMul)


def _score_bias(mask: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """Additive bias from an eager (float) mask or an SDPA-style bool mask (True = attend)."""
    mask = mask[..., : scores.shape[-1]]
    if mask.dtype == torch.bool:
        return torch.zeros_like(mask, dtype=scores.dtype).masked_fill(~mask, torch.finfo(scores.dtype).min)
    return mask.to(scores.dtype)


def _plain_eager(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                 attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0,
                 **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Fallback for modules without matmuls: the model file's own eager function (else ours, float)."""
    eager = getattr(sys.modules.get(type(module).__module__), "eager_attention_forward", None)
    if eager is not None:
        return eager(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
    return _explicit_attention(module, torch.matmul, torch.matmul, query, key, value, attention_mask,
                               scaling, dropout)


def _explicit_attention(module: nn.Module, mm1: Callable, mm2: Callable, query: torch.Tensor,
                        key: torch.Tensor, value: torch.Tensor, attention_mask: torch.Tensor | None,
                        scaling: float | None, dropout: float) -> tuple[torch.Tensor, torch.Tensor]:
    scale = query.shape[-1] ** -0.5 if scaling is None else scaling
    scores = mm1(query, key.transpose(-2, -1)) * scale
    if attention_mask is not None:
        scores = scores + _score_bias(attention_mask, scores)
    # at least float32 (half-precision scores upcast, as transformers' eager attention does; float64 kept)
    probs = F.softmax(scores, dim=-1, dtype=torch.promote_types(scores.dtype, torch.float32)).to(query.dtype)
    probs = F.dropout(probs, p=dropout, training=module.training)
    out = mm2(probs, value)
    return out.transpose(1, 2).contiguous(), probs


def squeeze_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                      attention_mask: torch.Tensor | None, scaling: float | None = None,
                      dropout: float = 0.0, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``squeeze_eager`` attention function: eager attention through ``module.matmul1/2``.

    Args are the transformers attention-interface ones: ``query/key/value`` are
    ``(batch, heads, seq, head_dim)``; ``attention_mask`` is additive (``0`` / dtype-min) or bool;
    ``dropout`` is already 0 in eval mode. Returns ``(output (batch, seq, heads, head_dim), probs)``.
    """
    if not _has_matmuls(module):
        return _plain_eager(module, query, key, value, attention_mask, scaling, dropout, **kwargs)
    return _explicit_attention(module, module.matmul1, module.matmul2, query, key, value,
                               attention_mask, scaling, dropout)


def register() -> None:
    """Register :func:`squeeze_attention` and the eager mask builder as ``squeeze_eager``."""
    from transformers import AttentionInterface  # noqa: PLC0415 (optional dependency)
    from transformers.masking_utils import AttentionMaskInterface, eager_mask  # noqa: PLC0415

    AttentionInterface.register(ATTN_IMPLEMENTATION, squeeze_attention)
    AttentionMaskInterface.register(ATTN_IMPLEMENTATION, eager_mask)


def is_hf_attention(module: nn.Module) -> bool:
    """Whether ``module`` is one of the supported transformers attention classes."""
    return _qualname(module) in HF_ATTENTION_CLASSES


def adapt_hf_attention(module: nn.Module) -> bool:
    """Give a supported transformers attention module ``matmul1``/``matmul2`` and switch its config.

    Returns ``True`` if it was adapted by this call (already-adapted modules return ``False``).
    """
    if not is_hf_attention(module) or _has_matmuls(module):
        return False
    register()
    module.matmul1 = QuantMatMul()
    module.matmul2 = QuantMatMul()
    module.config._attn_implementation = ATTN_IMPLEMENTATION
    return True


def activate(model: nn.Module) -> None:
    """Point every ``PreTrainedModel`` that holds an adapted attention module at ``squeeze_eager``.

    Mask builders read the config of the model that creates the mask, which may be a parent of
    the attention module's own config; both must agree on the implementation name.
    """
    from transformers import PreTrainedModel  # noqa: PLC0415

    for sub in model.modules():
        if isinstance(sub, PreTrainedModel) and any(
                is_hf_attention(m) and _has_matmuls(m) for m in sub.modules()):
            if sub.config._attn_implementation != ATTN_IMPLEMENTATION:
                sub.config._attn_implementation = ATTN_IMPLEMENTATION
