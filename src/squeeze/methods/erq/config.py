"""Configuration of ERQ (Zhong et al., "ERQ: Error Reduction for Post-Training Quantization of Vision
Transformers", ICML 2024; TPAMI extension with reparameterization init and dual uniform quantization).
"""
from __future__ import annotations

from dataclasses import dataclass

from squeeze.config import QuantConfig
from squeeze.errors import SqueezeError


@dataclass
class ERQConfig(QuantConfig):
    """ERQ: Aqer (ridge regression against activation-quantization error) then Wqer (halving weight
    quantization with proxy-guided rounding refinement and ridge compensation of the float columns).

    Example: ``make_config("erq", wbits=3, abits=4, calib=32)``.

    Attributes:
        aqer: run Aqer (step A1); ``False`` is the "ERQ without Aqer" ablation.
        rounding_refinement: run the proxy-guided rounding refinement inside Wqer (step B1.3).
        ridge_compensation: compensate the still-float columns by ridge regression (step B1.4).
        reparam_init: RepQ-ViT scale reparameterization of the post-LayerNorm quantizers (step A0,
            TPAMI version). ``False`` keeps those quantizers per-channel (as RepQ-ViT's
            ``reparam=False``), which is not deployable as a per-tensor integer kernel.
        dual_uniform: dual uniform quantization (DUQ, TPAMI) of the weights of post-LayerNorm
            Linear layers (qkv / fc1): a shared set of outlier input columns gets its own per-row
            (scale, zero point). Saved as dense per-element scales, so files grow; off by default.
        aqer_lambda: Aqer ridge strength *relative to the data*: ``lambda = aqer_lambda *
            mean(diag(A^T A))`` with ``A = [X_q, 1]`` over all calibration tokens. The official code
            uses an absolute ``lambda = 1000..2000``, tuned to ImageNet token counts (32-1024 images x
            197 tokens); relative to mean(diag) that is about 0.01 (1024 images) to 0.1 (the README's
            32 images) for activations of unit scale. The default 0.1 is the 32-image value and the
            best of the spec's range {1e-3, 1e-2, 1e-1} on held-out *training* images (fit on 32
            calibration images, layer output error left on 32 others: 1.00/0.96/0.95 of the
            uncorrected error on vit-fmnist, 1.21/0.99/0.89 on dinov2-s14; smaller values overfit).
            Test data was never used.
        wqer_lambda: the same relative strength for Wqer's ridge compensation, ``lambda = wqer_lambda
            * mean(diag(X_U^T X_U))`` of the still-float columns (the code uses the same absolute value
            for Aqer and Wqer); the patch-embedding conv uses ten times this, as in the code. Held-out
            layer error is flat in 1e-3..1e-1 except on proj/fc2, where 0.1 generalizes best.
        refine_steps: at most this many accepted coordinate flips per weight row and halving step.
        refine_rows: weight rows refined together (vectorised) per block.
    """

    method = "erq"
    aqer: bool = True
    rounding_refinement: bool = True
    ridge_compensation: bool = True
    reparam_init: bool = True
    dual_uniform: bool = False
    aqer_lambda: float = 0.1
    wqer_lambda: float = 0.1
    refine_steps: int = 100
    refine_rows: int = 512

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("aqer", "rounding_refinement", "ridge_compensation", "reparam_init", "dual_uniform"):
            if not isinstance(getattr(self, name), bool):
                raise SqueezeError(f"{name}={getattr(self, name)!r} must be true or false")
        for name in ("aqer_lambda", "wqer_lambda"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0 < value < 1e3:
                raise SqueezeError(f"{name}={value!r} must be a positive relative ridge strength, e.g. 0.1 "
                                   "(lambda = value * mean diagonal of X^T X)")
        if not isinstance(self.refine_steps, int) or self.refine_steps < 0:
            raise SqueezeError(f"refine_steps={self.refine_steps!r} must be a non-negative integer, e.g. 100")
        if not isinstance(self.refine_rows, int) or self.refine_rows < 1:
            raise SqueezeError(f"refine_rows={self.refine_rows!r} must be a positive integer, e.g. 512")
