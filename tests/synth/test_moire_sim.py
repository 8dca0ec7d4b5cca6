"""The screen-capture simulator makes real aliasing: energy at the predicted beat frequencies, none when the
screen and sensor pitches match without rotation; seeded, aligned targets; bad input refused."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from squeeze.errors import SqueezeError
from squeeze.synth.moire import (MoireParams, bayer_masks, beat_frequencies, demosaic_bilinear, simulate_capture,
                                 simulate_pair)

GREY = np.full((120, 120, 3), 128, np.uint8)


def _energy_near(img: np.ndarray, freqs: np.ndarray, radius: float = 0.02) -> float:
    """Fraction of the AC spectral energy of ``img`` (h, w) within ``radius`` of +-``freqs`` (fx, fy)."""
    g = img - img.mean()
    power = np.abs(np.fft.fft2(g)) ** 2
    fy = np.fft.fftfreq(g.shape[0])[:, None]
    fx = np.fft.fftfreq(g.shape[1])[None, :]
    near = np.zeros_like(power, dtype=bool)
    for f in freqs:
        for s in (1, -1):
            near |= np.hypot(fx - s * f[0], fy - s * f[1]) <= radius
    return float(power[near].sum() / max(power.sum(), 1e-12))


def test_beat_frequencies_math() -> None:
    f = beat_frequencies(screen_pitch=0.9, sensor_pitch=1.0, angle_deg=0.0, harmonics=1)
    np.testing.assert_allclose(f, [[1 / 0.9 - 1, 0.0], [0.0, 1 / 0.9 - 1]], atol=1e-12)
    np.testing.assert_allclose(beat_frequencies(1.0, 1.0, 0.0, harmonics=3), 0.0, atol=1e-12)
    rot = beat_frequencies(1.0, 1.25, 90.0, harmonics=1)  # q = 1.25 turned by 90 deg: (0, -1.25) -> (0, -0.25)
    np.testing.assert_allclose(rot[0], [0.0, -0.25], atol=1e-12)
    assert np.abs(beat_frequencies(0.7, 1.0, 5.0, 2, sampling_period=2.0)).max() <= 0.25 + 1e-12
    with pytest.raises(SqueezeError):
        beat_frequencies(0.0, 1.0, 0.0)


@pytest.mark.parametrize("pitch,angle", [(0.9, 4.0), (1.25, -3.0)])
def test_capture_has_energy_at_predicted_beats(pitch: float, angle: float) -> None:
    p = MoireParams(q=1 / pitch, angle=angle, fill_u=1.0, fill_v=1.0, crop=0.9, supersample=4)
    moire, _ = simulate_capture(GREY, p)
    green = moire[..., 1].astype(float)
    assert green.std() > 5  # clearly visible bands on a flat grey screen
    predicted = beat_frequencies(pitch, 1.0, angle, harmonics=2)
    assert _energy_near(green, predicted) > 0.6
    wrong = predicted[:, ::-1] * np.array([1.0, -1.0]) * 1.7  # frequencies the physics does not predict
    assert _energy_near(green, wrong) < 0.05


def test_pitch_matched_unrotated_capture_has_no_moire() -> None:
    p = MoireParams(q=1.0, angle=0.0, fill_u=1.0, fill_v=1.0, crop=0.9, supersample=4, shift_u=0.37, shift_v=0.2)
    moire, target = simulate_capture(GREY, p)
    assert moire[..., 1].astype(float).std() < 1.0  # 8-bit rounding only
    rotated, _ = simulate_capture(GREY, MoireParams(q=1.0, angle=3.0, fill_u=1.0, fill_v=1.0, crop=0.9,
                                                    supersample=4))
    assert rotated[..., 1].astype(float).std() > 5 * max(moire[..., 1].astype(float).std(), 0.2)
    assert np.abs(target.astype(int) - 128).max() <= 1


def test_target_is_aligned_and_pair_is_seeded() -> None:
    rng = np.random.default_rng(0)
    img = np.kron(rng.integers(0, 256, (12, 12, 3)), np.ones((8, 8, 1))).astype(np.uint8)  # 96 px blocks
    m1, t1, p1 = simulate_pair(img, seed=5, supersample=3)
    m2, t2, p2 = simulate_pair(img, seed=5, supersample=3)
    assert p1 == p2 and np.array_equal(m1, m2) and np.array_equal(t1, t2)
    assert simulate_pair(img, seed=6, supersample=3)[2] != p1
    assert m1.shape == t1.shape
    # the capture is a degraded view of the same scene: far closer to its own target than to a shifted one
    err = np.abs(m1.astype(float) - t1).mean()
    shifted = np.abs(m1[:, 8:].astype(float) - t1[:, :-8]).mean()
    assert err < 0.7 * shifted


def test_demosaic_keeps_samples_and_recovers_flat_colour() -> None:
    masks = bayer_masks(8, 10, phase=3)
    assert torch.equal(masks.sum(0), torch.ones(8, 10)) and int(masks[1].sum()) == 40
    colour = torch.tensor([0.2, 0.5, 0.9]).view(3, 1, 1)
    raw = (colour * masks).sum(0)
    assert torch.allclose(demosaic_bilinear(raw, masks), colour.expand(3, 8, 10), atol=1e-6)


def test_bad_input_refused() -> None:
    with pytest.raises(SqueezeError, match="too small"):
        simulate_capture(np.zeros((8, 40, 3), np.uint8), MoireParams())
    with pytest.raises(SqueezeError, match="uint8"):
        simulate_capture(np.zeros((40, 40), np.float32), MoireParams())
    with pytest.raises(SqueezeError, match="q="):
        MoireParams(q=10.0)
