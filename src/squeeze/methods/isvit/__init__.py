"""I&S-ViT (Zhong et al., arXiv 2311.10126, 2023): SULQ post-softmax quantizer + three-stage smooth optimization."""
from squeeze.methods.isvit.method import ISViTConfig, stage1_handler, stage2_reparameterize, stage3_handler

__all__ = ["ISViTConfig", "stage1_handler", "stage2_reparameterize", "stage3_handler"]
