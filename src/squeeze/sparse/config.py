"""Typed, versioned configs of the N:M sparse-training methods (one dataclass per method).

``NMConfig`` covers the baselines (dense, magnitude, sr-ste, transposable, unstructured);
:class:`squeeze.methods.bimask.BiMaskConfig` and :class:`squeeze.methods.spre.SpReConfig` extend it.
Every config validates on construction and round-trips through JSON as
``{"method", "version", "config"}``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

from squeeze.config import build_fields, read_document
from squeeze.errors import SqueezeError
from squeeze.sparse.masks import check_nm_args

NM_CONFIG_VERSION = 1
METHODS = ("dense", "magnitude", "sr-ste", "transposable", "bimask", "bimask-no-perm", "spre", "unstructured")
MODELS = ("resnet-fmnist", "vit-fmnist")
# Layers kept dense by default: the stem conv (1 input channel cannot form groups), the classifier,
# ViT patch embedding and head (as SR-STE's released ResNet-50 and Bi-Mask's DeiT do).
DEFAULT_DENSE = ("conv1", "fc", "patch_embed.*", "head")


@dataclass
class NMConfig:
    """One N:M fine-tuning run from a float zoo checkpoint.

    Attributes:
        model: ``resnet-fmnist`` (all convs except the stem, plus linears) or ``vit-fmnist`` (linears).
        method: one of :data:`METHODS` (``bimask*``/``spre`` use their own config classes).
        n, m: keep ``n`` of every ``m`` consecutive weights along the input dimension (0 < n < m).
        dense: shell patterns of layer names left dense (see :data:`DEFAULT_DENSE`).
        decay: SR-STE decay lambda on pruned weights (sr-ste, bimask, spre, unstructured).
        refresh: transposable masks are recomputed every ``refresh`` steps (Hubara et al.: 40).
        transposable_solver: ``auto`` (exact for M <= 4), ``exact`` or ``greedy``.
        epochs, subset, batch_size: schedule; ``subset`` random training images per epoch (0 = all).
        lr: SGD (resnet) / AdamW (vit) learning rate, cosine to 0; 0 picks the model default.
        weight_decay: L2 on conv/linear weights.
        eval_subset: test images evaluated after each epoch (0 = all); the final evaluation uses all.
        seed: data order, augmentation and permutation draws.
    """

    method_name: ClassVar[str] = "nm"
    model: str = "resnet-fmnist"
    method: str = "sr-ste"
    n: int = 2
    m: int = 4
    dense: tuple[str, ...] = DEFAULT_DENSE
    decay: float = 2e-4
    refresh: int = 40
    transposable_solver: str = "auto"
    epochs: int = 2
    subset: int = 12800
    batch_size: int = 128
    lr: float = 0.0
    weight_decay: float = 5e-4
    eval_subset: int = 2000
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes, not part of the identity

    def __post_init__(self) -> None:
        self.dense = tuple(self.dense)
        if self.model not in MODELS:
            raise SqueezeError(f"model {self.model!r} is not supported for N:M training; use one of "
                               f"{', '.join(MODELS)}")
        if self.method not in METHODS:
            raise SqueezeError(f"N:M method {self.method!r} is unknown; use one of {', '.join(METHODS)}")
        check_nm_args(self.n, self.m)
        if self.transposable_solver not in ("auto", "exact", "greedy"):
            raise SqueezeError(f"transposable_solver={self.transposable_solver!r}: use auto, exact or greedy")
        if self.transposable_solver == "exact" and self.m > 4:
            raise SqueezeError(f"transposable_solver=exact enumerates patterns and supports M <= 4, not {self.m}; "
                               "use greedy")
        if self.decay < 0 or self.refresh < 1:
            raise SqueezeError("decay must be >= 0 and refresh >= 1")
        if self.epochs < 1 or self.batch_size < 1 or self.lr < 0 or self.weight_decay < 0:
            raise SqueezeError("epochs and batch_size must be positive, lr and weight_decay >= 0")
        if self.subset < 0 or self.eval_subset < 0:
            raise SqueezeError("subset and eval_subset must be >= 0 (0 = the whole split)")

    @property
    def sparse(self) -> bool:
        return self.method != "dense"

    @property
    def density(self) -> float:
        return self.n / self.m if self.sparse else 1.0

    def identity(self) -> dict[str, Any]:
        """Every field that decides the result (resume only under the same identity)."""
        d = dataclasses.asdict(self)
        d.pop("extra")
        d["dense"] = list(self.dense)
        return d

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "version": NM_CONFIG_VERSION, "config": self.identity()}

    @classmethod
    def from_fields(cls, fields: dict[str, Any]) -> "NMConfig":
        return build_fields(cls, fields, f"N:M method {fields.get('method', cls.method_name)!r}")


def make_nm_config(method: str, **fields: Any) -> NMConfig:
    """The config class of ``method`` built from ``fields`` (unknown fields refused)."""
    if method in ("bimask", "bimask-no-perm"):
        from squeeze.methods.bimask.config import BiMaskConfig  # noqa: PLC0415

        if method == "bimask-no-perm":
            fields = {"permute": False, **fields}
        return BiMaskConfig.from_fields({**fields, "method": method})
    if method == "spre":
        from squeeze.methods.spre.config import SpReConfig  # noqa: PLC0415

        return SpReConfig.from_fields({**fields, "method": method})
    return NMConfig.from_fields({**fields, "method": method})


def nm_config_from_dict(d: dict[str, Any]) -> NMConfig:
    """Inverse of :meth:`NMConfig.to_dict`; refuses newer versions."""
    method, fields = read_document(d, "N:M", NM_CONFIG_VERSION)
    fields.pop("method", None)
    return make_nm_config(method, **fields)
