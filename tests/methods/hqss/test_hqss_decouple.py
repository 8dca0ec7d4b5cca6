"""HQSS data decoupling: Lab scaling, mask checks, mask pairing, region identities, compositing."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from squeeze.errors import SqueezeError
from squeeze.methods.hqss.decouple import (check_shadow_pair, composite, dihedral, dilate, feather, lab_denorm,
                                           lab_norm, pairing_candidates, pick_nonshadow_mask, region_identities)

skcolor = pytest.importorskip("skimage.color")


def _masks() -> torch.Tensor:
    m = torch.zeros(4, 1, 16, 16)
    m[0, :, 0:4, 0:4] = 1  # 16 px, top-left
    m[1, :, 0:4, 12:16] = 1  # 16 px, top-right: disjoint from 0
    m[2, :, 1:5, 1:5] = 1  # 16 px, overlaps 0
    m[3, :, 8:16, 0:8] = 1  # 64 px: ratio 4
    return m


def test_lab_norm_matches_the_paper_scaling() -> None:
    img = torch.rand(3, 8, 8, dtype=torch.float64)
    lab = skcolor.rgb2lab(img.permute(1, 2, 0).numpy())
    ref = np.concatenate([lab[..., :1] / 50 - 1, 2 * (lab[..., 1:] + 128) / 255 - 1], -1)
    np.testing.assert_allclose(lab_norm(img).permute(1, 2, 0).numpy(), ref, atol=1e-5)
    torch.testing.assert_close(lab_denorm(lab_norm(img)), img, atol=1e-6, rtol=0)
    black = lab_norm(torch.zeros(3, 2, 2))
    torch.testing.assert_close(black[0], torch.full((2, 2), -1.0))  # blanked background: L = -1


def test_pairing_follows_overlap_and_area_rules() -> None:
    m = _masks()
    cands = pairing_candidates(m, 0.8, 1.2)
    for i, c in enumerate(cands):
        for j, k in c.tolist():
            other = dihedral(m[j], k)
            assert j != i
            assert float((other * m[i]).sum()) == 0.0
            assert 0.8 <= float(other.sum()) / float(m[i].sum()) <= 1.2
    assert any(j == 1 and k == 0 for j, k in cands[0].tolist())  # the disjoint twin, untransformed
    assert not any(j == 3 for j, _ in cands[0].tolist())  # four times larger: never a candidate


def test_fallback_mask_is_cut_outside_the_shadow() -> None:
    m = _masks()
    gen = np.random.default_rng(0)
    no_cands = [torch.zeros(0, 2, dtype=torch.long)] * 4
    got = pick_nonshadow_mask(3, m, no_cands, gen)
    assert float((got * m[3]).sum()) == 0.0 and float(got.sum()) >= 10


def test_region_identities_blank_outside() -> None:
    img = torch.rand(3, 16, 16)
    m = _masks()
    s, ns = region_identities(img, m[0], m[1])
    assert torch.allclose(s[0][m[0][0] == 0], torch.tensor(-1.0))
    assert torch.allclose(ns[0][m[1][0] == 0], torch.tensor(-1.0))
    torch.testing.assert_close(s[:, m[0][0] > 0], lab_norm(img)[:, m[0][0] > 0])


def test_dilate_feather_composite() -> None:
    m = torch.zeros(1, 9, 9)
    m[0, 4, 4] = 1
    assert int(dilate(m, 1).sum()) == 9
    w = feather(_masks()[0], 1.0)
    assert 0.4 < float(w[0, 3, 2]) < 0.9 and float(w[0, 10, 10]) == 0.0
    img, dark = torch.ones(3, 16, 16), torch.zeros(3, 16, 16)
    out = composite(img, dark, w)
    torch.testing.assert_close(out, 1 - w.expand(3, -1, -1))


@pytest.mark.parametrize("mask, match", [
    (torch.zeros(1, 8, 9), "at the same size"),
    (torch.zeros(1, 8, 8), "empty"),
    (torch.ones(1, 8, 8), "whole image"),
])
def test_bad_masks(mask: torch.Tensor, match: str) -> None:
    with pytest.raises(SqueezeError, match=match):
        check_shadow_pair(torch.rand(3, 8, 8), mask)
