"""UnDeM math against independent references: colourfulness, edge strength, grouping rule, Laplacian gap,
adaptive keep mask, overlay baseline; config validation."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.ndimage import laplace

from squeeze.errors import SqueezeError
from squeeze.methods.undem.config import UnDeMConfig, make_undem_config
from squeeze.methods.undem.math import (colorfulness, complexity_groups, edge_strength, keep_mask, laplacian_gap,
                                        overlay_moire, tile_image)


def test_colorfulness_and_edges_match_numpy() -> None:
    rng = np.random.default_rng(0)
    img = rng.random((2, 3, 12, 10))
    x = img[1] * 255
    rg, yb = x[0] - x[1], 0.5 * (x[0] + x[1]) - x[2]
    ref = math.hypot(rg.std(), yb.std()) + 0.3 * math.hypot(rg.mean(), yb.mean())
    assert math.isclose(float(colorfulness(torch.from_numpy(img))[1]), ref, rel_tol=1e-9)
    gray = (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2])
    ref_e = np.abs(laplace(gray))[1:-1, 1:-1].mean()  # scipy's 5-point Laplacian, interior
    assert math.isclose(float(edge_strength(torch.from_numpy(img))[1]), ref_e, rel_tol=1e-9)


def test_grouping_rule() -> None:
    c = torch.tensor([1.0, 2, 3, 4, 5, 6, 7, 8])
    e = torch.tensor([1.0, 1, 1, 1, 10, 20, 1, 40])
    labels = complexity_groups(c, e, groups=4)
    # lowest quarter by C*E (values 1, 2) -> class 0
    assert labels[:2].tolist() == [0, 0]
    # the rest by E/C: 3:.33 4:.25 5:2 6:3.33 7:.14 8:5 -> sorted 7,4,3 | 5,6 ... split in 3 parts of 2
    assert labels[6] == 1 and labels[3] == 1 and labels[2] == 2 and labels[4] == 2
    assert labels[5] == 3 and labels[7] == 3
    assert complexity_groups(c, e, 1).eq(0).all()
    with pytest.raises(SqueezeError, match="cannot form"):
        complexity_groups(c[:3], e[:3], 4)


def test_laplacian_gap_and_keep_mask() -> None:
    clean = torch.rand(3, 3, 16, 16)
    assert torch.equal(laplacian_gap(clean, clean), torch.zeros(3))
    noisy = (clean + 0.2 * torch.randn_like(clean)).clamp(0, 1)
    assert (laplacian_gap(clean, noisy) > laplacian_gap(clean, (clean + 0.02).clamp(0, 1))).all()
    scores = torch.tensor([5.0, 1, 3, 2, 9, 7, 8, 6])
    groups = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    mask, thr = keep_mask(scores, groups, (0.5, 0.75))
    assert mask.tolist() == [False, True, False, True, False, True, True, True] and thr == [2.0, 8.0]


def test_overlay_and_tiles() -> None:
    clean = torch.full((2, 3, 32, 32), 0.5)
    out = overlay_moire(clean, torch.Generator().manual_seed(0))
    assert out.shape == clean.shape and 0.03 < float(out.std()) < 0.3
    again = overlay_moire(clean, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
    assert len(tile_image(np.zeros((70, 100, 3)), 32)) == 6


def test_config_validation_and_variants() -> None:
    cfg = make_undem_config("undem-no-group")
    assert cfg.n_generators() == 1 and cfg.steps_per_generator() == cfg.gen_steps * 4
    assert cfg.effective_keep() == (pytest.approx(0.65),)
    assert make_undem_config("undem-no-filter").effective_keep() == (1.0,) * 4
    assert make_undem_config("undem").generator_identity() == make_undem_config("undem-no-filter").generator_identity()
    assert make_undem_config("paired").n_generators() == 0
    assert UnDeMConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(SqueezeError, match="unknown"):
        make_undem_config("undem", gen_stpes=3)
    with pytest.raises(SqueezeError, match="variant"):
        make_undem_config("undm")
    with pytest.raises(SqueezeError, match="keep"):
        make_undem_config("undem", keep=(0.5, 0.5))
    with pytest.raises(SqueezeError, match="multiple of 16"):
        make_undem_config("undem", tile=40)
