"""``squeeze upscale MODEL IN.png OUT.png``: run a float or quantized SR network on a user's image, tile by tile.

The LR image is cut into ``tile`` x ``tile`` pieces; each runs with ``overlap`` extra pixels of context
on every side (clipped at the image border) and only its centre is kept, so peak memory is that of
one tile whatever the photo's size. With ``overlap`` at least the network's receptive radius (about
``2 * n_blocks + 4`` LR pixels for EDSR) the result equals a whole-image pass up to float rounding.
DFSQ's dynamic normalization uses per-tile statistics, so a DFSQ model tiled differs slightly
from a whole-image pass (as it would on any deployment that tiles).

The output is written to a temporary file in the target folder and renamed, so a failure never
leaves a half-written image.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from squeeze.data.sr import load_image, to_tensor, to_uint8
from squeeze.errors import SqueezeError
from squeeze.restore.io import output_format, save_image_atomic


def resolve_sr_model(model_or_run: nn.Module | str | Path) -> nn.Module:
    """An ``nn.Module`` as is; a folder/``.safetensors`` written by ``squeeze quantize``; or a zoo name."""
    if isinstance(model_or_run, nn.Module):
        return model_or_run.eval()
    path = Path(model_or_run)
    if path.is_dir() or path.suffix == ".safetensors":
        from squeeze.export.format import load  # noqa: PLC0415

        return load(path).eval()
    from squeeze.zoo.registry import load_model  # noqa: PLC0415

    return load_model(str(model_or_run)).model.eval()


@torch.no_grad()
def infer_scale(model: nn.Module, device: torch.device | str = "cpu") -> int:
    """The model's integer upscaling factor, from one forward pass on a 3x8x8 input."""
    try:
        out = model(torch.zeros(1, 3, 8, 8, device=device))
    except (RuntimeError, ValueError) as exc:
        raise SqueezeError(f"the model does not take RGB images ({str(exc).splitlines()[0]}); "
                           "pass a super-resolution model") from exc
    if out.ndim != 4 or out.shape[1] != 3 or out.shape[2] != out.shape[3] or out.shape[2] % 8:
        raise SqueezeError(f"the model maps a 3x8x8 image to {tuple(out.shape[1:])}; it is not an "
                           "image-to-image super-resolution model")
    return out.shape[2] // 8


@torch.no_grad()
def upscale_array(model: nn.Module, lr: np.ndarray, scale: int, tile: int = 128, overlap: int = 16,
                  device: torch.device | str = "cpu", progress: bool = True) -> np.ndarray:
    """Super-resolve a uint8 (H, W, 3) image tile by tile; returns uint8 (H*scale, W*scale, 3)."""
    if tile < 8 or overlap < 0:
        raise SqueezeError(f"tile={tile} must be >= 8 and overlap={overlap} >= 0")
    h, w = lr.shape[:2]
    out = np.zeros((h * scale, w * scale, 3), dtype=np.uint8)
    starts = [(y, x) for y in range(0, h, tile) for x in range(0, w, tile)]
    for y0, x0 in tqdm(starts, desc="upscale", leave=False, disable=not progress):
        y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
        cy0, cx0 = max(0, y0 - overlap), max(0, x0 - overlap)  # tile plus context
        cy1, cx1 = min(h, y1 + overlap), min(w, x1 + overlap)
        piece = to_tensor(lr[cy0:cy1, cx0:cx1])[None].to(device)
        sr = model(piece)[0].float().cpu()
        top, left = (y0 - cy0) * scale, (x0 - cx0) * scale
        core = sr[:, top:top + (y1 - y0) * scale, left:left + (x1 - x0) * scale]
        out[y0 * scale:y1 * scale, x0 * scale:x1 * scale] = to_uint8(core)
    return out


def upscale(model_or_run_dir: nn.Module | str | Path, in_png: str | Path, out_png: str | Path, tile: int = 128,
            overlap: int = 16, device: str = "cpu", progress: bool = True) -> Path:
    """Super-resolve image file ``in_png`` into ``out_png`` (atomic write); returns the output path.

    ``model_or_run_dir``: an ``nn.Module``, a zoo name (``edsr-x2``) or a quantized run folder.
    Greyscale inputs are converted to RGB, opaque alpha is dropped, transparent alpha and
    non-images are refused (see :func:`squeeze.data.sr.load_image`).
    """
    from squeeze.devices import resolve_device  # noqa: PLC0415

    out = Path(out_png)
    if Path(in_png).resolve() == out.resolve():
        raise SqueezeError("the output would overwrite the input image; choose another output name")
    output_format(out)
    dev = resolve_device(device)
    model = resolve_sr_model(model_or_run_dir).to(dev)
    scale = infer_scale(model, dev)
    lr = load_image(in_png, min_side=scale)
    save_image_atomic(upscale_array(model, lr, scale, tile, overlap, dev, progress), out)
    return out
