"""PTQ4ViT (Yuan et al., ECCV 2022): twin uniform quantization + Hessian-guided scale search."""
from squeeze.methods.ptq4vit.method import PTQ4ViTConfig, find_post_gelu
from squeeze.methods.ptq4vit.twin import TwinUniformQuantizer, twin_gelu_quantize, twin_softmax_quantize

__all__ = ["PTQ4ViTConfig", "TwinUniformQuantizer", "find_post_gelu", "twin_gelu_quantize",
           "twin_softmax_quantize"]
