"""HQSS (Zhong et al., "High-Quality Pseudo Shadow Synthesis for shadow removal", arXiv 2212.04108):
shadow removal trained on pseudo shadow images synthesised from shadow images and their masks only,
with the baselines ``darken``, ``mask-shadowgan`` and ``paired`` (upper bound). Trained with
``squeeze train hqss``; benchmarked by ``squeeze bench hqss``; docs/methods/hqss.md.
"""
from squeeze.methods.hqss.config import HQSSConfig, config_from_dict, list_variants, make_shadow_config

__all__ = ["HQSSConfig", "config_from_dict", "list_variants", "make_shadow_config"]
