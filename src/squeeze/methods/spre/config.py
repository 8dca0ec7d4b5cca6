"""SpRe configuration (Zhang et al., "Spatial Re-parameterization for N:M Sparsity", TPAMI 2025)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from squeeze.errors import SqueezeError
from squeeze.sparse.config import NMConfig


@dataclass
class SpReConfig(NMConfig):
    """SpRe on top of SR-STE: every paired (3x3 conv, BN) gets a training-only extra branch.

    Attributes (besides :class:`~squeeze.sparse.config.NMConfig`):
        kernel: only convs with this square kernel size get the extra branch (paper: 3).
    """

    method_name: ClassVar[str] = "spre"
    method: str = "spre"
    kernel: int = 3

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.method != "spre":
            raise SqueezeError(f"SpReConfig is for spre, not {self.method!r}")
        if self.model != "resnet-fmnist":
            raise SqueezeError("SpRe re-parameterizes 3x3 convs; use --model resnet-fmnist (vit-fmnist has none)")
        if self.kernel < 2:
            raise SqueezeError(f"kernel={self.kernel}: SpRe needs a spatial kernel (>= 2), e.g. 3")
