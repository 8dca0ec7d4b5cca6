"""``--method spdfq``: synthesize calibration images, then quantize with a PTQ backend on them.

Zhong et al., "Semantics Prompting Data-Free Quantization for Low-Bit Vision Transformers"
(SPDFQ, arXiv 2412.16553; ICCV'25 as SARDFQ). Plugging into the registry:
``apply(model, config, batches)`` receives the prepared float model and the usual calibration
batches, but **ignores the real images**: it reads only the input shape (C, H, W) and device of
``batches[0]``, synthesizes ``n_images`` images from the model itself (:mod:`squeeze.dfq`),
then calls the backend method's own ``apply`` on those (I&S-ViT block reconstruction by default,
the paper's backend; ``repq-vit`` is the cheap choice). ``calib`` therefore only sets how many
real samples the caller loads (one is enough); ``n_images`` sets the synthetic set's size.
The set is left on the quantized model as ``squeeze_synthetic`` (a :class:`squeeze.dfq.SyntheticSet`);
``squeeze quantize`` writes it next to the model (tensors, JSON and a contact sheet) for reuse.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from squeeze.config import QuantConfig, get_method, make_config, register_method
from squeeze.dfq.config import GENERATORS, Normalization, SynthConfig, normalization_for
from squeeze.dfq.store import load_synthetic
from squeeze.dfq.synth import synthesize
from squeeze.errors import SqueezeError


@dataclass
class SPDFQConfig(QuantConfig):
    """SPDFQ. Example: ``make_config("spdfq", wbits=4, abits=4, backend="repq-vit", msr=False)``.

    Attributes:
        generator: ``spdfq`` (default), or the baselines ``psaq-vit`` / ``psaq-vit-v2`` (its student
            quantized at ``wbits`` / ``abits``) / ``smi`` / ``noise`` on the same backend.
        apa / msr / soft_labels: SPDFQ components (each switchable for the ablation).
        n_images: synthetic calibration images (paper: 32).
        synth_iters / synth_lr: Adam steps and learning rate on the pixels (paper: 1000 / 0.2 -- 300 is
            the CPU default; see docs/methods/spdfq.md).
        alpha_apa: APA weight on maps scaled to mean 1.
        backend: registered PTQ method run on the synthetic images (``isvit``, ``repq-vit``, ...).
        backend_options: extra fields of the backend's config, e.g. ``{"iters": 100}``.
        synthetic: path of a saved synthetic set to reuse instead of synthesizing (shape checked).
        norm_mean / norm_std: input normalization; empty = Fashion-MNIST for 1 channel, ImageNet for 3.
    """

    method = "spdfq"
    data_free: ClassVar[bool] = True  # callers may pass placeholder calibration inputs of the right shape
    generator: str = "spdfq"
    apa: bool = True
    msr: bool = True
    soft_labels: bool = True
    n_images: int = 32
    synth_iters: int = 300
    synth_lr: float = 0.2
    alpha_apa: float = 1.0
    backend: str = "isvit"
    backend_options: dict[str, Any] = field(default_factory=dict)
    synthetic: str = ""
    norm_mean: list[float] = field(default_factory=list)
    norm_std: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.generator not in GENERATORS:
            raise SqueezeError(f"generator={self.generator!r}; use one of {', '.join(GENERATORS)}")
        if self.backend == self.method:
            raise SqueezeError("backend must be a PTQ method other than spdfq, e.g. isvit or repq-vit")
        get_method(self.backend)  # unknown backend: one line listing the known methods
        if not isinstance(self.backend_options, dict):
            raise SqueezeError("backend_options must be a dict of the backend's config fields")
        if bool(self.norm_mean) != bool(self.norm_std):
            raise SqueezeError("give both norm_mean and norm_std, or neither")
        synth_config(self)  # validates the synthesis options
        backend_config(self)  # validates backend_options against the backend's config


def synth_config(config: SPDFQConfig) -> SynthConfig:
    """The synthesis options of an SPDFQ config."""
    return SynthConfig(generator=config.generator, n_images=config.n_images, iters=config.synth_iters,
                       lr=config.synth_lr, seed=config.seed, apa=config.apa, msr=config.msr,
                       soft_labels=config.soft_labels, alpha_apa=config.alpha_apa,
                       student_wbits=config.wbits, student_abits=config.abits)


def backend_config(config: SPDFQConfig) -> QuantConfig:
    """The backend method's config: same bits, seed, overrides; ``calib`` = ``n_images``."""
    return make_config(config.backend, wbits=config.wbits, abits=config.abits, calib=config.n_images,
                       seed=config.seed, batch_size=config.batch_size,
                       quantize_attention=config.quantize_attention, overrides=dict(config.overrides),
                       **config.backend_options)


def _normalization(config: SPDFQConfig, channels: int) -> Normalization:
    if config.norm_mean:
        return Normalization(tuple(config.norm_mean), tuple(config.norm_std))
    return normalization_for(None, channels)


@register_method(SPDFQConfig, "SPDFQ (arXiv'24): data-free PTQ of ViTs on synthetic images (APA + MSR + soft labels)")
def apply_spdfq(model: nn.Module, config: SPDFQConfig, batches: list[torch.Tensor]) -> None:
    """Quantize a prepared ViT in place from synthetic images; the real ``batches`` give only the shape."""
    shape = tuple(batches[0].shape[1:])
    device = batches[0].device
    if config.synthetic:
        sset = load_synthetic(config.synthetic, shape)
    else:
        sset = synthesize(model, shape, synth_config(config), _normalization(config, shape[0]))
    images = sset.images.to(device)
    synthetic_batches = list(images.chunk(math.ceil(len(images) / config.batch_size)))
    get_method(config.backend).apply(model, backend_config(config), synthetic_batches)
    # kept on the model so `squeeze quantize` can save the images beside it (contact sheet, reuse)
    model.squeeze_synthetic = sset
