"""``squeeze bench nm-seeds``: run folders shared with the ``nm`` bench, the comparison over seeds, and a tiny
end-to-end run (one comparison, one extra seed, a few training images)."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from squeeze.bench import nm, nm_seeds
from squeeze.bench.common import diff_se
from squeeze.errors import SqueezeError

RESULTS = Path(__file__).resolve().parents[2] / "docs" / "results"


def _row(method: str, n: int, m: int, seed: int, top1: float) -> dict:
    return {"method": method, "n": n, "m": m, "seed": seed, "quant": top1, "seconds": 1.0}


def test_run_folders_are_named_by_schedule_so_seed_zero_is_the_nm_benchs_own(tmp_path: Path) -> None:
    schedule = hashlib.sha1(json.dumps(nm.BENCH_FIELDS, sort_keys=True).encode()).hexdigest()[:6]
    folder = nm.run_folder(tmp_path, "nm", "abc", nm.BENCH_FIELDS, "spre", 1, 4)
    assert folder == tmp_path / "nm" / f"spre-1of4-abc-{schedule}"
    folders = {nm.run_folder(tmp_path, "nm", "abc", {**nm.BENCH_FIELDS, "seed": seed}, meth, n, m)
               for meth, n, m, seed in nm_seeds.cells()}
    assert len(folders) == len(nm_seeds.cells()) == 2 * 2 * len(nm_seeds.COMPARISONS)


def test_compare_applies_the_tie_rule_over_seeds() -> None:
    rows = [_row("spre", 2, 8, s, v) for s, v in enumerate((93.7, 93.8, 93.9))]
    rows += [_row("sr-ste", 2, 8, s, v) for s, v in enumerate((93.4, 93.5, 93.3))]
    rows += [_row("spre", 1, 4, s, v) for s, v in enumerate((93.5, 93.7))]
    rows += [_row("sr-ste", 1, 4, s, v) for s, v in enumerate((93.6, 93.4))]
    rows += [_row("bimask", 2, 4, 0, 94.0), _row("transposable", 2, 4, 0, 94.1)]
    by = {c["pattern"] + c["ours"]["method"]: c for c in nm_seeds.compare(rows)}
    assert set(by) == {"2:8spre", "1:4spre", "2:4bimask"}  # bimask 1:4 has no rows
    c = by["2:8spre"]
    assert c["verdict"] == "met" and c["gap"] == pytest.approx(0.4)
    assert c["gap_se"] == pytest.approx(diff_se(c["ours"], c["baseline"]))
    assert by["1:4spre"]["verdict"].startswith("tie")
    assert by["2:4bimask"]["verdict"] == "one seed: behind"


def test_seed_zero_rows_are_read_from_the_nm_page(tmp_path: Path) -> None:
    rows = nm_seeds.seed_zero_rows(RESULTS / "nm.json")
    assert {(r["method"], r["n"], r["m"]) for r in rows} == {
        (meth, n, m) for a, b, n, m in nm_seeds.COMPARISONS for meth in (a, b)}
    with pytest.raises(SqueezeError, match="run `squeeze bench nm` first"):
        nm_seeds.seed_zero_rows(tmp_path / "nm.json")
    with pytest.raises(SqueezeError, match="no quick version"):
        nm_seeds.run(tmp_path, quick=True)


def test_a_tiny_run_writes_the_page_and_reuses_its_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out, cache = tmp_path / "out", tmp_path / "cache"
    out.mkdir()
    shutil.copy(RESULTS / "nm.json", out / "nm.json")
    monkeypatch.setattr(nm_seeds, "BENCH_FIELDS", nm.QUICK_FIELDS)
    monkeypatch.setattr(nm_seeds, "COMPARISONS", (("bimask", "transposable", 2, 4),))
    monkeypatch.setattr(nm_seeds, "SEEDS", (1,))
    monkeypatch.setattr(nm_seeds, "TEST_LIMIT", 32)
    nm_seeds.run(out, cache_dir=cache, cached_only=True)
    assert "Not run yet** (2 planned runs)" in (out / "nm-seeds.md").read_text()
    nm_seeds.run(out, cache_dir=cache)
    rows = json.loads((out / "nm-seeds.json").read_text())
    assert sorted((r["method"], r["seed"]) for r in rows) == [("bimask", 0), ("bimask", 1),
                                                              ("transposable", 0), ("transposable", 1)]
    page = (out / "nm-seeds.md").read_text()
    assert "bimask (2)" in page and "Not run yet" not in page and (out / "nm-seeds.png").is_file()
    monkeypatch.setattr("squeeze.sparse.run.train_nm", lambda *a, **k: pytest.fail("retrained a finished run"))
    nm_seeds.run(out, cache_dir=cache)
