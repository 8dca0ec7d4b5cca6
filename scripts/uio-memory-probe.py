"""Is the passkey in the memories? Linear and MLP probes on a UIO run's memory states.

The passkey shortfall (docs/methods/uio.md) can sit in the encoder (the memories do not hold the key's
digits) or in the frozen decoder (they hold them, but its copying heads cannot read them out one by one).
This script tells the two apart. It builds two-segment stretches of held-out Shakespeare with the passkey
needle at a random offset, encodes both segments with the run's encoder, and trains a classifier
(L2-regularised) to name each digit of the needle's first key copy from

* ``slot``: the memory token whose span ends at or after the digit, closest to it (every layer's state,
  layers x D features): what one memory read by one copying head could use;
* ``segment``: all m memory tokens of the digit's segment (layers x m x D features): everything the
  memories hold about that segment.

The ``slot`` features are probed linearly (what a read through one linear value projection could give)
and by a one-hidden-layer MLP (``--hidden``, more than a single attention read can extract). Probes train
on ``--train`` stretches (the last tenth held out to pick the checkpoint) and are scored on ``--test``
others (seeds 0 and 1, not the bench's documents). Chance is 0.10. Compare with the run's own digit
accuracy in ``squeeze eval RUN``.

    python scripts/uio-memory-probe.py RUN_FOLDER [RUN_FOLDER ...] [--train 8000 --test 2000 --hidden 512]
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from squeeze.data.passkey import DIGITS, LEAD, needle
from squeeze.memory.model import MemoryLM
from squeeze.memory.task import load_uio
from squeeze.zoo.lm_shakespeare import split_tokens


def stretches(tokens: torch.Tensor, n: int, length: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` stretches (n, length) of ``tokens`` with a needle at a random offset; (ids, first-digit index, keys)."""
    gen = torch.Generator().manual_seed(seed)
    keys = torch.randint(0, 10, (n, DIGITS), generator=gen)
    ids, starts = [], []
    for key in keys:
        pin = needle("".join(str(int(d)) for d in key))
        at = int(torch.randint(0, length - pin.numel() + 1, (1,), generator=gen))
        src = int(torch.randint(0, tokens.numel() - length, (1,), generator=gen))
        body = tokens[src:src + length - pin.numel()]
        ids.append(torch.cat([body[:at], pin, body[at:]]))
        starts.append(at + len(LEAD))
    return torch.stack(ids), torch.tensor(starts), keys


@torch.no_grad()
def digit_features(model: MemoryLM, ids: torch.Tensor, starts: torch.Tensor,
                   batch: int = 250) -> dict[str, torch.Tensor]:
    """Per probe kind, features (n, DIGITS, F) of each key digit (see the module docstring)."""
    L, m = model.segment, model.memory
    mem = torch.cat([torch.stack([model.encode(ids[i:i + batch, s:s + L]) for s in range(0, ids.shape[1], L)], 2)
                     for i in range(0, len(ids), batch)], 1)  # (layers, n, segments, m, D)
    mem = mem.permute(1, 2, 3, 0, 4)  # (n, segments, m, layers, D)
    pos = starts[:, None] + torch.arange(DIGITS)  # (n, DIGITS) token index of each digit
    rows = torch.arange(len(ids))[:, None]
    seg, slot = pos // L, (pos % L) // (L // m)
    return {"slot": mem[rows, seg, slot].flatten(2), "segment": mem[rows, seg].flatten(2)}


def _fit(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, xv: torch.Tensor, yv: torch.Tensor,
         steps: int, batch: int | None) -> dict[str, torch.Tensor]:
    """Adam on ``net``; returns the weights that did best on the validation split ``(xv, yv)``."""
    torch.manual_seed(0)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2 if batch is None else 1e-3, weight_decay=1e-3)
    best, state = -1.0, {}
    for step in range(steps):
        idx = slice(None) if batch is None else torch.randint(0, len(x), (batch,))
        opt.zero_grad()
        F.cross_entropy(net(x[idx]), y[idx]).backward()
        opt.step()
        if (step + 1) % 50 == 0:
            with torch.no_grad():
                acc = float((net(xv).argmax(1) == yv).float().mean())
            if acc > best:
                best, state = acc, {k: v.clone() for k, v in net.state_dict().items()}
    return state


def probe_accuracy(x: torch.Tensor, y: torch.Tensor, xt: torch.Tensor, yt: torch.Tensor, hidden: int = 0) -> float:
    """Test accuracy of a classifier ``x`` (n, F) -> ``y`` on standardised features: linear (full batch, 300
    steps) or, with ``hidden`` > 0, one ReLU layer of that width (batches of 256, 600 steps); the checkpoint
    is chosen on the last tenth of the training rows, never on the test rows."""
    mean, std = x.mean(0), x.std(0) + 1e-6
    x, xt = (x - mean) / std, (xt - mean) / std
    cut = len(x) * 9 // 10
    torch.manual_seed(0)
    net = torch.nn.Linear(x.shape[1], 10) if hidden <= 0 else torch.nn.Sequential(
        torch.nn.Linear(x.shape[1], hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 10))
    net.load_state_dict(_fit(net, x[:cut], y[:cut], x[cut:], y[cut:], 300 if hidden <= 0 else 600,
                             None if hidden <= 0 else 256))
    with torch.no_grad():
        return float((net(xt).argmax(1) == yt).float().mean())


def main() -> None:
    """Print one markdown row per run and probe kind: test accuracy per key digit and their mean."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--train", type=int, default=8000)
    ap.add_argument("--test", type=int, default=2000)
    ap.add_argument("--hidden", type=int, default=512, help="width of the non-linear probe's hidden layer")
    args = ap.parse_args()
    val = split_tokens("val")
    print("| run | probe | " + " | ".join(f"digit {k + 1}" for k in range(DIGITS)) + " | mean |")
    print("|---|---|" + "---|" * (DIGITS + 1))
    for folder in args.runs:
        model = load_uio(folder).eval()
        length = 2 * model.segment
        train, test = stretches(val, args.train, length, 0), stretches(val, args.test, length, 1)
        f_train, f_test = digit_features(model, *train[:2]), digit_features(model, *test[:2])
        for kind, hidden in (("slot", 0), ("slot", args.hidden), ("segment", 0)):
            acc = [probe_accuracy(f_train[kind][:, k], train[2][:, k], f_test[kind][:, k], test[2][:, k], hidden)
                   for k in range(DIGITS)]
            name = f"{kind}, " + (f"MLP {hidden}" if hidden else "linear")
            print(f"| {folder} | {name} | " + " | ".join(f"{a:.2f}" for a in acc) + f" | {sum(acc) / DIGITS:.2f} |")


if __name__ == "__main__":
    main()
