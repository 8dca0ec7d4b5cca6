"""Offline natural photos: sources, loading, the fixed name-hash split and crops."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from squeeze.data import photos
from squeeze.errors import SqueezeError

pytest.importorskip("skimage", reason="scikit-image is optional (`pip install 'squeeze[data]'`)")

# Names scikit-image fetches with pooch (not bundled): they must never be listed.
POOCH_ONLY = {"brain", "cells3d", "eagle", "human_mitosis", "kidney", "lily", "skin", "vortex"}


@pytest.fixture()
def fake_mate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in for the mate-backgrounds folder holding a grey PNG and an RGBA PNG."""
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (60, 80), dtype=np.uint8), "L").save(tmp_path / "Grey.png")
    Image.fromarray(rng.integers(0, 256, (50, 70, 4), dtype=np.uint8), "RGBA").save(tmp_path / "Alpha.png")
    monkeypatch.setenv("SQUEEZE_MATE_DIR", str(tmp_path))
    return tmp_path


def test_lists_only_bundled_skimage_photos() -> None:
    refs = photos.list_photos()
    names = [r.name for r in refs]
    assert len(names) == len(set(names)) and names == sorted(names)
    assert {"astronaut", "camera", "coffee", "chelsea"} <= set(names)
    assert not POOCH_ONLY & set(names)
    assert all(r.path.is_file() for r in refs)
    assert {r.source for r in refs if r.name == "coffee"} == {"scikit-image"}


def test_load_photo_is_uint8_rgb_for_grey_and_colour() -> None:
    grey, colour = photos.load_photo("camera"), photos.load_photo("coffee")
    assert grey.dtype == np.uint8 and grey.shape == (512, 512, 3)
    assert np.array_equal(grey[..., 0], grey[..., 2])  # grey replicated into three channels
    assert colour.shape == (400, 600, 3) and not np.array_equal(colour[..., 0], colour[..., 2])


def test_grey_and_alpha_files_become_three_channels(fake_mate: Path) -> None:
    assert photos.load_photo("mate_grey").shape == (60, 80, 3)
    alpha = photos.load_photo("mate_alpha")
    expected = np.asarray(Image.open(fake_mate / "Alpha.png"))[..., :3]
    assert alpha.shape == (50, 70, 3) and np.array_equal(alpha, expected)


def test_split_is_fixed_by_name() -> None:
    # Pinned: changing the salt or the bounds would silently move images between splits.
    expected = {"astronaut": "val", "chelsea": "val", "coffee": "test", "coins": "test", "motorcycle": "test",
                "camera": "train", "rocket": "train", "grace_hopper": "train", "mate_ladybird": "test",
                "mate_dune": "val", "mate_storm": "train"}
    assert {n: photos.split_of(n) for n in expected} == expected


def test_splits_partition_the_photos() -> None:
    splits = {s: photos.photo_split(s) for s in ("train", "val", "test")}
    flat = [n for names in splits.values() for n in names]
    assert len(flat) == len(set(flat))
    assert sorted(flat) == [r.name for r in photos.list_photos()]
    assert {"coffee", "coins", "motorcycle"} <= set(splits["test"])


def test_adding_a_source_moves_no_image(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fake_mate: Path) -> None:
    with_fake = {s: photos.photo_split(s) for s in ("train", "val", "test")}
    monkeypatch.setenv("SQUEEZE_MATE_DIR", str(tmp_path / "absent"))
    without = {s: photos.photo_split(s) for s in ("train", "val", "test")}
    for split, names in without.items():
        assert set(names) <= set(with_fake[split])
    added = {n for names in with_fake.values() for n in names} - {n for names in without.values() for n in names}
    assert added == {"mate_grey", "mate_alpha"}


def test_bad_names_and_files_raise_one_line_errors(fake_mate: Path) -> None:
    with pytest.raises(SqueezeError, match="unknown photo 'eagle'"):
        photos.load_photo("eagle")
    with pytest.raises(SqueezeError, match="use 'train', 'val' or 'test'"):
        photos.photo_split("training")
    (fake_mate / "Broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(SqueezeError, match="Broken.jpg"):
        photos.load_photo("mate_broken")


def test_crops_are_deterministic_and_seeded() -> None:
    a = photos.photo_crops("test", 6, 64, seed=3)
    assert a.shape == (6, 3, 64, 64) and a.dtype == torch.float32
    assert 0.0 <= a.min() and a.max() <= 1.0 and a.std() > 0.05
    assert torch.equal(a, photos.photo_crops("test", 6, 64, seed=3))
    assert not torch.equal(a, photos.photo_crops("test", 6, 64, seed=4))
    with pytest.raises(SqueezeError):
        photos.photo_crops("test", 0, 64)
