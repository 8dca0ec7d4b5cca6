"""Passkey and copy documents (squeeze.data.passkey)."""
from __future__ import annotations

import pytest
import torch

from squeeze.data.passkey import (DIGITS, LEAD, answer_digits, copy_document, key_starts, min_length, needle,
                                  passkey_document)
from squeeze.data.text import encode_bytes
from squeeze.errors import SqueezeError

FILLER = encode_bytes("Once more unto the breach, dear friends, once more; or close the wall up. " * 30)


def test_passkey_document_hides_the_key_in_range_and_scores_only_the_answer() -> None:
    gen = torch.Generator().manual_seed(3)
    for _ in range(20):
        doc, weights, key = passkey_document(FILLER, 400, gen, (50, 200))
        text = bytes(doc.tolist()).decode()
        assert doc.numel() == 400 and text.endswith(f"The pass key is {key}") and len(key) == DIGITS
        depth = text.index(LEAD + key)
        assert 50 <= depth < 200
        assert torch.equal(weights.nonzero().flatten(), torch.arange(400 - DIGITS, 400))
        assert weights.sum().item() == pytest.approx(1.0)


def test_key_starts_points_at_the_first_copy_of_the_key() -> None:
    gen = torch.Generator().manual_seed(4)
    docs = torch.stack([passkey_document(FILLER, 300, gen, (0, 200))[0] for _ in range(8)])
    starts = key_starts(docs)
    for doc, s in zip(docs, starts.tolist()):
        assert torch.equal(doc[s:s + DIGITS], doc[-DIGITS:])  # the key ...
        assert bytes(doc[s - len(LEAD):s].tolist()).decode() == LEAD  # ... right after the needle's lead
    with pytest.raises(SqueezeError, match="needle is missing"):
        key_starts(FILLER[:100][None])


def test_answer_digits_compares_the_last_five_predictions() -> None:
    docs = torch.tensor([[7, 1, 2, 3, 4, 5, 6]])
    logits = torch.full((1, 6, 10), -1.0)
    for i, t in enumerate([0, 2, 3, 9, 5, 6]):  # targets docs[0, 1:] with one wrong digit (9 for 4)
        logits[0, i, t] = 1.0
    assert answer_digits(logits, docs).tolist() == [[True, True, False, True, True]]


def test_copy_document_repeats_one_span() -> None:
    gen = torch.Generator().manual_seed(0)
    for _ in range(10):
        doc = copy_document(128, gen, FILLER)
        period = next(p for p in range(8, 65) if torch.equal(doc[p:], doc[:-p]))
        assert 8 <= period <= 64


def test_too_short_documents_are_refused() -> None:
    with pytest.raises(SqueezeError, match="too short"):
        passkey_document(FILLER, min_length() - 2, torch.Generator(), (0, 10))
    assert needle("12345").numel() + 1 < min_length()
