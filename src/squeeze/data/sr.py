"""Super-resolution pairs from the offline photos: bicubic x2 / x4 degradation, patches and test images.

High-resolution (HR) images are the photos of :mod:`squeeze.data.photos` (fixed train/val/test split
by image name), first reduced so that the short side is at most :data:`HR_SHORT_SIDE` pixels (the
mate-backgrounds photos are 1280-2560 px JPEGs; reducing them removes JPEG blocking and keeps memory
and evaluation time small), then cropped at the bottom/right to a multiple of the scale ("mod crop").

Low-resolution (LR) images are made the way DIV2K's "bicubic" track makes them: the whole HR image
is downscaled by the scale factor with **Pillow's** ``Image.resize(..., BICUBIC)``, which is
antialiased (the cubic kernel is stretched by the scale factor on downscaling, like MATLAB's
``imresize``), and stored as 8-bit. Pillow's cubic uses a = -0.5 (as MATLAB), so values are close to,
but not bit-identical with, MATLAB's ``imresize``.

* Training: random aligned HR/LR patch pairs from the *train* photos (random flips and 90° turns),
  drawn from a seeded generator, so a batch is a pure function of its seed.
* Validation / test: deterministic centre crops (at most :data:`EVAL_CROP` px HR) of the val/test
  photos, one pair per photo.

User images (``load_image``): greyscale is replicated to RGB, an alpha channel is dropped when fully
opaque and refused otherwise, files that are not images and images smaller than the scale factor
are refused, each with one :class:`~squeeze.errors.SqueezeError` line.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from squeeze.data.photos import load_photo, photo_split
from squeeze.errors import SqueezeError

HR_SHORT_SIDE = 512  # HR photos are reduced to at most this short side (antialiased bicubic)
EVAL_CROP = 384  # val/test HR centre crop (px, before the mod crop)
SCALES = (2, 3, 4)


def check_scale(scale: int) -> None:
    """Refuse a super-resolution scale the data and models do not offer."""
    if scale not in SCALES:
        raise SqueezeError(f"scale {scale!r} is not supported; use one of {SCALES}")


def mod_crop(img: np.ndarray, scale: int) -> np.ndarray:
    """Crop an (H, W, C) image at the bottom/right so H and W are multiples of ``scale``."""
    h, w = img.shape[0] - img.shape[0] % scale, img.shape[1] - img.shape[1] % scale
    if h < scale or w < scale:
        raise SqueezeError(f"image of {img.shape[1]}x{img.shape[0]} px is smaller than the scale factor {scale}; "
                           "use a larger image")
    return img[:h, :w]


def bicubic_resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a uint8 (H, W, 3) image to ``size`` = (width, height) with Pillow's antialiased bicubic."""
    return np.asarray(Image.fromarray(img).resize(size, Image.Resampling.BICUBIC), dtype=np.uint8)


