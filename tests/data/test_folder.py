"""ImageFolder-style loading of a user's labelled images, including bad inputs."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from squeeze.data.folder import ImageFolderData, eval_transform
from squeeze.errors import SqueezeError


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    """zebra/ (2 RGB PNGs), apple/ (a JPEG and a grey PNG), plus a note and a hidden file to ignore."""
    rng = np.random.default_rng(0)
    _save(tmp_path / "zebra" / "b.png", rng.integers(0, 256, (20, 30, 3), dtype=np.uint8))
    _save(tmp_path / "zebra" / "a.png", np.full((20, 30, 3), 255, dtype=np.uint8))
    _save(tmp_path / "apple" / "x.JPG", rng.integers(0, 256, (20, 30, 3), dtype=np.uint8))
    _save(tmp_path / "apple" / "grey.png", np.zeros((20, 30), dtype=np.uint8))
    (tmp_path / "apple" / "notes.txt").write_text("not an image")
    (tmp_path / "zebra" / ".hidden.png").write_bytes(b"junk")
    return tmp_path


def test_classes_sorted_and_items_are_tensors(root: Path) -> None:
    data = ImageFolderData(root)
    assert data.classes == ["apple", "zebra"] and data.class_to_idx == {"apple": 0, "zebra": 1}
    assert len(data) == 4 and data.targets == [0, 0, 1, 1]
    assert [p.name for p, _ in data.samples] == ["grey.png", "x.JPG", "a.png", "b.png"]
    x, y = data[2]
    assert x.shape == (3, 20, 30) and x.dtype == torch.float32 and y == 1
    assert torch.all(x == 1.0)
    grey, _ = data[0]
    assert grey.shape == (3, 20, 30) and torch.all(grey == 0.0)


def test_transform_and_stacking(root: Path) -> None:
    data = ImageFolderData(root, eval_transform(16, mean=(0.5,) * 3, std=(0.5,) * 3))
    x, y = data.tensors()
    assert x.shape == (4, 3, 16, 16) and y.tolist() == [0, 0, 1, 1]
    assert torch.allclose(x[2], torch.ones(3, 16, 16)) and torch.allclose(x[0], -torch.ones(3, 16, 16))
    sub, labels = data.tensors(limit=2, seed=0)
    assert sub.shape == (2, 3, 16, 16) and torch.equal(sub, data.tensors(limit=2, seed=0)[0])


def test_mixed_sizes_need_a_resizing_transform(root: Path) -> None:
    _save(root / "zebra" / "c.png", np.zeros((8, 8, 3), dtype=np.uint8))
    with pytest.raises(SqueezeError, match="different sizes"):
        ImageFolderData(root).tensors()


def test_missing_or_flat_or_empty_folders(tmp_path: Path) -> None:
    with pytest.raises(SqueezeError, match="does not exist"):
        ImageFolderData(tmp_path / "nope")
    (tmp_path / "img.png").write_bytes(b"")
    with pytest.raises(SqueezeError, match="is a file"):
        ImageFolderData(tmp_path / "img.png")
    with pytest.raises(SqueezeError, match="no class sub-folders"):
        ImageFolderData(tmp_path)
    (tmp_path / "cats").mkdir()
    with pytest.raises(SqueezeError, match="cats holds no images"):
        ImageFolderData(tmp_path)


def test_unreadable_image_names_the_file(root: Path) -> None:
    (root / "zebra" / "c.png").write_bytes(b"\x89PNG broken")
    data = ImageFolderData(root)
    with pytest.raises(SqueezeError) as err:
        data[len(data) - 1]
    message = str(err.value)
    assert "c.png" in message and "delete or replace" in message and "\n" not in message
