"""Data-free quantization: synthesize calibration images from the float model itself.

Generators ``noise``, ``psaq-vit`` (Li et al., ECCV 2022) and ``spdfq`` (Zhong et al., arXiv
2412.16553: attention priors alignment, multi-semantic reinforcement, soft labels). See
docs/methods/spdfq.md.
"""
from squeeze.dfq.config import GENERATORS, Normalization, SynthConfig, normalization_for
from squeeze.dfq.glue import quantize_data_free, synthetic_calibration
from squeeze.dfq.store import load_synthetic, save_synthetic
from squeeze.dfq.synth import SyntheticSet, synthesize

__all__ = ["GENERATORS", "Normalization", "SynthConfig", "SyntheticSet", "load_synthetic", "normalization_for",
           "quantize_data_free", "save_synthetic", "synthesize", "synthetic_calibration"]
