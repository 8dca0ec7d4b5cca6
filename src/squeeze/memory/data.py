"""Documents for training the memory model: Shakespeare text, passkey retrieval
(:mod:`squeeze.data.passkey`) and recall documents (earlier segments repeated, UIO-LLMs' segment copy task).

Tokens are bytes (the ``lm-shakespeare`` tokenizer) or an HF base's own (``tok``). In a training passkey
document the needle always lies before the final segment, so reading it needs the memory (or an attention
span reaching that far).
"""
from __future__ import annotations

import torch

from squeeze.data.passkey import passkey_document
from squeeze.data.tokenizers import BYTES, Tokenizer
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


def recall_document(tokens: torch.Tensor, segments: int, segment: int,
                    gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``segments`` text segments (plus one target token) where segment 1 and, with probability 1/2, each
    later one repeat a random earlier segment: predicting a repeat needs the memory of the original (the
    segment copy / auto-encoding task of the UIO-LLMs code, generalised to any earlier segment). Weights:
    1/n on the targets inside repeated segments (the first token of each is predicted before the decoder
    reaches it, so only tokens 1..L-1 are scored), 0 elsewhere."""
    length = segments * segment + 1
    doc, _ = lm_document(tokens, length, gen, 0)
    doc, weights = doc.clone(), torch.zeros(length)
    for t in range(1, segments):
        if t > 1 and float(torch.rand((), generator=gen)) < 0.5:
            continue
        s = int(torch.randint(0, t, (1,), generator=gen))
        doc[t * segment:(t + 1) * segment] = doc[s * segment:(s + 1) * segment].clone()
        weights[t * segment + 1:(t + 1) * segment] = 1.0
    return doc, weights / weights.sum()


def training_batch(tokens: torch.Tensor, batch: int, segments: int, segment: int, passkey_frac: float,
                   seed: int, recall_frac: float = 0.0, raw_window: int = 0,
                   tok: Tokenizer = BYTES, prefix: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, weights) of ``batch`` documents of ``(prefix + segments) * segment + 1`` tokens (deterministic
    in ``seed``): ``prefix`` segments of unscored text (distractors, weight 0) in front of each document.

    Each document is a passkey document with probability ``passkey_frac`` (needle anywhere before the
    last ``raw_window + 1`` segments, so only a memory holds it), a recall document
    (:func:`recall_document`) with probability ``recall_frac``, else plain text scored on segments
    ``raw_window + 1``.. (the earlier ones read no memory, so they have nothing to train). Weights sum to 1
    per document, so every kind counts equally.
    """
    check_text(tokens, segment)
    if passkey_frac + recall_frac > 1.0 + 1e-9:
        raise SqueezeError(f"passkey_frac {passkey_frac} + recall_frac {recall_frac} exceed 1")
    gen, pre_gen = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed ^ 0x5EED)
    length = segments * segment + 1
    ids, ws = [], []
    for _ in range(batch):
        draw = float(torch.rand((), generator=gen))
        if draw < passkey_frac:
            doc, w, _ = passkey_document(tokens, length, gen, (0, (segments - 1 - raw_window) * segment), tok)
        elif draw < passkey_frac + recall_frac:
            doc, w = recall_document(tokens, segments, segment, gen)
        else:
            doc, w = lm_document(tokens, length, gen, (raw_window + 1) * segment)
        if prefix:  # from its own stream: the documents behind it are those drawn without a prefix
            pre, _ = lm_document(tokens, prefix * segment, pre_gen, 0)
            doc, w = torch.cat([pre, doc]), torch.cat([torch.zeros(pre.numel()), w])
        ids.append(doc)
        ws.append(w)
    return torch.stack(ids), torch.stack(ws)
