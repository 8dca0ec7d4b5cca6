"""RepQ-ViT reparameterization is lossless in float and maps per-channel grids to one per-tensor grid."""
import torch
from torch import nn

from squeeze.methods.repq_vit import fold_into_layernorm, reparam_targets
from squeeze.quant import primitives as P


def test_fold_preserves_float_outputs_and_grids() -> None:
    torch.manual_seed(0)
    dim = 16
    norm, fc1, fc2 = nn.LayerNorm(dim), nn.Linear(dim, 8), nn.Linear(dim, 4, bias=False)
    with torch.no_grad():
        norm.weight.uniform_(0.2, 3.0)
        norm.bias.normal_()
    x = torch.randn(64, dim)
    ref1, ref2 = fc1(norm(x)), fc2(norm(x))
    act = norm(x).detach()
    scale, zp = P.params_from_range(*P.minmax_range(act, 0), 4, symmetric=False)  # per channel (1, dim)
    r, b, s_bar, z_bar = reparam_targets(scale.reshape(-1), zp.reshape(-1))
    fold_into_layernorm(norm, [fc1, fc2], r, b)
    assert torch.allclose(fc1(norm(x)), ref1, atol=1e-4)
    assert torch.allclose(fc2(norm(x)), ref2, atol=1e-4)
    # the per-tensor codes of the new activation equal the per-channel codes of the old one
    # (up to float ties at rounding boundaries)
    per_tensor = P.quantize(norm(x).detach(), s_bar, z_bar, 0, 15)
    per_channel = P.quantize(act, scale, zp, 0, 15)
    assert (per_tensor == per_channel).float().mean() > 0.995
