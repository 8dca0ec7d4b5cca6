"""lm-shakespeare: the Llama-style byte LM, its training task on the engine, and checkpoint loading."""
from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from squeeze.errors import SqueezeError
from squeeze.train.engine import EngineConfig
from squeeze.data.passkey import DIGITS, QUESTION
from squeeze.zoo.lm_shakespeare import (LMArch, LMRecipe, LMTask, TinyLlama, apply_rope, decode, encode,
                                        in_context_passkey, load_lm_shakespeare, rope_tables, train_lm_shakespeare,
                                        with_passkeys, windows)

TINY = LMArch(dim=32, layers=2, heads=2, kv_heads=2, hidden=64, context=64)


def test_bytes_roundtrip_and_causality() -> None:
    assert decode(encode("To be, or not — to be")) == "To be, or not — to be"
    torch.manual_seed(0)
    model = TinyLlama(TINY).eval()
    ids = torch.randint(0, 256, (1, 20))
    changed = ids.clone()
    changed[0, 15] = (changed[0, 15] + 1) % 256
    with torch.no_grad():
        a, b = model(ids), model(changed)
        assert a.shape == (1, 20, 256)
        assert torch.allclose(a[:, :15], b[:, :15], atol=1e-6) and not torch.allclose(a[:, 15:], b[:, 15:])
    one = TinyLlama(replace(TINY, layers=1)).eval()  # one layer: a window of 4 sees just the last 4 tokens
    with torch.no_grad():
        assert torch.allclose(one(ids, window=4)[:, -1], one(ids[:, -4:])[:, -1], atol=1e-5)


def test_rope_is_a_relative_rotation() -> None:
    q, k = torch.randn(8), torch.randn(8)
    cos, sin = rope_tables(torch.tensor([3, 5, 10, 12]), 8, 10000.0)
    near = apply_rope(q, cos[1], sin[1]) @ apply_rope(k, cos[0], sin[0])  # positions 5 vs 3
    far = apply_rope(q, cos[3], sin[3]) @ apply_rope(k, cos[2], sin[2])  # 12 vs 10: same offset
    assert torch.allclose(near, far, atol=1e-5)


def test_training_lowers_the_loss_and_checkpoint_loads(tmp_path: Path) -> None:
    recipe = replace(LMRecipe(), epochs=2, steps_per_epoch=15, batch_size=4, warmup=5, eval_windows=4, passkey_frac=0)
    engine = EngineConfig(tmp_path / "run", progress=False)
    bpb = train_lm_shakespeare(engine, out=tmp_path / "ckpt", recipe=recipe, arch=TINY)
    import json  # noqa: PLC0415

    log = json.loads((tmp_path / "run" / "log.json").read_text())
    assert log[-1]["val_loss"] < log[0]["val_loss"] < math.log(256)
    assert math.isclose(bpb, log[-1]["val_bpb"])
    model = load_lm_shakespeare(tmp_path / "ckpt")
    assert model.arch == TINY and not model.training


def test_missing_checkpoint_says_how_to_train(tmp_path: Path) -> None:
    with pytest.raises(SqueezeError, match="squeeze train lm-shakespeare"):
        load_lm_shakespeare(tmp_path)
    with pytest.raises(SqueezeError, match="divide"):
        LMArch(dim=30, heads=4)


def test_passkey_windows_teach_copying() -> None:
    tokens = encode("To be, or not to be, that is the question. " * 40)
    ids = windows(tokens, 12, 201, seed=3)
    assert torch.equal(with_passkeys(ids, tokens, 0.0, seed=3), ids)
    mixed = with_passkeys(ids, tokens, 1.0, seed=3)
    assert mixed.shape == ids.shape
    kinds = set()
    for row in mixed:
        text = decode(row)
        periods = [p for p in range(8, len(text) // 2 + 1) if text[p:] == text[:len(text) - p]]
        if periods:  # a repeated span (digits or text): one period later every byte repeats
            kinds.add("copy-digits" if text.isdigit() else "copy-text")
        else:
            key = text[-DIGITS:]
            assert key.isdigit() and text.endswith(QUESTION + key) and f"The pass key is {key}." in text
            kinds.add("passkey")
    assert kinds == {"copy-digits", "copy-text", "passkey"}
    arch = replace(TINY, context=160)
    assert 0.0 <= in_context_passkey(TinyLlama(arch).eval(), n=4, context=arch.context) <= 1.0
    with pytest.raises(SqueezeError, match="passkey_frac"):
        LMTask(TINY, LMRecipe(passkey_frac=0.25), tokens)
    LMTask(TINY, LMRecipe(passkey_frac=0), tokens)  # without passkey documents any context will do
    with pytest.raises(SqueezeError, match="passkey_frac"):
        LMRecipe(passkey_frac=1.5)
