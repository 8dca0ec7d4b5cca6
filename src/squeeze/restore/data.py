"""Paired and unpaired patch sampling for restoration training, and image folders of user data.

* :func:`paired_patches`: aligned random crops of ``(degraded, clean)`` image pairs (supervised training).
* :func:`unpaired_patches`: random crops of a pool of images with no partner (UnDeM's moire set and its
  clean set, HQSS's shadow images).
* :func:`load_image_folder`: every image of a folder as uint8 arrays, refusing non-images and images
  smaller than the patch size with one line each.

All sampling draws from a ``numpy.random.Generator`` the caller seeds, so a batch is a pure function
of its seed; random flips and 90 degree turns are applied identically to both images of a pair.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from squeeze.data.sr import load_image, to_tensor
from squeeze.errors import SqueezeError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def _augment(arrays: Sequence[np.ndarray], gen: np.random.Generator) -> list[np.ndarray]:
    turns, flip = int(gen.integers(4)), bool(gen.integers(2))
    return [np.ascontiguousarray(np.rot90(a[:, ::-1] if flip else a, turns)) for a in arrays]


def _crop_origin(shape: tuple[int, ...], patch: int, gen: np.random.Generator) -> tuple[int, int]:
    return int(gen.integers(shape[0] - patch + 1)), int(gen.integers(shape[1] - patch + 1))


def check_patch_size(images: Sequence[np.ndarray], patch: int, what: str) -> None:
    """Refuse a pool with no image, or with an image smaller than ``patch`` on a side."""
    if not images:
        raise SqueezeError(f"no {what} images given")
    small = [i for i, im in enumerate(images) if min(im.shape[:2]) < patch]
    if small:
        im = images[small[0]]
        raise SqueezeError(f"{what} image #{small[0]} is {im.shape[1]}x{im.shape[0]} px, smaller than the "
                           f"{patch} px patch; use larger images or a smaller patch")


def paired_patches(pairs: Sequence[tuple[np.ndarray, np.ndarray]], n: int, patch: int, gen: np.random.Generator,
                   augment: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` aligned crops: degraded (n, C, p, p) and clean (n, 3, p, p), float in [0, 1].

    ``pairs``: ``(degraded (H, W, C), clean (H, W, 3))`` uint8 (or float in [0, 1]) arrays of equal H, W.
    """
    check_patch_size([p[0] for p in pairs], patch, "paired")
    xs, ys = [], []
    for _ in range(n):
        deg, clean = pairs[int(gen.integers(len(pairs)))]
        y0, x0 = _crop_origin(deg.shape, patch, gen)
        crops = [a[y0:y0 + patch, x0:x0 + patch] for a in (deg, clean)]
        if augment:
            crops = _augment(crops, gen)
        xs.append(_as_tensor(crops[0]))
        ys.append(_as_tensor(crops[1]))
    return torch.stack(xs), torch.stack(ys)


def unpaired_patches(images: Sequence[np.ndarray], n: int, patch: int, gen: np.random.Generator,
                     augment: bool = True) -> torch.Tensor:
    """``n`` random crops (n, C, p, p) in [0, 1] from a pool of (H, W, C) images."""
    check_patch_size(images, patch, "unpaired")
    out = []
    for _ in range(n):
        img = images[int(gen.integers(len(images)))]
        y0, x0 = _crop_origin(img.shape, patch, gen)
        crop = img[y0:y0 + patch, x0:x0 + patch]
        out.append(_as_tensor(_augment([crop], gen)[0] if augment else crop))
    return torch.stack(out)


def _as_tensor(img: np.ndarray) -> torch.Tensor:
    """(H, W, C) uint8 or float array -> float (C, H, W) in [0, 1]."""
    if img.dtype == np.uint8:
        return to_tensor(img)
    return torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32)).permute(2, 0, 1).contiguous()


def load_image_folder(folder: str | Path, min_side: int) -> list[np.ndarray]:
    """Every image file of ``folder`` (sorted by name) as uint8 (H, W, 3).

    Files with an image suffix that do not decode, and images with a side under ``min_side``, are
    refused with one line naming the file; files without an image suffix are ignored.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise SqueezeError(f"{folder} is not a folder; pass a folder of PNG/JPEG images")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise SqueezeError(f"{folder} holds no images (looked for {', '.join(IMAGE_SUFFIXES)})")
    return [load_image(p, min_side=min_side) for p in files]
