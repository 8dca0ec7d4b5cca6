"""``squeeze bench dfq-cnn``: its plan, its comparisons, and a quick run on a tiny batch norm CNN."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from squeeze.bench import dfq_cnn
from squeeze.bench.common import aggregate, fingerprint
from squeeze.bench.dfq import DfqRunner
from squeeze.zoo.registry import ZooModel


def _row(model: str, method: str, w: int, a: int, seed: int, quant: float) -> dict:
    return {"model": model, "method": method, "wbits": w, "abits": a, "seed": seed, "quant": quant, "fp": 94.0,
            "seconds": 1.0, "peak_rss_mb": 1.0, "synthesis_seconds": 2.0}


def test_plan_has_every_cell_once_and_seed_zero_first() -> None:
    tags = {m: "t" for m in dfq_cnn.PLANS}
    plan = dfq_cnn.cells(tags, "rtn")
    expected = sum(len(p.settings) * len(p.seeds) for p in dfq_cnn.PLANS.values()) * len(dfq_cnn.SOURCES)
    assert len(plan) == expected == len({c.key for c in plan}) and {c.method for c in plan} == {"rtn"}
    n_first = sum(c.seed == 0 for c in plan)
    assert 0 < n_first < len(plan) and all(c.seed == 0 for c in plan[:n_first])  # seed 0 of everything first
    assert dfq_cnn.cells({"resnet-fmnist": "t"}, "percentile", quick=True)[0].model == "resnet-fmnist"


def test_checks_give_a_verdict_over_seeds_and_the_sign_on_one() -> None:
    rows = [_row("resnet-fmnist", "zeroq", 4, 4, s, 93.0 + 0.1 * s) for s in range(3)]
    rows += [_row("resnet-fmnist", "noise", 4, 4, s, 91.0 + 0.1 * s) for s in range(3)]
    rows += [_row("resnet-fmnist", "real", 4, 4, s, 93.5) for s in range(3)]
    rows += [_row("efficientnet-lite0", "zeroq", 8, 6, 0, 80.0), _row("efficientnet-lite0", "noise", 8, 6, 0, 82.0)]
    text = "\n".join(dfq_cnn.checks(aggregate(rows)))
    assert "resnet-fmnist W4A4: zeroq 93.10 > noise 91.10: met" in text
    assert "zeroq minus real images (93.50): -0.40 points" in text
    assert "efficientnet-lite0 W8A6: zeroq 80.00 > noise 82.00: one seed: behind" in text
    assert "spdfq-no-apa" not in text  # no rows, no line


def test_quick_run_on_a_tiny_batch_norm_cnn(tmp_path: Path, monkeypatch, bn_cnn: nn.Module) -> None:
    net = bn_cnn
    x, y = torch.randn(40, 1, 8, 8), torch.randint(0, 5, (40,))

    def top1(m: torch.nn.Module) -> float:
        with torch.no_grad():
            return 100.0 * (m(x).argmax(-1) == y).float().mean().item()

    zm = ZooModel("tiny", net, "top1", lambda n, s: torch.randn(n, 1, 8, 8), top1, (1, 8, 8))
    monkeypatch.setattr(dfq_cnn, "QUICK_PLANS", {"tiny": dfq_cnn.Plan(((4, 4),), (0,))})
    dfq_cnn.run(tmp_path / "out", quick=True, cache_dir=tmp_path / "cache", load=lambda name: (zm, None))
    rows = json.loads((tmp_path / "out" / "dfq-cnn-quick.json").read_text())
    assert sorted((r["ptq"], r["method"]) for r in rows) == sorted(
        (b, src) for b in dfq_cnn.BACKENDS for src in dfq_cnn.SOURCES)
    assert {r["backend"]["method"] for r in rows if r["ptq"] == "percentile"} == {"percentile"}
    assert all(r["synthesis_seconds"] > 0 for r in rows if r["method"] in ("zeroq", "spdfq-no-apa"))
    page = (tmp_path / "out" / "dfq-cnn-quick.md").read_text()
    assert "## tiny" in page and page.count("zeroq minus real images") == 2 and "Backend `percentile`" in page
    assert len(list((tmp_path / "cache" / "dfq-synth").glob("*/synthetic.png"))) == 3  # noise, zeroq, spdfq-no-apa: shared by the backends
    runner = DfqRunner(tmp_path / "cache", quick=True, load=lambda name: (zm, None))
    distance = dfq_cnn.statistics_distance(runner, dfq_cnn.cells({"tiny": fingerprint(net)}, "rtn", quick=True))
    assert distance[("tiny", "zeroq")] < distance[("tiny", "noise")]  # ZeroQ moved toward the statistics
    assert f"| zeroq | {distance[('tiny', 'zeroq')]:.4g} |" in page
    assert (tmp_path / "out" / "dfq-cnn-quick.png").is_file()
