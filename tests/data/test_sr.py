"""SR data: bicubic degradation, aligned patches, deterministic eval pairs, user-image conversions."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from squeeze.data import sr
from squeeze.errors import SqueezeError


def _photo(h: int = 37, w: int = 50, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (h // 4 + 1, w // 4 + 1, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(base).resize((w, h), Image.Resampling.BICUBIC))  # smooth-ish image


def test_degrade_mod_crops_and_uses_pillow_bicubic() -> None:
    hr, lr = sr.degrade(_photo(), 4)
    assert hr.shape == (36, 48, 3) and lr.shape == (9, 12, 3) and lr.dtype == np.uint8
    ref = np.asarray(Image.fromarray(hr).resize((12, 9), Image.Resampling.BICUBIC))
    assert np.array_equal(lr, ref)
    with pytest.raises(SqueezeError, match="smaller than the scale factor 4"):
        sr.degrade(_photo(3, 40), 4)
    with pytest.raises(SqueezeError, match="scale 5"):
        sr.degrade(_photo(), 5)


def test_random_patches_are_aligned_and_deterministic() -> None:
    pairs = (sr.degrade(_photo(96, 128, 1), 2), sr.degrade(_photo(80, 80, 2), 2))
    lr1, hr1 = sr.random_patches(pairs, 6, 16, 2, np.random.default_rng(3), augment=False)
    lr2, _ = sr.random_patches(pairs, 6, 16, 2, np.random.default_rng(3), augment=False)
    assert lr1.shape == (6, 3, 16, 16) and hr1.shape == (6, 3, 32, 32) and torch.equal(lr1, lr2)
    # the HR patch downscaled again matches its LR patch away from the patch border (1 px shift would not)
    for lr, hr in zip(lr1, hr1):
        again = sr.to_tensor(sr.bicubic_resize(sr.to_uint8(hr), (16, 16)))
        assert (again - lr)[:, 3:-3, 3:-3].abs().mean() < 0.01
        shifted = (again[:, 3:-3, 3:-3] - lr[:, 4:-2, 3:-3]).abs().mean()
        assert shifted > (again - lr)[:, 3:-3, 3:-3].abs().mean()
    lra, hra = sr.random_patches(pairs, 4, 16, 2, np.random.default_rng(4), augment=True)
    assert lra.shape == (4, 3, 16, 16) and hra.shape == (4, 3, 32, 32)
    with pytest.raises(SqueezeError, match="large enough"):
        sr.random_patches(pairs, 1, 64, 2, np.random.default_rng(0))


def test_user_images_are_converted_or_refused(tmp_path) -> None:
    grey = tmp_path / "grey.png"
    Image.fromarray(_photo()[..., 0]).save(grey)
    img = sr.load_image(grey)
    assert img.shape == (37, 50, 3) and np.array_equal(img[..., 0], img[..., 2])
    opaque, clear = tmp_path / "opaque.png", tmp_path / "clear.png"
    rgba = np.concatenate([_photo(), np.full((37, 50, 1), 255, np.uint8)], axis=2)
    Image.fromarray(rgba).save(opaque)
    assert sr.load_image(opaque).shape == (37, 50, 3)
    rgba[0, 0, 3] = 10
    Image.fromarray(rgba).save(clear)
    with pytest.raises(SqueezeError, match="transparent alpha"):
        sr.load_image(clear)
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(SqueezeError, match="not a readable image"):
        sr.load_image(text)
    with pytest.raises(SqueezeError, match="does not exist"):
        sr.load_image(tmp_path / "missing.png")
    with pytest.raises(SqueezeError, match="smaller than 40 px"):
        sr.load_image(grey, min_side=40)


def test_eval_pairs_and_calibration_patches_from_photos() -> None:
    pytest.importorskip("skimage")
    pairs = sr.eval_pairs("test", 4)
    assert len(pairs) >= 1 and pairs is sr.eval_pairs("test", 4)
    for lr, hr in pairs:
        assert hr.shape[1] == 4 * lr.shape[1] and hr.shape[2] == 4 * lr.shape[2] and max(hr.shape) <= sr.EVAL_CROP
    calib = sr.calib_patches(2, 3, seed=0)
    assert calib.shape == (3, 3, 48, 48) and torch.equal(calib, sr.calib_patches(2, 3, seed=0))
    assert not torch.equal(calib, sr.calib_patches(2, 3, seed=1))
    with pytest.raises(SqueezeError, match="split"):
        sr.eval_pairs("train", 2)
