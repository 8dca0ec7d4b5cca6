"""Saving and loading quantized models (safetensors + JSON, integer weights bit-packed)."""
