"""The vit-ptq suite's pure parts: cell plan, table and the issue's checks on synthetic rows."""
from __future__ import annotations

from squeeze.bench.common import Cell, aggregate
from squeeze.bench.vit_ptq import CALIB, PRIORITY, cells, checks, table


def _row(model: str, method: str, w: int, a: int, seed: int, quant: float, fp: float = 90.0) -> dict:
    return {"model": model, "method": method, "wbits": w, "abits": a, "seed": seed, "quant": quant, "fp": fp,
            "seconds": 1.0, "peak_rss_mb": 10.0}


def test_cells_put_the_issue_claims_first_and_key_options() -> None:
    plan = cells({"vit-fmnist": "t"}, [0, 1, 2])
    n_priority = len(PRIORITY) * 3
    assert all(((c.wbits, c.abits), c.method) in PRIORITY for c in plan[:n_priority])
    assert not any(((c.wbits, c.abits), c.method) in PRIORITY for c in plan[n_priority:] if not c.label)
    assert len({c.key for c in plan}) == len(plan)  # ablations differ from their method by label and options
    brecq = next(c for c in plan if c.method == "brecq")
    assert dict(brecq.options)["calib"] == CALIB["brecq"] == 256
    assert Cell("m", "rtn", 4, 4, 0).key == "m@|rtn|w4a4|s0"  # keys without options are unchanged


def test_checks_report_met_ties_and_misses() -> None:
    rows = [_row("vit-fmnist", "erq", 3, 4, s, 80 + s) for s in range(3)]
    rows += [_row("vit-fmnist", "gptq", 3, 4, s, 70.0 + s) for s in range(3)]
    rows += [_row("vit-fmnist", "rtn", 3, 4, s, 80.5 + s) for s in range(3)]  # inside one std: a tie
    rows += [_row("vit-fmnist", "isvit", 3, 3, s, 50.0) for s in range(3)]
    rows += [_row("vit-fmnist", "repq-vit", 3, 3, s, 60.0) for s in range(3)]
    rows += [_row("vit-fmnist", "erq", 4, 4, s, 86.5) for s in range(3)]
    lines = checks(aggregate(rows), {"seconds": 700.0, "peak_rss_mb": 100.0, "threads": 2})
    text = "\n".join(lines)
    assert "erq 81.00±1.00 vs gptq 71.00±1.00: met" in text
    assert "vs rtn 81.50±1.00: tie" in text
    assert "isvit 50.00±0.00 vs repq-vit 60.00±0.00: NOT met" in text
    assert "erq loses 3.50 points vs FP (target <= 3): NOT met" in text
    assert "700 s" in text and text.rstrip().endswith("NOT met")


def test_table_has_fp_first_and_one_column_per_setting() -> None:
    rows = [_row("vit-fmnist", m, w, a, 0, 50.0) for m in ("erq", "rtn") for w, a in ((3, 4), (6, 6))]
    lines = table(aggregate(rows), "vit-fmnist").splitlines()
    assert "W3A4" in lines[0] and "W6A6" in lines[0] and "W3A3" not in lines[0]
    assert lines[2].startswith("| FP (float)")
    assert lines[3].startswith("| rtn") and lines[4].startswith("| erq")  # the issue's method order
