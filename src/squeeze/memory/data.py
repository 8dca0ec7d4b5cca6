"""Documents for training the memory model: Shakespeare text and passkey retrieval
(:mod:`squeeze.data.passkey`).

Tokens are bytes (the ``lm-shakespeare`` tokenizer). In a training passkey document the needle always
lies before the final segment, so reading it needs the memory (or an attention span reaching that far).
"""
from __future__ import annotations

import torch

from squeeze.data.passkey import passkey_document
from squeeze.errors import SqueezeError


def check_text(tokens: torch.Tensor, segment: int, what: str = "text") -> None:
    """Refuse empty text, and text shorter than one segment (plus the next-token target)."""
    if tokens.numel() == 0:
        raise SqueezeError(f"{what} is empty; give a non-empty text")
    if tokens.numel() <= segment:
        raise SqueezeError(f"{what} has {tokens.numel()} tokens, shorter than one segment of {segment} + 1; "
                           "give a longer text or a smaller --segment")


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
