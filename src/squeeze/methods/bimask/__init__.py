"""Bi-Mask (Zhang et al., "Bi-directional Masks for Efficient N:M Sparse Training", ICML 2023).

Mask math: :mod:`squeeze.sparse.masks` (``backward_mask``, ``permutation_score``, ``search_permutation``);
the custom autograd op: :mod:`squeeze.sparse.layers`. Trained with
``squeeze train nm --model resnet-fmnist --method bimask --n 2 --m 4``; docs/methods/bimask.md.
"""
from squeeze.methods.bimask.config import BiMaskConfig

__all__ = ["BiMaskConfig"]
