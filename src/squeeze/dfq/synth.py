"""The image-synthesis engine: optimize pixels from noise against a frozen float model.

One loop serves every generator; the generator decides the loss terms:

* ``noise``: Gaussian noise clipped to the valid range, no optimization (the weakest baseline);
* ``psaq-vit``: CE to random hard labels - sum of per-block patch-similarity entropies
  + tv_weight * |TV - v| (Li et al., ECCV 2022);
* ``psaq-vit-v2``: the same entropies and TV, no given labels (CE to the teacher's own prediction),
  minus adv_weight * KL(teacher || student), while a min-max quantized student learns to close that
  KL on the same views (Li et al., TNNLS 2023; see :mod:`squeeze.dfq.student`);
* ``smi``: PSAQ-ViT's loss, inverting ever fewer patches: a few times during the optimization the
  least-attended patches are dropped from attention and frozen (Hu et al., ICML 2024; see
  :mod:`squeeze.dfq.sparse`);
* ``spdfq``: CE (soft targets with SL, hard without) + alpha * APA + MSR box CEs
  + tv_weight * |TV - v| (Zhong et al., arXiv 2412.16553);
* ``zeroq``: for CNNs, the distance of each image's per-channel statistics at every batch norm
  layer to its running statistics, and of the image itself to mean 0 / std 1, nothing else (Cai
  et al., CVPR 2020; see :mod:`squeeze.dfq.batchnorm`).

Each step applies one random roll (``jitter`` px) and horizontal flip to the whole chunk, takes the
gradient of the loss with respect to the pixels only (the model's parameters are never touched),
does an Adam step and clips the pixels to the valid normalized range.
"""
from __future__ import annotations

import copy
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from squeeze.devices import model_device
from squeeze.dfq import losses
from squeeze.dfq.attention import cls_attention, patch_grid, record_attention, require_attention
from squeeze.dfq.batchnorm import record_batchnorm, require_batchnorm
from squeeze.dfq.config import Normalization, SynthConfig, normalization_for
from squeeze.dfq.msr import Box, crop_resize, draw_boxes
from squeeze.dfq.sparse import SparseInversion, masked_keys
from squeeze.dfq.student import Student, minmax_student
from squeeze.errors import SqueezeError
from squeeze.quant.prepare import attention_modules


PSE_GENERATORS = ("psaq-vit", "psaq-vit-v2", "smi")  # maximize the patch-similarity entropy


@dataclass
class SyntheticSet:
    """Synthetic calibration images (normalized, (N, C, H, W), CPU) and how they were made."""

    images: torch.Tensor
    labels: torch.Tensor
    normalization: Normalization
    config: SynthConfig
    seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Chunk:
    """State of one chunk of images under optimization."""

    x: torch.Tensor  # (B, C, H, W) leaf, requires grad
    targets: torch.Tensor  # (B, n_classes)
    priors: torch.Tensor | None  # (B, heads, P)
    boxes: list[Box]
    box_targets: torch.Tensor | None  # (len(boxes), n_classes)
    tv_target: float
    sparse: SparseInversion | None = None  # smi: which patches are still inverted


def _component(cfg: SynthConfig) -> str:
    """The name a missing-attention error gives for what needs the attention."""
    names = {"psaq-vit": "PSAQ-ViT", "psaq-vit-v2": "PSAQ-ViT V2", "smi": "SMI (sparse model inversion)"}
    return names.get(cfg.generator, "APA (attention priors alignment)")


def _targets(labels: torch.Tensor, n_classes: int, soft: bool, gen: torch.Generator) -> torch.Tensor:
    return losses.soft_targets(labels, n_classes, gen) if soft else F.one_hot(labels, n_classes).float()


