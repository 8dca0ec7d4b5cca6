"""``vit-fmnist``: a small DeiT-style timm VisionTransformer for 28x28 Fashion-MNIST.

Architecture from Dosovitskiy et al., "An Image is Worth 16x16 Words" (ViT) and Touvron et al.,
"Training data-efficient image transformers" (DeiT): class token, learned position embeddings,
pre-norm blocks. Patch size 4 gives 7x7 = 49 patch tokens plus the class token.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from timm.models.vision_transformer import VisionTransformer


@dataclass(frozen=True)
class VitFmnistArch:
    """Shape of the ``vit-fmnist`` network (stored next to its checkpoint)."""

    img_size: int = 28
    patch_size: int = 4
    in_chans: int = 1
    num_classes: int = 10
    embed_dim: int = 128
    depth: int = 4
    num_heads: int = 4
    mlp_ratio: float = 4.0


def build_vit_fmnist(arch: VitFmnistArch = VitFmnistArch(), drop_path_rate: float = 0.0) -> VisionTransformer:
    """Build an untrained ``vit-fmnist`` network with the given architecture."""
    return VisionTransformer(**asdict(arch), drop_path_rate=drop_path_rate)
