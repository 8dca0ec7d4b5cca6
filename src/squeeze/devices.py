"""Where a model lives: the one helper evaluators and calibration use to follow it onto a GPU."""
from __future__ import annotations

import torch
from torch import nn


def model_device(model: nn.Module) -> torch.device:
    """Device of the model's first parameter or buffer (CPU for a model with neither)."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda`` or ``cuda:N``; ``cuda`` without a GPU is refused with one clear line."""
    from squeeze.errors import SqueezeError  # noqa: PLC0415

    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise SqueezeError(f"unknown device {name!r}; use cpu or cuda") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SqueezeError(f"device {name!r} asked for but no CUDA GPU is visible; use --device cpu")
    return device
