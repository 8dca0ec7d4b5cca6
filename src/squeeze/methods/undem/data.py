"""Data for UnDeM runs: the unpaired moire / clean pools, the withheld pairs, tiling and complexity grouping.

Paper: Zhang et al., "Learning Image Demoireing from Unpaired Real Data", AAAI 2024. The paper's moire
photos (FHDMi/UHDM) are replaced by :mod:`squeeze.synth.moire` captures of offline photos:

* pool A: crops of half of the *train* photos, photographed by the simulator -> the "real" moire set.
  Their clean targets are kept only for the ``paired`` upper bound; UnDeM never sees them.
* pool B: crops of the other half of the train photos -> the unrelated clean set.
* test: crops of the *test* photos, photographed with other seeds -> held-out (moire, clean) pairs.

Or the user's own folders (``squeeze train undem --moire DIR --clean DIR``).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from squeeze.data.photos import photo_split
from squeeze.data.sr import hr_photo
from squeeze.errors import SqueezeError
from squeeze.methods.undem.math import colorfulness, complexity_groups, edge_strength, tile_image
from squeeze.restore.data import check_patch_size, load_image_folder
from squeeze.synth.moire import simulate_pair


@dataclass
class UnpairedData:
    """Unpaired training data (uint8 (H, W, 3) images) plus optional withheld pairs and test pairs."""

    moire: list[np.ndarray]
    clean: list[np.ndarray]
    identity: str
    paired: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)  # (moire, target): oracle only
    test: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)


def _digest(arrays: list[np.ndarray]) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(str(a.shape).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:12]


def random_crops(names: list[str], n: int, size: int, rng: np.random.Generator, short_side: int) -> list[np.ndarray]:
    """``n`` random ``size`` px square crops from photos ``names`` (round robin over those at least ``size``
    px on each side, reduced to ``short_side``)."""
    photos = [img for img in (hr_photo(name, short_side) for name in names) if min(img.shape[:2]) >= size]
    if not photos:  # e.g. scikit-image's 172 px high "text" is skipped for 176 px crops
        raise SqueezeError(f"no photo among {names} is at least {size} px on each side; use a smaller size")
    out = []
    for i in range(n):
        img = photos[i % len(photos)]
        y = int(rng.integers(img.shape[0] - size + 1))
        x = int(rng.integers(img.shape[1] - size + 1))
        out.append(np.ascontiguousarray(img[y:y + size, x:x + size]))
    return out


def simulated_data(n_moire: int, n_clean: int, n_test: int, size: int, seed: int, supersample: int = 4,
                   short_side: int = 384, progress: bool = True) -> UnpairedData:
    """Pools A (simulated moire, targets withheld) and B (clean) from the train photos, test pairs from the
    test photos (see the module docstring). Deterministic in its arguments."""
    train = photo_split("train")
    pool_a, pool_b = train[0::2], train[1::2]  # disjoint photos: clean pool never shows a moire scene
    rng = np.random.default_rng(seed)
    screens = random_crops(pool_a, n_moire, size, rng, short_side)
    clean = random_crops(pool_b, n_clean, size, rng, short_side)
    test_screens = random_crops(photo_split("test"), n_test, size, np.random.default_rng(seed + 7919), short_side)
    paired, test = [], []
    jobs = [(s, 1_000_000 + seed * 10_000 + i, paired) for i, s in enumerate(screens)]
    jobs += [(s, 2_000_000 + seed * 10_000 + i, test) for i, s in enumerate(test_screens)]
    for screen, sim_seed, dest in tqdm(jobs, desc="simulate moire", leave=False, disable=not progress):
        moire, target, _ = simulate_pair(screen, sim_seed, supersample=supersample)
        dest.append((moire, target))
    ident = f"sim:{n_moire}/{n_clean}/{n_test}/{size}/{seed}/{supersample}/{short_side}/" + \
        _digest([m for m, _ in paired] + clean)
    return UnpairedData([m for m, _ in paired], clean, ident, paired, test)


def folder_data(moire_dir: str | Path, clean_dir: str | Path, tile: int) -> UnpairedData:
    """The user's unpaired folders (every image must be at least ``tile`` px on each side)."""
    moire = load_image_folder(moire_dir, min_side=tile)
    clean = load_image_folder(clean_dir, min_side=tile)
    return UnpairedData(moire, clean, "folders:" + _digest(moire + clean))


def moire_tiles(images: list[np.ndarray], tile: int) -> torch.Tensor:
    """All non-overlapping ``tile`` px tiles of the moire images: uint8 (N, 3, tile, tile)."""
    check_patch_size(images, tile, "moire")
    tiles = [t for img in images for t in tile_image(img, tile)]
    return torch.from_numpy(np.stack(tiles)).permute(0, 3, 1, 2).contiguous()


def group_tiles(tiles: torch.Tensor, groups: int) -> torch.Tensor:
    """Complexity class (0..groups-1) of every uint8 tile (N, 3, T, T), by UnDeM's C*E and E/C rule."""
    x = tiles.float() / 255.0
    labels = complexity_groups(colorfulness(x), edge_strength(x), groups)
    counts = torch.bincount(labels, minlength=groups)
    if int(counts.min()) < 1:
        raise SqueezeError(f"a complexity group is empty ({counts.tolist()}); use more moire images")
    return labels
