"""``edsr-x2`` / ``edsr-x4``: small EDSR-baseline super-resolution networks, their recipe and zoo entries.

Architecture after Lim et al., "Enhanced Deep Residual Networks for Single Image Super-Resolution"
(CVPRW 2017), the *baseline* variant: mean shift, a 3x3 head conv, ``n_blocks`` residual blocks
(conv3x3-ReLU-conv3x3, output scaled by ``res_scale``, no batch norm), a body-tail conv plus a global
skip, a pixel-shuffle upsampler (one conv + PixelShuffle(2) per factor 2) and a 3x3 tail conv.
Scaled down for 2 CPU cores (8 blocks of 32 features instead of 16 of 64). The mean shift is a fixed
buffer subtraction (not a 1x1 conv), so quantizers never see it. Inputs and outputs are RGB in [0, 1].
One addition to EDSR (``image_skip``, on for the zoo models): the output adds a bicubic upscale of the
input (:class:`BicubicUpscale`), so the network learns the residual over bicubic, as lightweight SR networks
(VDSR, ESPCN-style) do; with the short CPU recipe this converges far faster than learning the whole
image. The quantized layers (residual-block convs) are unchanged by it.

The body is an ``nn.Sequential`` of identical ``ResBlock`` s only (the body-tail conv sits outside),
so the block-stack finder of :mod:`squeeze.quant.calibrate` and DFSQ's default layer choice pick
exactly the residual-block convs, the layers the DFSQ paper quantizes.

Training (``squeeze train edsr-x2``): L1 loss, Adam (beta2 0.999), random LR patches with flips and
turns from the train photos, cosine learning-rate decay, on the shared engine
(:mod:`squeeze.train.engine`). The metric is PSNR on the Y channel (border shave = scale) of the
test photos (:func:`squeeze.data.sr.eval_pairs`).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from squeeze.data import sr as srdata
from squeeze.devices import model_device
from squeeze.errors import SqueezeError
from squeeze.metrics.sr import psnr_y, quantize_8bit, ssim_y
from squeeze.train.checkpoint import atomic_save_tensors, load_tensors, write_json
from squeeze.train.classifier import lr_factor
from squeeze.train.engine import EngineConfig, StepContext, derived_seed, fit
from squeeze.zoo.registry import ZooModel, register_model

CHECKPOINTS = Path(__file__).parent / "checkpoints"
RGB_MEAN = (0.45, 0.44, 0.40)  # approximate mean colour of natural photos (EDSR uses DIV2K's)


@dataclass(frozen=True)
class EDSRArch:
    """Shape of an EDSR-baseline network (stored next to its checkpoint)."""

    scale: int = 2
    n_blocks: int = 8
    n_feats: int = 32
    res_scale: float = 1.0  # EDSR-baseline uses 1.0; the large EDSR uses 0.1
    image_skip: bool = True  # add a bicubic upscale of the input to the output (not in EDSR; see docstring)

    def __post_init__(self) -> None:
        if self.scale not in (2, 3, 4):
            raise SqueezeError(f"EDSR scale {self.scale} is not supported; use 2, 3 or 4")
        if self.n_blocks < 1 or self.n_feats < 1:
            raise SqueezeError("EDSR needs n_blocks >= 1 and n_feats >= 1")


class ResBlock(nn.Module):
    """conv3x3 - ReLU - conv3x3, scaled by ``res_scale``, plus the identity (no batch norm)."""

    def __init__(self, feats: int, res_scale: float) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(feats, feats, 3, padding=1)
        self.conv2 = nn.Conv2d(feats, feats, 3, padding=1)
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(x))) * self.res_scale


def _upsampler(scale: int, feats: int) -> nn.Sequential:
    """Sub-pixel upsampler: (conv F->4F, PixelShuffle(2)) per factor 2, or conv F->9F + shuffle(3)."""
    layers: list[nn.Module] = []
    if scale == 3:
        return nn.Sequential(nn.Conv2d(feats, 9 * feats, 3, padding=1), nn.PixelShuffle(3))
    for _ in range(int(math.log2(scale))):
        layers += [nn.Conv2d(feats, 4 * feats, 3, padding=1), nn.PixelShuffle(2)]
    return nn.Sequential(*layers)


_CUBIC_A = -0.75  # Keys' cubic convolution parameter used by PyTorch's (and OpenCV's) bicubic


def _cubic(d: float) -> float:
    """Keys' cubic convolution weight at distance ``d`` from the sample."""
    d, a = abs(d), _CUBIC_A
    if d <= 1:
        return ((a + 2) * d - (a + 3)) * d * d + 1
    return (((d - 5) * d + 8) * d - 4) * a if d < 2 else 0.0


