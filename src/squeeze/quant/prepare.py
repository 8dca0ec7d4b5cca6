"""Prepare an eager model for quantization: swap layers and expose the attention matmuls.

:func:`prepare_model` works in place by module swap, without ``torch.fx`` tracing:

1. :func:`~squeeze.quant.modules.swap_layers` turns ``nn.Linear`` / ``nn.Conv2d`` into their quant
   subclasses (parameters shared, names unchanged);
2. every attention module of a known family gets two :class:`~squeeze.quant.modules.QuantMatMul`
   children, ``matmul1`` (``q @ k^T``; the softmax scale is applied after it) and ``matmul2``
   (``softmax_probs @ v``, so ``matmul2.a_quantizer`` is the post-softmax quantizer), following
   RepQ-ViT (Lin et al., ICCV 2023), which makes both attention matmuls quantizable. The softmax
   itself stays float.

Families (one adapter each):

* timm ``Attention`` (ViT, DeiT) and Swin ``WindowAttention``: class swap to a subclass whose
  forward uses the explicit matmuls, bypassing fused SDPA (:mod:`squeeze.quant.attention_timm`);
* transformers 5.x ViT / DeiT / Dinov2 / BERT attention: matmul children plus a registered
  attention function ``squeeze_eager`` selected through ``config._attn_implementation``
  (:mod:`squeeze.quant.attention_hf`; imported only for models that contain transformers modules).

With no quantizer attached the prepared model computes the same function (up to float rounding,
~1e-6). Preparing twice is a no-op the second time. Attention modules of unknown types are left
float and listed in :attr:`PrepareReport.unsupported`; that is not an error.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from torch import nn

from squeeze.quant.attention_timm import adapt_timm_attention
from squeeze.quant.modules import QuantConv2d, QuantLinear, QuantMatMul, swap_layers

Adapter = Callable[[nn.Module], bool]  # adapts a module in place; True if it did


@dataclass
class PrepareReport:
    """What one :func:`prepare_model` call changed (a repeated call reports zeros).

    Attributes:
        linears: ``nn.Linear`` layers swapped to :class:`QuantLinear`.
        convs: ``nn.Conv2d`` layers swapped to :class:`QuantConv2d`.
        attentions: attention modules given ``matmul1`` / ``matmul2``.
        attention_types: sorted class names of those attention modules.
        unsupported: ``"name (Class)"`` of attention-like modules left float (unknown type).
    """

    linears: int
    convs: int
    attentions: int
    attention_types: list[str]
    unsupported: list[str] = field(default_factory=list)


def is_adapted(module: nn.Module) -> bool:
    """Whether ``module`` is an attention module with ``matmul1`` and ``matmul2`` children."""
    return isinstance(getattr(module, "matmul1", None), QuantMatMul) and \
        isinstance(getattr(module, "matmul2", None), QuantMatMul)


def attention_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The adapted attention modules of ``model`` with their qualified names, in module order."""
    return [(name, m) for name, m in model.named_modules() if is_adapted(m)]


def _uses_transformers(model: nn.Module) -> bool:
    return any(type(m).__module__.startswith("transformers.") for m in model.modules())


def _adapters(model: nn.Module) -> tuple[list[Adapter], Callable[[nn.Module], None] | None]:
    """Adapters that apply to ``model``, and a post-pass hook (transformers config switch)."""
    adapters: list[Adapter] = [adapt_timm_attention]
    if not _uses_transformers(model):
        return adapters, None
    from squeeze.quant import attention_hf  # noqa: PLC0415 (optional dependency)

    return [*adapters, attention_hf.adapt_hf_attention], attention_hf.activate


def _inside(inner: str, outer: str) -> bool:
    """Whether qualified name ``inner`` lies strictly inside ``outer`` (``""`` is the root)."""
    return inner != outer and (outer == "" or inner.startswith(outer + "."))


def _unsupported(model: nn.Module) -> list[str]:
    """Innermost modules named like attention that are neither adapted nor around/inside one."""
    named = list(model.named_modules())
    adapted = [name for name, m in named if is_adapted(m)]
    candidates = [(name, m) for name, m in named
                  if "attention" in type(m).__name__.lower() and not is_adapted(m)
                  and not any(_inside(name, a) or _inside(a, name) for a in adapted)]
    names = [name for name, _ in candidates]
    return [f"{name or '<root>'} ({type(m).__name__})" for name, m in candidates
            if not any(_inside(other, name) for other in names)]


def prepare_model(model: nn.Module) -> PrepareReport:
    """Swap quant layers and adapt every recognised attention module of ``model``, in place.

    Returns a :class:`PrepareReport` of what this call changed.
    """
    def count(cls: type) -> int:
        return sum(isinstance(m, cls) for m in model.modules())

    linears, convs = count(QuantLinear), count(QuantConv2d)
    swap_layers(model)
    adapters, post = _adapters(model)
    types: list[str] = []
    for module in list(model.modules()):
        if is_adapted(module):
            continue
        base = type(module).__name__
        if any(adapt(module) for adapt in adapters):
            types.append(base)
    if post is not None:
        post(model)
    return PrepareReport(linears=count(QuantLinear) - linears, convs=count(QuantConv2d) - convs,
                         attentions=len(types), attention_types=sorted(set(types)),
                         unsupported=_unsupported(model))