def degrade(hr: np.ndarray, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """``(hr_cropped, lr)``: the HR image mod-cropped to ``scale`` and its bicubic downscale (both uint8)."""
    check_scale(scale)
    hr = mod_crop(hr, scale)
    return hr, bicubic_resize(hr, (hr.shape[1] // scale, hr.shape[0] // scale))


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) -> float (3, H, W) in [0, 1]."""
    return torch.from_numpy(np.array(img, dtype=np.uint8, copy=True)).permute(2, 0, 1).float().div_(255.0)


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """float (3, H, W) in [0, 1] -> uint8 (H, W, 3) (clamped, rounded)."""
    return img.detach().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()


def bicubic_upscale(lr: torch.Tensor, scale: int) -> torch.Tensor:
    """The bicubic baseline: an LR float image (3, h, w) upscaled by ``scale`` with Pillow, as float."""
    up = bicubic_resize(to_uint8(lr), (lr.shape[-1] * scale, lr.shape[-2] * scale))
    return to_tensor(up)


# ---------------------------------------------------------------------------------------------------
# user images


def _rgb_from_pil(img: Image.Image, where: str) -> np.ndarray:
    """8-bit RGB array from a PIL image: grey replicated, opaque alpha dropped, transparency refused."""
    img = ImageOps.exif_transpose(img)
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode.startswith("I"):  # 16/32-bit grey: keep the top 8 of 16 bits
        img = Image.fromarray(np.clip(np.asarray(img, dtype=np.int64) >> 8, 0, 255).astype(np.uint8))
    if img.mode in ("RGBA", "LA", "La", "RGBa", "PA"):
        alpha = np.asarray(img.getchannel("A"))
        if alpha.min() < 255:
            raise SqueezeError(f"{where} has a transparent alpha channel; flatten it onto a background "
                               "(e.g. save as RGB) before upscaling")
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def load_image(path: str | Path, min_side: int = 1) -> np.ndarray:
    """Read an image file as uint8 (H, W, 3) RGB (see module docstring for the conversions and refusals)."""
    path = Path(path)
    if not path.is_file():
        raise SqueezeError(f"{path} does not exist; pass an image file (PNG, JPEG, ...)")
    try:
        with Image.open(path) as img:
            img.load()
            rgb = _rgb_from_pil(img, str(path))
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise SqueezeError(f"{path} is not a readable image ({type(exc).__name__}); pass a PNG or JPEG file") from exc
    if min(rgb.shape[:2]) < min_side:
        raise SqueezeError(f"{path} is {rgb.shape[1]}x{rgb.shape[0]} px, smaller than {min_side} px; "
                           "use a larger image")
    return rgb


# ---------------------------------------------------------------------------------------------------
# photos -> pairs


@lru_cache(maxsize=64)
def hr_photo(name: str, short_side: int = HR_SHORT_SIDE) -> np.ndarray:
    """Photo ``name`` as uint8 (H, W, 3), reduced (never enlarged) to a short side of ``short_side``."""
    img = load_photo(name)
    factor = short_side / min(img.shape[:2])
    if factor < 1:
        size = (max(1, round(img.shape[1] * factor)), max(1, round(img.shape[0] * factor)))
        img = bicubic_resize(img, size)
    img.setflags(write=False)
    return img


@lru_cache(maxsize=16)
def train_pairs(scale: int, short_side: int = HR_SHORT_SIDE) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """Every train photo as a whole ``(hr, lr)`` uint8 pair (cached; patches are cut from these)."""
    return tuple(degrade(hr_photo(n, short_side), scale) for n in photo_split("train"))


def random_patches(pairs: tuple[tuple[np.ndarray, np.ndarray], ...], n: int, lr_patch: int, scale: int,
                   gen: np.random.Generator, augment: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` aligned random patch pairs: LR (n, 3, p, p) and HR (n, 3, p*s, p*s), float in [0, 1].

    Each patch picks a photo uniformly, then a uniform LR position; the HR patch covers the same
    area. With ``augment`` a random horizontal flip and a random number of 90° turns are applied to
    both (EDSR's augmentation).
    """
    usable = [p for p in pairs if min(p[1].shape[:2]) >= lr_patch]
    if not usable:
        raise SqueezeError(f"no training photo is large enough for LR patches of {lr_patch} px")
    lrs, hrs = [], []
    for _ in range(n):
        hr, lr = usable[int(gen.integers(len(usable)))]
        y = int(gen.integers(lr.shape[0] - lr_patch + 1))
        x = int(gen.integers(lr.shape[1] - lr_patch + 1))
        lp = lr[y:y + lr_patch, x:x + lr_patch]
        hp = hr[y * scale:(y + lr_patch) * scale, x * scale:(x + lr_patch) * scale]
        if augment:
            turns, flip = int(gen.integers(4)), bool(gen.integers(2))
            lp, hp = (np.rot90(a[:, ::-1] if flip else a, turns) for a in (lp, hp))
        lrs.append(to_tensor(lp))
        hrs.append(to_tensor(hp))
    return torch.stack(lrs), torch.stack(hrs)


def calib_patches(scale: int, n: int, seed: int, lr_patch: int = 48) -> torch.Tensor:
    """``n`` LR calibration patches (n, 3, lr_patch, lr_patch) from the train photos (no augmentation)."""
    if n < 1:
        raise SqueezeError(f"need at least 1 calibration patch, got {n}")
    gen = np.random.default_rng(seed)
    return random_patches(train_pairs(scale), n, lr_patch, scale, gen, augment=False)[0]


def _centre_crop(img: np.ndarray, size: int) -> np.ndarray:
    h, w = img.shape[:2]
    ch, cw = min(h, size), min(w, size)
    top, left = (h - ch) // 2, (w - cw) // 2
    return img[top:top + ch, left:left + cw]


@lru_cache(maxsize=16)
def eval_pairs(split: str, scale: int, crop: int = EVAL_CROP) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
    """Deterministic ``(lr, hr)`` float pairs, one per photo of ``split`` (``val`` or ``test``).

    HR = centre crop of at most ``crop`` px of the reduced photo, mod-cropped; LR = its bicubic downscale.
    """
    if split not in ("val", "test"):
        raise SqueezeError(f"evaluation split {split!r} is unknown; use 'val' or 'test'")
    out = []
    for name in photo_split(split):
        hr, lr = degrade(_centre_crop(hr_photo(name), crop), scale)
        out.append((to_tensor(lr), to_tensor(hr)))
    return tuple(out)
