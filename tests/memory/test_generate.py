"""Generation with a memory model or a truncated base: equal to greedy decoding of the whole sequence,
sampling rules, the context report, and the ``squeeze generate`` command's bad input."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from squeeze.cli import main
from squeeze.errors import SqueezeError
from squeeze.memory.config import UIOConfig
from squeeze.memory.generate import generate_base, generate_memory, sample_token, shared_positions
from squeeze.memory.model import MemoryLM, memory_positions
from squeeze.zoo.lm_shakespeare import LMArch, TinyLlama


def _base() -> TinyLlama:
    torch.manual_seed(0)
    return TinyLlama(LMArch(vocab=32, dim=16, layers=2, heads=2, kv_heads=1, hidden=32, context=64)).eval()


@pytest.mark.parametrize("window", [0, 1])
@pytest.mark.parametrize("prompt_len", [5, 16, 21])  # inside one segment, exactly two segments, past them
def test_greedy_generation_equals_streaming_the_whole_sequence(window: int, prompt_len: int) -> None:
    model = MemoryLM(_base(), UIOConfig(segment=8, memory=2, lora_rank=2, raw_window=window)).eval()
    with torch.no_grad():  # non-zero adapters, so memories read differently from raw tokens
        for p in model.lora_b.values():
            p.normal_(0, 0.5)
    prompt = torch.randint(0, 32, (prompt_len,), generator=torch.Generator().manual_seed(prompt_len))
    new, report = generate_memory(model, prompt, 19, progress=False)
    seq = prompt.clone()
    for token in new:  # reference: decode the whole sequence again from scratch before every token
        assert int(model.stream(seq[None])[0, -1].argmax()) == int(token)
        seq = torch.cat([seq, token[None]])
    n_full = (prompt_len - 1) // 8
    assert report.compressed_segments == max(0, n_full - window)
    assert report.memory_tokens == 2 * report.compressed_segments
    assert report.raw_tokens + 8 * report.compressed_segments == prompt_len
    assert report.dropped_tokens == report.dropped_later == 0
    assert "nothing is dropped" in report.line() or "directly" in report.line()


def test_base_generation_reads_its_last_context_tokens_and_says_what_it_drops() -> None:
    base = _base()
    prompt = torch.randint(0, 32, (70,), generator=torch.Generator().manual_seed(1))
    new, report = generate_base(base, 64, prompt, 5, progress=False)
    seq = prompt.clone()
    for token in new:
        assert int(base(seq[None, -64:])[0, -1].argmax()) == int(token)
        seq = torch.cat([seq, token[None]])
    assert (report.raw_tokens, report.dropped_tokens, report.dropped_later) == (64, 6, 4)
    assert "6 of the 70 prompt tokens are never seen and 4 more fall out" in report.line()
    _, short = generate_base(base, 64, prompt[:60], 5, progress=False)
    assert (short.dropped_tokens, short.dropped_later) == (0, 0)
    _, edge = generate_base(base, 64, prompt[:60], 6, progress=False)  # the 6th token is never read
    assert edge.dropped_later == 1 and "1 more fall out" in edge.line()


def test_sampling_rules() -> None:
    logits = torch.tensor([0.0, 3.0, 1.0, 2.5])
    gen = torch.Generator().manual_seed(0)
    assert sample_token(logits, 0.0, 0, gen) == 1 and sample_token(logits, 1.0, 1, gen) == 1
    draws = {sample_token(logits, 5.0, 2, gen) for _ in range(200)}
    assert draws == {1, 3}  # top-2 only, both reached at a high temperature
    a = [sample_token(logits, 1.0, 0, torch.Generator().manual_seed(3)) for _ in range(3)]
    assert len(set(a)) == 1  # same seed, same draw


@pytest.mark.parametrize("n", [0, 5, 47, 48, 49, 100])
def test_shared_positions_counts_the_clamped_memories(n: int) -> None:
    pos = memory_positions(n, 16, 64)
    want = int((pos == pos.min()).sum()) if n and pos.unique().numel() < n else 0
    assert shared_positions(n, 16, 64) == want


def test_bad_requests() -> None:
    model = MemoryLM(_base(), UIOConfig(segment=8, memory=2, lora_rank=2)).eval()
    with pytest.raises(SqueezeError, match="prompt is empty"):
        generate_memory(model, torch.zeros(0, dtype=torch.long), 3)
    with pytest.raises(SqueezeError, match="max-new-tokens"):
        generate_memory(model, torch.ones(3, dtype=torch.long), 0)
    with pytest.raises(SqueezeError, match="temperature"):
        generate_base(_base(), 64, torch.ones(3, dtype=torch.long), 2, temperature=-1.0)


def test_generate_command(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    prompt = tmp_path / "p.txt"
    prompt.write_text("To be, or not to be" * 20)
    assert main(["generate", "lm-shakespeare", "--prompt-file", str(prompt), "--max-new-tokens", "3",
                 "--temperature", "0", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["text"].encode("utf-8", "replace")) >= 1 and out["context"]["dropped_tokens"] == 380 - 256
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xff\xfe abc")
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    for argv, message in [(["--prompt-file", str(bad)], "not UTF-8"),
                          (["--prompt-file", str(empty)], "prompt is empty"),
                          (["--prompt-file", str(tmp_path / "none.txt")], "cannot read prompt file"),
                          (["--prompt", "x", "--max-new-tokens", "0"], "max-new-tokens")]:
        assert main(["generate", "lm-shakespeare", *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1
    assert main(["generate", str(tmp_path), "--prompt", "x"]) == 2
    assert "neither a finished" in capsys.readouterr().err
