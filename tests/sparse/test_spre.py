"""SpRe: merged deploy network == two-branch training network, exact N:M, compact file size."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from squeeze.errors import SqueezeError
from squeeze.methods.spre import SpReConfig, SpReConv2d, fold_bn, merge_kernels
from squeeze.sparse import masks as K
from squeeze.sparse.export import check_nm, load_nm, save_nm
from squeeze.sparse.task import finalize, prepare_sparse
from squeeze.zoo.resnet_fmnist import ResNetFmnistArch, build_resnet_fmnist

ARCH = ResNetFmnistArch(blocks=1)  # ResNet-8 widths 16/32/64: every SpRe case, fast


def _trained_spre(n: int = 2, m: int = 4) -> tuple[nn.Module, dict]:
    """A SpRe network with non-trivial BN statistics and extra-branch weights."""
    torch.manual_seed(0)
    net = build_resnet_fmnist(ARCH)
    info = prepare_sparse(net, SpReConfig(n=n, m=m))
    net.train()
    with torch.no_grad():
        for mod in net.modules():
            if isinstance(mod, SpReConv2d):
                mod.extra_weight.normal_(0, 0.2)
                mod.extra_bn.weight.uniform_(0.5, 1.5)
                mod.extra_bn.bias.normal_(0, 0.1)
        for _ in range(3):
            net(torch.randn(8, 1, 28, 28))  # BN running statistics away from (0, 1)
    return net.eval(), info


def test_pairs_are_explicit_and_bns_replaced() -> None:
    net, info = _trained_spre()
    assert ["layer1.0.conv1", "layer1.0.bn1"] in info["pairs"] and len(info["pairs"]) == 6
    assert isinstance(net.layer2[0].conv2, SpReConv2d) and isinstance(net.layer2[0].bn2, nn.Identity)
    assert "conv1" not in info["layers"] and "layer2.0.shortcut.0" in info["layers"]  # stem dense, 1x1 N:M


def test_merged_equals_two_branch_and_is_exactly_nm(tmp_path: Path) -> None:
    net, info = _trained_spre()
    x = torch.randn(4, 1, 28, 28)
    masks = {name: mod.mask.clone() for name, mod in net.named_modules() if isinstance(mod, SpReConv2d)}
    with torch.no_grad():
        want = net(x)
        deploy = finalize(net)
        got = deploy(x)
    assert (got - want).abs().max().item() < 1e-4
    for name, mask in masks.items():
        w = deploy.get_submodule(name).weight
        assert bool(((w != 0) <= mask).all()) and K.is_nm(w, 2, 4)
    sizes = save_nm(deploy, tmp_path / "m.safetensors", {"model": "resnet-fmnist", "arch": ARCH.to_dict(), "n": 2,
                                                          "m": 4, "layers": info["layers"], "merged": info["pairs"]})
    assert check_nm(tmp_path / "m.safetensors") == []
    assert sizes["file_bytes"] <= 0.6 * sizes["dense_bytes"]
    loaded, _ = load_nm(tmp_path / "m.safetensors")
    with torch.no_grad():
        assert torch.allclose(loaded(x), got, atol=1e-5)


def test_merge_kernels_formula() -> None:
    torch.manual_seed(3)
    conv_a, conv_b = nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.Conv2d(4, 4, 3, padding=1, bias=False)
    bn_a, bn_b = nn.BatchNorm2d(4), nn.BatchNorm2d(4)
    for bn in (bn_a, bn_b):
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2)
        bn.weight.data.normal_()
        bn.bias.data.normal_()
    bn_a.eval(), bn_b.eval()
    mask = K.nm_mask(conv_a.weight, 2, 4)
    spatial = torch.zeros(3, 3, dtype=torch.bool)
    spatial[1, 1] = True
    x = torch.randn(2, 4, 5, 5)
    want = bn_a(F.conv2d(x, conv_a.weight * mask, padding=1)) + bn_b(F.conv2d(x, conv_b.weight * mask * spatial,
                                                                              padding=1))
    kernel, bias = merge_kernels(conv_a.weight, bn_a, conv_b.weight, bn_b, mask, spatial)
    assert torch.allclose(F.conv2d(x, kernel, bias, padding=1), want, atol=1e-5)
    scale, shift = fold_bn(bn_a)
    assert torch.allclose(scale * 1.0 + shift, bn_a(torch.ones(1, 4, 1, 1)).flatten(), atol=1e-6)


def test_extra_branch_gradient_stays_inside_m_and_s() -> None:
    net, _ = _trained_spre()
    net.train()
    net(torch.randn(2, 1, 28, 28)).sum().backward()
    mod = net.layer1[0].conv1
    outside = ~(mod.mask & mod.spatial)
    assert mod.spatial.any() and not mod.spatial.all()
    assert bool((mod.extra_weight.grad[outside] == 0).all()) and mod.extra_weight.grad.abs().sum() > 0


def test_spre_refusals() -> None:
    with pytest.raises(SqueezeError, match="vit-fmnist has none"):
        SpReConfig(model="vit-fmnist")
    with pytest.raises(SqueezeError, match="multiple of M=8"):
        prepare_sparse(build_resnet_fmnist(ResNetFmnistArch(widths=(4, 8, 16), blocks=1)), SpReConfig(n=2, m=8))
