"""SPDFQ / SARDFQ (Zhong et al., arXiv 2412.16553): data-free quantization of ViTs from synthetic images."""
from squeeze.methods.spdfq.method import SPDFQConfig, apply_spdfq, backend_config, synth_config

__all__ = ["SPDFQConfig", "apply_spdfq", "backend_config", "synth_config"]
