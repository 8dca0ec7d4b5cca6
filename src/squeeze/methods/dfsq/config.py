"""Configurations of DFSQ and its ``uniform-norm`` baseline (Hong et al., "Distribution-Flexible Subset
Quantization for Post-Quantizing Super-Resolution Networks")."""
from __future__ import annotations

from dataclasses import dataclass, field

from squeeze.config import QuantConfig
from squeeze.errors import SqueezeError


@dataclass
class ChannelNormConfig(QuantConfig):
    """Options shared by ``dfsq`` and ``uniform-norm``.

    Attributes:
        layers: shell patterns on Conv2d module names selecting the layers to quantize, e.g.
            ``["body.*.conv*"]``. Empty (default): the convs inside the model's repeated block stack
            (EDSR's residual blocks, what the paper quantizes); a model without such a stack gets
            every Conv2d except the first and the last one.
        max_samples: normalized activation values kept per input channel for calibration (a random
            subsample; the spec's bound of 20k keeps K-means cheap).
    """

    method = "channel-norm"
    layers: list[str] = field(default_factory=list)
    max_samples: int = 20000

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.layers, (list, tuple)) or not all(isinstance(p, str) and p for p in self.layers):
            raise SqueezeError(f"layers={self.layers!r} must be a list of module-name patterns, "
                               "e.g. layers='[\"body.*.conv*\"]'")
        self.layers = list(self.layers)
        if not isinstance(self.max_samples, int) or self.max_samples < 64:
            raise SqueezeError(f"max_samples={self.max_samples!r} must be an integer >= 64, e.g. 20000")


@dataclass
class UniformNormConfig(ChannelNormConfig):
    """DFSQ's channel normalization with a uniform grid instead of subset points (isolates SQ).

    Example: ``make_config("uniform-norm", wbits=4, abits=4)``.
    """

    method = "uniform-norm"


@dataclass
class DFSQConfig(ChannelNormConfig):
    """DFSQ: channel normalization + subset quantization with points picked by pinned-zero K-means.

    Example: ``make_config("dfsq", wbits=4, abits=4, calib=32)``.

    Attributes:
        restarts: K-means restarts per channel (the best snapped point set wins); paper: 5.
        kmeans_iters: at most this many Lloyd iterations; paper: 100.
        kmeans_tol: stop when no centroid moves by this much (normalized units); paper: 1e-3.
    """

    method = "dfsq"
    restarts: int = 5
    kmeans_iters: int = 100
    kmeans_tol: float = 1e-3

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.restarts, int) or not 1 <= self.restarts <= 100:
            raise SqueezeError(f"restarts={self.restarts!r} must be an integer in 1..100 (paper: 5)")
        if not isinstance(self.kmeans_iters, int) or self.kmeans_iters < 1:
            raise SqueezeError(f"kmeans_iters={self.kmeans_iters!r} must be a positive integer (paper: 100)")
        if not isinstance(self.kmeans_tol, (int, float)) or not 0 < self.kmeans_tol < 1:
            raise SqueezeError(f"kmeans_tol={self.kmeans_tol!r} must be in (0, 1) (paper: 1e-3)")
