"""Saving, loading and applying restoration networks; ``squeeze restore MODEL IN.png OUT.png [--mask M.png]``.

A restorer file is one safetensors file: the :class:`~squeeze.restore.nets.RestoreNet` weights, and in
the header ``format = squeeze.restorer``, ``format_version``, the network shape (JSON) and free
metadata (JSON: method, training config, ...). Files of another format, a newer version, or whose
tensors do not fit the recorded shape are refused with one line; nothing is unpickled.
:func:`restore_file` writes its output through a temporary file and a rename, so it never leaves a
half-written image.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from squeeze.data.sr import load_image, to_tensor, to_uint8
from squeeze.errors import SqueezeError
from squeeze.restore.evaluate import run_tiled
from squeeze.restore.nets import RestoreNet
from squeeze.train.checkpoint import atomic_save_tensors, read_format_file

FORMAT = "squeeze.restorer"
FORMAT_VERSION = 1
MIN_SIDE = 16  # smallest image side `restore` accepts (px)


def save_restorer(path: str | Path, model: RestoreNet, meta: dict[str, Any]) -> Path:
    """Write ``model`` and JSON-able ``meta`` to ``path`` (a ``.safetensors`` file, atomically)."""
    path = Path(path)
    header = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "net": json.dumps(model.config()),
              "meta": json.dumps(meta, sort_keys=True)}
    atomic_save_tensors(path, dict(model.state_dict()), metadata=header)
    return path


def load_restorer(path: str | Path, expect: dict[str, Any] | None = None) -> tuple[RestoreNet, dict[str, Any]]:
    """Load a file written by :func:`save_restorer` as ``(model in eval mode, meta)``.

    ``expect``: metadata entries the file must carry with these exact values (e.g. the training
    config it was made with); a file made with another config is refused with one line.
    """
    target, header, tensors = read_format_file(path, "model.safetensors", FORMAT, FORMAT_VERSION,
                                               "restoration model", "squeeze train undem")
    try:
        net_cfg, meta = json.loads(header["net"]), json.loads(header["meta"])
        model = RestoreNet(**{k: int(net_cfg[k]) for k in ("in_channels", "width", "levels", "blocks")})
    except (KeyError, TypeError, ValueError, json.JSONDecodeError) as exc:
        raise SqueezeError(f"{target} has damaged restorer metadata ({type(exc).__name__}); re-create it") from exc
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise SqueezeError(f"{target}: its weights do not fit the recorded network shape {net_cfg}; "
                           "re-create the file") from exc
    for key, value in (expect or {}).items():
        if meta.get(key) != value:
            raise SqueezeError(f"{target} was made with another {key} ({_short(meta.get(key))}, wanted "
                               f"{_short(value)}); retrain it or pass the matching file")
    return model.eval(), meta


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."


def load_mask(path: str | Path, size: tuple[int, int]) -> np.ndarray:
    """A greyscale mask image as float (H, W) in [0, 1]; it must be ``size`` = (H, W)."""
    path = Path(path)
    if not path.is_file():
        raise SqueezeError(f"mask {path} does not exist; pass a greyscale mask image")
    try:
        with Image.open(path) as img:
            mask = np.asarray(img.convert("L"), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise SqueezeError(f"mask {path} is not a readable image ({type(exc).__name__}); pass a PNG") from exc
    if mask.shape != size:
        raise SqueezeError(f"mask {path} is {mask.shape[1]}x{mask.shape[0]} px but the image is "
                           f"{size[1]}x{size[0]}; pass a mask of the same size")
    return mask


def output_format(out: Path) -> str:
    """Pillow's format name for ``out``; refuses an unknown suffix or a missing folder (check before any work)."""
    fmt = Image.registered_extensions().get(out.suffix.lower())
    if fmt is None:
        raise SqueezeError(f"cannot tell the image format of {out.name}; use a .png (or .jpg/.tif) name")
    if not out.parent.is_dir():
        raise SqueezeError(f"output folder {out.parent} does not exist; create it first")
    return fmt


def save_image_atomic(img: np.ndarray, out: str | Path) -> Path:
    """Write a uint8 (H, W, 3) image to ``out`` through a temporary file and a rename."""
    out = Path(out)
    fmt = output_format(out)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        Image.fromarray(img).save(tmp, format=fmt)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def restore_file(model_path: str | Path, in_png: str | Path, out_png: str | Path, mask_png: str | Path | None = None,
                 tile: int = 256, overlap: int = 16, progress: bool = True) -> Path:
    """Restore image ``in_png`` with the restorer file ``model_path`` into ``out_png`` (atomic write).

    Models trained with a side channel (``in_channels`` 4, e.g. HQSS's shadow mask) need ``mask_png``;
    plain RGB models refuse one. Non-images, images under :data:`MIN_SIDE` px, transparent images and
    an output that would overwrite the input are refused before any work.
    """
    out = Path(out_png)
    if Path(in_png).resolve() == out.resolve():
        raise SqueezeError("the output would overwrite the input image; choose another output name")
    output_format(out)
    model, _ = load_restorer(model_path)
    rgb = load_image(in_png, min_side=MIN_SIDE)
    x = to_tensor(rgb)
    extra = model.in_channels - 3
    if extra and mask_png is None:
        raise SqueezeError(f"{model_path} needs a mask ({extra} extra channel); pass --mask MASK.png")
    if not extra and mask_png is not None:
        raise SqueezeError(f"{model_path} takes RGB only; drop --mask")
    if extra:
        mask = torch.from_numpy(load_mask(mask_png, rgb.shape[:2]))  # type: ignore[arg-type]
        x = torch.cat([x, mask[None].expand(extra, -1, -1)], 0)
    restored = run_tiled(model, x, tile=tile, overlap=overlap, progress=progress)
    return save_image_atomic(to_uint8(restored), out)
