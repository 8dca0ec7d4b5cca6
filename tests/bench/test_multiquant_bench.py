"""``squeeze bench multiquant``: the check lines and the page on hand-made rows."""
from __future__ import annotations

from squeeze.bench.multiquant import BENCH_CONFIG, checks, markdown, seeds_of
from squeeze.methods.multiquant.config import VARIANTS


def _row(method: str, abits: int, quant: float, seconds: float = 600.0, seed: int = 0) -> dict:
    return {"model": "resnet-fmnist", "method": method, "wbits": 2, "abits": abits, "quant": quant, "fp": 94.0,
            "seconds": seconds, "seed": seed, "peak_rss_mb": 1.0}


def test_checks_judge_against_any_precision_and_report_the_dorefa_baseline_apart() -> None:
    rows = [_row("multiquant", 2, 92.0), _row("multiquant", 3, 93.0), _row("multiquant", 8, 93.5),
            _row("any-precision", 2, 92.5), _row("any-precision", 3, 92.9),
            _row("any-precision-dorefa", 2, 90.0), _row("any-precision-dorefa", 3, 91.5)]
    lines = checks(rows)
    assert "- 2 bits: multiquant 92.00 vs any-precision 92.50: NOT met (target: multiquant higher)" in lines
    assert "- 3 bits: multiquant 93.00 vs any-precision 92.90: met (target: multiquant higher)" in lines
    assert "  - against Any-Precision DNN's own quantizers (any-precision-dorefa 90.00): +2.00" in lines
    assert any(line.startswith("- 8 bits:") and line.endswith(": met") for line in lines)
    timing = next(line for line in lines if line.startswith("- training time"))
    assert f"3 of {len(VARIANTS)} variants, 3 runs" in timing and timing.endswith("incomplete")
    full = rows + [_row(v, 2, 92.0) for v in VARIANTS if v not in {"multiquant", "any-precision",
                                                                   "any-precision-dorefa"}]
    assert next(line for line in checks(full) if line.startswith("- training time")).endswith(": met")


def _seeded(method: str, abits: int, values: list[float], seconds: float = 600.0) -> list[dict]:
    return [_row(method, abits, v, seconds, seed) for seed, v in enumerate(values)]


def test_several_seeds_give_mean_std_a_standard_error_and_ties() -> None:
    rows = (_seeded("multiquant", 2, [92.5, 92.3, 92.6]) + _seeded("any-precision", 2, [92.0, 92.2, 91.8])
            + _seeded("multiquant", 3, [93.2, 93.3, 93.1]) + _seeded("any-precision", 3, [93.3, 93.1, 93.2]))
    lines = checks(rows)
    two = next(line for line in lines if line.startswith("- 2 bits"))
    # means 92.47 vs 92.00, stds 0.15 and 0.20: the gap is larger than either std
    assert two.startswith("- 2 bits: multiquant 92.47±0.15 vs any-precision 92.00±0.20: met")
    se = ((0.15275 ** 2 + 0.2 ** 2) / 3) ** 0.5
    assert f"difference +0.47 ± {se:.2f} (standard error, 3 and 3 seeds)" in two
    three = next(line for line in lines if line.startswith("- 3 bits"))
    assert ": tie (within one std)" in three  # equal means
    # six runs of 10 min, each counted once in the training time, of two variants
    timing = next(line for line in lines if line.startswith("- training time"))
    assert "2 of" in timing and "6 runs" in timing and timing.startswith("- training time: 60 min")


def test_ablations_are_paired_with_multiquant_on_the_same_seed() -> None:
    rows = (_seeded("multiquant", 2, [92.0, 95.0, 95.0]) + _seeded("multiquant", 3, [93.0, 95.0, 95.0])
            + [_row("multiquant-no-distill", 2, 91.0), _row("multiquant-no-distill", 3, 93.0)])
    line = next(line for line in checks(rows) if line.startswith("- distillation"))
    assert line.endswith(": +0.50 points")  # seed 0 only: (1.0 + 0.0) / 2, not the three-seed mean


def test_page_marks_the_seeds_of_each_row() -> None:
    rows = _seeded("multiquant", 2, [92.5, 92.3, 92.6]) + [_row("multiquant-no-distill", 2, 91.0)]
    page = markdown(rows, BENCH_CONFIG, "multiquant")
    assert "| multiquant | 92.47 ± 0.15 | 0, 1, 2 |" in page
    assert "| multiquant-no-distill | 91.00 | 0 |" in page


def test_the_compared_networks_train_on_the_same_several_seeds() -> None:
    assert seeds_of("multiquant", quick=False) == seeds_of("any-precision", quick=False)
    assert len(seeds_of("multiquant", quick=False)) >= 3
    assert seeds_of("multiquant-no-distill", quick=False) == (BENCH_CONFIG.seed,)
    assert all(seeds_of(v, quick=True) == (BENCH_CONFIG.seed,) for v in VARIANTS)
