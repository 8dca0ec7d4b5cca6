"""Training documents of the memory model: recall documents, the document mix, and config checks."""
from __future__ import annotations

from dataclasses import replace

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


def test_config_checks_the_mix_and_reads_versions_2_to_12() -> None:
    with pytest.raises(SqueezeError, match="recall_frac"):
        UIOConfig(passkey_frac=0.6, recall_frac=0.6)
    with pytest.raises(SqueezeError, match="raw_window"):
        UIOConfig(raw_window=-1)
    with pytest.raises(SqueezeError, match="raw_window \\+ 2"):
        UIOConfig(raw_window=2, doc_segments=3)
    old = {**UIOConfig().to_dict(), "version": 2}
    del old["recall_frac"], old["memory_read"], old["raw_window"], old["batched"], old["reservoir"], old["grad_clip"]
    del old["curriculum_segments"], old["curriculum_steps"], old["prefix_segments"], old["prefix_start"], old["lora_b_lr"]
    del old["memory_init"], old["restarts"], old["restart_below"]
    shared = UIOConfig(reservoir="batch")  # versions <= 6 drew one reservoir per batch
    assert UIOConfig.from_dict(old) == shared  # no recall documents, k/v read, no raw window
    del old["version"]
    assert UIOConfig.from_dict({**old, "version": 3, "recall_frac": 0.25}) == replace(shared, recall_frac=0.25)
    assert UIOConfig.from_dict({**old, "version": 4, "recall_frac": 0.0, "memory_read": "kvqo"}) == \
        replace(shared, memory_read="kvqo")
    assert UIOConfig.from_dict({**old, "version": 5, "recall_frac": 0.0, "memory_read": "kv", "raw_window": 1}) == \
        replace(shared, raw_window=1)
    v6 = {**old, "version": 6, "recall_frac": 0.0, "memory_read": "kv", "raw_window": 0, "batched": True}
    assert UIOConfig.from_dict(v6) == replace(shared, batched=True)
    v7 = {**v6, "version": 7, "reservoir": "document"}
    assert UIOConfig.from_dict(v7) == replace(shared, batched=True, reservoir="document", grad_clip=1.0)
    v8 = {**v7, "version": 8, "grad_clip": 0.5}
    assert UIOConfig.from_dict(v8) == replace(shared, batched=True, reservoir="document", grad_clip=0.5)
    v9 = {**v8, "version": 9, "curriculum_segments": 3, "curriculum_steps": 5}
    assert UIOConfig.from_dict(v9) == replace(shared, batched=True, reservoir="document", grad_clip=0.5,
                                              curriculum_segments=3, curriculum_steps=5, prefix_segments=0)
    v10 = {**v9, "version": 10, "prefix_segments": 2, "prefix_start": 0}
    assert UIOConfig.from_dict(v10) == replace(UIOConfig.from_dict(v9), prefix_segments=2, lora_b_lr=1.0)
    v11 = {**v10, "version": 11, "lora_b_lr": 4.0}
    assert UIOConfig.from_dict(v11) == replace(UIOConfig.from_dict(v10), lora_b_lr=4.0, memory_init="learned")
    v12 = {**v11, "version": 12, "memory_init": "anchor"}
    assert UIOConfig.from_dict(v12) == replace(UIOConfig.from_dict(v11), memory_init="anchor", restarts=0)
    with pytest.raises(SqueezeError, match="restart_below 0.0 in \\(0, 1\\]"):
        UIOConfig(restart_below=0.0)
    with pytest.raises(SqueezeError, match="memory_init 'token' is unknown"):
        UIOConfig(memory_init="token")
    with pytest.raises(SqueezeError, match="lora_b_lr must be positive"):
        UIOConfig(lora_b_lr=0)
    with pytest.raises(SqueezeError, match="prefix_segments -1 must be >= 0"):
        UIOConfig(prefix_segments=-1)
    with pytest.raises(SqueezeError, match="prefix_start 300 must lie in 0 .. steps = 240"):
        UIOConfig(prefix_start=300)
    with pytest.raises(SqueezeError, match="grad_clip -1 must be >= 0"):
        UIOConfig(grad_clip=-1)
    with pytest.raises(SqueezeError, match="reservoir 'row' is unknown"):
        UIOConfig(reservoir="row")
    with pytest.raises(SqueezeError, match="batched must be true or false"):
        UIOConfig(batched="yes")  # type: ignore[arg-type]
    assert UIOConfig().version == VERSION == 13


def test_a_prefix_puts_unscored_text_in_front_of_the_same_documents() -> None:
    ids, w = training_batch(TEXT, 8, 4, 32, 0.5, seed=3)
    ids_p, w_p = training_batch(TEXT, 8, 4, 32, 0.5, seed=3, prefix=2)
    assert ids_p.shape == (8, 6 * 32 + 1) and (w_p[:, :64] == 0).all()
    assert torch.equal(ids_p[:, 64:], ids) and torch.equal(w_p[:, 64:], w)  # the documents are unchanged
    assert not torch.equal(ids_p[0, :64], ids_p[1, :64])  # each document has its own distractor text


def test_curriculum_shortens_the_first_steps_documents_and_is_checked() -> None:
    cfg = UIOConfig(doc_segments=8, curriculum_segments=3, curriculum_steps=5, steps=10, steps_per_epoch=5)
    assert [cfg.segments_at(s) for s in (0, 4, 5, 9)] == [3, 3, 8, 8]
    assert UIOConfig().segments_at(0) == 8  # off by default
    for bad, match in (({"curriculum_segments": 3}, "together"), ({"curriculum_steps": 5}, "together"),
                       ({"curriculum_segments": 9, "curriculum_steps": 5}, "must lie in"),
                       ({"curriculum_segments": 2, "curriculum_steps": 5, "raw_window": 1}, "must lie in"),
                       ({"curriculum_segments": 3, "curriculum_steps": 300}, "<= steps"),
                       ({"curriculum_steps": -1}, ">= 0")):
        with pytest.raises(SqueezeError, match=match):
            UIOConfig(**bad)


def test_raw_window_keeps_needles_and_scores_beyond_the_window() -> None:
    from squeeze.data.passkey import needle  # noqa: PLC0415

    L, T, W = 32, 5, 2
    ids, w = training_batch(TEXT, 48, T, L, 0.5, seed=2, raw_window=W)
    passkey = w[:, -5:].sum(1) == 1
    assert 5 < passkey.sum() < 43
    pin = needle("00000").numel()
    for doc, is_key in zip(ids, passkey):
        if is_key:  # "The pass key is NNNNN." starts early enough to end before the last W + 1 segments
            text = bytes(doc.tolist()).decode("latin-1")
            assert text.index("The pass key is") + pin <= (T - 1 - W) * L
    text_w = w[~passkey]
    assert (text_w[:, :(W + 1) * L + 1] == 0).all() and (text_w[:, (W + 1) * L + 1:] > 0).all()
