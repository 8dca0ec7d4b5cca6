"""QDrop (Wei, Gong, Li, Liu, Yu, "QDrop: Randomly Dropping Quantization for Extremely Low-bit
Post-Training Quantization", ICLR 2022) as a ViT PTQ baseline.

BRECQ-style block reconstruction (:mod:`.brecq`) where, during reconstruction only, every element
of every activation quantizer in the unit keeps its float value with probability ``drop_prob``
(the paper's 0.5), and the unit's input mixes the float model's and the quantized model's input
elementwise with the same probability, as in the paper's implementation. Evaluation and the final
model quantize every activation.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from squeeze.config import register_method
from squeeze.errors import SqueezeError
from squeeze.methods.recon.brecq import BRECQConfig, run_block_reconstruction
from squeeze.methods.recon.common import ReconPlan


@dataclass
class QDropConfig(BRECQConfig):
    """QDrop. Example: ``make_config("qdrop", wbits=3, abits=3, calib=128, drop_prob=0.5)``.

    Attributes:
        drop_prob: probability that an activation element skips quantization (and that an input
            element comes from the float model) during reconstruction; 0 gives BRECQ.
        Other fields: see :class:`~squeeze.methods.recon.brecq.BRECQConfig`.
    """

    method = "qdrop"
    drop_prob: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.drop_prob < 1:
            raise SqueezeError(f"drop_prob={self.drop_prob} must be in [0, 1), e.g. 0.5")


@register_method(QDropConfig, "QDrop (ICLR'22): BRECQ with randomly dropped activation quantization")
def apply_qdrop(model: nn.Module, config: QDropConfig, batches: list[torch.Tensor]) -> None:
    """Quantize a prepared model in place with QDrop."""
    plan = ReconPlan(mode="block", input_source="mix", act_lr=config.act_lr, drop_prob=config.drop_prob)
    run_block_reconstruction(model, config, batches, plan, desc="qdrop")
