"""BRECQ (Li, Gong, Tan, Yang, Hu, Zhang, Yu, Wang, Gu, "BRECQ: Pushing the Limit of Post-Training
Quantization by Block Reconstruction", ICLR 2021) as a ViT PTQ baseline.

Each transformer block is one reconstruction unit (layers outside the blocks, the patch embedding
and the head, are reconstructed on their own): AdaRound rounding of every weight in the block plus
LSQ-style learned step sizes of the block's activation quantizers, trained jointly on the
*quantized* model's block inputs against the float block outputs.

Deviation: the paper weights the output error by the diagonal Fisher information (squared
gradients of the task loss); this uses the plain output MSE (no labels or task loss are needed,
and the ViT PTQ papers' re-runs compare on the same loss as I&S-ViT's).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from squeeze.config import register_method
from squeeze.errors import SqueezeError
from squeeze.methods.recon.common import ReconConfig, ReconPlan, recon_handler
from squeeze.quant.attach import attach_quantizers, probe_roles
from squeeze.quant.reconstruct import float_copy, paired_walk


@dataclass
class BRECQConfig(ReconConfig):
    """BRECQ. Example: ``make_config("brecq", wbits=4, abits=4, calib=128)``.

    Attributes:
        act_lr: Adam learning rate of the activation step sizes (papers: 4e-5); 0 keeps the
            calibrated ranges fixed.
        Other fields: see :class:`~squeeze.methods.recon.common.ReconConfig`.
    """

    method = "brecq"
    act_lr: float = 4e-5

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.act_lr < 0:
            raise SqueezeError(f"act_lr={self.act_lr} must be >= 0 (0 keeps activation ranges fixed)")


def run_block_reconstruction(model: nn.Module, config: BRECQConfig, batches: list[torch.Tensor],
                             plan: ReconPlan, desc: str) -> None:
    """Attach quantizers, then reconstruct block by block against a float copy of ``model``."""
    fp_model = float_copy(model)
    roles = probe_roles(model, batches[0][:1])
    attach_quantizers(model, config, roles, config.act_scheme, weight_estimator=config.weight_estimator)  # type: ignore[arg-type]
    paired_walk(model, fp_model, batches, recon_handler(fp_model, roles, config, plan), desc=desc)


@register_method(BRECQConfig, "BRECQ (ICLR'21): block reconstruction, AdaRound weights + learned act steps")
def apply_brecq(model: nn.Module, config: BRECQConfig, batches: list[torch.Tensor]) -> None:
    """Quantize a prepared model in place with BRECQ."""
    plan = ReconPlan(mode="block", input_source="quant", act_lr=config.act_lr)
    run_block_reconstruction(model, config, batches, plan, desc="brecq")
