"""What an untrained UIO memory model reads: passkey digits and perplexity before any training step.

Builds a memory model on ``lm-shakespeare`` with zero-initialised LoRA B matrices (the decoder is the plain
base) for each ``memory_init`` (``learned``: one learned memory embedding, as in the paper; ``anchor``: each
memory token starts from its span's last token, a deviation), and prints one JSON line per kind with the
passkey exact-match and digit accuracy on 40 documents of 512 and 1,024 tokens (needle beyond the last
128 tokens, seed 12) and the perplexity of 16 validation documents of 512 tokens (seed 11), next to the
truncated base's. Documented in docs/methods/uio-experiments.md (anchored memories).

    python scripts/uio-init-probe.py [MEMORY]      # memory tokens per 64-token segment, default 32
"""
from __future__ import annotations

import json
import sys

import torch

from squeeze.data.tokenizers import BYTES
from squeeze.memory.config import MEMORY_INITS, UIOConfig
from squeeze.memory.evaluate import passkey_accuracy, perplexity
from squeeze.memory.model import MemoryLM
from squeeze.memory.task import load_base, text_tokens


def main(memory: int = 32) -> list[dict]:
    base, val = load_base("lm-shakespeare"), text_tokens(BYTES, "val")
    out = []
    for init in MEMORY_INITS:
        torch.manual_seed(0)
        model = MemoryLM(base, UIOConfig(segment=64, memory=memory, memory_init=init)).eval()
        row: dict = {"memory_init": init, "memory": memory}
        for length in (512, 1024):
            exact, digits = passkey_accuracy("uio", model, val, length, 40, seed=12, hide_beyond=128)
            row[f"passkey_{length}"] = {"exact": round(exact, 3), "digits": round(digits, 3)}
        row["ppl_512"] = round(perplexity("uio", model, val, 512, 16, seed=11), 3)
        out.append(row)
    out.append({"truncated_ppl_512": round(perplexity("truncated", base, val, 512, 16, seed=11), 3)})
    return out


if __name__ == "__main__":
    for line in main(*(int(a) for a in sys.argv[1:2])):
        print(json.dumps(line))
