"""Passkey retrieval of a UIO memory model split by whether the needle's memories share the clamped position.

Compact memory positions put the memories of the segment ``k`` segments before the question's at positions
``-(m (k - 1) + 1) .. -m k`` and clamp them at ``-(context - segment)``, so older memories share one position
(docs/methods/uio-experiments.md). For one finished run folder, at ``X`` times the base context, this counts the
documents whose 5 key digits are all right, apart for needles whose memories sit before the clamp
(``clamped``) and those that keep distinct positions (``unclamped``), and prints one JSON line. Its
documents come from seed 99, not the bench's. Documented in docs/methods/uio-experiments.md.

    python scripts/uio-passkey-depth.py RUN_FOLDER X [N_DOCS]
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from squeeze.data.tokenizers import load_tokenizer
from squeeze.memory.evaluate import passkey_digits
from squeeze.memory.task import load_uio, text_tokens


def main(folder: Path, x: int, n_docs: int = 120) -> dict:
    model = load_uio(folder).eval()
    tok = load_tokenizer(model.cfg.base)
    ctx, seg, mem = model.lay.context, model.segment, model.memory
    length = x * ctx
    with torch.no_grad():
        right, starts = passkey_digits("uio", model, text_tokens(tok, "val"), length, n_docs, seed=99,
                                       hide_beyond=ctx, tok=tok)
    back = (length // seg - 1) - starts // seg  # segments between the needle's and the question's
    clamped = mem * back > ctx - seg  # the needle's last memory lies beyond the clamp
    exact = right.all(1)
    out: dict = {"run": str(folder), "context_x": x, "docs": n_docs}
    for name, rows in (("unclamped", ~clamped), ("clamped", clamped)):
        out[name] = {"exact": int(exact[rows].sum()), "docs": int(rows.sum()),
                     "digits": round(float(right[rows].float().mean()), 3) if rows.any() else None}
    return out


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        sys.exit("usage: python scripts/uio-passkey-depth.py RUN_FOLDER X [N_DOCS]")
    torch.set_num_threads(1)
    print(json.dumps(main(Path(sys.argv[1]), int(sys.argv[2]), *(int(a) for a in sys.argv[3:]))))
