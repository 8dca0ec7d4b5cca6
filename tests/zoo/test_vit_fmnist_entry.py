"""vit-fmnist's held-out split: fixed training images, scored with the model's own metric."""
from __future__ import annotations

import torch

from squeeze.data.fashion_mnist import load_fashion_mnist
from squeeze.zoo.vit_fmnist_entry import HOLDOUT_N, fmnist_holdout_top1


class _Always(torch.nn.Module):
    """Predicts class ``k`` for every image."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.one_hot(torch.full((len(x),), self.k), 10).float()


def test_holdout_is_a_fixed_training_subset_of_2000_images() -> None:
    # A constant predictor scores its class's share of the subset; the ten shares sum to 100 %.
    scores = [fmnist_holdout_top1(_Always(k)) for k in range(10)]
    assert abs(sum(scores) - 100.0) < 1e-6
    assert fmnist_holdout_top1(_Always(3)) == scores[3]  # same images every call
    _, y_test = load_fashion_mnist("test")
    test_shares = [100.0 * float((y_test == k).float().mean()) for k in range(10)]
    assert scores != test_shares  # Fashion-MNIST's test set is exactly 10 % per class; a random subset is not
    assert all(abs(s - 10.0) < 3.0 for s in scores) and HOLDOUT_N == 2000
