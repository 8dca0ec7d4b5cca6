"""Order a float ResNet's channels by importance, so that a leading-channel slice is its best sub-network.

MultiQuant's odd-width partial branch (MBQuant, Zhong et al., arXiv 2305.08117) is a narrower copy of the
body. Started from a float network (our deviation 1), it takes the leading channels of every layer; a slice
of arbitrary channels is a poor network (docs/methods/multiquant.md: 86.8 % alone after training). Permuting
the float network's channels is exact (the permuted network computes the same function), and after it the
leading channels are the ones that carry the most signal, as in channel pruning by activation magnitude.

Two kinds of channel groups in a CIFAR ResNet: the residual stream of each stage (shared by the stem or the
stage's first shortcut, every block output and the identity paths, so one order per stage) and the inner
channels of each block (between its two convs, one order per block).
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from squeeze.zoo.resnet_fmnist import BasicBlock, ResNetFmnist


def _rms(a: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (C,) root mean square per channel."""
    return a.pow(2).mean((0, 2, 3)).sqrt()


@torch.no_grad()
def channel_scores(net: ResNetFmnist, x: torch.Tensor) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
    """Importance of every channel on images ``x`` (N, C, H, W), for the float network in eval mode.

    Returns (stream, inner): ``stream[s]`` (width_s,) = sum of the RMS of the stage's residual-stream
    tensors (the stem output for stage 0, then every block output); ``inner[s][i]`` (width_s,) = RMS of the
    block's inner activation times the norm of the second conv's weights reading it (its share of the output).
    """
    was_training = net.training
    net.eval()
    try:
        h = F.relu(net.bn1(net.conv1(x)))
        stream, inner = [], []
        for s, stage in enumerate((net.layer1, net.layer2, net.layer3)):
            score = _rms(h) if s == 0 else 0.0
            stage_inner = []
            for block in stage:
                a = F.relu(block.bn1(block.conv1(h)))  # (N, width, H, W) inner activation
                stage_inner.append(_rms(a) * block.conv2.weight.transpose(0, 1).flatten(1).norm(dim=1))
                h = block(h)
                score = score + _rms(h)
            stream.append(score)
            inner.append(stage_inner)
    finally:
        net.train(was_training)
    return stream, inner


def _permute_bn(bn: nn.BatchNorm2d, idx: torch.Tensor) -> None:
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(bn, name).copy_(getattr(bn, name)[idx])


@torch.no_grad()
def _permute_block(block: BasicBlock, p_in: torch.Tensor, p_mid: torch.Tensor, p_out: torch.Tensor) -> None:
    """Reorder a block's input, inner and output channels (exactly the same function, channels relabelled)."""
    block.conv1.weight.copy_(block.conv1.weight[p_mid][:, p_in])
    _permute_bn(block.bn1, p_mid)
    block.conv2.weight.copy_(block.conv2.weight[p_out][:, p_mid])
    _permute_bn(block.bn2, p_out)
    if isinstance(block.shortcut, nn.Sequential):
        conv, bn = block.shortcut
        conv.weight.copy_(conv.weight[p_out][:, p_in])
        _permute_bn(bn, p_out)


@torch.no_grad()
def permute_channels(net: ResNetFmnist, stream: list[torch.Tensor], inner: list[list[torch.Tensor]]) -> ResNetFmnist:
    """A copy of ``net`` with stage ``s``'s stream channels in the order ``stream[s]`` and block ``(s, i)``'s
    inner channels in the order ``inner[s][i]`` (index tensors); the copy computes the same logits."""
    out = copy.deepcopy(net)
    out.conv1.weight.copy_(out.conv1.weight[stream[0]])
    _permute_bn(out.bn1, stream[0])
    p_in = stream[0]
    for s, stage in enumerate((out.layer1, out.layer2, out.layer3)):
        for i, block in enumerate(stage):
            _permute_block(block, p_in, inner[s][i], stream[s])
            p_in = stream[s]
    out.fc.weight.copy_(out.fc.weight[:, stream[-1]])
    return out


def _descending(scores: torch.Tensor) -> torch.Tensor:
    return torch.argsort(scores, descending=True, stable=True)


def order_by_importance(net: ResNetFmnist, x: torch.Tensor) -> ResNetFmnist:
    """A channel-permuted copy of ``net`` whose leading channels in every group score highest on ``x``."""
    stream, inner = channel_scores(net, x)
    return permute_channels(net, [_descending(t) for t in stream], [[_descending(t) for t in st] for st in inner])
