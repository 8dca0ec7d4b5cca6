"""``squeeze bench multiquant``: the check lines on hand-made rows."""
from __future__ import annotations

from squeeze.bench.multiquant import checks
from squeeze.methods.multiquant.config import VARIANTS


def _row(method: str, abits: int, quant: float, seconds: float = 600.0) -> dict:
    return {"method": method, "abits": abits, "quant": quant, "fp": 94.0, "seconds": seconds}


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
    assert f"3 of {len(VARIANTS)} variants" in timing and timing.endswith("incomplete")
    full = rows + [_row(v, 2, 92.0) for v in VARIANTS if v not in {"multiquant", "any-precision",
                                                                   "any-precision-dorefa"}]
    assert next(line for line in checks(full) if line.startswith("- training time")).endswith(": met")
