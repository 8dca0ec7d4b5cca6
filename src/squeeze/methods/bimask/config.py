"""Bi-Mask configuration (Zhang et al., "Bi-directional Masks for Efficient N:M Sparse Training", ICML 2023)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from squeeze.errors import SqueezeError
from squeeze.sparse.config import NMConfig


@dataclass
class BiMaskConfig(NMConfig):
    """Bi-Mask: forward mask N:M along inputs, backward (input-gradient) mask N:M along outputs.

    Attributes (besides :class:`~squeeze.sparse.config.NMConfig`):
        permute: run the random output-permutation search (``False``: the ``bimask-no-perm`` ablation).
        perm_every: search every this many training steps (paper: 100).
        perm_candidates: random permutations scored per search (paper README: 100; code default 10).
    """

    method_name: ClassVar[str] = "bimask"
    method: str = "bimask"
    permute: bool = True
    perm_every: int = 100
    perm_candidates: int = 10

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.method not in ("bimask", "bimask-no-perm"):
            raise SqueezeError(f"BiMaskConfig is for bimask / bimask-no-perm, not {self.method!r}")
        if self.method == "bimask-no-perm" and self.permute:
            raise SqueezeError("bimask-no-perm is the ablation without permutation search; drop permute=true")
        if self.perm_every < 1 or self.perm_candidates < 1:
            raise SqueezeError("perm_every and perm_candidates must be at least 1")
