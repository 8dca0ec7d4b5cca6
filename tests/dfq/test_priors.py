"""Pure DFQ math: prior maps, APA, soft labels, TV, KDE entropy, against independent references."""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from squeeze.dfq import losses


def test_prior_maps_are_valid_distributions() -> None:
    gen = torch.Generator().manual_seed(0)
    priors = losses.attention_priors(3, 4, (7, 7), 5, gen)
    assert priors.shape == (3, 4, 49)
    assert (priors > 0).all()
    torch.testing.assert_close(priors.sum(-1), torch.ones(3, 4))
    flat = priors.view(12, 49)
    assert torch.cdist(flat, flat).triu(1)[torch.triu(torch.ones(12, 12), 1).bool()].min() > 1e-4  # all differ


def test_single_component_prior_is_a_separable_gaussian() -> None:
    # an axis-aligned 2-D Gaussian on the grid is an outer product: rank one
    prior = losses.gaussian_mixture_prior((8, 8), 1, torch.Generator().manual_seed(3)).double()
    s = torch.linalg.svdvals(prior)
    assert s[1] / s[0] < 1e-6
    mixed = losses.gaussian_mixture_prior((8, 8), 5, torch.Generator().manual_seed(4)).double()
    assert torch.isclose(mixed.sum(), torch.tensor(1.0, dtype=torch.float64))


def test_block_weights_deep_half_scaled_by_depth() -> None:
    assert losses.block_weights(4) == {2: 0.75, 3: 1.0}
    assert losses.block_weights(12)[6] == 7 / 12 and 5 not in losses.block_weights(12)
    assert losses.block_weights(4, deep_only=False)[0] == 0.25


def test_apa_loss_matches_scaled_mse_and_align_prior_keeps_mass() -> None:
    gen = torch.Generator().manual_seed(1)
    a = torch.rand(2, 3, 16, generator=gen).softmax(-1)
    p = losses.attention_priors(2, 3, (4, 4), 3, gen)
    ref = np.mean(((a.numpy() - p.numpy()) * 16) ** 2)
    assert math.isclose(losses.apa_loss(a, p).item(), ref, rel_tol=1e-5)
    assert losses.apa_loss(p, p).item() == 0.0
    moved = losses.align_prior(p, (4, 4), (1, -1), True)
    torch.testing.assert_close(moved.sum(-1), torch.ones(2, 3))
    grid = p.view(2, 3, 4, 4)
    assert torch.equal(moved.view(2, 3, 4, 4)[..., 0, 0], grid[..., 3, 0])  # row 3 rolls to 0; col 0 flips to 3


def test_soft_targets_and_soft_cross_entropy() -> None:
    labels = torch.tensor([0, 3, 9])
    t = losses.soft_targets(labels, 10, torch.Generator().manual_seed(0))
    torch.testing.assert_close(t.sum(-1), torch.ones(3))
    assert torch.equal(t.argmax(-1), labels)
    top = t.max(-1).values  # e^z / (e^z + 9) with z in [5, 10]
    assert (top >= math.exp(5) / (math.exp(5) + 9) - 1e-6).all() and (top <= math.exp(10) / (math.exp(10) + 9)).all()
    logits = torch.randn(3, 10)
    hard = F.one_hot(labels, 10).float()
    torch.testing.assert_close(losses.soft_cross_entropy(logits, hard), F.cross_entropy(logits, labels))


def test_total_variation_matches_numpy() -> None:
    x = torch.randn(2, 1, 5, 6, generator=torch.Generator().manual_seed(2))
    a = x.numpy()
    ref = sum(np.sqrt(np.sum(d ** 2)) for d in (np.diff(a, axis=3), np.diff(a, axis=2),
                                                 a[..., 1:, 1:] - a[..., :-1, :-1], a[..., 1:, :-1] - a[..., :-1, 1:]))
    assert math.isclose(losses.total_variation(x).item(), ref, rel_tol=1e-5)


def test_kde_entropy_matches_reference_and_grows_with_spread() -> None:
    gen = torch.Generator().manual_seed(5)
    s = torch.rand(2, 30, generator=gen, dtype=torch.float64) * 0.2
    h = 0.01
    ref = []
    for row in s.numpy():
        pts = np.linspace(row.min(), row.max(), 10)
        dens = np.array([np.mean(np.exp(-0.5 * ((p - row) / h) ** 2)) / (h * np.sqrt(2 * np.pi)) for p in pts])
        f = -dens * np.log(dens + 1e-10)
        ref.append(np.sum((f[1:] + f[:-1]) / 2 * np.diff(pts)))
    np.testing.assert_allclose(losses.kde_entropy(s).numpy(), ref, rtol=1e-6)
    narrow, wide = torch.rand(1, 50, generator=gen) * 0.05, torch.rand(1, 50, generator=gen) * 0.8
    assert losses.kde_entropy(wide).item() > losses.kde_entropy(narrow).item()


def test_masked_kde_entropy_equals_the_entropy_of_the_kept_samples() -> None:
    gen = torch.Generator().manual_seed(6)
    s = torch.rand(3, 12, generator=gen, dtype=torch.float64) * 0.3
    valid = torch.rand(3, 12, generator=gen) < 0.6
    valid[:, :2] = True  # at least two samples per row
    masked = losses.kde_entropy(s, valid=valid)
    for row in range(3):
        alone = losses.kde_entropy(s[row][valid[row]].unsqueeze(0))
        torch.testing.assert_close(masked[row:row + 1], alone)
    torch.testing.assert_close(losses.kde_entropy(s, valid=torch.ones_like(valid)), losses.kde_entropy(s))
    keep = torch.tensor([[True, False, True, True]])
    assert losses.patch_pairs(keep).tolist() == [[False, True, True, False, False, True]]  # (0,1)..(2,3)


def test_patch_cosine_similarity_pairs_and_schedule() -> None:
    f = torch.randn(2, 5, 8)
    sims = losses.patch_cosine_similarity(f)
    assert sims.shape == (2, 10)
    torch.testing.assert_close(sims[1, 0], F.cosine_similarity(f[1, 0], f[1, 1], dim=0))
    assert losses.lr_at(0, 100, 0.2, 10) == 0.02 and losses.lr_at(9, 100, 0.2, 10) == 0.2
    assert abs(losses.lr_at(100, 100, 0.2, 10)) < 1e-12
