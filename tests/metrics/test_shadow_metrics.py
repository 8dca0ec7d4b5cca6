"""Shadow-removal metrics against scikit-image's rgb2lab and hand-computed references."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from squeeze.errors import SqueezeError
from squeeze.metrics.shadow import lab_mae, lab_rmse, lab_to_rgb, psnr, rgb_to_lab, shadow_scores

skcolor = pytest.importorskip("skimage.color")


def _img(seed: int, h: int = 12, w: int = 10) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, h, w), generator=g).double() / 255


def _mask(h: int = 12, w: int = 10) -> torch.Tensor:
    m = torch.zeros(1, h, w)
    m[:, 3:8, 2:6] = 1
    return m


def test_rgb_to_lab_matches_skimage() -> None:
    img = _img(0)
    ref = skcolor.rgb2lab(img.permute(1, 2, 0).numpy())  # (H, W, 3)
    ours = rgb_to_lab(img).permute(1, 2, 0).numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-4)
    # extremes: black, white and the primaries
    corners = torch.tensor([[0, 0, 0], [1, 1, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1.0]], dtype=torch.float64)
    c = corners.T.reshape(3, 5, 1)
    np.testing.assert_allclose(rgb_to_lab(c)[:, :, 0].T.numpy(), skcolor.rgb2lab(corners.numpy()[None])[0], atol=1e-4)


def test_lab_round_trip() -> None:
    img = _img(1)
    np.testing.assert_allclose(lab_to_rgb(rgb_to_lab(img)).numpy(), img.numpy(), atol=1e-6)


def test_lab_mae_and_rmse_against_skimage_reference() -> None:
    a, b, m = _img(2), _img(3), _mask()
    la = skcolor.rgb2lab(a.permute(1, 2, 0).numpy())
    lb = skcolor.rgb2lab(b.permute(1, 2, 0).numpy())
    d = np.abs(la - lb).sum(-1)
    sq = ((la - lb) ** 2).sum(-1)
    sm = m[0].bool().numpy()
    got, got_r = lab_mae(a, b, m), lab_rmse(a, b, m)
    assert got["shadow"] == pytest.approx(d[sm].mean(), rel=1e-5)
    assert got["nonshadow"] == pytest.approx(d[~sm].mean(), rel=1e-5)
    assert got["all"] == pytest.approx(d.mean(), rel=1e-5)
    assert got_r["shadow"] == pytest.approx(math.sqrt(sq[sm].mean()), rel=1e-5)
    assert got_r["all"] == pytest.approx(math.sqrt(sq.mean()), rel=1e-5)
    assert got_r["all"] >= got["all"] / math.sqrt(3) - 1e-9  # RMS of the norm >= mean |.|_1 / sqrt(3)


def test_identical_images_score_zero_and_psnr() -> None:
    a, m = _img(4), _mask()
    assert lab_mae(a, a, m) == {"shadow": 0.0, "nonshadow": 0.0, "all": 0.0}
    assert psnr(a, a) == math.inf
    b = (a + 2 / 255).clamp(0, 1)
    mse = float(((b.mul(255).round() - a.mul(255).round()) / 255).pow(2).mean())
    assert psnr(b, a) == pytest.approx(10 * math.log10(1 / mse), rel=1e-9)


def test_shadow_scores_average_per_image() -> None:
    a, b, m = torch.stack([_img(5), _img(6)]), torch.stack([_img(7), _img(8)]), torch.stack([_mask(), _mask()])
    s = shadow_scores(a, b, m)
    expect = (lab_mae(a[0], b[0], m[0])["shadow"] + lab_mae(a[1], b[1], m[1])["shadow"]) / 2
    assert s["rmse_shadow"] == pytest.approx(expect)
    assert {"rmse_nonshadow", "rmse_all", "true_rmse_shadow", "psnr"} <= set(s)


def test_bad_masks_refused() -> None:
    a = _img(9)
    with pytest.raises(SqueezeError, match="does not match"):
        lab_mae(a, a, torch.ones(1, 5, 5))
    with pytest.raises(SqueezeError, match="empty"):
        lab_mae(a, a, torch.zeros(1, 12, 10))
    with pytest.raises(SqueezeError, match="all shadow"):
        lab_mae(a, a, torch.ones(1, 12, 10))
    with pytest.raises(SqueezeError, match="same shape"):
        lab_mae(a, a[:, :5], _mask())
