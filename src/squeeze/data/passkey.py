"""Passkey-retrieval documents (Mohtashami & Jaggi, "Landmark Attention", 2023), over byte tokens or a
Hugging Face tokenizer's (``tok``, default bytes; the key is always one token per digit).

A **passkey document** is filler text (a random stretch of a token stream) with the sentence
``" The pass key is 48213. Remember it. 48213 is the pass key. "`` inserted at a random depth, ending with
``" What is the pass key? The pass key is 48213"``; only the 5 answer digits are scored. Used to teach the
``lm-shakespeare`` base to copy from its context, and by the UIO-LLMs memory model (training and evaluation).
"""
from __future__ import annotations

import torch

from squeeze.data.tokenizers import BYTES, Tokenizer
from squeeze.errors import SqueezeError

DIGITS = 5
QUESTION = " What is the pass key? The pass key is "
LEAD = " The pass key is "  # the needle's text before the first copy of the key


def needle(key: str, tok: Tokenizer = BYTES) -> torch.Tensor:
    """The needle's tokens (with bytes: exactly the text's)."""
    return torch.cat([tok.encode(LEAD), tok.digits(key), tok.encode(". Remember it. "), tok.digits(key),
                      tok.encode(" is the pass key. ")])


def key_starts(docs: torch.Tensor, tok: Tokenizer = BYTES) -> torch.Tensor:
    """(B,) index of the first key digit inside the needle of each passkey document ``docs`` (B, N);
    the key is read from the answer (the last 5 tokens)."""
    starts, lead = [], tok.encode(LEAD).numel()
    for doc in docs:
        try:
            pin = needle(tok.read_digits(doc[-DIGITS:].cpu()), tok).to(doc.device)
            hits = (doc.unfold(0, pin.numel(), 1) == pin).all(1).nonzero()
        except SqueezeError:  # the answer is not digits
            hits = []
        if not len(hits):
            raise SqueezeError("not a passkey document: its needle is missing")
        starts.append(int(hits[0]) + lead)
    return torch.tensor(starts)


def min_length(tok: Tokenizer = BYTES) -> int:
    """The shortest passkey document (needle, question and answer, one filler token)."""
    return needle("0" * DIGITS, tok).numel() + tok.encode(QUESTION).numel() + DIGITS + 1


def passkey_document(filler: torch.Tensor, length: int, gen: torch.Generator, depth_range: tuple[int, int],
                     tok: Tokenizer = BYTES) -> tuple[torch.Tensor, torch.Tensor, str]:
    """One passkey document of ``length`` tokens: (ids, weights, key); the needle lies at a random
    depth inside the token range ``depth_range = (lo, hi)`` (clamped so it fits before the question).
    ``weights`` is 1/5 on each answer digit, 0 elsewhere."""
    key = "".join(str(int(d)) for d in torch.randint(0, 10, (DIGITS,), generator=gen))
    pin, tail = needle(key, tok), torch.cat([tok.encode(QUESTION), tok.digits(key)])
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


def copy_document(length: int, gen: torch.Generator, filler: torch.Tensor | None = None) -> torch.Tensor:
    """``length`` tokens: one random span repeated (induction-head training, Olsson et al. 2022).

    The span is random digits, or a stretch of ``filler`` text when given (coin flip); its period is random
    in ``[8, length // 2]``. Every token from the second copy on is predictable only by finding the same
    context one period back, so a small LM learns content-based copying far faster than from the 5 answer
    digits of a passkey document. The random period matters: with a fixed one a model learns to copy
    from a fixed offset instead (seen in the sweep of docs/methods/uio.md: repeated strings were copied,
    passkeys were not).
    """
    period = int(torch.randint(min(8, length // 2), length // 2 + 1, (1,), generator=gen))
    if filler is not None and filler.numel() > period and float(torch.rand((), generator=gen)) < 0.5:
        start = int(torch.randint(0, filler.numel() - period, (1,), generator=gen))
        body = filler[start:start + period]
    else:
        body = torch.randint(ord("0"), ord("9") + 1, (period,), generator=gen)
    return body.repeat(length // period + 1)[:length]


def answer_digits(logits: torch.Tensor, docs: torch.Tensor) -> torch.Tensor:
    """(B, 5) bool: greedy, teacher-forced prediction of each answer digit is right (``.all(1)``: the whole key).

    ``logits`` (B, T, V) are the model's outputs on ``docs[:, :-1]`` (B, T+1) -- or on any suffix of
    it, as only the last 5 positions are read.
    """
    return logits[:, -DIGITS:].argmax(-1) == docs[:, -DIGITS:]
