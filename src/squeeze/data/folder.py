"""A user's own labelled images in an ImageFolder layout: ``root/<class>/<image>``.

For example an ImageNet validation set arranged as ``val/n01440764/ILSVRC2012_val_00000293.JPEG``.
Classes are the sub-folder names in sorted order (label ``i`` = ``classes[i]``). Images are read
with PIL; every failure (missing folder, no class folders, an empty class, an unreadable file) is a
one-line :class:`~squeeze.errors.SqueezeError` naming the path and what to do.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from squeeze.errors import SqueezeError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
Transform = Callable[[Image.Image], torch.Tensor]


def to_tensor(img: Image.Image) -> torch.Tensor:
    """An RGB PIL image as a float (3, H, W) tensor in [0, 1]."""
    arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)


def eval_transform(size: int | tuple[int, int], mean: Sequence[float] = (0.485, 0.456, 0.406),
                   std: Sequence[float] = (0.229, 0.224, 0.225), crop_pct: float = 0.875) -> Transform:
    """The usual ImageNet evaluation transform: resize short side to ``size / crop_pct``, centre crop, normalize.

    ``size`` is an int or ``(height, width)``; pass a timm model's ``resolve_data_config`` values
    to match its training preprocessing.
    """
    height, width = (size, size) if isinstance(size, int) else size
    mean_t = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)

    def apply(img: Image.Image) -> torch.Tensor:
        img = img.convert("RGB")
        scale = max(height, width) / crop_pct / min(img.size)
        resized = img.resize((max(width, round(img.width * scale)), max(height, round(img.height * scale))),
                             Image.Resampling.BICUBIC)
        left, top = (resized.width - width) // 2, (resized.height - height) // 2
        return (to_tensor(resized.crop((left, top, left + width, top + height))) - mean_t) / std_t

    return apply


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def scan_folder(root: str | Path) -> tuple[list[str], list[tuple[Path, int]]]:
    """Sorted class names and ``(path, label)`` samples (sorted by class, then file name)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        what = "is a file, not a folder" if root.exists() else "does not exist"
        raise SqueezeError(f"image folder {root} {what}; pass a folder laid out as ROOT/CLASS/IMAGE")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise SqueezeError(f"image folder {root} has no class sub-folders; put each class's images "
                           "in its own folder (ROOT/CLASS/IMAGE)")
    samples: list[tuple[Path, int]] = []
    for label, name in enumerate(classes):
        files = sorted(p for p in (root / name).rglob("*") if _is_image(p))
        if not files:
            raise SqueezeError(f"class folder {root / name} holds no images ({', '.join(IMAGE_EXTENSIONS)}); "
                               "add images or remove the folder")
        samples.extend((p, label) for p in files)
    return classes, samples


def read_image(path: Path) -> Image.Image:
    """Open and fully decode an image as RGB, or raise a one-line error naming the file."""
    try:
        with Image.open(path) as img:
            img.load()
            return ImageOps.exif_transpose(img).convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise SqueezeError(f"cannot read image {path} ({type(exc).__name__}); "
                           "delete or replace the file, then rerun") from exc


class ImageFolderData(torch.utils.data.Dataset):
    """Labelled images from ``root/<class>/<image>``; item ``i`` is ``(transform(image), label)``.

    Attributes:
        root: the folder given.
        classes: sorted class-folder names; ``class_to_idx`` maps a name to its label.
        samples: ``(path, label)`` for every image, sorted by class then file name.
    """

    def __init__(self, root: str | Path, transform: Transform | None = None) -> None:
        self.root = Path(root).expanduser()
        self.classes, self.samples = scan_folder(self.root)
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}
        self.transform = transform if transform is not None else to_tensor

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        x = self.transform(read_image(path))
        if not isinstance(x, torch.Tensor):
            raise SqueezeError(f"the transform returned {type(x).__name__} for {path}; it must return a tensor")
        return x, label

    @property
    def targets(self) -> list[int]:
        """Labels of all samples, in order."""
        return [label for _, label in self.samples]

    def tensors(self, limit: int | None = None, seed: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Stack samples into ``(images, labels)`` tensors (all images must share one shape).

        Args:
            limit: keep at most this many samples (all when None).
            seed: when given, take a seed-shuffled subset instead of the first ``limit`` samples.
        """
        order = list(range(len(self)))
        if seed is not None:
            order = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed)).tolist()
        order = order[:limit] if limit is not None else order
        items = [self[i] for i in order]
        shapes = {tuple(x.shape) for x, _ in items}
        if len(shapes) > 1:
            raise SqueezeError(f"images in {self.root} have different sizes {sorted(shapes)[:3]}; "
                               "pass a transform that resizes them, e.g. eval_transform(224)")
        return torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items], dtype=torch.int64)
