"""What each branch of a MultiQuant network contributes: top-1 of every branch alone and of their average.

MBQuant (Zhong et al., arXiv 2305.08117) runs a bit width as independent 2-bit-weight branches whose pooled
features are averaged before the shared classifier. For every bit width of a finished run this prints the
test top-1 of the classifier on each active branch's features alone (full branches ``B0``..``B3``, the
partial branch ``P`` of odd widths) and on their average (the network itself), so one sees whether a width
gains from its extra branches or is held back by one of them. Documented in docs/methods/multiquant.md.

    python scripts/multiquant-branches.py RUN_FOLDER
    python scripts/multiquant-branches.py --init leading|importance   # the bench's network before training
"""
from __future__ import annotations

import sys
from dataclasses import replace

import torch

from squeeze.bench.multiquant import BENCH_CONFIG
from squeeze.data.fashion_mnist import load_fashion_mnist
from squeeze.methods.multiquant.network import MultiBitResNet
from squeeze.methods.multiquant.run import load_float, load_run
from squeeze.methods.multiquant.task import MultiQuantTask
from squeeze.train.checkpoint import fingerprint


@torch.no_grad()
def branch_top1(net: MultiBitResNet, x: torch.Tensor, y: torch.Tensor, bits: int) -> dict[str, float]:
    """Top-1 (%) per active branch and for the average, at activation width ``bits``."""
    net.set_bits(bits)
    feats = torch.cat([net.branch_features(x[i:i + 500]) for i in range(0, len(x), 500)])
    names = [f"B{net.plan.start + i}" for i in range(net.plan.full)] + (["P"] if net.plan.partial else [])
    out = {name: 100.0 * (net.fc(feats[:, i]).argmax(-1) == y).float().mean().item() for i, name in enumerate(names)}
    out["average"] = 100.0 * (net.fc(feats.mean(1)).argmax(-1) == y).float().mean().item()
    return out


def untrained(partial_init: str) -> MultiBitResNet:
    """The bench's MultiQuant network right after its start (float weights tiled, quantizer ranges set from one
    training batch), before any training step."""
    cfg = replace(BENCH_CONFIG, partial_init=partial_init)
    float_net, _ = load_float(cfg)
    task = MultiQuantTask(cfg, float_net, fingerprint(float_net), load_fashion_mnist("train"), (None, None))
    net, _ = task.build()
    task.prepare(net, torch.device("cpu"))
    return net.train()  # batch statistics: the float running statistics do not fit 2-bit weights yet


def main(args: list[str]) -> None:
    torch.set_num_threads(2)
    if args[0] == "--init":
        net, title = untrained(args[1]), f"untrained, partial_init={args[1]}, batch statistics"
        x, y = (t[:2000] for t in load_fashion_mnist("test"))
    else:
        net, meta = load_run(args[0])
        title = meta["variant"]
        x, y = load_fashion_mnist("test")
    print(f"| abits | {title}: each branch alone, then their average (top-1 %) |\n|---|---|")
    for bits in net.bits_list:
        cells = ", ".join(f"{k} {v:.2f}" for k, v in branch_top1(net, x, y, bits).items())
        print(f"| {bits} | {cells} |", flush=True)


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3) or (sys.argv[1] == "--init") != (len(sys.argv) == 3):
        sys.exit("usage: python scripts/multiquant-branches.py RUN_FOLDER | --init leading|importance")
    main(sys.argv[1:])
