"""GPTQ (Frantar et al., ICLR 2023): Hessian-guided weight rounding with error feedback."""
from squeeze.methods.gptq.method import GPTQConfig
from squeeze.methods.gptq.solver import gptq_quantize

__all__ = ["GPTQConfig", "gptq_quantize"]
