"""What each branch of a MultiQuant network contributes: top-1 of every branch alone and of their average.

MBQuant (Zhong et al., arXiv 2305.08117) runs a bit width as independent 2-bit-weight branches whose pooled
features are averaged before the shared classifier. For every bit width of a finished run this prints the
test top-1 of the classifier on each active branch's features alone (full branches ``B0``..``B3``, the
partial branch ``P`` of odd widths) and on their average (the network itself), so one sees whether a width
gains from its extra branches or is held back by one of them. Documented in docs/methods/multiquant.md.

    python scripts/multiquant-branches.py RUN_FOLDER
"""
from __future__ import annotations

import sys

import torch

from squeeze.data.fashion_mnist import load_fashion_mnist
from squeeze.methods.multiquant.network import MultiBitResNet
from squeeze.methods.multiquant.run import load_run


@torch.no_grad()
def branch_top1(net: MultiBitResNet, x: torch.Tensor, y: torch.Tensor, bits: int) -> dict[str, float]:
    """Top-1 (%) per active branch and for the average, at activation width ``bits``."""
    net.set_bits(bits)
    feats = torch.cat([net.branch_features(x[i:i + 500]) for i in range(0, len(x), 500)])
    names = [f"B{net.plan.start + i}" for i in range(net.plan.full)] + (["P"] if net.plan.partial else [])
    out = {name: 100.0 * (net.fc(feats[:, i]).argmax(-1) == y).float().mean().item() for i, name in enumerate(names)}
    out["average"] = 100.0 * (net.fc(feats.mean(1)).argmax(-1) == y).float().mean().item()
    return out


def main(folder: str) -> None:
    torch.set_num_threads(2)
    net, meta = load_run(folder)
    x, y = load_fashion_mnist("test")
    print(f"| abits | {meta['variant']}: each branch alone, then their average (top-1 %) |\n|---|---|")
    for bits in net.bits_list:
        cells = ", ".join(f"{k} {v:.2f}" for k, v in branch_top1(net, x, y, bits).items())
        print(f"| {bits} | {cells} |", flush=True)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python scripts/multiquant-branches.py RUN_FOLDER")
    main(sys.argv[1])
