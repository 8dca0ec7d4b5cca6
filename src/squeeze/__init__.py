"""squeeze: compress PyTorch models with recent quantization, sparsity and memory methods.

Quick start::

    import squeeze
    zm = squeeze.load_model("vit-fmnist")
    cfg = squeeze.make_config("gptq", wbits=4, abits=8, calib=32)
    qmodel = squeeze.quantize(zm.model, cfg, zm.calib_inputs(32, 0), name="vit-fmnist")
    squeeze.save(qmodel, "out/vit-gptq")
"""
from squeeze.api import quantize
from squeeze.config import list_methods, make_config
from squeeze.errors import SqueezeError
from squeeze.export.format import load, save
from squeeze.zoo.registry import list_models, load_model

__version__ = "0.1.0"
__all__ = ["SqueezeError", "list_methods", "list_models", "load", "load_model", "make_config", "quantize", "save"]
