"""The shadow simulator's physics: unchanged outside, darker and bluer inside, monotone soft penumbra."""
from __future__ import annotations

import math

import pytest
import torch

from squeeze.errors import SqueezeError
from squeeze.synth.shadow import (ShadowParams, ambient_fractions, apply_shadow, linear_to_srgb, penumbra_matte,
                                  polygon_signed_distance, shadow_triplets, simulate_shadow, srgb_to_linear)


def _clean(seed: int = 0, size: int = 32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(3, size, size, generator=g) * 0.8 + 0.1).mul(255).round().div(255)


def test_srgb_round_trip_and_reference_values() -> None:
    x = torch.linspace(0, 1, 101)
    torch.testing.assert_close(linear_to_srgb(srgb_to_linear(x)), x, atol=1e-6, rtol=0)
    assert float(srgb_to_linear(torch.tensor(0.5))) == pytest.approx(0.214041, abs=1e-5)  # IEC 61966-2-1


def test_ambient_fractions_blue_shift() -> None:
    k = ambient_fractions(0.3, 0.3)
    assert float(k[1]) == pytest.approx(0.3)
    assert k[2] > k[1] > k[0]
    grey = ambient_fractions(0.3, 0.0)
    torch.testing.assert_close(grey, torch.full((3,), 0.3))


def test_apply_shadow_matches_linear_light_formula() -> None:
    clean = _clean(1, 8)
    strength = torch.rand(1, 8, 8, generator=torch.Generator().manual_seed(2))
    k = torch.tensor([0.2, 0.3, 0.45])
    out = apply_shadow(clean, strength, k, quantize=False)
    lin_ref = srgb_to_linear(clean) * (1 - strength * (1 - k.view(3, 1, 1)))
    torch.testing.assert_close(srgb_to_linear(out), lin_ref, atol=1e-5, rtol=0)


def test_signed_distance_of_a_square() -> None:
    sq = torch.tensor([[4.0, 4.0], [12.0, 4.0], [12.0, 12.0], [4.0, 12.0]])
    d = polygon_signed_distance(sq, 16, 16)
    assert float(d[8, 8]) == pytest.approx(3.5)  # pixel centre (8.5, 8.5): 3.5 px from the nearest edge
    assert float(d[0, 8]) == pytest.approx(-3.5)
    assert float(d[0, 0]) == pytest.approx(-math.hypot(3.5, 3.5))


def test_penumbra_monotone_and_wider_with_sigma() -> None:
    d = torch.linspace(-10, 10, 201)
    for sigma in (0.5, 1.0, 3.0):
        a = penumbra_matte(d, torch.full_like(d, sigma))
        assert torch.all(a[1:] >= a[:-1])
        assert float(a[0]) == 0.0 and float(a[-1]) == 1.0 and float(a[100]) == pytest.approx(0.5)
    narrow = penumbra_matte(d, torch.full_like(d, 0.5))
    wide = penumbra_matte(d, torch.full_like(d, 3.0))
    assert int(((wide > 0) & (wide < 1)).sum()) > int(((narrow > 0) & (narrow < 1)).sum())


def test_penumbra_monotone_across_a_straight_edge_in_the_simulator() -> None:
    # half-plane occluder: the left half; no spatial spread of sigma, so every row must fall monotonically
    half = torch.tensor([[-50.0, -50.0], [16.0, -50.0], [16.0, 90.0], [-50.0, 90.0]])
    d = polygon_signed_distance(half, 32, 32)
    a = penumbra_matte(d, torch.full_like(d, 2.0))
    assert torch.all(a[:, 1:] <= a[:, :-1])
    assert float(a[0, 0]) == 1.0 and float(a[0, -1]) == 0.0


def test_simulated_shadow_physics() -> None:
    clean = _clean(3)
    s = simulate_shadow(clean, 0)
    # outside the penumbra the image is bit-identical
    outside = (s.strength == 0).expand_as(clean)
    assert outside.any()
    assert torch.equal(s.image[outside], clean[outside])
    assert torch.equal(s.target, clean)
    # inside: darker, and darker in red than in blue (ambient light is bluish)
    m = s.mask[0].bool()
    assert 0.08 <= float(m.float().mean()) <= 0.45
    ratio = s.image[:, m].sum(1) / clean[:, m].sum(1)
    assert torch.all(ratio < 0.9)
    assert ratio[0] < ratio[1] < ratio[2]
    assert torch.equal(s.mask, (s.matte > 0.5).float())
    # the strength varies across the shadow but never exceeds the geometric matte
    assert torch.all(s.strength <= s.matte + 1e-7)


def test_deterministic_and_seed_dependent() -> None:
    clean = torch.stack([_clean(4), _clean(5)])
    a, b = shadow_triplets(clean, 7), shadow_triplets(clean, 7)
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    c = shadow_triplets(clean, 8)
    assert not torch.equal(a[1], c[1])


def test_strength_varies_per_image() -> None:
    clean = _clean(6)
    ks = {tuple(simulate_shadow(clean, seed).ambient.tolist()) for seed in range(4)}
    assert len(ks) == 4


def test_bad_inputs() -> None:
    with pytest.raises(SqueezeError, match="3, H, W"):
        simulate_shadow(torch.rand(1, 16, 16), 0)
    with pytest.raises(SqueezeError, match="too small"):
        simulate_shadow(torch.rand(3, 4, 4), 0)
    with pytest.raises(SqueezeError, match="in \\[0, 1\\]"):
        simulate_shadow(torch.rand(3, 16, 16) * 2, 0)
    with pytest.raises(SqueezeError, match="area"):
        ShadowParams(area=(0.5, 0.2))
    with pytest.raises(SqueezeError, match="occluder shape"):
        ShadowParams(shapes=("triangle",))
