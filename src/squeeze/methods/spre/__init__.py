"""SpRe (Zhang et al., "Spatial Re-parameterization for N:M Sparsity", TPAMI 2025): a training-only
spatial branch per 3x3 conv on top of SR-STE, merged into one exactly-N:M conv for deployment.

Trained with ``squeeze train nm --model resnet-fmnist --method spre --n 2 --m 4``; docs/methods/spre.md.
"""
from squeeze.methods.spre.config import SpReConfig
from squeeze.methods.spre.spre import SpReConv2d, attach_spre, fold_bn, merge_kernels, merge_spre, spre_pairs

__all__ = ["SpReConfig", "SpReConv2d", "attach_spre", "fold_bn", "merge_kernels", "merge_spre", "spre_pairs"]
