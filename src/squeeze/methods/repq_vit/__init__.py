"""RepQ-ViT (Li et al., ICCV 2023): scale-reparameterized post-training quantization for ViTs."""
from squeeze.methods.repq_vit.method import RepQViTConfig, repq_stage
from squeeze.methods.repq_vit.reparam import fold_into_layernorm, reparam_targets

__all__ = ["RepQViTConfig", "fold_into_layernorm", "repq_stage", "reparam_targets"]
