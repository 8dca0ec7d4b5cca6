"""Reconstruction baselines: AdaRound (ICML'20), BRECQ (ICLR'21), QDrop (ICLR'22)."""
from squeeze.methods.recon.adaround import AdaRoundConfig
from squeeze.methods.recon.brecq import BRECQConfig
from squeeze.methods.recon.qdrop import QDropConfig
from squeeze.methods.recon.rounding import AdaRoundWeight, adaround, bake, rectified_sigmoid

__all__ = ["AdaRoundConfig", "AdaRoundWeight", "BRECQConfig", "QDropConfig", "adaround", "bake", "rectified_sigmoid"]
