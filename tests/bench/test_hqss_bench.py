"""``squeeze bench hqss`` at toy size: rows in the shared schema, page, figure, resumable cache."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from squeeze.bench import hqss
from squeeze.report import REQUIRED


def test_quick_bench_writes_results_and_reuses_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("skimage")
    tiny = {**hqss.QUICK_FIELDS, "train_images": 6, "test_images": 2, "clean_images": 6, "gen_steps": 2,
            "remove_steps": 2, "remove_batch": 2, "feat": 2, "gen_width": 4, "gen_blocks": 1, "disc_width": 4,
            "width": 4, "levels": 2, "blocks": 1, "pool": 2}
    monkeypatch.setattr(hqss, "QUICK_FIELDS", tiny)
    hqss.run(tmp_path / "out", quick=True, cache_dir=tmp_path / "cache")
    rows = json.loads((tmp_path / "out" / "hqss-quick.json").read_text())
    assert {(r["method"], r["metric"]) for r in rows} == {(m, k) for m in hqss.METHODS for k in hqss.METRICS}
    assert all(set(REQUIRED) <= set(r) for r in rows)
    page = (tmp_path / "out" / "hqss-quick.md").read_text()
    assert "squeeze bench hqss --quick" in page and "seed 0" in page and "hqss-quick.png" in page
    assert (tmp_path / "out" / "hqss-quick.png").stat().st_size > 0
    calls = []
    monkeypatch.setattr("squeeze.methods.hqss.run.train_generator", lambda *a, **k: calls.append(a))
    hqss.run(tmp_path / "out", quick=True, cache_dir=tmp_path / "cache")  # finished variants are reused
    assert not calls