def _init_chunk(net: nn.Module, n: int, shape: tuple[int, ...], bounds: tuple[torch.Tensor, torch.Tensor],
                cfg: SynthConfig, gen: torch.Generator, device: torch.device) -> _Chunk:
    """Noise images, labels, targets, priors and boxes of one chunk (all drawn from ``gen``)."""
    lo, hi = bounds
    x = torch.maximum(torch.minimum(torch.randn(n, *shape, generator=gen), hi), lo)
    with torch.no_grad():
        n_classes = net(x[:1].to(device)).shape[-1]
    spdfq = cfg.generator == "spdfq"
    labels = torch.randint(0, n_classes, (n,), generator=gen)
    targets = _targets(labels, n_classes, spdfq and cfg.soft_labels, gen)
    priors = boxes_t = sparse = None
    boxes: list[Box] = []
    if (spdfq and cfg.apa) or cfg.generator == "smi":
        with torch.no_grad(), record_attention(net, _component(cfg)) as rec:
            net(x[:1].to(device))
        heads, n_tokens = rec.probs[0].shape[1], rec.probs[0].shape[-1]
        prefix, grid = patch_grid(n_tokens)
        if spdfq:
            priors = losses.attention_priors(n, heads, grid, cfg.apa_components, gen)
        else:
            sparse = SparseInversion(torch.ones(n, grid[0] * grid[1], dtype=torch.bool, device=device), prefix, grid)
    if spdfq and cfg.msr:
        boxes = draw_boxes(n, shape[-2:], cfg.msr_boxes, n_classes, gen)
        box_labels = torch.tensor([b.label for b in boxes])
        boxes_t = _targets(box_labels, n_classes, cfg.soft_labels, gen).to(device)
    tv_target = float(2500 + 500 * torch.rand(1, generator=gen)) * losses.tv_target_scale(x)
    return _Chunk(x.to(device).requires_grad_(True), targets.to(device),
                  None if priors is None else priors.to(device), boxes, boxes_t, tv_target, sparse)


def _psaq_entropy(outputs: dict[int, torch.Tensor], sparse: SparseInversion | None = None) -> torch.Tensor:
    """Sum over blocks of the mean patch-similarity entropy (PSAQ-ViT); outputs (B, H, N, d).

    With SMI's ``sparse`` state, only pairs of patches still inverted count (as if the rest were gone).
    """
    total: torch.Tensor | float = 0.0
    for out in outputs.values():
        prefix, _ = patch_grid(out.shape[2])
        feats = out.mean(dim=1)[:, prefix:]  # heads averaged, prefix tokens dropped: (B, P, d)
        valid = None
        if sparse is not None and sparse.view_tokens is not None:
            valid = losses.patch_pairs(sparse.view_tokens[:, prefix:])  # (B, P * (P - 1) / 2)
        total = total + losses.kde_entropy(losses.patch_cosine_similarity(feats), valid=valid).mean()
    return torch.as_tensor(total)


def _apa(probs: dict[int, torch.Tensor], chunk: _Chunk, shift: tuple[int, int], flip: bool,
         image_side: tuple[int, int]) -> torch.Tensor:
    """Weighted APA over the deep half of the blocks, priors moved with the augmentation."""
    assert chunk.priors is not None
    total = torch.zeros((), device=chunk.x.device)
    for index, weight in losses.block_weights(len(probs)).items():
        attn = cls_attention(probs[index])
        _, grid = patch_grid(probs[index].shape[-1])
        prior = losses.align_prior(chunk.priors, grid, losses.patch_shift(shift, grid, image_side), flip)
        total = total + weight * losses.apa_loss(attn, prior)
    return total


def _msr(net: nn.Module, chunk: _Chunk, cfg: SynthConfig, gen: torch.Generator) -> torch.Tensor:
    """CE of a random subset of the boxes, each cropped, resized and classified on its own."""
    n_pick = min(len(chunk.boxes), cfg.msr_per_step * len(chunk.x))
    pick = torch.randperm(len(chunk.boxes), generator=gen)[:n_pick].tolist()
    crops = crop_resize(chunk.x, [chunk.boxes[i] for i in pick], tuple(chunk.x.shape[-2:]))
    assert chunk.box_targets is not None
    return losses.soft_cross_entropy(net(crops), chunk.box_targets[pick])


