"""``squeeze bench deploy --quick`` on vit-fmnist: every variant measured, files written, targets checked."""
from __future__ import annotations

import json

import pytest

from squeeze.bench import deploy


@pytest.fixture()
def small_batches(monkeypatch):
    monkeypatch.setattr(deploy, "BATCHES", (1, 4))


def test_quick_vit_fmnist(tmp_path, small_batches) -> None:
    rows = deploy.run(tmp_path, quick=True, only=["vit-fmnist"], threads=1, runs=3)
    assert [r["method"] for r in rows] == list(deploy.METHODS)
    saved = json.loads((tmp_path / "deploy.json").read_text())
    assert len(saved) == len(rows)
    by = {r["method"]: r for r in rows}
    assert by["fp32"]["size_ratio"] == 1.0 and by["fp32"]["speedup_b4"] == 1.0
    assert by["int8-static"]["size_ratio"] < 0.35 and by["int4-weight"]["size_ratio"] < by["int8-static"]["size_ratio"]
    assert by["int8-static"]["top1_agreement_vs_fakequant"] >= 95.0
    assert by["int8-static"]["cosine_vs_fakequant"] > 0.999
    for row in rows:
        assert row["runs"] == 3 and row["latency_ms_b1"] > 0 and row["bits_per_weight"] > 0
        assert row["cosine_vs_fp32"] > 0.99
    page = (tmp_path / "deploy.md").read_text()
    assert "ISA flags" in page and "int8-static" in page and (tmp_path / "deploy.png").is_file()


def test_checks_flag_missed_targets() -> None:
    row = {"model": "vit-fmnist", "method": "int8-static", "metric": "top1", "speedup_b32": 1.2, "size_ratio": 0.29,
           "quant": 88.0, "fakequant": 89.5, "top1_agreement_vs_fakequant": 99.5}
    lines = deploy.checks([row])
    assert any("1.5x: NOT met" in line for line in lines)
    assert any("0.3x fp32: met" in line for line in lines)
    assert any("fake-quant: NOT met" in line for line in lines)
    assert deploy.checks([{**row, "model": "resnet-fmnist"}]) == []
