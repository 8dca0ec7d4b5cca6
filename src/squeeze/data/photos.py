"""Natural photos from offline sources, with a fixed train/val/test split by image name.

Sources (nothing is ever downloaded):

* scikit-image's *bundled* sample images (van der Walt et al., "scikit-image: image processing in
  Python", 2014), read directly from the files inside ``skimage/data`` so that pooch (which fetches
  the non-bundled images) is never involved. Only real photographs are listed: no synthetic
  images (checkerboard, colorwheel, logo, phantom, horse silhouette) and no near-duplicates.
* matplotlib's ``sample_data/grace_hopper.jpg``.
* Debian ``mate-backgrounds`` nature photos (``/usr/share/backgrounds/mate/nature/*.jpg``, 12 photos
  of 1280x1024 to 2560x1920, GPL-2+), when that package is installed; named ``mate_<stem>``.

Split: every image goes to ``train``, ``val`` or ``test`` by a SHA-256 hash of its name (salted with
:data:`SPLIT_SALT`): ``u = first 8 hash bytes / 2**64``; ``u < 0.6`` is train, ``u < 0.8`` val, else
test. An image's split depends only on its own name, so installing or removing a source never moves
other images. The salt was chosen once so that val and test each get colour photos from both
scikit-image and mate-backgrounds. With every source installed the split is:

* val: astronaut, chelsea, page, mate_dune, mate_freshflower
* test: coffee, coins, motorcycle, mate_blinds, mate_ladybird, mate_wood
* train: the other 19 (brick, camera, clock, grace_hopper, grass, gravel, hubble_deep_field,
  immunohistochemistry, moon, retina, rocket, text and 7 mate photos).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from squeeze.errors import SqueezeError

SPLIT_SALT = "squeeze-photos-v16"
SPLIT_BOUNDS = {"train": (0.0, 0.6), "val": (0.6, 0.8), "test": (0.8, 1.0)}
MATE_NATURE_DIR = Path("/usr/share/backgrounds/mate/nature")
PHOTO_EXTENSIONS = (".jpg", ".jpeg", ".png")

# Bundled scikit-image photographs: our name -> file name inside ``skimage/data``.
SKIMAGE_PHOTOS = {
    "astronaut": "astronaut.png",
    "brick": "brick.png",
    "camera": "camera.png",
    "chelsea": "chelsea.png",
    "clock": "clock_motion.png",
    "coffee": "coffee.png",
    "coins": "coins.png",
    "grass": "grass.png",
    "gravel": "gravel.png",
    "hubble_deep_field": "hubble_deep_field.jpg",
    "immunohistochemistry": "ihc.png",
    "moon": "moon.png",
    "motorcycle": "motorcycle_left.png",
    "page": "page.png",
    "retina": "retina.jpg",
    "rocket": "rocket.jpg",
    "text": "text.png",
}


@dataclass(frozen=True)
class PhotoRef:
    """One available photo: its unique ``name`` and where it comes from (``source``)."""

    name: str
    source: str
    path: Path


def _skimage_dir() -> Path | None:
    """Folder of scikit-image's bundled data files, or None when scikit-image is absent."""
    try:
        import skimage  # noqa: PLC0415 (optional dependency)
    except ImportError:
        return None
    folder = Path(skimage.__file__).parent / "data"
    return folder if folder.is_dir() else None


def _skimage_refs() -> list[PhotoRef]:
    folder = _skimage_dir()
    if folder is None:
        return []
    return [PhotoRef(name, "scikit-image", folder / fname)
            for name, fname in SKIMAGE_PHOTOS.items() if (folder / fname).is_file()]


def _matplotlib_refs() -> list[PhotoRef]:
    try:
        import matplotlib  # noqa: PLC0415 (optional dependency)
    except ImportError:
        return []
    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    return [PhotoRef("grace_hopper", "matplotlib", path)] if path.is_file() else []


def _mate_refs() -> list[PhotoRef]:
    folder = Path(os.environ.get("SQUEEZE_MATE_DIR", MATE_NATURE_DIR))
    if not folder.is_dir():
        return []
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in PHOTO_EXTENSIONS and p.is_file())
    return [PhotoRef("mate_" + p.stem.lower(), "mate-backgrounds", p) for p in files]


