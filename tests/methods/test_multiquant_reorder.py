"""Importance reordering of a float ResNet's channels (MultiQuant's partial-branch start)."""
from __future__ import annotations

import torch

from squeeze.methods.multiquant import MultiQuantConfig
from squeeze.methods.multiquant.reorder import channel_scores, order_by_importance
from squeeze.methods.multiquant.task import MultiQuantTask
from squeeze.zoo.resnet_fmnist import ResNetFmnistArch, build_resnet_fmnist

ARCH = ResNetFmnistArch(widths=(4, 8, 8), blocks=2)


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    net = build_resnet_fmnist(ARCH)
    with torch.no_grad():  # unequal channels, so the order is not the identity
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.2, 2.0)
                m.bias.uniform_(-0.2, 0.2)
    return net.eval()


def test_reordered_network_computes_the_same_logits() -> None:
    net, x = _net(), torch.randn(16, 1, 28, 28)
    ordered = order_by_importance(net, x)
    with torch.no_grad():
        torch.testing.assert_close(ordered(x), net(x), rtol=1e-5, atol=1e-5)
    assert not torch.equal(ordered.conv1.weight, net.conv1.weight)  # something was actually permuted
    assert torch.equal(net.conv1.weight, _net().conv1.weight)  # the input network is left as it was


def test_leading_channels_score_highest_after_reordering() -> None:
    net, x = _net(), torch.randn(16, 1, 28, 28)
    stream, inner = channel_scores(order_by_importance(net, x), x)
    before_stream, before_inner = channel_scores(net, x)
    flat = lambda s, i: s + [t for stage in i for t in stage]  # noqa: E731
    for after, before in zip(flat(stream, inner), flat(before_stream, before_inner)):
        torch.testing.assert_close(after, before.sort(descending=True).values)


def test_partial_init_importance_starts_the_partial_branch_from_the_reordered_network() -> None:
    net = _net()
    data = (torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,)))
    cfg = MultiQuantConfig(bits=(2, 3, 8), partial_init="importance", batch_size=16)
    task = MultiQuantTask(cfg, net, "tag", data, data)
    mq, _ = task.build()
    ordered = order_by_importance(net, next(iter(task.batches(-1, 0, 1)))[0])
    p = mq.partial[0]
    torch.testing.assert_close(mq.layer1[0].conv1.partial_weight, ordered.layer1[0].conv1.weight[:p, :p])
    leading, _ = MultiQuantTask(MultiQuantConfig(bits=(2, 3, 8), batch_size=16), net, "tag", data, data).build()
    torch.testing.assert_close(leading.layer1[0].conv1.partial_weight, net.layer1[0].conv1.weight[:p, :p])
