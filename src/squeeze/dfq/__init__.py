"""Data-free quantization: synthesize calibration images from the float model itself.

Generators for ViTs: ``noise``, ``psaq-vit`` (Li et al., ECCV 2022), ``psaq-vit-v2``, ``smi`` and
``spdfq`` (Zhong et al., arXiv 2412.16553: attention priors alignment, multi-semantic reinforcement,
soft labels), see docs/methods/spdfq.md; for CNNs with batch norm, ``zeroq`` (Cai et al., CVPR 2020),
see docs/methods/zeroq.md.
"""
from squeeze.dfq.config import GENERATORS, Normalization, SynthConfig, normalization_for
from squeeze.dfq.glue import quantize_data_free, synthetic_calibration
from squeeze.dfq.store import load_synthetic, save_synthetic
from squeeze.dfq.synth import SyntheticSet, synthesize

__all__ = ["GENERATORS", "Normalization", "SynthConfig", "SyntheticSet", "load_synthetic", "normalization_for",
           "quantize_data_free", "save_synthetic", "synthesize", "synthetic_calibration"]
