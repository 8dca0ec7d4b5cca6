"""Compression methods; importing this package registers them all."""
from squeeze.methods import gptq, repq_vit, rtn  # noqa: F401