def bicubic_phase_kernels(scale: int) -> torch.Tensor:
    """(scale*scale, 1, 5, 5) filters: output phase ``(dy, dx)`` of an integer-factor bicubic upscale.

    Output pixel ``i = scale*k + p`` samples source position ``k + o_p``, ``o_p = (p + 0.5)/scale - 0.5``
    (``align_corners=False``); its four taps lie within ``k-2 .. k+2``, hence 5-tap filters over an input
    padded by 2 with edge replication (PyTorch clamps the tap indices the same way).
    """
    taps = torch.zeros(scale, 5, dtype=torch.float64)
    for p in range(scale):
        o = (p + 0.5) / scale - 0.5
        base = math.floor(o)
        for j in range(-1, 3):  # taps base-1 .. base+2 around k, at column index + 2
            taps[p, base + j + 2] = _cubic(o - (base + j))
    return torch.einsum("ai,bj->abij", taps, taps).reshape(scale * scale, 1, 5, 5).float()


class BicubicUpscale(nn.Module):
    """Bicubic upscale by an integer factor, equal to ``F.interpolate(..., mode="bicubic")`` to float rounding.

    Written as edge padding + a fixed grouped 5x5 conv + pixel shuffle rather than ``interpolate``: ONNX
    Runtime's cubic ``Resize`` kernel took ~25 % of an exported ``edsr-x2``'s time, the conv form ~1 %.
    The filters are a non-persistent buffer (a constant in exports, absent from checkpoints); a plain
    ``F.conv2d``, so quantizers leave it float. (N, channels, H, W) -> (N, channels, H*scale, W*scale).
    """

    def __init__(self, scale: int, channels: int = 3) -> None:
        super().__init__()
        self.scale, self.channels = scale, channels
        self.register_buffer("kernels", bicubic_phase_kernels(scale).repeat(channels, 1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        phases = F.conv2d(F.pad(x, (2, 2, 2, 2), mode="replicate"), self.kernels, groups=self.channels)
        return F.pixel_shuffle(phases, self.scale)


class EDSR(nn.Module):
    """EDSR-baseline: (N, 3, h, w) LR in [0, 1] -> (N, 3, h*scale, w*scale) (not clamped)."""

    def __init__(self, arch: EDSRArch = EDSRArch()) -> None:
        super().__init__()
        self.arch = arch
        f = arch.n_feats
        self.register_buffer("rgb_mean", torch.tensor(RGB_MEAN).view(1, 3, 1, 1), persistent=False)
        self.head = nn.Conv2d(3, f, 3, padding=1)
        self.body = nn.Sequential(*(ResBlock(f, arch.res_scale) for _ in range(arch.n_blocks)))
        self.body_tail = nn.Conv2d(f, f, 3, padding=1)
        self.upsample = _upsampler(arch.scale, f)
        self.tail = nn.Conv2d(f, 3, 3, padding=1)
        self.bicubic = BicubicUpscale(arch.scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.head(x - self.rgb_mean)
        h = h + self.body_tail(self.body(h))
        if self.arch.image_skip:  # the network predicts the residual over a bicubic upscale
            base = self.bicubic(x)
        else:
            base = self.rgb_mean
        return self.tail(self.upsample(h)) + base


def build_edsr(arch: EDSRArch = EDSRArch()) -> EDSR:
    """An untrained EDSR-baseline network (PyTorch default init)."""
    return EDSR(arch)


# ---------------------------------------------------------------------------------------------------
# evaluation


@torch.no_grad()
def sr_scores(model: nn.Module, pairs: tuple[tuple[torch.Tensor, torch.Tensor], ...], scale: int,
              progress: bool = True) -> dict[str, float]:
    """Mean PSNR-Y / SSIM-Y (shave = scale) of ``model`` over ``(lr, hr)`` pairs, one image at a time.

    The output is clamped and rounded to 8 bits first, as SR test scripts save PNGs.
    """
    model.eval()
    device = model_device(model)
    psnrs, ssims = [], []
    for lr, hr in tqdm(pairs, desc="evaluate", leave=False, disable=not progress):
        out = model(lr[None].to(device))[0].float().cpu()
        if out.shape != hr.shape:
            raise SqueezeError(f"the SR model maps {tuple(lr.shape)} to {tuple(out.shape)}, not {tuple(hr.shape)}; "
                               f"is it an x{scale} model?")
        out = quantize_8bit(out)
        psnrs.append(psnr_y(out, hr, scale))
        ssims.append(ssim_y(out, hr, scale))
    return {"psnr_y": float(np.mean(psnrs)), "ssim_y": float(np.mean(ssims))}


def bicubic_scores(pairs: tuple[tuple[torch.Tensor, torch.Tensor], ...], scale: int) -> dict[str, float]:
    """PSNR-Y / SSIM-Y of plain bicubic upscaling on the same pairs (the floor a trained net must beat)."""
    psnrs = [psnr_y(srdata.bicubic_upscale(lr, scale), hr, scale) for lr, hr in pairs]
    ssims = [ssim_y(srdata.bicubic_upscale(lr, scale), hr, scale) for lr, hr in pairs]
    return {"psnr_y": float(np.mean(psnrs)), "ssim_y": float(np.mean(ssims))}


# ---------------------------------------------------------------------------------------------------
# training


@dataclass
class SRRecipe:
    """Hyper-parameters of the EDSR recipe (stored beside the checkpoint)."""

    epochs: int = 16
    steps_per_epoch: int = 250
    batch_size: int = 16
    lr_patch: int = 32  # LR patch side; the HR patch is lr_patch * scale
    lr: float = 5e-4
    min_lr_ratio: float = 0.02  # cosine decay to lr * min_lr_ratio
    seed: int = 0

    def __post_init__(self) -> None:
        if min(self.epochs, self.steps_per_epoch, self.batch_size, self.lr_patch) < 1 or self.lr <= 0:
            raise SqueezeError("epochs, steps_per_epoch, batch_size, lr_patch and lr must be positive")


class SRTask:
    """Super-resolution training (L1, Adam, random patches) as an engine :class:`~squeeze.train.engine.Task`."""

    find_unused_parameters = False

    def __init__(self, name: str, arch: EDSRArch, recipe: SRRecipe, val_limit: int | None = None) -> None:
        self.name, self.arch, self.recipe = name, arch, recipe
        self.epochs, self.seed = recipe.epochs, recipe.seed
        self.val_limit = val_limit

    def identity(self) -> dict[str, Any]:
        return {"arch": asdict(self.arch), "recipe": asdict(self.recipe)}

    def build(self) -> tuple[nn.Module, list[torch.optim.Optimizer]]:
        model = build_edsr(self.arch)
        return model, [torch.optim.Adam(model.parameters(), lr=self.recipe.lr, betas=(0.9, 0.999))]

    def steps_per_epoch(self, world: int) -> int:
        return self.recipe.steps_per_epoch

    def batches(self, epoch: int, rank: int, world: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        r = self.recipe
        if r.batch_size % world:
            raise SqueezeError(f"batch size {r.batch_size} does not split over {world} processes; use a multiple")
        pairs = srdata.train_pairs(self.arch.scale)
        gen = np.random.default_rng(derived_seed(r.seed, epoch, rank, 23))
        for _ in range(r.steps_per_epoch):
            yield srdata.random_patches(pairs, r.batch_size // world, r.lr_patch, self.arch.scale, gen)

    def train_step(self, ctx: StepContext, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, float]:
        r = self.recipe
        factor = lr_factor(ctx.step, ctx.total_steps, floor=r.min_lr_ratio)
        for opt in ctx.optimizers:
            for group in opt.param_groups:
                group["lr"] = r.lr * factor
        lr, hr = (t.to(ctx.device) for t in batch)
        loss = F.l1_loss(ctx.model(lr), hr)
        ctx.backward(loss)
        return {"loss": loss.item()}

    def evaluate(self, module: nn.Module) -> dict[str, float]:
        pairs = srdata.eval_pairs("val", self.arch.scale)[: self.val_limit]
        return {f"val_{k}": v for k, v in sr_scores(module, pairs, self.arch.scale).items()}


ZOO_ARCH = {"edsr-x2": EDSRArch(scale=2), "edsr-x4": EDSRArch(scale=4)}


def train_edsr(name: str, engine: EngineConfig, out: Path = CHECKPOINTS, recipe: SRRecipe | None = None,
               subset: int | None = None) -> float:
    """Train zoo model ``name`` and write ``out/NAME.{safetensors,json}`` (float16); returns test PSNR-Y.

    ``subset`` limits validation to that many photos and skips writing (smoke runs only); a run
    stopped early by ``engine.max_epochs`` does not write either.
    """
    if name not in ZOO_ARCH:
        raise SqueezeError(f"no EDSR recipe for {name!r}; use one of {', '.join(ZOO_ARCH)}")
    arch, recipe = ZOO_ARCH[name], recipe or SRRecipe()
    result = fit(SRTask(name, arch, recipe, val_limit=subset), engine)
    test = srdata.eval_pairs("test", arch.scale)
    scores = sr_scores(result.module, test, arch.scale)
    finished = bool(result.log) and result.log[-1]["epoch"] == recipe.epochs
    if result.rank != 0 or subset or not finished:
        return scores["psnr_y"]
    from squeeze.report import package_versions  # noqa: PLC0415

    bicubic = bicubic_scores(test, arch.scale)
    weights = {k: v.to(torch.float16) for k, v in result.module.state_dict().items()}
    atomic_save_tensors(out / f"{name}.safetensors", weights)
    write_json(out / f"{name}.json", {
        "name": name, "arch": asdict(arch), "recipe": asdict(recipe), "command": f"squeeze train {name}",
        "test_psnr_y_fp32": scores["psnr_y"], "test_ssim_y_fp32": scores["ssim_y"],
        "test_bicubic_psnr_y": bicubic["psnr_y"], "test_bicubic_ssim_y": bicubic["ssim_y"],
        "gain_over_bicubic_db": scores["psnr_y"] - bicubic["psnr_y"], "log": result.log,
        "engine": {"accelerator": engine.accelerator, "devices": engine.devices, "nodes": engine.nodes},
        "versions": package_versions(),
    })
    return scores["psnr_y"]


# ---------------------------------------------------------------------------------------------------
# zoo entries


def load_edsr_float(name: str, folder: Path = CHECKPOINTS) -> tuple[EDSR, dict]:
    """The committed float checkpoint of ``name`` as a float32 eval-mode network, with its recipe JSON."""
    meta_path, weights = folder / f"{name}.json", folder / f"{name}.safetensors"
    if not meta_path.is_file() or not weights.is_file():
        raise SqueezeError(f"{name} checkpoint missing ({weights.name} / {meta_path.name} not in {folder}); "
                           f"run `squeeze train {name}` to create it")
    meta = json.loads(meta_path.read_text())
    model = build_edsr(EDSRArch(**meta["arch"]))
    state = load_tensors(weights)
    try:
        model.load_state_dict({k: v.float() for k, v in state.items()})
    except RuntimeError as exc:
        raise SqueezeError(f"{weights} does not match its recipe's architecture; re-run `squeeze train {name}`") \
            from exc
    return model.eval(), meta


def sr_zoo_model(name: str, model: nn.Module, scale: int, info: dict[str, str] | None = None) -> ZooModel:
    """Wrap an x``scale`` SR network as a :class:`ZooModel` (metric ``psnr_y`` on the test photos)."""
    def calib(n: int, seed: int) -> torch.Tensor:
        return srdata.calib_patches(scale, n, seed)

    def evaluate(m: nn.Module) -> float:
        return sr_scores(m, srdata.eval_pairs("test", scale), scale)["psnr_y"]

    return ZooModel(name, model, "psnr_y", calib, evaluate, (3, 48, 48), dict(info or {}))


def _zoo_loader(name: str) -> ZooModel:
    model, meta = load_edsr_float(name)
    return sr_zoo_model(name, model, meta["arch"]["scale"], {
        "source": f"squeeze train {name}", "fp_psnr_y_recorded": str(meta.get("test_psnr_y_fp32")),
        "bicubic_psnr_y": str(meta.get("test_bicubic_psnr_y"))})


@register_model("edsr-x2", "EDSR-baseline x2 super-resolution (8 blocks, 32 feats) on photos; PSNR-Y")
def load_edsr_x2() -> ZooModel:
    """The committed EDSR-baseline x2 checkpoint with its photo test set (PSNR-Y)."""
    return _zoo_loader("edsr-x2")


@register_model("edsr-x4", "EDSR-baseline x4 super-resolution (8 blocks, 32 feats) on photos; PSNR-Y")
def load_edsr_x4() -> ZooModel:
    """The committed EDSR-baseline x4 checkpoint with its photo test set (PSNR-Y)."""
    return _zoo_loader("edsr-x4")
