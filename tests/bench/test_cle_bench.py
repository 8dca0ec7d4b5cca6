"""``squeeze bench cle``: its plan, its comparisons, and a quick run on a tiny batch norm CNN."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from squeeze.bench import cle
from squeeze.bench.common import ZooRunner, aggregate
from squeeze.zoo.registry import ZooModel


def _row(model: str, method: str, seed: int, quant: float) -> dict:
    return {"model": model, "method": method, "wbits": 8, "abits": 8, "seed": seed, "quant": quant, "fp": 90.0,
            "seconds": 1.0, "peak_rss_mb": 1.0}


def test_plan_runs_every_variant_and_seed_once() -> None:
    plan = cle.cells({m: "t" for m in cle.PLANS})
    assert len(plan) == len({c.key for c in plan}) == sum(len(v) for _, v in cle.PLANS.values()) * len(cle.SEEDS)
    assert not [c for c in plan if c.model == "resnet-fmnist" and c.label == "dfq-relu"]  # no ReLU6 to replace
    dfq = [c for c in plan if c.label == "dfq"][0]
    assert dfq.method == "cle" and dfq.options == ()  # the full method is the config's defaults
    zeroq = {c.model: dict(c.options) for c in plan if c.label == "dfq-zeroq"}
    assert zeroq["efficientnet-lite0"] == {"generator": "zeroq", "backend": "cle", "synth_iters": 100}
    assert zeroq["resnet-fmnist"]["synth_iters"] == 300


def test_checks_give_verdicts_over_seeds() -> None:
    rows = [_row("efficientnet-lite0", "dfq", s, 85.0 + 0.1 * s) for s in range(3)]
    rows += [_row("efficientnet-lite0", "fold", s, 55.0 + s) for s in range(3)]
    rows += [_row("efficientnet-lite0", "rtn", s, 85.1) for s in range(3)]
    text = "\n".join(cle.checks(aggregate(rows)))
    assert "rescued: dfq 85.10 ± 0.10 > fold 56.00 ± 1.00 (+29.10): met" in text
    assert "dfq 85.10 ± 0.10 > rtn 85.10 ± 0.00 (+0.00): tie" in text
    assert "dfq is 4.90 points under the float model" in text
    assert "cle+ba" not in text  # no rows, no line


class _TinyRunner(ZooRunner):
    def __init__(self, zm: ZooModel) -> None:
        super().__init__("cpu")
        self.models["tiny"] = (zm, None)


def test_quick_run_on_a_tiny_batch_norm_cnn(tmp_path: Path, monkeypatch: Any, bn_cnn: nn.Module) -> None:
    x, y = torch.randn(40, 1, 8, 8), torch.randint(0, 5, (40,))

    def top1(m: torch.nn.Module) -> float:
        with torch.no_grad():
            return 100.0 * (m(x).argmax(-1) == y).float().mean().item()

    zm = ZooModel("tiny", bn_cnn, "top1", lambda n, s: torch.randn(n, 1, 8, 8), top1, (1, 8, 8))
    monkeypatch.setattr(cle, "QUICK_PLANS", {"tiny": ((6, 8), ("rtn", "fold", "dfq"))})
    cle.run(tmp_path / "out", quick=True, cache_dir=tmp_path / "cache", runner=_TinyRunner(zm))
    rows = json.loads((tmp_path / "out" / "cle-quick.json").read_text())
    assert sorted(r["method"] for r in rows) == ["dfq", "fold", "rtn"]
    summary = [r["method_summary"] for r in rows if r["method"] == "dfq"][0]
    assert summary["folded"] == 2 and summary["pairs"] == 1 and summary["corrected"] >= 1
    page = (tmp_path / "out" / "cle-quick.md").read_text()
    assert "## tiny" in page and "equalized 1/1 pairs" in page and "squeeze bench cle" in page
    assert (tmp_path / "out" / "cle-quick.png").is_file()