def list_photos() -> list[PhotoRef]:
    """Every photo available on this machine, sorted by name (sources that are absent are skipped)."""
    refs = {r.name: r for r in (*_skimage_refs(), *_matplotlib_refs(), *_mate_refs())}
    return [refs[n] for n in sorted(refs)]


def split_of(name: str) -> str:
    """The fixed split (``train``/``val``/``test``) of an image name, from a salted SHA-256 hash."""
    digest = hashlib.sha256(f"{SPLIT_SALT}/{name}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    return next(s for s, (lo, hi) in SPLIT_BOUNDS.items() if lo <= u < hi)


def photo_split(split: str) -> list[str]:
    """Sorted names of the available photos in ``split`` (``'train'``, ``'val'`` or ``'test'``)."""
    if split not in SPLIT_BOUNDS:
        raise SqueezeError(f"unknown photo split {split!r}; use 'train', 'val' or 'test'")
    names = [r.name for r in list_photos() if split_of(r.name) == split]
    if not names:
        raise SqueezeError(f"no photos available for split {split!r}; install scikit-image "
                           "(`pip install 'squeeze[data]'`) or `apt-get install mate-backgrounds`")
    return names


def _find(name: str) -> PhotoRef:
    refs = {r.name: r for r in list_photos()}
    if name not in refs:
        known = ", ".join(refs) or "none (install scikit-image or mate-backgrounds)"
        raise SqueezeError(f"unknown photo {name!r}; available: {known}")
    return refs[name]


def _open_rgb(path: Path) -> Image.Image:
    """Open an image file as 8-bit RGB (EXIF orientation applied, grey replicated, alpha dropped)."""
    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img)
            if img.mode.startswith("I"):  # 16/32-bit grey: keep the top 8 of 16 bits
                grey = np.clip(np.asarray(img, dtype=np.int64) >> 8, 0, 255).astype(np.uint8)
                img = Image.fromarray(grey)
            return img.convert("RGB")
    except OSError as exc:
        raise SqueezeError(f"cannot read photo {path} ({exc}); reinstall the package that provides it") from exc


def load_photo(name: str) -> np.ndarray:
    """Load a photo by name as a uint8 array of shape (H, W, 3)."""
    return np.asarray(_open_rgb(_find(name).path), dtype=np.uint8).copy()


@lru_cache(maxsize=64)
def _downscaled(name: str, short_side: int) -> Image.Image:
    """The photo resized (up or down) so that its short side is ``short_side`` px."""
    img = _open_rgb(_find(name).path)
    scale = short_side / min(img.size)
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)


def _one_crop(img: Image.Image, size: int, rng: np.random.Generator, min_frac: float) -> np.ndarray:
    """A random square crop covering ``min_frac``..1 of the short side, resized to ``size``."""
    short = min(img.size)
    side = int(round(short * rng.uniform(min_frac, 1.0)))
    left = int(rng.integers(0, img.width - side + 1))
    top = int(rng.integers(0, img.height - side + 1))
    crop = img.resize((size, size), Image.Resampling.BICUBIC, box=(left, top, left + side, top + side))
    return np.asarray(crop, dtype=np.uint8)


def photo_crops(split: str, n: int, size: int = 224, seed: int = 0, min_frac: float = 0.4) -> torch.Tensor:
    """``n`` square crops of ``size`` px from the photos of ``split``, as float (n, 3, size, size) in [0, 1].

    Photos are used round-robin in a seed-shuffled order; each crop covers a random
    ``min_frac``..1 fraction of the (pre-downscaled, short side ``2*size``) photo's short side at a
    random position. The same ``(split, n, size, seed)`` and installed sources give the same crops.
    """
    if n < 1 or size < 1:
        raise SqueezeError(f"need n >= 1 crops of size >= 1, got n={n}, size={size}")
    names = photo_split(split)
    rng = np.random.default_rng(seed)
    order = [names[i] for i in rng.permutation(len(names))]
    crops = [_one_crop(_downscaled(order[i % len(order)], 2 * size), size, rng, min_frac) for i in range(n)]
    x = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).contiguous()
    return x.float().div_(255.0)
