"""Theoretical multiply-accumulate counts and the forward/backward savings of N:M sparsity.

Counted over Conv2d/Linear layers only (attention matmuls and element-wise ops are ignored). A
training step costs forward + input-gradient + weight-gradient, each equal to the layer's forward MACs.
Forward savings skip the zero weights of every sparse layer (for unstructured masks this is a
theoretical count: there is no N:M kernel for them). Backward savings skip ``1 - N/M`` of the
input-gradient MACs of layers whose backward weight is N:M along outputs (transposable, Bi-Mask);
the weight gradient is dense in every method here (SR-STE and Bi-Mask need the dense gradient).
"""
from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def layer_macs(model: nn.Module, example: torch.Tensor) -> dict[str, int]:
    """Forward MACs per Conv2d/Linear (by name) for one sample, measured with hooks on ``example[:1]``."""
    macs: dict[str, int] = {}
    handles = []

    def hook(name: str):
        def record(mod: nn.Module, inputs: tuple, out: torch.Tensor) -> None:
            if isinstance(mod, nn.Conv2d):
                per_out = mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]
            else:
                per_out = mod.in_features
            macs[name] = macs.get(name, 0) + out.numel() * per_out
        return record

    for name, mod in model.named_modules():
        if isinstance(mod, (nn.Conv2d, nn.Linear)):
            handles.append(mod.register_forward_hook(hook(name)))
    was_training = model.training
    try:
        model.eval()
        model(example[:1])
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return macs


def flop_savings(macs: dict[str, int], density: dict[str, float], bwd_nm: dict[str, bool],
                 n: int, m: int) -> tuple[float, float]:
    """(forward, backward) fraction of MACs saved.

    Args:
        macs: forward MACs per layer (all Conv2d/Linear layers of the model).
        density: kept fraction of each sparse layer's weights (absent layers are dense).
        bwd_nm: per sparse layer, whether its input-gradient weight is N:M along outputs.
        n, m: the pattern (input-gradient MACs of an N:M backward layer drop to n/m).
    """
    total = sum(macs.values())
    if total == 0:
        return 0.0, 0.0
    fwd_saved = sum(macs[k] * (1.0 - density[k]) for k in macs if k in density)
    bwd_saved = sum(macs[k] * (1.0 - n / m) for k in macs if bwd_nm.get(k, False))
    return fwd_saved / total, bwd_saved / (2 * total)
