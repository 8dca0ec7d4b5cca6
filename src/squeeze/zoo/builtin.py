"""Imports every built-in zoo module so their ``@register_model`` decorators run."""
from squeeze.zoo import dinov2, efficientnet, minilm, vit_fmnist_entry  # noqa: F401
from squeeze.zoo import edsr, lm_shakespeare, resnet_fmnist  # noqa: F401
