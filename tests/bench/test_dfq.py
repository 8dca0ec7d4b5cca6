"""The dfq suite: cell plan, the issue's checks, and a quick run on a tiny model (seconds)."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from timm.models.vision_transformer import VisionTransformer

from squeeze.bench.common import aggregate, diff_se
from squeeze.bench import dfq
from squeeze.bench.dfq import (ALPHA_SOURCES, QUICK_SOURCES, SEEDS, STUDENT_SOURCES, VIT_SOURCES, DfqRunner,
                               cells, checks, choose_alpha, run, table)
from squeeze.zoo.registry import ZooModel


def _row(model: str, method: str, w: int, a: int, seed: int, quant: float, synth: float = 10.0) -> dict:
    return {"model": model, "method": method, "wbits": w, "abits": a, "seed": seed, "quant": quant, "fp": 90.0,
            "seconds": 1.0, "peak_rss_mb": 10.0, "synthesis_seconds": synth, "threads": 2, "synth_iters": 300}


def test_cells_cover_sources_settings_and_put_w4a4_first() -> None:
    plan = cells({"vit-fmnist": "t", "dinov2-s14": "u"}, alphas={"vit-fmnist": 0.3})
    n_seeds = sum(len(s) for s in SEEDS.values())
    assert len(plan) == 2 * len(VIT_SOURCES) * n_seeds == len({c.key for c in plan})
    first = [c for c in plan if (c.wbits, c.abits) == (4, 4) and c.label in QUICK_SOURCES and c.seed < 2]
    assert plan[:len(first)] == first
    assert {c.method for c in plan} == {"isvit"}  # one backend for every source
    # the chosen alpha1 goes to the APA sources of that model only
    with_alpha = {(c.model, c.label) for c in plan if c.options == (("alpha_apa", 0.3),)}
    assert with_alpha == {("vit-fmnist", src) for src in ALPHA_SOURCES}
    # PSAQ-ViT V2's student takes each cell's bit widths, so its images are made per setting
    student = [c for c in plan if c.label in STUDENT_SOURCES]
    assert student and all(c.options == (("student_wbits", c.wbits), ("student_abits", c.abits)) for c in student)
    assert not [c for c in plan if c.options and (c.model, c.label) not in with_alpha and c not in student]
    runner = DfqRunner(Path("cache"), load=lambda name: (None, None))
    folders = {runner.synth_folder(c) for c in student if c.model == "vit-fmnist" and c.seed == 0}
    assert len(folders) == len(SEEDS)


def test_choose_alpha_uses_the_mean_held_out_score_and_prefers_the_smaller_on_ties() -> None:
    rows = [{"alpha_apa": a, "holdout": h} for a, h in ((0.1, 90.0), (0.1, 91.0), (1.0, 90.5), (1.0, 90.5),
                                                         (3.0, 89.0), (3.0, 95.0))]
    assert choose_alpha(rows) == 3.0  # mean 92
    rows[-1]["holdout"] = 92.0  # 3.0 now has mean 90.5: a three-way tie
    assert choose_alpha(rows) == 0.1
    assert choose_alpha([]) is None


def test_checks_report_order_gap_and_synthesis_time() -> None:
    rows = [_row("vit-fmnist", "spdfq", 4, 4, s, 80 + s, synth=120.0) for s in range(2)]
    rows += [_row("vit-fmnist", "psaq-vit", 4, 4, s, 70.0 + s) for s in range(2)]
    rows += [_row("vit-fmnist", "noise", 4, 4, s, 70.5 + s) for s in range(2)]
    rows += [_row("vit-fmnist", "real", 4, 4, s, 86.5 + s, synth=0.0) for s in range(2)]
    text = "\n".join(checks(aggregate(rows), rows))
    assert "spdfq 80.50±0.71 > psaq-vit 70.50±0.71: met" in text
    # std 0.7071 over 2 seeds each: the gap's standard error is sqrt(0.5/2 + 0.5/2) = 0.7071
    assert "met; difference +10.00 ± 0.71 (standard error, 2 and 2 seeds)" in text
    assert "psaq-vit-v2" not in text  # no rows, no line
    assert "psaq-vit 70.50±0.71 > noise 71.00±0.71: tie" in text
    assert "spdfq is 6.50 points below real-data calibration (target <= 5): NOT met" in text
    assert "took at most 120 s" in text and text.rstrip().endswith("met")
    md = table(aggregate(rows), rows, "vit-fmnist").splitlines()
    assert md[2].startswith("| FP (float)") and md[3].startswith("| noise") and "W6A6" not in md[0]


def test_quick_run_on_a_tiny_model(tmp_path, monkeypatch) -> None:
    torch.manual_seed(0)
    net = VisionTransformer(img_size=16, patch_size=4, in_chans=1, num_classes=5, embed_dim=32, depth=2,
                            num_heads=2, mlp_ratio=2.0).eval()
    x, y = torch.randn(40, 1, 16, 16), torch.randint(0, 5, (40,))

    def top1(m: torch.nn.Module) -> float:
        with torch.no_grad():
            return 100.0 * (m(x).argmax(-1) == y).float().mean().item()

    zm = ZooModel("tiny", net, "top1", lambda n, s: torch.randn(n, 1, 16, 16), top1, (1, 16, 16), holdout=top1)
    monkeypatch.setattr(dfq, "ALPHA_GRID", (0.1, 1.0))
    monkeypatch.setattr(dfq, "ALPHA_SEEDS", (0,))
    runner = DfqRunner(tmp_path / "cache", quick=True, load=lambda name: (zm, None), backend="repq-vit",
                       backend_options={})
    run(tmp_path / "out", quick=True, cache_dir=tmp_path / "cache", runner=runner, models=["tiny"])
    rows = json.loads((tmp_path / "out" / "dfq-quick.json").read_text())
    assert sorted(r["method"] for r in rows) == sorted([*QUICK_SOURCES, "spdfq-alpha0.1", "spdfq-alpha1"])
    sweep = {r["alpha_apa"]: r["holdout"] for r in rows if r["method"].startswith("spdfq-alpha")}
    chosen = [r["alpha_apa"] for r in rows if r["method"] == "spdfq"]
    assert chosen == [choose_alpha([{"alpha_apa": a, "holdout": h} for a, h in sweep.items()])]
    assert all(r["synthesis_seconds"] > 0 for r in rows if r["method"] in ("psaq-vit", "spdfq"))
    assert (tmp_path / "out" / "dfq-quick.png").is_file()
    page = (tmp_path / "out" / "dfq-quick.md").read_text()
    assert "## tiny" in page and f"use alpha1 = {chosen[0]:g}" in page and "chosen on held-out" in page
    # noise, psaq-vit and one set per alpha1: the chosen spdfq cell reuses its sweep set
    assert len(list((tmp_path / "cache" / "dfq-synth").glob("*/synthetic.png"))) == 4


def test_diff_se_is_the_standard_error_of_the_gap_of_two_means() -> None:
    a = [88.05, 88.05, 88.06, 87.78, 87.9]
    b = [87.57, 88.01, 88.06]
    agg = {r["method"]: r for r in aggregate([_row("m", "a", 4, 4, i, q) for i, q in enumerate(a)]
                                             + [_row("m", "b", 4, 4, i, q) for i, q in enumerate(b)])}

    def var(v: list[float]) -> float:  # sample variance, written out
        mu = sum(v) / len(v)
        return sum((q - mu) ** 2 for q in v) / (len(v) - 1)
    assert abs(diff_se(agg["a"], agg["b"]) - (var(a) / 5 + var(b) / 3) ** 0.5) < 1e-12
