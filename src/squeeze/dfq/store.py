"""Save and load synthetic sets: safetensors + JSON (no pickle), and a de-normalized PNG contact sheet.

``save_synthetic(sset, folder)`` writes, each atomically (temporary file, then rename):

* ``synthetic.safetensors``: ``images`` (N, C, H, W) float32, normalized as the model expects, and
  ``labels`` (N,) int64 (-1 for noise); the header metadata carries the JSON description too;
* ``synthetic.json``: shape, normalization, generator, seed, synthesis config and seconds;
* ``synthetic.png``: a contact sheet of the images *de-normalized* to [0, 1] (PSAQ-ViT issue #3:
  images viewed without de-normalization look like noise).
"""
from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from squeeze.dfq.config import Normalization, SynthConfig
from squeeze.dfq.synth import SyntheticSet
from squeeze.errors import SqueezeError
from squeeze.train.checkpoint import atomic_save_tensors, atomic_write_bytes, load_tensors, write_json

FORMAT = 1
TENSORS, META, SHEET = "synthetic.safetensors", "synthetic.json", "synthetic.png"


def describe(sset: SyntheticSet) -> dict[str, Any]:
    """JSON description of a synthetic set (stored in the file header and next to it)."""
    return {"format": FORMAT, "shape": list(sset.images.shape), "generator": sset.config.generator,
            "seed": sset.config.seed, "normalization": {"mean": list(sset.normalization.mean),
                                                       "std": list(sset.normalization.std)},
            "synthesis": sset.config.to_dict(), "seconds": sset.seconds, "info": sset.info}


def calibration_record(sset: SyntheticSet) -> dict[str, Any]:
    """What a quantized model records of the synthetic images it was calibrated on (its report's ``calibration``)."""
    return {"source": f"synthetic:{sset.config.generator}", "images": len(sset.images),
            "synthesis_seconds": sset.seconds}


def contact_sheet_png(images: torch.Tensor, norm: Normalization, columns: int | None = None) -> bytes:
    """PNG bytes of a grid of the de-normalized images (grey for 1 channel), 1 px gaps."""
    from PIL import Image  # noqa: PLC0415 (installed with matplotlib)

    x = norm.denormalize(images)
    n, c, h, w = x.shape
    cols = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    sheet = torch.ones(c, rows * (h + 1) + 1, cols * (w + 1) + 1)
    for i in range(n):
        r, k = divmod(i, cols)
        sheet[:, 1 + r * (h + 1):1 + r * (h + 1) + h, 1 + k * (w + 1):1 + k * (w + 1) + w] = x[i]
    array = (sheet * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    image = Image.fromarray(array[..., 0] if c == 1 else array[..., :3])
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def save_synthetic(sset: SyntheticSet, folder: Path) -> Path:
    """Write the set's three files into ``folder``; returns the safetensors path."""
    folder = Path(folder)
    meta = describe(sset)
    path = folder / TENSORS
    atomic_save_tensors(path, {"images": sset.images.float().contiguous(), "labels": sset.labels.long()},
                        metadata={"squeeze_dfq": json.dumps(meta)})
    write_json(folder / META, meta)
    atomic_write_bytes(folder / SHEET, contact_sheet_png(sset.images, sset.normalization))
    return path


def _header(path: Path) -> dict[str, Any]:
    try:
        with safe_open(str(path), framework="pt") as handle:
            raw = (handle.metadata() or {}).get("squeeze_dfq")
        meta = json.loads(raw) if raw else None
    except Exception as exc:  # noqa: BLE001 (corrupt header: reported below in one line)
        raise SqueezeError(f"{path} is not a valid synthetic set ({exc}); re-create it with squeeze.dfq") from exc
    if not isinstance(meta, dict) or "shape" not in meta:
        raise SqueezeError(f"{path} has no synthetic-set description; it was not written by squeeze.dfq")
    if int(meta.get("format", 0)) > FORMAT:
        raise SqueezeError(f"{path} was written by a newer squeeze (format {meta['format']}); upgrade squeeze")
    return meta


def load_synthetic(path: Path, input_shape: tuple[int, ...] | None = None) -> SyntheticSet:
    """Load a set written by :func:`save_synthetic` (``path``: the folder or its safetensors file).

    Refuses, with one line, a missing or corrupt file, images that are not (N, C, H, W) or disagree
    with the recorded shape, NaN/inf, and images whose (C, H, W) differs from ``input_shape``.
    """
    path = Path(path)
    path = path / TENSORS if path.is_dir() else path
    if not path.is_file():
        raise SqueezeError(f"synthetic set {path} does not exist; pass a folder written by `squeeze quantize "
                           "--method spdfq` (or save_synthetic) or its synthetic.safetensors")
    tensors = load_tensors(path)
    meta = _header(path)
    images = tensors.get("images")
    if images is None or images.dim() != 4 or list(images.shape) != list(meta["shape"]):
        got = None if images is None else tuple(images.shape)
        raise SqueezeError(f"{path}: images of shape {got} do not match the recorded shape {meta['shape']}; "
                           "the file is damaged, re-create it")
    if not torch.isfinite(images).all():
        raise SqueezeError(f"{path}: images contain NaN or inf; re-create the synthetic set")
    if input_shape is not None and tuple(images.shape[1:]) != tuple(input_shape):
        raise SqueezeError(f"{path}: synthetic images are {tuple(images.shape[1:])} but the model takes "
                           f"{tuple(input_shape)}; synthesize a set for this model")
    norm = Normalization(tuple(meta["normalization"]["mean"]), tuple(meta["normalization"]["std"]))
    labels = tensors.get("labels", torch.full((len(images),), -1))
    return SyntheticSet(images, labels, norm, SynthConfig.from_dict(meta["synthesis"]), float(meta["seconds"]),
                        dict(meta.get("info", {})))
