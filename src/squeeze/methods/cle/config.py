"""Config of data-free quantization by cross-layer equalization (Nagel et al., ICCV 2019)."""
from __future__ import annotations

from dataclasses import dataclass

from squeeze.config import QuantConfig
from squeeze.errors import SqueezeError

BIAS_CORRECTIONS = ("analytic", "empirical", "none")


@dataclass
class CLEConfig(QuantConfig):
    """DFQ (Nagel et al., "Data-Free Quantization Through Weight Equalization and Bias Correction", ICCV
    2019): batch norm folded into its conv, cross-layer equalization, high-bias absorption and bias
    correction, then round-to-nearest. Example: ``make_config("cle", wbits=8, abits=8)``.

    Attributes:
        equalize: rescale consecutive convs so each channel's weight range is shared (Sec. 4.1).
        absorb: move each post-ReLU channel's never-clipped bias into the next layer (Sec. 4.1.1).
        bias_correction: ``analytic`` (the expected input from batch norm statistics, data-free; Sec. 4.2),
            ``empirical`` (measured on the calibration data, every conv) or ``none``.
        per_channel_weights: per-output-channel weight ranges; the paper's setting (and the default) is
            one range per tensor, where equalization matters most.
        act_scheme: activation ranges on the calibration data, ``minmax`` or ``percentile``.
        percentile: the clipping percentile of ``act_scheme=percentile``.
        relu6: ``bounded`` (default; ours) keeps each ReLU6 and rescales through it only channels that stay
            below 6 before and after (mean + ``relu6_std`` std by batch norm); ``relu`` replaces every ReLU6 by ReLU
            first, as the paper does for MobileNetV2, since equalization needs f(s x) = s f(x) (it changes
            the float model: efficientnet-lite0 then agrees with itself on 29 % of photos); ``keep`` keeps
            them and equalizes no pair through one (bias correction still reads through them).
        relu6_std: how many standard deviations a ``bounded`` channel must stay below 6 (6).
        iterations: the most equalization sweeps over all pairs (stops early once the scales settle).
        n_std: bias absorption keeps ``mean - n_std * std`` of each channel (3 in the paper).
    """

    method = "cle"
    equalize: bool = True
    absorb: bool = True
    bias_correction: str = "analytic"
    per_channel_weights: bool = False
    act_scheme: str = "minmax"
    percentile: float = 0.999
    relu6: str = "bounded"
    relu6_std: float = 6.0
    iterations: int = 20
    n_std: float = 3.0

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("equalize", "absorb", "per_channel_weights"):
            if not isinstance(getattr(self, name), bool):
                raise SqueezeError(f"{name}={getattr(self, name)!r} must be true or false")
        choices = {"bias_correction": BIAS_CORRECTIONS, "act_scheme": ("minmax", "percentile"),
                   "relu6": ("relu", "bounded", "keep")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise SqueezeError(f"{name}={getattr(self, name)!r}; use one of {', '.join(allowed)}")
        if not isinstance(self.iterations, int) or self.iterations < 1:
            raise SqueezeError(f"iterations={self.iterations!r} must be a positive integer, e.g. 20")
        for name, example in (("n_std", 3), ("relu6_std", 6)):
            if not getattr(self, name) > 0:
                raise SqueezeError(f"{name}={getattr(self, name)!r} must be positive, e.g. {example}")
        if not 0.5 < self.percentile <= 1.0:
            raise SqueezeError(f"percentile={self.percentile} must be in (0.5, 1], e.g. 0.999")
