"""``squeeze bench long-context`` in quick mode on a tiny random base (seconds)."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from squeeze.bench.long_context import BENCH_MODES, run
from squeeze.zoo.lm_shakespeare import LMArch, TinyLlama, encode

TEXT = ("Now is the winter of our discontent made glorious summer by this sun of York; " * 60)


def test_quick_bench_writes_rows_table_and_plot(tmp_path: Path) -> None:
    torch.manual_seed(0)
    base = TinyLlama(LMArch(dim=16, layers=2, heads=2, kv_heads=2, hidden=32, context=64)).eval()
    tokens = encode(TEXT)
    rows = run(tmp_path / "out", quick=True, cache_dir=tmp_path / "cache", base=base, tokens=tokens,
               val_tokens=tokens)
    saved = json.loads((tmp_path / "out" / "long-context.json").read_text())
    assert len(saved) == len(rows)
    assert {r["method"] for r in rows} == {*BENCH_MODES, "uio-window", "truncated", "sliding-window"}
    assert {r["metric"] for r in rows} == {"ppl", "passkey_acc", "sec_per_token", "peak_mb"}
    ppl = {(r["method"], r["context_x"]): r["quant"] for r in rows if r["metric"] == "ppl"}
    assert all(1.0 < v < 1e4 for v in ppl.values())
    # at 1x the sliding window and the truncated base see exactly the same tokens
    assert abs(ppl[("truncated", 1)] - ppl[("sliding-window", 1)]) < 1e-3 * ppl[("truncated", 1)]
    assert all(r["fp"] == r["quant"] for r in rows if r["method"] == "truncated")
    md = (tmp_path / "out" / "long-context.md").read_text()
    assert "Passkey" in md and "Passkey digits" in md and "full-attention" in md
    assert "trained for 2 steps of 1 documents x 4 segments (the first 1 steps: 3 segments)" in md
    assert "- training: " in md and "time per token 2x / 1x, uio-window" in md  # the checks section
    assert all(0.0 <= r["digit_acc"] <= 1.0 for r in rows if r["metric"] == "passkey_acc")
    # the span split exists for memory models only (baselines have no memory spans)
    assert {r["method"] for r in rows if "digit_acc_span_end" in r} == {*BENCH_MODES, "uio-window"}
    assert {r["method"] for r in rows if r["metric"] == "sec_per_token"} == {"uio", "uio-window", "truncated",
                                                                             "sliding-window"}
    assert (tmp_path / "out" / "long-context.png").stat().st_size > 1000
    runs = sorted(p.name for p in (tmp_path / "cache" / "long-context-quick").iterdir())
    assert len(runs) == 5 and all((tmp_path / "cache" / "long-context-quick" / r / "uio.safetensors").is_file()
                                  for r in runs) and runs[0].startswith("uio-detached-")
