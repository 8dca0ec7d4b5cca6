"""Fashion-MNIST from the Debian package ``dataset-fashion-mnist`` (IDX files, gzip).

Xiao, Rasul, Vollgraf, "Fashion-MNIST: a Novel Image Dataset for Benchmarking Machine Learning
Algorithms", 2017. The loader never downloads: it looks in ``$SQUEEZE_FMNIST_DIR`` and then in the
Debian install path, and says how to install the package when nothing is found.
"""
from __future__ import annotations

import gzip
import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from squeeze.errors import SqueezeError

FMNIST_MEAN = 0.2860
FMNIST_STD = 0.3530
_SEARCH = ("/usr/share/datasets/fashion-mnist",)
_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def find_fashion_mnist() -> Path:
    """Return the folder holding the four Fashion-MNIST IDX files, or raise a clear error."""
    candidates = [os.environ.get("SQUEEZE_FMNIST_DIR", ""), *_SEARCH]
    for folder in filter(None, candidates):
        path = Path(folder)
        if all((path / f).is_file() for pair in _FILES.values() for f in pair):
            return path
    raise SqueezeError(
        "Fashion-MNIST not found: install it with `apt-get install dataset-fashion-mnist` "
        "(or run `make setup`), or point SQUEEZE_FMNIST_DIR at a folder with the four IDX .gz files"
    )


def _read_idx(path: Path) -> np.ndarray:
    """Parse one gzip'd IDX file (big-endian header: magic, dims) into a uint8 array."""
    try:
        raw = gzip.open(path, "rb").read()
    except (OSError, EOFError) as exc:
        raise SqueezeError(f"cannot read {path}: {exc}; reinstall dataset-fashion-mnist") from exc
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise SqueezeError(f"{path} is truncated; reinstall dataset-fashion-mnist")
    return data.reshape(dims)


@lru_cache(maxsize=2)
def _load_raw(split: str) -> tuple[np.ndarray, np.ndarray]:
    folder = find_fashion_mnist()
    images, labels = (_read_idx(folder / f) for f in _FILES[split])
    return images, labels


def load_fashion_mnist(split: str = "train", normalize: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Load a split as ``(images, labels)``.

    Returns:
        images: float32 tensor of shape (N, 1, 28, 28), normalized with the dataset mean/std
            when ``normalize`` (else in [0, 1]); labels: int64 tensor of shape (N,).
    """
    if split not in _FILES:
        raise SqueezeError(f"unknown Fashion-MNIST split {split!r}; use 'train' or 'test'")
    images, labels = _load_raw(split)
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    if normalize:
        x = (x - FMNIST_MEAN) / FMNIST_STD
    return x, torch.from_numpy(labels.astype(np.int64))
