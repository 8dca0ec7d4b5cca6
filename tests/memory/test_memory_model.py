"""The memory-enhanced transformer: masks, equivalence with the base, bad input, HF Llama layout."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from squeeze.errors import SqueezeError
from squeeze.memory.config import UIOConfig
from squeeze.memory.data import check_text, training_batch
from squeeze.memory.model import (MemoryLM, anchor_tokens, encoder_mask, encoder_positions, memory_attention,
                                  memory_positions)
from squeeze.zoo.lm_shakespeare import LMArch, TinyLlama, apply_rope, encode, rope_tables


def _base() -> TinyLlama:
    torch.manual_seed(0)
    return TinyLlama(LMArch(vocab=32, dim=16, layers=2, heads=2, kv_heads=1, hidden=32, context=64)).eval()


def test_encoder_mask_and_positions() -> None:
    mask = encoder_mask(8, 2)
    assert mask[:8, :8].equal(torch.ones(8, 8).tril().bool()) and not mask[:8, 8:].any()
    assert mask[8, :4].all() and not mask[8, 4:8].any() and mask[8, 8] and not mask[8, 9]  # token 0: span 0..3
    assert mask[9, :8].all() and mask[9, 9] and not mask[9, 8]  # token 1: whole segment, not memory 0
    assert encoder_positions(8, 2).tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 4, 8]
    assert encoder_positions(8, 2, anchored=True).tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 3, 7]


def test_an_untrained_anchored_memory_starts_as_its_anchor_tokens_states() -> None:
    ids = torch.arange(16).view(2, 8)
    assert anchor_tokens(ids, 2).tolist() == [[3, 7], [11, 15]] and anchor_tokens(ids, 8).equal(ids)
    base = _base()
    model = MemoryLM(base, UIOConfig(segment=8, memory=2, lora_rank=2, memory_init="anchor")).eval()
    assert model.mem_token.abs().max() < 0.1  # an offset near 0, not a token embedding
    with torch.no_grad():
        model.mem_token.zero_()
        mem = model.encode(ids % 32)  # (layers, B, m, D)
        # layer 0 reads the anchors' own normalised embeddings
        want = base.layers[0].input_layernorm(base.embed_tokens(anchor_tokens(ids % 32, 2)))
        assert torch.allclose(mem[0], want, atol=1e-6)
        # deeper layers: close to the anchor token's own attention input in the plain base (the memory token
        # sees the anchor's causal span and itself, a copy of the anchor at the same position)
        states = {}
        hook = base.layers[1].input_layernorm.register_forward_hook(lambda m, i, o: states.setdefault("x", o))
        try:
            base(ids % 32)
        finally:
            hook.remove()
        want1 = states["x"][:, [3, 7]]
        assert (mem[1] - want1).norm() < 0.3 * want1.norm()
        learned = MemoryLM(base, UIOConfig(segment=8, memory=2, lora_rank=2)).eval().encode(ids % 32)
        assert (learned[1] - want1).norm() > (mem[1] - want1).norm()


def test_compact_memory_positions_equal_attention_over_a_longer_sequence() -> None:
    assert memory_positions(3, 4, 16).tolist() == [-3, -2, -1]
    assert memory_positions(20, 4, 16).tolist()[:9] == [-12] * 9 and memory_positions(20, 4, 16)[-1] == -1
    torch.manual_seed(0)
    b, h, t, m, hd = 2, 3, 5, 4, 8
    q, k, v = torch.randn(b, h, t, hd), torch.randn(b, h, t, hd), torch.randn(b, h, t, hd)
    mk, mv = torch.randn(b, h, m, hd), torch.randn(b, h, m, hd)
    cos, sin = rope_tables(torch.arange(t), hd, 10000.0)
    mem_rope = rope_tables(memory_positions(m, t, 64), hd, 10000.0)
    got, from_memory = memory_attention(q, k, v, cos, sin, mk, mv, mem_rope)
    # reference: one causal attention over m + t tokens at positions 0..m+t-1 (memories first, all visible)
    acos, asin = rope_tables(torch.arange(m + t), hd, 10000.0)
    keys = apply_rope(torch.cat([mk, k], 2), acos, asin)
    mask = torch.ones(t, m + t, dtype=torch.bool).tril(diagonal=m)
    want = torch.nn.functional.scaled_dot_product_attention(apply_rope(q, acos[m:], asin[m:]), keys,
                                                            torch.cat([mv, v], 2), attn_mask=mask)
    assert torch.allclose(got, want, atol=1e-5)
    # the part read from memories is that attention with the segment's values zeroed
    zero_v = torch.nn.functional.scaled_dot_product_attention(apply_rope(q, acos[m:], asin[m:]), keys,
                                                              torch.cat([mv, 0 * v], 2), attn_mask=mask)
    assert torch.allclose(from_memory, zero_v, atol=1e-5)
    # a separate memory query changes only the memory scores: equal to q, the output is unchanged
    assert torch.allclose(memory_attention(q, k, v, cos, sin, mk, mv, mem_rope, q.clone())[0], want, atol=1e-5)
    # without positions the memory scores differ (un-rotated)
    assert not torch.allclose(memory_attention(q, k, v, cos, sin, mk, mv)[0], want, atol=1e-3)


def test_decoder_without_memory_is_the_base_and_memory_matters() -> None:
    base = _base()
    model = MemoryLM(base, UIOConfig(segment=8, memory=2, lora_rank=2)).eval()
    ids = torch.randint(0, 32, (2, 8))
    with torch.no_grad():
        assert torch.allclose(model.decode(ids, []), base(ids), atol=1e-5)
        mem = model.encode(ids)
        assert mem.shape == (2, 2, 2, 16)  # (layers, B, m, D)
        assert not torch.allclose(model.decode(ids, [mem]), base(ids), atol=1e-4)
        long = torch.randint(0, 32, (1, 8 * 3 + 5))  # a trailing partial segment is decoded, not dropped
        streamed = model.stream(long)
        assert streamed.shape == (1, 29, 32)
        segs = [long[:, s:s + 8] for s in range(0, 29, 8)]
        mems = [model.encode(s) for s in segs[:3]]
        by_hand = torch.cat([model.decode(s, mems[:i]) for i, s in enumerate(segs)], dim=1)
        assert torch.allclose(streamed, by_hand, atol=1e-5)  # the cached prefix k/v == recomputing them
    ratio = model.extra_parameters() / sum(p.numel() for p in base.parameters())
    assert 0 < ratio < 0.2 and not any(p.requires_grad for p in base.parameters())


@pytest.mark.parametrize("window", [0, 1])
def test_stream_cache_equals_recomputing_past_the_position_clamp(window: int) -> None:
    """The streaming cache (growing buffers, keys rotated once they reach the clamped position) gives the
    logits of decoding every segment with all earlier memories projected and rotated afresh."""
    model = MemoryLM(_base(), UIOConfig(segment=8, memory=4, lora_rank=2, raw_window=window)).eval()
    with torch.no_grad():
        for p in model.lora_b.values():  # B starts at zero; make the memory path differ from the base
            p.normal_(0, 0.3)
        ids = torch.randint(0, 32, (1, 8 * 24 + 3))  # 96 memories: far past the clamp at 64 - 8(1 + W)
        segs = [ids[:, s:s + 8] for s in range(0, ids.shape[1], 8)]
        mems = [model.encode(s) for s in segs[:-1]]
        by_hand = [model.decode(s, mems[:max(i - window, 0)],
                                window=torch.cat(segs[max(i - window, 0):i], 1) if window and i else None)
                   for i, s in enumerate(segs)]
        assert torch.allclose(model.stream(ids), torch.cat(by_hand, dim=1), atol=1e-4)


def test_raw_window_stream_is_the_base_then_reads_older_segments_from_memory() -> None:
    base = _base()
    model = MemoryLM(base, UIOConfig(segment=8, memory=2, lora_rank=2, raw_window=1)).eval()
    with torch.no_grad():
        for p in model.lora_b.values():  # non-zero adapters, so memories differ from the base's k/v
            p.normal_(0, 0.3)
    ids = torch.randint(0, 32, (2, 32), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        # two segments fit the raw window: no memory yet, exactly the base on the whole input
        assert torch.allclose(model.stream(ids[:, :16]), base(ids[:, :16]), atol=1e-5)
        got = model.stream(ids)
        segs = ids.view(2, 4, 8).unbind(1)
        mems = [model.encode(s) for s in segs[:2]]
        for t in (2, 3):  # segment t reads the memories of 0..t-2 and segment t-1 raw
            want = model.decode(segs[t], mems[:t - 1], window=segs[t - 1])
            assert torch.allclose(got[:, 8 * t:8 * (t + 1)], want, atol=1e-5)
        assert not torch.allclose(got[:, 16:24], base(ids[:, 8:24])[:, 8:], atol=1e-3)  # the memory is read
    MemoryLM(base, UIOConfig(segment=8, memory=2, raw_window=7, doc_segments=9))  # 64 raw tokens: the context
    with pytest.raises(SqueezeError, match="raw_window 8"):
        MemoryLM(base, UIOConfig(segment=8, memory=2, raw_window=8, doc_segments=10))


def test_memory_read_adapters_start_as_the_paper_decoder_and_learn() -> None:
    base = _base()
    torch.manual_seed(1)
    kv = MemoryLM(base, UIOConfig(segment=8, memory=2, lora_rank=2))
    torch.manual_seed(1)
    kvqo = MemoryLM(base, UIOConfig(segment=8, memory=2, lora_rank=2, memory_read="kvqo"))
    for n in ("enc_q", "enc_v", "dec_k", "dec_v"):  # same draws for the shared adapters
        kvqo.lora_a[n].data.copy_(kv.lora_a[n])
        kvqo.lora_b[n].data.normal_(0, 0.1)
        kv.lora_b[n].data.copy_(kvqo.lora_b[n])
    kvqo.mem_token.data.copy_(kv.mem_token)
    ids = torch.randint(0, 32, (2, 8))
    mems = [kv.encode(ids)]
    assert torch.allclose(kvqo.decode(ids, []), base(ids), atol=1e-5)  # no memories: the base
    assert torch.allclose(kvqo.decode(ids, mems), kv.decode(ids, mems), atol=1e-5)  # zero-initialised B
    kvqo.decode(ids, mems).logsumexp(-1).sum().backward()
    assert kvqo.lora_a["dec_q"].grad.abs().sum() == 0 and kvqo.lora_b["dec_q"].grad.abs().sum() > 0
    assert kvqo.lora_b["dec_o"].grad.abs().sum() > 0
    kvqo.lora_b["dec_o"].data.normal_(0, 0.1)
    kvqo.lora_b["dec_q"].data.normal_(0, 0.1)
    with torch.no_grad():
        assert torch.allclose(kvqo.decode(ids, []), base(ids), atol=1e-5)  # still the base without memories
        assert not torch.allclose(kvqo.decode(ids, mems), kv.decode(ids, mems), atol=1e-4)


def test_default_config_adds_about_two_percent() -> None:
    base = TinyLlama(LMArch())
    ratio = MemoryLM(base, UIOConfig()).extra_parameters() / sum(p.numel() for p in base.parameters())
    assert 0.015 < ratio < 0.025


def test_bad_input() -> None:
    with pytest.raises(SqueezeError, match="divisible"):
        UIOConfig(segment=64, memory=7)
    with pytest.raises(SqueezeError, match="grad mode"):
        UIOConfig(grad_mode="bptt")
    with pytest.raises(SqueezeError, match="memory_positions"):
        UIOConfig(memory_positions="rotary")
    with pytest.raises(SqueezeError, match="memory_read"):
        UIOConfig(memory_read="qk")
    with pytest.raises(SqueezeError, match="version 1 is not supported"):
        UIOConfig.from_dict({"version": 1})
    with pytest.raises(SqueezeError, match="unknown UIO option"):
        UIOConfig.from_dict({"segmnet": 3})
    with pytest.raises(SqueezeError, match="empty"):
        check_text(encode(""), 64)
    with pytest.raises(SqueezeError, match="shorter than one segment"):
        training_batch(encode("short text"), 1, 2, 64, 0.0, 0)
    with pytest.raises(SqueezeError, match="Llama layout"):
        MemoryLM(nn.Sequential(nn.Linear(4, 4)), UIOConfig())
    model = MemoryLM(_base(), UIOConfig(segment=8, memory=2))
    with pytest.raises(SqueezeError, match="whole segments"):
        model.encode(torch.zeros(1, 5, dtype=torch.long))
    with pytest.raises(SqueezeError, match="empty input"):
        model.stream(torch.zeros(1, 0, dtype=torch.long))


def test_hf_llama_layout_matches_its_own_forward() -> None:
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                   num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64)
    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(cfg).eval()
    model = MemoryLM(hf, UIOConfig(segment=8, memory=2, lora_rank=2))
    ids = torch.randint(0, 32, (1, 8))
    with torch.no_grad():
        assert torch.allclose(model.decode(ids, []), hf(ids).logits, atol=1e-4)
        assert model.encode(ids).shape == (2, 1, 2, 16)
