"""Documents for training and evaluating the memory model: Shakespeare text and passkey retrieval.

Tokens are bytes (the ``lm-shakespeare`` tokenizer). A **passkey document** is filler text (a random
stretch of Shakespeare) with the sentence ``" The pass key is 48213. Remember it. 48213 is the pass
key. "`` inserted at a random depth, ending with ``" What is the pass key? The pass key is 48213"``;
only the 5 answer digits are scored. The needle always lies before the final segment, so reading it
needs the memory (or an attention span reaching that far).
"""
from __future__ import annotations

import torch

from squeeze.errors import SqueezeError
from squeeze.zoo.lm_shakespeare import encode

DIGITS = 5
QUESTION = " What is the pass key? The pass key is "


def check_text(tokens: torch.Tensor, segment: int, what: str = "text") -> None:
    """Refuse empty text, and text shorter than one segment (plus the next-token target)."""
    if tokens.numel() == 0:
        raise SqueezeError(f"{what} is empty; give a non-empty text")
    if tokens.numel() <= segment:
        raise SqueezeError(f"{what} has {tokens.numel()} tokens, shorter than one segment of {segment} + 1; "
                           "give a longer text or a smaller --segment")


def needle(key: str) -> torch.Tensor:
    return encode(f" The pass key is {key}. Remember it. {key} is the pass key. ")


def passkey_document(filler: torch.Tensor, length: int, gen: torch.Generator,
                     depth_range: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, str]:
    """One passkey document of ``length`` tokens: (ids, weights, key); the needle lies at a random
    depth inside the token range ``depth_range = (lo, hi)`` (clamped so it fits before the question)."""
    key = "".join(str(int(d)) for d in torch.randint(0, 10, (DIGITS,), generator=gen))
    pin, tail = needle(key), encode(QUESTION + key)
    room = length - tail.numel() - pin.numel()
    if room <= 0 or filler.numel() <= room:
        raise SqueezeError(f"a passkey document of {length} tokens is too short for the needle and question")
    lo, hi = max(0, depth_range[0]), min(room, depth_range[1] - pin.numel())
    depth = int(torch.randint(lo, max(lo + 1, hi), (1,), generator=gen))
    start = int(torch.randint(0, filler.numel() - room, (1,), generator=gen))
    body = filler[start:start + room]
    ids = torch.cat([body[:depth], pin, body[depth:], tail])
    weights = torch.zeros(length)
    weights[-DIGITS:] = 1.0 / DIGITS
    return ids, weights, key


def lm_document(tokens: torch.Tensor, length: int, gen: torch.Generator, skip: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A random stretch of ``length`` tokens; weights 1/n on every target after the first ``skip`` tokens."""
    if tokens.numel() <= length:
        raise SqueezeError(f"text of {tokens.numel()} tokens is shorter than a document of {length}")
    start = int(torch.randint(0, tokens.numel() - length, (1,), generator=gen))
    weights = torch.zeros(length)
    weights[skip + 1:] = 1.0 / (length - skip - 1)
    return tokens[start:start + length], weights


def training_batch(tokens: torch.Tensor, batch: int, segments: int, segment: int, passkey_frac: float,
                   seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, weights) of ``batch`` documents of ``segments * segment + 1`` tokens (deterministic in ``seed``).

    Each document is a passkey document with probability ``passkey_frac`` (needle anywhere before the
    last segment), else plain text scored on segments 1.. (segment 0 has no memory to train).
    Weights sum to 1 per document, so both kinds count equally.
    """
    check_text(tokens, segment)
    gen = torch.Generator().manual_seed(seed)
    length = segments * segment + 1
    ids, ws = [], []
    for _ in range(batch):
        if float(torch.rand((), generator=gen)) < passkey_frac:
            doc, w, _ = passkey_document(tokens, length, gen, (0, (segments - 1) * segment))
        else:
            doc, w = lm_document(tokens, length, gen, segment)
        ids.append(doc)
        ws.append(w)
    return torch.stack(ids), torch.stack(ws)
