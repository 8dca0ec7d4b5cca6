"""Training documents of the memory model: recall documents, the document mix, and config checks."""
from __future__ import annotations

import pytest
import torch

from squeeze.errors import SqueezeError
from squeeze.memory.config import VERSION, UIOConfig
from squeeze.memory.data import recall_document, training_batch
from squeeze.zoo.lm_shakespeare import encode

TEXT = encode("".join(f"Line {i}: the quality of mercy is not strained; it droppeth as the gentle rain. "
                      for i in range(200)))


def test_recall_document_repeats_earlier_segments_and_scores_only_repeats() -> None:
    gen = torch.Generator().manual_seed(0)
    L, T = 16, 6
    for _ in range(20):
        doc, w = recall_document(TEXT, T, L, gen)
        assert doc.numel() == T * L + 1 and w.sum().item() == pytest.approx(1.0)
        segs = doc[:T * L].view(T, L)
        repeated = [t for t in range(1, T) if w[t * L + 1:(t + 1) * L].sum() > 0]
        assert 1 in repeated  # the first chance is always taken
        for t in range(1, T):
            inside = w[t * L + 1:(t + 1) * L]
            if t in repeated:
                assert any(torch.equal(segs[t], segs[s]) for s in range(t))
                assert (inside > 0).all() and w[t * L] == 0  # the segment's first token is not scored
        scored = {i for t in repeated for i in range(t * L + 1, (t + 1) * L)}
        assert set(w.nonzero().flatten().tolist()) == scored


def test_training_batch_mixes_the_three_kinds() -> None:
    ids, w = training_batch(TEXT, 64, 4, 32, 0.25, seed=1, recall_frac=0.25)
    assert ids.shape == (64, 129) and torch.allclose(w.sum(1), torch.ones(64))
    passkey = (w[:, -5:].sum(1) == 1)  # only the answer digits are scored
    # segment 1 always repeats; a segment's first token is scored in text documents only
    recall = ~passkey & (w[:, 33:64] > 0).all(1) & (w[:, 64] == 0)
    assert 5 < passkey.sum() < 30 and 5 < recall.sum() < 30
    with pytest.raises(SqueezeError, match="exceed 1"):
        training_batch(TEXT, 2, 4, 32, 0.75, seed=1, recall_frac=0.5)


def test_config_checks_the_mix_and_reads_versions_2_and_3() -> None:
    with pytest.raises(SqueezeError, match="recall_frac"):
        UIOConfig(passkey_frac=0.6, recall_frac=0.6)
    old = {**UIOConfig().to_dict(), "version": 2}
    del old["recall_frac"], old["memory_read"]
    assert UIOConfig.from_dict(old) == UIOConfig()  # trained without recall documents, read through k/v
    del old["version"]
    assert UIOConfig.from_dict({**old, "version": 3, "recall_frac": 0.25}) == UIOConfig(recall_frac=0.25)
    assert UIOConfig().version == VERSION == 4
