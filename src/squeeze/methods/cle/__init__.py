"""DFQ (Nagel et al., "Data-Free Quantization Through Weight Equalization and Bias Correction", ICCV 2019):
batch norm folding, cross-layer equalization, high-bias absorption and bias correction before round-to-nearest.
Importing this package registers ``cle``."""
from squeeze.methods.cle.config import CLEConfig
from squeeze.methods.cle.graph import Links, Pair, find_links
from squeeze.methods.cle.method import (ReLUFromReLU6, absorb_biases, analytic_means, apply_cle, correct_biases,
                                        equalize, fold_batchnorms, measured_means, swap_relu6, transform,
                                        verified_pairs)

__all__ = ["CLEConfig", "Links", "Pair", "ReLUFromReLU6", "absorb_biases", "analytic_means", "apply_cle",
           "correct_biases", "equalize", "find_links", "fold_batchnorms", "measured_means", "swap_relu6",
           "transform", "verified_pairs"]
