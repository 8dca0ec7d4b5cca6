"""UnDeM end to end on tiny data: generators, filtered pseudo pairs, the demoire net, reuse of finished work,
refusal of a generator from another config, the CLI glue's bad input, and the bench page."""
from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch
from PIL import Image

from squeeze.errors import SqueezeError
from squeeze.methods.undem.cli import cmd_train_undem
from squeeze.methods.undem.config import make_undem_config
from squeeze.methods.undem.data import UnpairedData
from squeeze.methods.undem.pipeline import pseudo_pairs, train_undem
from squeeze.methods.undem.task import load_generator, save_generator, train_generators
from squeeze.synth.moire import simulate_pair

TINY = {"tile": 32, "enc_ch": 4, "gen_width": 8, "gen_blocks": 1, "disc_width": 4, "gen_steps": 2, "gen_batch": 2,
        "pseudo_pairs": 8, "restore_steps": 2, "restore_batch": 2, "restore_patch": 16, "restore_width": 8,
        "restore_levels": 2, "restore_blocks": 1}


@pytest.fixture(scope="module")
def tiny_data() -> UnpairedData:
    rng = np.random.default_rng(0)
    imgs = [np.kron(rng.integers(0, 256, (9, 9, 3)), np.ones((8, 8, 1))).astype(np.uint8) for _ in range(6)]
    pairs = [simulate_pair(im, seed=i, supersample=2)[:2] for i, im in enumerate(imgs[:4])]
    return UnpairedData([m for m, _ in pairs], imgs[4:], "tiny", pairs, pairs[:1])


def test_undem_trains_and_reuses_finished_work(tmp_path, tiny_data) -> None:
    cfg = make_undem_config("undem", **TINY)
    model, summary = train_undem(cfg, tiny_data, tmp_path / "u", gen_dir=tmp_path / "gens", progress=False)
    assert summary["pairs"] == 8 and len(summary["filter"]) == 4
    assert all(st["dropped_frac"] > 0 for st in summary["filter"])  # the adaptive filter dropped candidates
    assert sum(summary["group_sizes"]) == summary["tiles"]
    with torch.no_grad():
        assert model(torch.rand(1, 3, 20, 20)).shape == (1, 3, 20, 20)
    # the no-filter ablation reuses the same four generators (no new generator folder)
    before = sorted(p.name for p in (tmp_path / "gens").iterdir())
    _, s2 = train_undem(make_undem_config("undem-no-filter", **TINY), tiny_data, tmp_path / "nf",
                        gen_dir=tmp_path / "gens", progress=False)
    assert sorted(p.name for p in (tmp_path / "gens").iterdir()) == before
    assert all(st["dropped_frac"] == 0 for st in s2["filter"])
    again, s3 = train_undem(cfg, tiny_data, tmp_path / "u", gen_dir=tmp_path / "gens", progress=False)
    assert s3 == json.loads(json.dumps(summary))  # loaded from model.safetensors, not retrained
    other = make_undem_config("undem", **{**TINY, "restore_steps": 4})
    with pytest.raises(SqueezeError, match="another config"):
        train_undem(other, tiny_data, tmp_path / "u", progress=False)


@pytest.mark.parametrize("variant", ["cyclegan", "overlay", "paired"])
def test_baselines_train(tmp_path, tiny_data, variant: str) -> None:
    _, summary = train_undem(make_undem_config(variant, **TINY), tiny_data, tmp_path, progress=False)
    assert summary["pairs"] == 8


def test_generator_from_another_config_refused(tmp_path, tiny_data) -> None:
    cfg = make_undem_config("undem-no-group", **TINY)
    nets, pools, _ = train_generators(cfg, tiny_data, tmp_path, progress=False)
    path = tmp_path / "g.safetensors"
    save_generator(path, nets[0], cfg, 0)
    load_generator(path, cfg, 0)
    with pytest.raises(SqueezeError, match="another config or group"):
        load_generator(path, make_undem_config("undem-no-group", **{**TINY, "gen_width": 16}), 0)
    with pytest.raises(SqueezeError, match="another config or group"):
        load_generator(path, cfg, 1)
    (tmp_path / "bad.safetensors").write_bytes(b"junk")
    with pytest.raises(SqueezeError, match="corrupt"):
        load_generator(tmp_path / "bad.safetensors", cfg, 0)
    x, y, st = pseudo_pairs(nets[0], pools[0], tiny_data.clean, 5, 0.5, 32, seed=1)
    assert x.shape == y.shape == (5, 3, 32, 32) and x.dtype == torch.uint8 and st["candidates"] == 10


def test_cli_bad_input(tmp_path) -> None:
    def args(**kw: object) -> argparse.Namespace:
        return argparse.Namespace(**{"variant": "undem", "moire": "", "clean": "", "workdir": str(tmp_path),
                                     "devices": 1, "nodes": 1, **kw})

    with pytest.raises(SqueezeError, match="both --moire"):
        cmd_train_undem(args(moire=str(tmp_path)), {})
    (tmp_path / "m").mkdir()
    (tmp_path / "c").mkdir()
    (tmp_path / "m" / "a.png").write_text("not a png")
    Image.fromarray(np.zeros((80, 80, 3), np.uint8)).save(tmp_path / "c" / "b.png")
    with pytest.raises(SqueezeError, match="not a readable image"):
        cmd_train_undem(args(moire=str(tmp_path / "m"), clean=str(tmp_path / "c")), dict(TINY))
    Image.fromarray(np.zeros((20, 80, 3), np.uint8)).save(tmp_path / "m" / "a.png")
    with pytest.raises(SqueezeError, match="smaller than 32 px"):
        cmd_train_undem(args(moire=str(tmp_path / "m"), clean=str(tmp_path / "c")), dict(TINY))
    with pytest.raises(SqueezeError, match="unknown UnDeM option"):
        cmd_train_undem(args(), {"bogus": 1})


def test_bench_writes_page(tmp_path, tiny_data, monkeypatch) -> None:
    from squeeze.bench import undem as bench

    monkeypatch.setattr(bench, "_data", lambda sizes, seed, progress: tiny_data)
    monkeypatch.setattr(bench, "QUICK", {"data": {}, "config": TINY})
    monkeypatch.setattr(bench, "VARIANT_ORDER", ("undem", "overlay", "paired"))
    bench.run(tmp_path / "out", quick=True, cache_dir=tmp_path / "cache")
    rows = json.loads((tmp_path / "out" / "undem-quick.json").read_text())
    assert [r["method"] for r in rows] == ["undem", "overlay", "paired"]
    assert all(r["metric"] == "psnr" and "ssim" in r and np.isfinite(r["quant"]) for r in rows)
    md = (tmp_path / "out" / "undem-quick.md").read_text()
    assert "squeeze bench undem --quick" in md and "within 2 dB" in md and "training of the 3 variants" in md
    assert (tmp_path / "out" / "undem-quick.png").stat().st_size > 1000


def test_random_crops_skip_photos_smaller_than_the_crop() -> None:
    from squeeze.data.sr import hr_photo
    from squeeze.methods.undem.data import random_crops

    assert min(hr_photo("text", 384).shape[:2]) < 176  # scikit-image's text is 172 px high
    crops = random_crops(["text", "camera"], 3, 176, np.random.default_rng(0), 384)
    assert all(c.shape == (176, 176, 3) for c in crops)
    with pytest.raises(SqueezeError, match="at least 176 px"):
        random_crops(["text"], 1, 176, np.random.default_rng(0), 384)
