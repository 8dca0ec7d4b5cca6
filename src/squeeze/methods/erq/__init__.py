"""ERQ (Zhong et al., "ERQ: Error Reduction for Post-Training Quantization of Vision Transformers",
ICML 2024; TPAMI extension): Aqer + Wqer with ridge regression and proxy-guided rounding refinement."""
from squeeze.methods.erq.config import ERQConfig
from squeeze.methods.erq.method import apply_erq
from squeeze.methods.erq.ridge import aqer_update, compensation_update, ridge_solve
from squeeze.methods.erq.wqer import refine_rounding, wqer_quantize

__all__ = ["ERQConfig", "apply_erq", "aqer_update", "compensation_update", "refine_rounding", "ridge_solve",
           "wqer_quantize"]
