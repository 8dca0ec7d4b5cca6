"""DFSQ (Hong et al., "Distribution-Flexible Subset Quantization for Post-Quantizing Super-Resolution
Networks"): dynamic channel-wise normalization + subset quantization with K-means point selection,
and the ``uniform-norm`` baseline. Importing this package registers ``dfsq`` and ``uniform-norm``."""
from squeeze.methods.dfsq.config import DFSQConfig, UniformNormConfig
from squeeze.methods.dfsq.method import apply_dfsq, apply_uniform_norm, quantize_layers_rtn, select_layers
from squeeze.methods.dfsq.quantizer import ChannelNormQuantizer
from squeeze.methods.dfsq.subset import (kmeans_pinned_zero, normalize_channels, select_points, uniform_points,
                                         universal_set)

__all__ = ["ChannelNormQuantizer", "DFSQConfig", "UniformNormConfig", "apply_dfsq", "apply_uniform_norm",
           "kmeans_pinned_zero", "normalize_channels", "quantize_layers_rtn", "select_layers", "select_points",
           "uniform_points", "universal_set"]
