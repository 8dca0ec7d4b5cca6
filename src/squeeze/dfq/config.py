"""Configuration of the image-synthesis engine, and the input normalization it must respect."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from squeeze.errors import SqueezeError

GENERATORS = ("noise", "psaq-vit", "psaq-vit-v2", "smi", "spdfq", "zeroq")
SYNTH_VERSION = 3  # 2: psaq-vit-v2, smi and their options; 3: zeroq


@dataclass
class SynthConfig:
    """How to synthesize calibration images from a frozen float model.

    Attributes:
        generator: ``noise`` (Gaussian noise, no optimization), ``psaq-vit`` (patch-similarity
            entropy, Li et al. ECCV'22), ``psaq-vit-v2`` (the same prior plus an adaptive
            teacher-student loop, Li et al. TNNLS'23), ``smi`` (PSAQ-ViT's loss with sparse model
            inversion, Hu et al. ICML'24), ``spdfq`` (APA + MSR + SL, Zhong et al. 2024) or, for
            CNNs, ``zeroq`` (batch norm statistics matching, Cai et al. CVPR'20).
        n_images: number of images (papers: 32).
        iters: Adam steps on the pixels (papers: 1000; 300 suffices for the tiny zoo models).
        lr: Adam learning rate on pixels (PSAQ-ViT: 0.2, betas (0.5, 0.9)), warm-up then cosine.
        batch_size: images optimized together (the set is made chunk by chunk).
        seed: seeds noise, labels, priors, boxes and augmentation.
        apa / msr / soft_labels: SPDFQ's three components (ablations switch one off).
        alpha_apa: weight of the APA loss (paper: tuned per model between 1 and 1e5 on plain MSE;
            our MSE is on maps scaled to mean 1, see :func:`squeeze.dfq.losses.apa_loss`).
        apa_components: at most this many Gaussians per prior map (paper: K_APA = 5).
        msr_boxes: at most this many MSR boxes per image (paper: K_MSR = 4).
        msr_per_step: boxes evaluated per image and step, drawn at random (cost control; the paper
            evaluates every box each step).
        tv_weight: weight of |TV - target| (PSAQ-ViT and SPDFQ: 0.05).
        jitter: random roll in pixels (default: 1/14 of the image side, PSAQ-ViT's 15 px at 224).
        flip: random horizontal flip.
        student_wbits / student_abits: bit widths of ``psaq-vit-v2``'s student, the float model
            quantized with min-max round-to-nearest (set them to the target PTQ's bits).
        student_lr: Adam learning rate of the student's distillation steps (``psaq-vit-v2``).
        adv_weight: weight of the teacher-student KL divergence the images maximize (``psaq-vit-v2``).
        smi_drops / smi_ratio: ``smi`` drops patches this many times, evenly spread over the steps,
            each time ``smi_ratio`` of every image's remaining patches (the least attended).
    """

    version: ClassVar[int] = SYNTH_VERSION
    generator: str = "spdfq"
    n_images: int = 32
    iters: int = 300
    lr: float = 0.2
    batch_size: int = 32
    seed: int = 0
    apa: bool = True
    msr: bool = True
    soft_labels: bool = True
    alpha_apa: float = 1.0
    apa_components: int = 5
    msr_boxes: int = 4
    msr_per_step: int = 1
    tv_weight: float = 0.05
    jitter: int | None = None
    flip: bool = True
    student_wbits: int = 4
    student_abits: int = 4
    student_lr: float = 1e-4
    adv_weight: float = 1.0
    smi_drops: int = 3
    smi_ratio: float = 0.3

    def __post_init__(self) -> None:
        if self.generator not in GENERATORS:
            raise SqueezeError(f"generator={self.generator!r}; use one of {', '.join(GENERATORS)}")
        for name, low in (("n_images", 1), ("iters", 1), ("batch_size", 1), ("apa_components", 1),
                          ("msr_per_step", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or value < low:
                raise SqueezeError(f"{name}={value!r}; need an integer >= {low}")
        if not isinstance(self.msr_boxes, int) or not 1 <= self.msr_boxes <= 4:
            raise SqueezeError(f"msr_boxes={self.msr_boxes!r}; use 1..4 (one box per image quadrant)")
        for name in ("student_wbits", "student_abits"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 2 <= value <= 16:
                raise SqueezeError(f"{name}={value!r}; need an integer bit width in 2..16")
        for name in ("lr", "alpha_apa", "tv_weight", "student_lr", "adv_weight"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value < 0 or (name == "lr" and value == 0):
                raise SqueezeError(f"{name}={value!r}; need a non-negative number (lr > 0)")
        if not isinstance(self.smi_drops, int) or self.smi_drops < 0:
            raise SqueezeError(f"smi_drops={self.smi_drops!r}; need an integer >= 0")
        if not isinstance(self.smi_ratio, (int, float)) or not 0 <= self.smi_ratio < 1:
            raise SqueezeError(f"smi_ratio={self.smi_ratio!r}; need a fraction in [0, 1)")
        if self.jitter is not None and (not isinstance(self.jitter, int) or self.jitter < 0):
            raise SqueezeError(f"jitter={self.jitter!r}; need pixels >= 0 or None for the default")

    def to_dict(self) -> dict[str, Any]:
        """``{"version", "config"}``, JSON-able."""
        return {"version": self.version, "config": dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SynthConfig":
        """Inverse of :meth:`to_dict`; refuses newer versions and unknown fields."""
        if int(data.get("version", 0)) > SYNTH_VERSION:
            raise SqueezeError("synthesis config is newer than this squeeze; upgrade squeeze")
        fields = dict(data.get("config", {}))
        unknown = set(fields) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise SqueezeError(f"unknown synthesis option(s) {sorted(unknown)}")
        return cls(**fields)


FMNIST = ((0.2860,), (0.3530,))
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
ZOO_NORMALIZATION = {"vit-fmnist": FMNIST, "dinov2-s14": IMAGENET}


@dataclass(frozen=True)
class Normalization:
    """Per-channel ``(x01 - mean) / std`` applied to the model's inputs; pixels in [0, 1] before it."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.mean) != len(self.std) or not self.mean or min(self.std) <= 0:
            raise SqueezeError("normalization needs one mean and one positive std per channel")

    def _view(self, values: tuple[float, ...], channels: int) -> torch.Tensor:
        if len(values) not in (1, channels):
            raise SqueezeError(f"normalization has {len(values)} channels but the images have {channels}")
        return torch.tensor(values).view(1, -1, 1, 1)

    def bounds(self, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Valid normalized range ``(lo, hi)``, each (1, C, 1, 1): images of 0 and of 1."""
        mean, std = self._view(self.mean, channels), self._view(self.std, channels)
        return (0 - mean) / std, (1 - mean) / std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Normalized (N, C, H, W) -> viewable [0, 1] pixels."""
        c = x.shape[1]
        return (x.cpu() * self._view(self.std, c) + self._view(self.mean, c)).clamp(0, 1)


def normalization_for(name: str | None, channels: int) -> Normalization:
    """The zoo model's normalization, else Fashion-MNIST's for 1 channel and ImageNet's otherwise."""
    if name in ZOO_NORMALIZATION:
        return Normalization(*ZOO_NORMALIZATION[name])
    return Normalization(*(FMNIST if channels == 1 else IMAGENET))
