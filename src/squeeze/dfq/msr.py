"""Multi-Semantic Reinforcement (SPDFQ, Zhong et al., arXiv 2412.16553): localized patch optimization.

Each synthetic image gets m in 1..K non-overlapping boxes, each with its own target class. A box is
cropped out of the image and resized to the full input size, then classified on its own. Because
the crop is a slice of the image tensor, the loss of a box sends gradient only to the pixels inside
that box.

Boxes are drawn one per quadrant of the image (at most 4 per image, hence non-overlapping), with a
side between ``min_frac`` and 1/2 of the image side.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Box:
    """A region of image ``image``: rows ``top:top + h``, columns ``left:left + w``, target ``label``."""

    image: int
    top: int
    left: int
    h: int
    w: int
    label: int


def draw_boxes(n_images: int, size: tuple[int, int], max_boxes: int, n_classes: int, gen: torch.Generator,
               min_frac: float = 0.3) -> list[Box]:
    """Random non-overlapping boxes: for each image m ~ U{1..max_boxes} distinct quadrants, one box each."""
    if not 1 <= max_boxes <= 4:
        raise ValueError("max_boxes must be 1..4 (one box per image quadrant)")
    hh, hw = size[0] // 2, size[1] // 2
    boxes = []
    for i in range(n_images):
        m = int(torch.randint(1, max_boxes + 1, (1,), generator=gen))
        for q in torch.randperm(4, generator=gen)[:m].tolist():
            bh = int(torch.randint(max(2, round(min_frac * size[0])), hh + 1, (1,), generator=gen))
            bw = int(torch.randint(max(2, round(min_frac * size[1])), hw + 1, (1,), generator=gen))
            top = (q // 2) * hh + int(torch.randint(0, hh - bh + 1, (1,), generator=gen))
            left = (q % 2) * hw + int(torch.randint(0, hw - bw + 1, (1,), generator=gen))
            label = int(torch.randint(0, n_classes, (1,), generator=gen))
            boxes.append(Box(i, top, left, bh, bw, label))
    return boxes


def crop_resize(x: torch.Tensor, boxes: list[Box], size: tuple[int, int]) -> torch.Tensor:
    """Crop each box out of ``x`` (B, C, H, W) and resize it bilinearly to ``size``: (len(boxes), C, *size)."""
    crops = [F.interpolate(x[b.image:b.image + 1, :, b.top:b.top + b.h, b.left:b.left + b.w], size=size,
                           mode="bilinear", align_corners=False) for b in boxes]
    return torch.cat(crops)


def box_mask(boxes: list[Box], shape: tuple[int, ...]) -> torch.Tensor:
    """Boolean mask (B, 1, H, W) of the pixels covered by ``boxes`` (for tests and the docs)."""
    mask = torch.zeros(shape[0], 1, *shape[-2:], dtype=torch.bool)
    for b in boxes:
        mask[b.image, :, b.top:b.top + b.h, b.left:b.left + b.w] = True
    return mask
