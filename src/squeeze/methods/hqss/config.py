"""HQSS configuration (Zhong et al., "High-Quality Pseudo Shadow Synthesis", arXiv 2212.04108) and the
registry of the shadow-removal training variants (``hqss`` and its baselines) by name."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from squeeze.config import build_fields, read_document
from squeeze.errors import SqueezeError

VERSION = 1
_VARIANTS: dict[str, str] = {}  # name -> one-line summary (filled by register_variant)


def register_variant(name: str, summary: str) -> None:
    """Register a shadow-removal training variant by name (each name once)."""
    if name in _VARIANTS:
        raise ValueError(f"shadow-removal variant {name!r} registered twice")
    _VARIANTS[name] = summary


def list_variants() -> dict[str, str]:
    """Registered variant names with their summaries."""
    return dict(sorted(_VARIANTS.items()))


register_variant("hqss", "HQSS: shadow-feature encoder + generator, pseudo shadows from region identities")
register_variant("darken", "baseline: pseudo shadows = a constant darkening of another image's mask shape")
register_variant("mask-shadowgan", "baseline: Mask-ShadowGAN-style unpaired cycle GAN's shadow generator")
register_variant("paired", "upper bound: the real (simulated) shadow / shadow-free pairs")
GENERATIVE = ("hqss", "mask-shadowgan")  # variants with a stage-1 generator


@dataclass(frozen=True)
class HQSSConfig:
    """One shadow-removal training run: pseudo-pair synthesis (stage 1) then the removal network (stage 2).

    Attributes:
        variant: a registered variant (:func:`list_variants`): ``hqss``, ``darken``, ``mask-shadowgan``,
            ``paired``.
        data: ``sim`` (the shadow simulator on the offline photos) or a folder holding ``shadow/`` and
            ``mask/`` (ISTD names ``train_A/``, ``train_B/`` also work; ``free/`` or ``train_C/`` for paired).
        size: images are resized (folder) or cropped (sim) to ``size`` x ``size`` pixels.
        train_images / test_images / clean_images: simulated shadow images for training, held-out
            test triplets, and unpaired shadow-free images (``mask-shadowgan`` only).
        feat: channels of the shadow-feature encoder F (paper 16).
        gen_width / gen_blocks: generator trunk channels and residual blocks (paper 128 / 6).
        disc_width: first discriminator layer's channels (paper 64).
        gen_steps / gen_batch / gen_lr: stage-1 schedule (Adam, betas 0.5/0.999, constant then linear
            decay to 0 over the last ``1 - decay_from`` of the steps; paper: 100 epochs, decay from 50).
        pool: replay-buffer size for the discriminators (paper 200).
        w_*: loss weights (paper: self 1 + FFL 1, adversarial 0.05, chroma 0.01 each, cycle 0.1 + FFL 0.1,
            feature cycle 0.01). ``w_adv`` defaults to 0.5: at 1,200 steps (the paper trains ~133K) the
            generator stayed the identity with 0.05 in a trial (docs/methods/hqss.md).
        min_ratio / max_ratio: area(M_ns) / area(shadow) accepted when pairing masks (paper 0.8 / 1.2).
        variants_per_image: pseudo shadow images synthesised per training image for stage 2.
        dilate / feather: the pseudo shadow is generated on the non-shadow region dilated by ``dilate``
            px and composited with the region's mask blurred by a Gaussian of sigma ``feather`` px, so
            it has a penumbra like a real shadow (see docs/methods/hqss.md).
        remove_steps / remove_batch / remove_lr / width / levels / blocks: stage 2, the RestoreNet
            (in_channels 4: image + mask) trained on the pseudo pairs.
        seed: data, pairing and initialisation seed.
    """

    variant: str = "hqss"
    data: str = "sim"
    size: int = 64
    train_images: int = 320
    test_images: int = 48
    clean_images: int = 320
    feat: int = 8
    gen_width: int = 32
    gen_blocks: int = 3
    disc_width: int = 32
    gen_steps: int = 1200
    gen_batch: int = 4
    gen_lr: float = 2e-4
    decay_from: float = 0.5
    pool: int = 50
    w_self: float = 1.0
    w_ffl: float = 1.0
    w_adv: float = 0.5
    w_chroma: float = 0.01
    w_cycle: float = 0.1
    w_feat: float = 0.01
    min_ratio: float = 0.8
    max_ratio: float = 1.2
    variants_per_image: int = 3
    dilate: int = 3
    feather: float = 1.0
    remove_steps: int = 1200
    remove_batch: int = 8
    remove_lr: float = 1e-3
    width: int = 24
    levels: int = 3
    blocks: int = 2
    seed: int = 0
    version: int = VERSION

    def __post_init__(self) -> None:
        if self.variant not in _VARIANTS:
            raise SqueezeError(f"shadow-removal variant {self.variant!r} is unknown; use one of "
                               f"{', '.join(list_variants())}")
        if self.size < 16 or self.size % 4:
            raise SqueezeError(f"size {self.size} must be a multiple of 4 and at least 16 px")
        if min(self.train_images, self.test_images, self.clean_images) < 2:
            raise SqueezeError("train_images, test_images and clean_images must each be at least 2")
        if min(self.feat, self.gen_width, self.gen_blocks, self.disc_width, self.pool, self.variants_per_image) < 1:
            raise SqueezeError("feat, gen_width, gen_blocks, disc_width, pool and variants_per_image must be >= 1")
        if min(self.gen_steps, self.gen_batch, self.remove_steps, self.remove_batch) < 1:
            raise SqueezeError("gen_steps, gen_batch, remove_steps and remove_batch must be >= 1")
        if not (self.gen_lr > 0 and self.remove_lr > 0 and 0 <= self.decay_from <= 1):
            raise SqueezeError("gen_lr and remove_lr must be positive and decay_from in [0, 1]")
        weights = [getattr(self, f.name) for f in dataclasses.fields(self) if f.name.startswith("w_")]
        if min(weights) < 0:
            raise SqueezeError("loss weights w_* must be >= 0")
        if not 0 < self.min_ratio <= 1 <= self.max_ratio:
            raise SqueezeError(f"mask-pairing ratio range ({self.min_ratio}, {self.max_ratio}) must contain 1")
        if self.dilate < 0 or self.feather < 0:
            raise SqueezeError("dilate and feather must be >= 0")
        if self.version != VERSION:
            raise SqueezeError(f"HQSS config version {self.version} is not supported (this is {VERSION})")

    @property
    def generative(self) -> bool:
        """Whether the variant trains a stage-1 generator."""
        return self.variant in GENERATIVE

    def identity(self) -> dict[str, Any]:
        """Every field that decides the result (resume and reuse only under the same identity)."""
        return dataclasses.asdict(self)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.variant, "version": VERSION, "config": self.identity()}

    @classmethod
    def from_fields(cls, fields: dict[str, Any]) -> "HQSSConfig":
        return build_fields(cls, fields, "HQSS")


def make_shadow_config(variant: str, **fields: Any) -> HQSSConfig:
    """The config of registered variant ``variant`` built from keyword fields (validated)."""
    return HQSSConfig.from_fields({**fields, "variant": variant})


def config_from_dict(d: dict[str, Any]) -> HQSSConfig:
    """Inverse of :meth:`HQSSConfig.to_dict`; refuses newer versions and foreign documents."""
    variant, fields = read_document(d, "HQSS", VERSION)
    fields.pop("variant", None)
    return make_shadow_config(variant, **fields)

