"""Training and test data of the shadow-removal variants: simulated (default) or a folder of the user's.

* ``sim``: ``train_images`` crops of the *train* photos with simulated shadows
  (:mod:`squeeze.synth.shadow`); HQSS and ``darken`` get the shadow images and masks only, ``paired``
  also their shadow-free targets, ``mask-shadowgan`` also ``clean_images`` *other* crops of the train
  photos as its unpaired shadow-free set. The held-out test triplets are crops of the *test* photos.
* a folder: ``shadow/`` (or ISTD's ``train_A/``) images with same-named masks in ``mask/`` (``train_B/``),
  optionally shadow-free images in ``free/`` (``train_C/``). Every image is resized to ``size`` x
  ``size`` (masks: bilinear then > 0.5). Non-images, a mask whose size differs from its image, a
  missing mask, and empty or all-shadow masks are refused with one line naming the file.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from squeeze.data.sr import load_image, to_tensor
from squeeze.errors import SqueezeError
from squeeze.methods.hqss.config import HQSSConfig
from squeeze.methods.hqss.decouple import check_shadow_pair

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
FOLDERS = {"shadow": ("shadow", "train_A"), "mask": ("mask", "train_B"), "free": ("free", "train_C")}
TEST_SEED = 10_000  # the test triplets' seed offset (the same for every variant of a seed)


@dataclass
class ShadowData:
    """Tensors in [0, 1]: ``images`` (N, 3, S, S), ``masks`` (N, 1, S, S) in {0, 1}; ``targets`` (N, 3, S, S)
    only where the variant may use them (``paired``); ``clean`` (M, 3, S, S) unpaired shadow-free images
    (``mask-shadowgan``); ``test`` = (images, masks, targets) held out, when known; ``source`` names it."""

    images: torch.Tensor
    masks: torch.Tensor
    targets: torch.Tensor | None
    clean: torch.Tensor | None
    test: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None
    source: str


def simulated_data(cfg: HQSSConfig) -> ShadowData:
    """The simulated training set of ``cfg.variant`` and the held-out test triplets (see module docstring)."""
    from squeeze.data.photos import photo_crops  # noqa: PLC0415
    from squeeze.synth.shadow import photo_shadow_triplets  # noqa: PLC0415

    images, masks, targets = photo_shadow_triplets("train", cfg.train_images, cfg.size, cfg.seed)
    test = photo_shadow_triplets("test", cfg.test_images, cfg.size, cfg.seed + TEST_SEED)
    clean = photo_crops("train", cfg.clean_images, cfg.size, cfg.seed + 1) if cfg.variant == "mask-shadowgan" else None
    return ShadowData(images, masks, targets if cfg.variant == "paired" else None, clean, test,
                      f"sim:{cfg.train_images}x{cfg.size}:s{cfg.seed}")


def _sub(root: Path, kind: str, required: bool) -> Path | None:
    for name in FOLDERS[kind]:
        if (root / name).is_dir():
            return root / name
    if required:
        raise SqueezeError(f"{root} has no {' or '.join(n + '/' for n in FOLDERS[kind])} folder; put the shadow "
                           "images in shadow/ and their masks (same names) in mask/")
    return None


def _files(folder: Path) -> dict[str, Path]:
    files = {p.stem: p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES}
    if not files:
        raise SqueezeError(f"{folder} holds no images (looked for {', '.join(IMAGE_SUFFIXES)})")
    return files


def load_mask_file(path: Path) -> torch.Tensor:
    """A mask image as float (1, H, W) in [0, 1] (any mode; converted to grey)."""
    try:
        with Image.open(path) as img:
            grey = np.asarray(img.convert("L"), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise SqueezeError(f"mask {path} is not a readable image ({type(exc).__name__}); pass a PNG mask") from exc
    return torch.from_numpy(grey)[None]


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(x[None], size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0]


def load_pair(image_path: Path, mask_path: Path, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One user shadow image and its mask, checked at their own size, then resized to ``size``."""
    image = to_tensor(load_image(image_path, min_side=4))
    mask = load_mask_file(mask_path)
    check_shadow_pair(image, mask, where=str(image_path))
    image, mask = _resize(image, size).clamp(0, 1), (_resize(mask, size) > 0.5).float()
    check_shadow_pair(image, mask, where=f"{image_path} at {size}x{size} px")
    return image, mask


def folder_data(cfg: HQSSConfig) -> ShadowData:
    """The user's folder as training data (no held-out test set; see the module docstring)."""
    root = Path(cfg.data)
    if not root.is_dir():
        raise SqueezeError(f"data {cfg.data!r} is neither 'sim' nor a folder; pass --set data=sim or a folder with "
                           "shadow/ and mask/")
    shadows, masks = _files(_sub(root, "shadow", True)), _files(_sub(root, "mask", True))  # type: ignore[arg-type]
    missing = sorted(set(shadows) - set(masks))
    if missing:
        raise SqueezeError(f"shadow image {shadows[missing[0]].name} has no mask of the same name in "
                           f"{_sub(root, 'mask', True)}; add it or remove the image")
    pairs = [load_pair(shadows[k], masks[k], cfg.size) for k in sorted(shadows)]
    images, ms = torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])
    free_dir = _sub(root, "free", False)
    free = None
    if free_dir is not None:
        free = torch.stack([_resize(to_tensor(load_image(p, min_side=4)), cfg.size).clamp(0, 1)
                            for p in _files(free_dir).values()])
    if cfg.variant == "paired" and (free is None or len(free) != len(images)):
        raise SqueezeError(f"the paired variant needs a shadow-free image per shadow image in {root}/free/ "
                           "(same names)")
    if cfg.variant == "mask-shadowgan" and free is None:
        raise SqueezeError(f"mask-shadowgan needs unpaired shadow-free images in {root}/free/")
    return ShadowData(images, ms, free if cfg.variant == "paired" else None,
                      free if cfg.variant == "mask-shadowgan" else None, None, f"folder:{root.resolve()}:{len(images)}")


def load_shadow_data(cfg: HQSSConfig) -> ShadowData:
    """Training (and, for simulated data, test) data of ``cfg`` (see the module docstring)."""
    data = simulated_data(cfg) if cfg.data == "sim" else folder_data(cfg)
    for i, (img, m) in enumerate(zip(data.images, data.masks)):
        check_shadow_pair(img, m, where=f"training image #{i}")
    return data
