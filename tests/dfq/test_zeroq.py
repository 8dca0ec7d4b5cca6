"""ZeroQ (batch norm statistics) synthesis: the loss against a hand computation, hooks, bad input, and that the
optimization moves the images' statistics toward the ones the network was trained on."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from squeeze.dfq import Normalization, SynthConfig, synthesize
from squeeze.dfq.batchnorm import batchnorm_layers, record_batchnorm
from squeeze.dfq.losses import batchnorm_statistics_loss
from squeeze.errors import SqueezeError

NORM = Normalization((0.5,), (0.25,))  # valid normalized range [-2, 2]


def test_statistics_loss_matches_numpy() -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(4, 3, 5, 6, generator=gen) * 2 + 0.5
    mean_run, var_run = torch.tensor([0.1, -0.2, 0.3]), torch.tensor([1.0, 2.0, 0.5])
    a = x.numpy().reshape(4, 3, -1).astype(np.float64)  # per image and channel
    expected = (((a.mean(2) - mean_run.numpy()) ** 2).sum()
                + ((np.sqrt(a.var(2, ddof=1) + 1e-6) - np.sqrt(var_run.numpy() + 1e-6)) ** 2).sum()) / 4
    assert batchnorm_statistics_loss(x, mean_run, var_run).item() == pytest.approx(expected, rel=1e-5)
    # images whose every channel has exactly the running statistics have a loss of about zero
    z = torch.randn(8, 3, 6, 6, generator=gen)
    z = (z - z.mean((2, 3), keepdim=True)) / z.std((2, 3), keepdim=True)
    z = z * var_run.sqrt().view(1, 3, 1, 1) + mean_run.view(1, 3, 1, 1)
    assert batchnorm_statistics_loss(z, mean_run, var_run).item() < 1e-6
    # one image far off moves the loss by its own distance over N, not through a batch average
    z2 = z.clone()
    z2[0] += 1.0
    assert batchnorm_statistics_loss(z2, mean_run, var_run).item() == pytest.approx(3 / 8, rel=1e-4)


def test_recorder_sums_every_layer_and_removes_its_hooks(bn_cnn: nn.Module) -> None:
    net = bn_cnn
    x = torch.randn(3, 1, 8, 8)
    with record_batchnorm(net) as rec:
        net(x)
        total = rec.loss()
        rec.clear()
        with pytest.raises(SqueezeError, match="no batch norm layer ran"):
            rec.loss()
    inputs = [x, torch.relu(net[1](net[0](x)))]
    by_hand = sum(batchnorm_statistics_loss(net[i](inp), bn.running_mean, bn.running_var)
                  for i, bn, inp in ((0, net[1], inputs[0]), (3, net[4], inputs[1])))
    assert total.item() == pytest.approx(by_hand.item(), rel=1e-5)
    assert all(not bn._forward_pre_hooks for bn in batchnorm_layers(net))
    with pytest.raises(RuntimeError), record_batchnorm(net):
        raise RuntimeError("boom")
    assert all(not bn._forward_pre_hooks for bn in batchnorm_layers(net))  # removed on error too


def test_zeroq_moves_the_statistics_and_leaves_the_model_alone(bn_cnn: nn.Module) -> None:
    net = bn_cnn
    before = {k: v.clone() for k, v in net.state_dict().items()}
    noise = synthesize(net, (1, 8, 8), SynthConfig(generator="noise", n_images=16), NORM, progress=False)
    sset = synthesize(net, (1, 8, 8), SynthConfig(generator="zeroq", n_images=16, iters=60, seed=0), NORM,
                      progress=False)

    def stats_loss(images: torch.Tensor) -> float:
        with torch.no_grad(), record_batchnorm(net) as rec:
            net(images)
            return rec.loss().item()
    assert stats_loss(sset.images) < 0.5 * stats_loss(noise.images)
    lo, hi = NORM.bounds(1)
    assert sset.images.min() >= lo.min() - 1e-6 and sset.images.max() <= hi.max() + 1e-6
    assert sset.labels.shape == (16,) and sset.labels.min() >= 0  # the network's own predictions
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items()) and not net.training


def test_a_network_without_batch_norm_gets_one_clear_error() -> None:
    vit = VisionTransformer(img_size=16, patch_size=4, in_chans=1, num_classes=5, embed_dim=32, depth=1,
                            num_heads=2).eval()
    with pytest.raises(SqueezeError, match="no BatchNorm2d layer.*synthetic:spdfq"):
        synthesize(vit, (1, 16, 16), SynthConfig(generator="zeroq", n_images=2, iters=1), NORM, progress=False)