def _adaptive(logits: torch.Tensor, view: torch.Tensor, student: Student, rec: Any) -> tuple[torch.Tensor, ...]:
    """PSAQ-ViT V2's terms: teacher confidence, patch-similarity entropy, teacher-student KL.

    The student's distillation gradient is taken from the same forward (applied after the pixels' step).
    """
    student_logits = student.net(view)
    student.accumulate(losses.kl_divergence(logits.detach(), student_logits))
    confidence = F.cross_entropy(logits, logits.argmax(dim=-1))  # no given labels: the teacher's own
    return confidence, _psaq_entropy(rec.outputs), losses.kl_divergence(logits, student_logits)


def _step_loss(net: nn.Module, chunk: _Chunk, cfg: SynthConfig, gen: torch.Generator, jitter: int,
               rec: Any, student: Student | None = None) -> torch.Tensor:
    """Loss of one step on one augmented view of the chunk."""
    dy, dx = (torch.randint(-jitter, jitter + 1, (2,), generator=gen).tolist() if jitter else (0, 0))
    flip = cfg.flip and bool(torch.rand(1, generator=gen) < 0.5)
    view = chunk.x.roll(shifts=(dy, dx), dims=(2, 3))
    view = view.flip(3) if flip else view
    if chunk.sparse is not None:
        chunk.sparse.set_view((dy, dx), flip, tuple(chunk.x.shape[-2:]))
    if rec is not None:
        rec.clear()
    logits = net(view)
    if cfg.generator == "zeroq":  # every batch norm layer's statistics, and the input's: mean 0, std 1
        c = view.shape[1]
        return rec.loss() + losses.batchnorm_statistics_loss(view, view.new_zeros(c), view.new_ones(c))
    if student is not None:
        confidence, entropy, kl = _adaptive(logits, view, student, rec)
        return confidence - entropy - cfg.adv_weight * kl + _tv(chunk, cfg)
    loss = losses.soft_cross_entropy(logits, chunk.targets)
    if cfg.generator in ("psaq-vit", "smi"):
        loss = loss - _psaq_entropy(rec.outputs, chunk.sparse)
    if cfg.generator == "spdfq" and cfg.apa:
        loss = loss + cfg.alpha_apa * _apa(rec.probs, chunk, (dy, dx), flip, tuple(chunk.x.shape[-2:]))
    if cfg.generator == "spdfq" and cfg.msr:
        loss = loss + _msr(net, chunk, cfg, gen)
    return loss + _tv(chunk, cfg)


def _drop_patches(net: nn.Module, chunk: _Chunk, cfg: SynthConfig, rec: Any) -> None:
    """SMI: drop each image's least-attended patches (last block's class-token attention, heads averaged)."""
    assert chunk.sparse is not None
    chunk.sparse.set_view((0, 0), False, tuple(chunk.x.shape[-2:]))
    rec.clear()
    with torch.no_grad():
        net(chunk.x)
    scores = cls_attention(rec.probs[max(rec.probs)]).mean(dim=1)  # (B, P)
    chunk.sparse.drop(scores, cfg.smi_ratio, chunk.x)


def _tv(chunk: _Chunk, cfg: SynthConfig) -> torch.Tensor:
    return cfg.tv_weight * (losses.total_variation(chunk.x) - chunk.tv_target).abs()


