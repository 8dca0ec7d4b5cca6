"""HQSS end to end at toy size: every variant trains, saves a restorer and scores the test triplets;
pseudo pairs keep the target intact; user folders with bad files are refused."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from squeeze.errors import SqueezeError
from squeeze.methods.hqss.config import make_shadow_config
from squeeze.methods.hqss.decouple import feather
from squeeze.methods.hqss.data import ShadowData, load_shadow_data
from squeeze.methods.hqss.pseudo import batch_sampler, darken_pool, darkening_constant
from squeeze.methods.hqss.run import MODEL, train_shadow_removal
from squeeze.synth.shadow import shadow_triplets

TINY = {"size": 32, "train_images": 6, "test_images": 2, "clean_images": 6, "gen_steps": 2, "gen_batch": 2,
        "remove_steps": 2, "remove_batch": 2, "variants_per_image": 1, "feat": 2, "gen_width": 4, "gen_blocks": 1,
        "disc_width": 4, "width": 4, "levels": 2, "blocks": 1, "pool": 2}


def _data(variant: str) -> ShadowData:
    g = torch.Generator().manual_seed(0)
    clean = (torch.rand(8, 3, 32, 32, generator=g) * 0.8 + 0.1).mul(255).round().div(255)
    images, masks, targets = shadow_triplets(clean, 0)
    return ShadowData(images[:6], masks[:6], targets[:6] if variant == "paired" else None,
                      clean[:6] if variant == "mask-shadowgan" else None, (images[6:], masks[6:], targets[6:]), "toy")


@pytest.mark.parametrize("variant", ["hqss", "darken", "mask-shadowgan", "paired"])
def test_every_variant_end_to_end(variant: str, tmp_path: Path) -> None:
    from squeeze.restore.io import load_restorer

    cfg = make_shadow_config(variant, **TINY)
    summary = train_shadow_removal(cfg, tmp_path, options={"progress": False}, data=_data(variant))
    assert set(summary["test"]) >= {"rmse_shadow", "rmse_nonshadow", "rmse_all", "psnr"}
    model, meta = load_restorer(tmp_path / MODEL)
    assert model.in_channels == 4 and meta["variant"] == variant
    with pytest.raises(SqueezeError, match="already holds"):
        train_shadow_removal(cfg, tmp_path, options={"progress": False}, data=_data(variant))
    assert train_shadow_removal(cfg, tmp_path, resume=True, data=_data(variant))["test"] == summary["test"]


def test_darken_pool_and_sampler() -> None:
    data = _data("darken")
    cfg = make_shadow_config("darken", **TINY)
    d = darkening_constant(data.images, data.masks)
    assert 0.2 < d < 0.8  # the simulator's shadows are darker than their surroundings
    x, y = darken_pool(cfg, data.images, data.masks)
    assert x.shape == (6, 4, 32, 32) and torch.equal(y, data.images)
    w = feather(x[:, 3:], cfg.feather)  # the compositing weight of the pasted pseudo shadow
    torch.testing.assert_close(x[:, :3], y * (1 - d * w))
    assert torch.equal(x[:, :3][(w == 0).expand(-1, 3, -1, -1)], y[(w == 0).expand(-1, 3, -1, -1)])
    sample = batch_sampler((x, y), 3, 0)
    a, b = sample(5), sample(5)
    assert torch.equal(a[0], b[0]) and a[0].shape == (3, 4, 32, 32)


def _png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def test_folder_data_and_bad_files(tmp_path: Path) -> None:
    rgb = (np.random.default_rng(0).random((20, 20, 3)) * 255).astype(np.uint8)
    mask = np.zeros((20, 20), np.uint8)
    mask[5:12, 5:12] = 255
    for i in range(3):
        _png(tmp_path / "shadow" / f"{i}.png", rgb)
        _png(tmp_path / "mask" / f"{i}.png", mask)
    cfg = make_shadow_config("hqss", data=str(tmp_path), size=16)
    data = load_shadow_data(cfg)
    assert data.images.shape == (3, 3, 16, 16) and data.test is None
    _png(tmp_path / "mask" / "1.png", mask[:10])
    with pytest.raises(SqueezeError, match="at the same size"):
        load_shadow_data(cfg)
    _png(tmp_path / "mask" / "1.png", np.zeros((20, 20), np.uint8))
    with pytest.raises(SqueezeError, match="empty"):
        load_shadow_data(cfg)
    _png(tmp_path / "mask" / "1.png", np.full((20, 20), 255, np.uint8))
    with pytest.raises(SqueezeError, match="whole image"):
        load_shadow_data(cfg)
    _png(tmp_path / "mask" / "1.png", mask)
    (tmp_path / "shadow" / "2.png").write_bytes(b"not an image")
    with pytest.raises(SqueezeError, match="not a readable image"):
        load_shadow_data(cfg)
    (tmp_path / "mask" / "2.png").write_bytes(b"not an image")
    _png(tmp_path / "shadow" / "2.png", rgb)
    with pytest.raises(SqueezeError, match="not a readable image"):
        load_shadow_data(cfg)
    _png(tmp_path / "mask" / "2.png", mask)
    with pytest.raises(SqueezeError, match="neither 'sim' nor a folder"):
        load_shadow_data(make_shadow_config("hqss", data=str(tmp_path / "nope")))
    with pytest.raises(SqueezeError, match="free/"):
        load_shadow_data(make_shadow_config("paired", data=str(tmp_path), size=16))
