"""Round-to-nearest post-training quantization (the baseline every PTQ paper starts from).

``rtn``: per-channel min-max weights, per-tensor min-max activations (Jacob et al., CVPR 2018).
``percentile``: the same weights; activations clipped at a percentile of the calibration data
(e.g. 99.9%), as in McKinstry et al. 2019 / Wu et al. 2020, "Integer quantization ... principles".
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from squeeze.config import QuantConfig, register_method
from squeeze.errors import SqueezeError
from squeeze.methods.steps import rtn_stage
from squeeze.quant.attach import attach_quantizers, probe_roles
from squeeze.quant.calibrate import walk


@dataclass
class RTNConfig(QuantConfig):
    """Min-max round-to-nearest. Example: ``make_config("rtn", wbits=4, abits=8)``."""

    method = "rtn"


@dataclass
class PercentileConfig(QuantConfig):
    """Round-to-nearest with activations clipped at ``percentile`` (of |values| on each side)."""

    method = "percentile"
    percentile: float = 0.999

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.5 < self.percentile <= 1.0:
            raise SqueezeError(f"percentile={self.percentile} must be in (0.5, 1], e.g. 0.999")


@register_method(RTNConfig, "round-to-nearest, min-max ranges (baseline)")
def apply_rtn(model: nn.Module, config: RTNConfig, batches: list[torch.Tensor]) -> None:
    """Quantize ``model`` (already prepared) in place with min-max RTN."""
    attach_quantizers(model, config, probe_roles(model, batches[0][:1]), "minmax")
    walk(model, batches, rtn_stage, desc="rtn")


@register_method(PercentileConfig, "round-to-nearest, percentile-clipped activations (baseline)")
def apply_percentile(model: nn.Module, config: PercentileConfig, batches: list[torch.Tensor]) -> None:
    """Quantize ``model`` (already prepared) in place with percentile-clipped RTN."""
    attach_quantizers(model, config, probe_roles(model, batches[0][:1]), "percentile",
                      percentile=config.percentile)
    walk(model, batches, rtn_stage, desc="percentile")