def _optimize(net: nn.Module, chunk: _Chunk, cfg: SynthConfig, bounds: tuple[torch.Tensor, torch.Tensor],
              gen: torch.Generator, bar: tqdm, student: Student | None = None) -> None:
    """Adam on the pixels of one chunk for ``cfg.iters`` steps, clipping after each step.

    With a ``student`` (PSAQ-ViT V2), the student takes one distillation step after each pixel step.
    """
    lo, hi = (b.to(chunk.x.device) for b in bounds)
    opt = torch.optim.Adam([chunk.x], lr=cfg.lr, betas=(0.5, 0.9))
    jitter = cfg.jitter if cfg.jitter is not None else max(1, round(chunk.x.shape[-1] / 14))
    needs_probs = (cfg.generator == "spdfq" and cfg.apa) or chunk.sparse is not None
    drops = {round(cfg.iters * k / (cfg.smi_drops + 1)) for k in range(1, cfg.smi_drops + 1)}  # smi only
    needs_outputs = cfg.generator in PSE_GENERATORS
    with ExitStack() as stack:
        rec = None
        if needs_probs or needs_outputs:
            rec = stack.enter_context(record_attention(net, _component(cfg), needs_probs, needs_outputs))
        elif cfg.generator == "zeroq":
            rec = stack.enter_context(record_batchnorm(net))
        stack.enter_context(masked_keys(attention_modules(net), chunk.sparse))
        for step in range(cfg.iters):
            if chunk.sparse is not None and step in drops:
                _drop_patches(net, chunk, cfg, rec)
            for group in opt.param_groups:
                group["lr"] = losses.lr_at(step, cfg.iters, cfg.lr, max(1, cfg.iters // 10))
            loss = _step_loss(net, chunk, cfg, gen, jitter, rec, student)
            (chunk.x.grad,) = torch.autograd.grad(loss, [chunk.x])
            opt.step()
            if student is not None:
                student.step()
            with torch.no_grad():
                chunk.x.copy_(torch.maximum(torch.minimum(chunk.x, hi), lo))
            if chunk.sparse is not None:
                chunk.sparse.restore(chunk.x)
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")


def _labels(net: nn.Module, chunk: _Chunk, own: bool) -> torch.Tensor:
    """The chunk's labels: its targets', or the teacher's prediction when it had no given labels."""
    if not own:
        return chunk.targets.argmax(dim=-1).cpu()
    with torch.no_grad():
        return net(chunk.x).argmax(dim=-1).cpu()


def synthesis_model(model: nn.Module, cfg: SynthConfig) -> nn.Module:
    """The network to invert: ``model`` itself, or a prepared copy when attention must be read."""
    needs_attention = cfg.generator in PSE_GENERATORS or (cfg.generator == "spdfq" and cfg.apa)
    if cfg.generator == "zeroq":
        require_batchnorm(model)
    if not needs_attention or attention_modules(model):
        return model
    net = copy.deepcopy(model)
    require_attention(net, _component(cfg))
    return net


def synthesize(model: nn.Module, input_shape: tuple[int, ...], cfg: SynthConfig,
               normalization: Normalization | None = None, progress: bool = True) -> SyntheticSet:
    """Synthesize ``cfg.n_images`` calibration images of ``input_shape`` (C, H, W) for ``model``.

    ``model`` is left unchanged (eval mode during synthesis, its training flag restored; no
    gradient reaches its parameters). ``normalization`` defaults by channel count (see
    :func:`squeeze.dfq.config.normalization_for`).
    """
    if len(input_shape) != 3:
        raise SqueezeError(f"synthesis needs image inputs (C, H, W), got shape {tuple(input_shape)}")
    norm = normalization or normalization_for(None, input_shape[0])
    bounds = norm.bounds(input_shape[0])
    gen = torch.Generator().manual_seed(cfg.seed)
    start = time.perf_counter()
    if cfg.generator == "noise":
        x = torch.randn(cfg.n_images, *input_shape, generator=gen)
        images = torch.maximum(torch.minimum(x, bounds[1]), bounds[0])
        return SyntheticSet(images, torch.full((cfg.n_images,), -1), norm, cfg, time.perf_counter() - start)
    net = synthesis_model(model, cfg)
    was_training = net.training
    net.eval()
    device = model_device(net)
    sizes = [min(cfg.batch_size, cfg.n_images - i) for i in range(0, cfg.n_images, cfg.batch_size)]
    images, labels = [], []
    try:
        with tqdm(total=cfg.iters * len(sizes), desc=f"synthesize {cfg.generator}", disable=not progress) as bar:
            for n in sizes:
                chunk = _init_chunk(net, n, tuple(input_shape), bounds, cfg, gen, device)
                # the student is copied before the attention hooks go on, so it carries none
                student = (minmax_student(model, chunk.x.detach(), cfg.student_wbits, cfg.student_abits,
                                          cfg.student_lr) if cfg.generator == "psaq-vit-v2" else None)
                _optimize(net, chunk, cfg, bounds, gen, bar, student)
                images.append(chunk.x.detach().cpu())
                labels.append(_labels(net, chunk, student is not None or cfg.generator == "zeroq"))
    finally:
        net.train(was_training)
    return SyntheticSet(torch.cat(images), torch.cat(labels), norm, cfg, time.perf_counter() - start)
