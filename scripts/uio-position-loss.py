"""Where a UIO memory model's perplexity gap comes from: next-token loss by position inside a segment.

For each finished run folder, on the long-context bench's perplexity documents at 8x the base context
(seed ``PPL_SEED``), prints the mean next-token loss (nats) of tokens at positions 0, 1-3, 4-15 and 16+
of their segment (the first segment left out: nothing precedes it) when the segment is decoded

* ``stream``: as the memory model runs (memories of earlier segments, plus its raw window if any);
* ``alone``: on its own, no memory and no raw window (the frozen base on one segment);
* ``prev raw``: by the frozen base with the previous segment's raw tokens in front, no memory.

The gap between ``alone`` and ``prev raw`` is what the previous segment's tokens are worth; ``stream``
shows how much of it the memories recover. Documented in docs/methods/uio.md.

    python scripts/uio-position-loss.py RUN_FOLDER [RUN_FOLDER ...]
"""
from __future__ import annotations

import sys

import torch
import torch.nn.functional as F

from squeeze.memory.evaluate import PPL_SEED, documents
from squeeze.memory.task import load_uio
from squeeze.zoo.lm_shakespeare import split_tokens

BUCKETS = ((0, 1), (1, 4), (4, 16), (16, None))


@torch.no_grad()
def position_losses(folder: str, length_x: int = 8, n_docs: int = 4) -> dict[str, list[float]]:
    """Mean loss per position bucket (see the module docstring) for the three ways of decoding."""
    model = load_uio(folder).eval()
    L = model.segment
    docs = documents(split_tokens("val"), length_x * model.lay.context, n_docs, PPL_SEED)
    x, y = docs[:, :-1], docs[:, 1:]
    starts = range(0, x.shape[1], L)
    ways = {"stream": model.stream(x),
            "alone": torch.cat([model.decode(x[:, s:s + L]) for s in starts], 1),
            "prev raw": torch.cat([model.decode(x[:, s:s + L], window=x[:, s - L:s] if s else None)
                                   for s in starts], 1)}
    pos = torch.arange(x.shape[1]) % L
    later = torch.arange(x.shape[1]) >= L
    out = {}
    for name, logits in ways.items():
        nll = F.cross_entropy(logits.transpose(1, 2), y, reduction="none")  # (B, N)
        out[name] = [float(nll[:, later & (pos >= lo) & (pos < (hi or L))].mean()) for lo, hi in BUCKETS]
    return out


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: python scripts/uio-position-loss.py RUN_FOLDER [RUN_FOLDER ...]")
    heads = [f"{lo}" if hi == lo + 1 else f"{lo}-{hi - 1}" if hi else f"{lo}+" for lo, hi in BUCKETS]
    print("| run | decoded | " + " | ".join(f"pos {h}" for h in heads) + " |")
    print("|---|---|" + "---|" * len(heads))
    for folder in sys.argv[1:]:
        for name, values in position_losses(folder).items():
            print(f"| {folder} | {name} | " + " | ".join(f"{v:.3f}" for v in values) + " |")
