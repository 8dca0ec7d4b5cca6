"""The sr-ptq suite: quick mode end to end on a tiny untrained network, and the issue's checks."""
from __future__ import annotations

import json

import numpy as np
import torch
from PIL import Image

from squeeze.bench.common import aggregate
from squeeze.bench.sr_ptq import METHODS, Subject, cells, checks, run
from squeeze.data.sr import degrade, to_tensor
from squeeze.zoo.edsr import EDSRArch, build_edsr


def _pairs(n: int = 2) -> tuple:
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        base = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
        hr, lr = degrade(np.asarray(Image.fromarray(base).resize((48, 48), Image.Resampling.BICUBIC)), 2)
        out.append((to_tensor(lr), to_tensor(hr)))
    return tuple(out)


def test_quick_run_writes_rows_table_and_picture(tmp_path) -> None:
    torch.manual_seed(0)
    model = build_edsr(EDSRArch(scale=2, n_blocks=2, n_feats=8)).eval()
    subject = Subject("tiny-x2", model, 2, lambda n, s: torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(s)),
                      _pairs())
    run(tmp_path / "out", quick=True, cache_dir=tmp_path / "cache", subjects={"tiny-x2": subject})
    rows = json.loads((tmp_path / "out" / "sr-ptq-quick.json").read_text())
    assert sorted(r["method"] for r in rows) == sorted(METHODS)
    assert all(r["metric"] == "psnr_y" and 0 < r["ssim_y"] <= 1 and (r["wbits"], r["abits"]) == (4, 4) for r in rows)
    assert all(r["calib"] == 32 and r["seconds"] > 0 for r in rows)
    md = (tmp_path / "out" / "sr-ptq-quick.md").read_text()
    assert "tiny-x2 W4A4: dfsq loses" in md and "rtn (min-max)" in md and "sr-ptq-quick.png" in md
    assert (tmp_path / "out" / "sr-ptq-quick.png").stat().st_size > 1000


def _row(method: str, w: int, seed: int, quant: float, seconds: float = 5.0) -> dict:
    return {"model": "edsr-x2", "method": method, "wbits": w, "abits": w, "seed": seed, "quant": quant, "fp": 37.0,
            "seconds": seconds, "peak_rss_mb": 1.0, "bicubic_psnr_y": 35.0, "ssim_y": 0.9, "device": "cpu (2 threads)"}


def test_checks_report_met_and_missed_targets() -> None:
    rows = [_row("dfsq", 4, s, 36.8 + 0.01 * s) for s in range(3)] + [_row("rtn", 4, s, 35.0) for s in range(3)]
    rows += [_row("uniform-norm", 4, s, 36.805) for s in range(3)] + [_row("dfsq", 8, 0, 36.9, 70.0)]
    text = "\n".join(checks(aggregate(rows), rows, "edsr-x2"))
    assert "gain 2.00 dB (target >= 1.5): met" in text
    assert "dfsq loses 0.190 dB vs FP (target <= 0.3): met" in text
    assert "vs rtn 35.000±0.000 dB: met" in text and "vs uniform-norm 36.805±0.000 dB: tie" in text
    assert "W8A8: dfsq within 0.100 dB of FP (target <= 0.05): NOT met" in text
    assert "5.0 s on cpu (2 threads)" in text
    plan = cells({"edsr-x2": "a", "edsr-x4": "b"}, [0, 1, 2])
    assert len(plan) == 2 * 4 * 4 * 3 and all((c.wbits, c.seed) == (4, 0) or c.method == "dfsq" for c in plan[:12])
