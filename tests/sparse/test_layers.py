"""Sparse training layers: gradients against hand-derived formulas, module swap and its refusals."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from squeeze.errors import SqueezeError
from squeeze.sparse import masks as K
from squeeze.sparse.config import make_nm_config
from squeeze.sparse.layers import NMConv2d, NMLinear, bake, layer_stats, sparsify


def _lin(method: str, **kw) -> NMLinear:
    torch.manual_seed(0)
    return NMLinear(nn.Linear(8, 4), make_nm_config(method, **kw), 0).train()


def test_srste_gradient_is_dense_grad_plus_decay() -> None:
    layer = _lin("sr-ste", decay=0.1)
    x, r = torch.randn(5, 8), torch.randn(5, 4)
    (layer(x) * r).sum().backward()
    mask = K.nm_mask(layer.weight, 2, 4)
    w_sparse = (layer.weight.detach() * mask).requires_grad_()
    (F.linear(x, w_sparse, layer.bias.detach()) * r).sum().backward()
    expected = w_sparse.grad + 0.1 * (~mask) * layer.weight.detach()
    assert torch.allclose(layer.weight.grad, expected, atol=1e-6)
    assert (layer.weight.grad[~mask] != w_sparse.grad[~mask]).any()  # the decay term is really there


def test_magnitude_mask_is_frozen_and_blocks_gradients() -> None:
    layer = _lin("magnitude")
    before = layer.mask.clone()
    with torch.no_grad():
        layer.weight.mul_(-torch.rand_like(layer.weight))  # new magnitudes; the one-shot mask must stay
    layer(torch.randn(3, 8)).sum().backward()
    assert torch.equal(layer.mask, before)
    assert bool((layer.weight.grad[~before] == 0).all())


@pytest.mark.parametrize("kind", ["conv", "linear"])
def test_bimask_input_gradient_uses_backward_mask(kind: str) -> None:
    torch.manual_seed(1)
    cfg = make_nm_config("bimask", decay=0.05, perm_every=1, perm_candidates=4)
    if kind == "conv":
        layer: nn.Module = NMConv2d(nn.Conv2d(8, 8, 3, 1, 1, bias=True), cfg, 0).train()
        x = torch.randn(2, 8, 5, 5, requires_grad=True)
        op = lambda inp, w: F.conv2d(inp, w, layer.bias.detach(), 1, 1)  # noqa: E731
    else:
        layer = NMLinear(nn.Linear(8, 8), cfg, 0).train()
        x = torch.randn(3, 8, requires_grad=True)
        op = lambda inp, w: F.linear(inp, w, layer.bias.detach())  # noqa: E731
    out = layer(x)
    g = torch.randn_like(out)
    out.backward(g)
    w = layer.weight.detach()
    fmask, bmask = layer.mask, layer.bmask
    assert not torch.equal(fmask, bmask) and bool((bmask <= fmask).all())
    assert torch.allclose(out, op(x, w * fmask), atol=1e-5)
    x_ref = x.detach().clone().requires_grad_()
    op(x_ref, w * bmask).backward(g)
    assert torch.allclose(x.grad, x_ref.grad, atol=1e-5)
    w_ref = (w * fmask).requires_grad_()
    op(x.detach(), w_ref).backward(g)
    assert torch.allclose(layer.weight.grad, w_ref.grad + 0.05 * (~fmask) * w, atol=1e-5)
    assert K.is_nm(bmask[layer.perm], 2, 4, backward=True)


def test_transposable_refreshes_every_n_steps() -> None:
    layer = NMLinear(nn.Linear(8, 8), make_nm_config("transposable", refresh=3), 0).train()
    masks = []
    for _ in range(4):
        layer(torch.randn(2, 8))
        masks.append(layer.mask.clone())
        with torch.no_grad():
            layer.weight.copy_(torch.randn_like(layer.weight))
    assert torch.equal(masks[1], masks[0]) and torch.equal(masks[2], masks[0])
    assert not torch.equal(masks[3], masks[0])
    assert K.is_nm(layer.mask, 2, 4) and K.is_nm(layer.mask, 2, 4, backward=True)


class _Net(nn.Module):
    def __init__(self, mid: int = 8) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, mid, 3, padding=1)
        self.fc = nn.Linear(mid, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv2(F.relu(self.conv1(x))).mean((2, 3)))


def test_sparsify_stats_and_bake() -> None:
    torch.manual_seed(2)
    net = _Net()
    names = sparsify(net, make_nm_config("transposable", dense=("conv1",)))
    assert names == ["conv2", "fc"]
    stats = layer_stats(net.eval())
    assert stats["conv2"]["bwd_nm"] == 1.0 and stats["conv2"]["kept"] == stats["conv2"]["numel"] // 2
    x = torch.randn(2, 1, 6, 6)
    with torch.no_grad():
        want = net(x)
        bake(net)
        assert type(net.conv2) is nn.Conv2d and torch.allclose(net(x), want, atol=1e-6)
    assert K.is_nm(net.conv2.weight, 2, 4)


def test_refusals_leave_the_model_untouched() -> None:
    net = _Net(mid=6)
    before = copy.deepcopy(net.state_dict())
    with pytest.raises(SqueezeError, match="layer fc has 6 inputs"):
        sparsify(net, make_nm_config("sr-ste", dense=("conv1",)))
    assert type(net.conv2) is nn.Conv2d and all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    with pytest.raises(SqueezeError, match="layer conv2 has 6 outputs"):
        sparsify(_Net(mid=6), make_nm_config("bimask", dense=("conv1", "fc")))
    with pytest.raises(SqueezeError, match="layer conv1 has 1 inputs"):
        sparsify(_Net(), make_nm_config("sr-ste", dense=()))
    grouped = nn.Sequential(nn.Conv2d(8, 8, 3, groups=2))
    with pytest.raises(SqueezeError, match="depthwise"):
        sparsify(grouped, make_nm_config("sr-ste", dense=()))


@pytest.mark.parametrize("bad,match", [({"n": 4}, "0 < N < M"), ({"method": "srste"}, "unknown"),
                                       ({"model": "resnet"}, "not supported"), ({"lr": -1.0}, "lr"),
                                       ({"typo": 1}, "unknown N:M method"),
                                       ({"transposable_solver": "exact", "m": 8}, "M <= 4")])
def test_bad_configs(bad: dict, match: str) -> None:
    with pytest.raises(SqueezeError, match=match):
        make_nm_config(bad.pop("method", "sr-ste"), **bad)
