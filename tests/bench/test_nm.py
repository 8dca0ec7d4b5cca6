"""``squeeze bench nm --quick``: every method trains a few images, rows and files are written, reruns
reuse the finished runs."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from squeeze.bench import nm
from squeeze.errors import SqueezeError


def test_quick_bench_writes_rows_and_reuses_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out, cache = tmp_path / "out", tmp_path / "cache"
    nm.run(out, quick=True, cache_dir=cache)
    rows = json.loads((out / "nm-quick.json").read_text())
    assert [r["method"] for r in rows] == list(nm.METHODS)
    by = {r["method"]: r for r in rows}
    assert (by["dense"]["n"], by["dense"]["m"], by["dense"]["density"]) == (1, 1, 1.0)
    for method in nm.METHODS[1:]:
        r = by[method]
        assert (r["n"], r["m"]) == (2, 4) and r["density"] == pytest.approx(0.5, abs=1e-6)
        assert r["fwd_flop_saving"] > 0.3 and 0 <= r["quant"] <= 100
    for method in ("transposable", "bimask", "bimask-no-perm"):
        assert by[method]["bwd_nm_coverage"] == 1.0 and by[method]["bwd_flop_saving"] > 0
    assert by["sr-ste"]["bwd_nm_coverage"] < 1.0 and by["sr-ste"]["bwd_flop_saving"] == 0
    assert by["spre"]["check_nm_failures"] == [] and by["spre"]["file_bytes"] <= 0.6 * by["spre"]["dense_bytes"]
    assert (out / "nm-quick.md").is_file() and (out / "nm-quick.png").is_file()
    # a second call trains nothing: every run folder already holds its result
    monkeypatch.setattr("squeeze.sparse.run.train_nm", lambda *a, **k: pytest.fail("retrained a finished run"))
    nm.run(tmp_path / "again", quick=True, cache_dir=cache)
    assert json.loads((tmp_path / "again" / "nm-quick.json").read_text())[0]["quant"] == rows[0]["quant"]


def test_cached_only_writes_the_finished_runs_and_names_the_rest(tmp_path: Path) -> None:
    out, cache = tmp_path / "out", tmp_path / "cache"
    nm.run(out, quick=True, only=["dense", "sr-ste"], cache_dir=cache)
    assert not out.exists()  # --models only fills the cache
    nm.run(out, quick=True, cache_dir=cache, cached_only=True)
    rows = json.loads((out / "nm-quick.json").read_text())
    assert [r["method"] for r in rows] == ["dense", "sr-ste"]
    page = (out / "nm-quick.md").read_text()
    assert "--cached-only" in page and "Not run yet** (6 planned runs)" in page and "spre 2:4" in page


def test_workers_train_runs_in_parallel_processes(tmp_path: Path) -> None:
    out, cache = tmp_path / "out", tmp_path / "cache"
    nm.run(out, quick=True, only=["dense", "magnitude"], cache_dir=cache, workers=2)
    nm.run(out, quick=True, only=["dense", "magnitude"], cache_dir=cache, cached_only=True)
    rows = json.loads((out / "nm-quick.json").read_text())
    assert sorted(r["method"] for r in rows) == ["dense", "magnitude"] and all(0 <= r["quant"] <= 100 for r in rows)
    assert "training: 2 runs" in (out / "nm-quick.md").read_text()


def test_plan_puts_the_claims_first() -> None:
    cells = nm.plan(nm.RATIOS)
    assert len(cells) == 1 + (len(nm.METHODS) - 1) * len(nm.RATIOS) == len(set(cells))
    assert cells[:5] == [("dense", 2, 4), ("sr-ste", 2, 4), ("bimask", 2, 4), ("spre", 2, 4), ("transposable", 2, 4)]
    assert set(cells[5:9]) == {("sr-ste", 1, 4), ("spre", 1, 4), ("sr-ste", 2, 8), ("spre", 2, 8)}


def test_unknown_method_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SqueezeError, match="this suite's methods"):
        nm.run(tmp_path, quick=True, only=["srste"], cache_dir=tmp_path)
