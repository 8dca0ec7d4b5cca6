"""Imports every built-in zoo module so their ``@register_model`` decorators run."""
import importlib

for _name in ("vit_fmnist_entry", "dinov2", "efficientnet", "minilm"):
    try:
        importlib.import_module(f"squeeze.zoo.{_name}")
    except ModuleNotFoundError as exc:  # TEMP while helpers land their modules
        if not exc.name or not exc.name.startswith("squeeze.zoo"):
            raise
