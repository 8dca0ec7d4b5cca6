"""HQSS losses and networks: focal frequency loss against a direct reference, frozen passes, shapes."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from squeeze.methods.hqss.losses import focal_frequency_loss, frozen, lsgan_loss
from squeeze.methods.hqss.nets import PatchDiscriminator, ReplayBuffer, ShadowEncoder, ShadowGenerator


def test_focal_frequency_loss_matches_a_numpy_reference() -> None:
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(2, 3, 8, 8, generator=g), torch.rand(2, 3, 8, 8, generator=g)
    fa, fb = np.fft.fft2(a.numpy(), norm="ortho"), np.fft.fft2(b.numpy(), norm="ortho")
    d = np.abs(fa - fb) ** 2
    w = np.sqrt(d) / np.sqrt(d).max(axis=(-2, -1), keepdims=True)
    assert float(focal_frequency_loss(a, b)) == pytest.approx(float((w * d).mean()), rel=1e-5)
    assert float(focal_frequency_loss(a, a)) == 0.0


def test_lsgan() -> None:
    s = torch.tensor([1.0, 0.0])
    assert float(lsgan_loss(s, True)) == 0.5 and float(lsgan_loss(s, False)) == 0.5


def test_frozen_pass_sends_gradient_to_inputs_only() -> None:
    net = ShadowEncoder(4)
    x = torch.rand(1, 3, 8, 8, requires_grad=True)
    frozen(net, x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in net.parameters())


def test_generator_starts_as_identity_and_shapes() -> None:
    f, g, d = ShadowEncoder(4), ShadowGenerator(4, 8, 1), PatchDiscriminator(3, 8)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    torch.testing.assert_close(g(f(x), x), x)
    assert d(x).shape == (2,)


def test_replay_buffer_fills_then_swaps() -> None:
    torch.manual_seed(0)
    buf = ReplayBuffer(2, (1, 2, 2))
    a = torch.ones(2, 1, 2, 2)
    assert torch.equal(buf.push_and_pop(a), a) and int(buf.count) == 2
    out = buf.push_and_pop(torch.zeros(8, 1, 2, 2))
    assert out.shape == (8, 1, 2, 2) and float(out.sum()) > 0  # some older images came back
    assert "images" in buf.state_dict()  # checkpointed with the module
