"""``upscale``: tiled result equals a whole-image pass, atomic output, clear refusals."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from squeeze.data.sr import to_tensor, to_uint8
from squeeze.errors import SqueezeError
from squeeze.sr_upscale import infer_scale, upscale
from squeeze.zoo.edsr import EDSRArch, build_edsr


@pytest.fixture()
def tiny_x2() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_edsr(EDSRArch(scale=2, n_blocks=1, n_feats=8)).eval()


def test_tiles_match_a_whole_image_pass(tmp_path, tiny_x2) -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (45, 61, 3), dtype=np.uint8)
    src, dst = tmp_path / "in.png", tmp_path / "out.png"
    Image.fromarray(img).save(src)
    assert infer_scale(tiny_x2) == 2
    upscale(tiny_x2, src, dst, tile=16, overlap=10, progress=False)
    out = np.asarray(Image.open(dst))
    with torch.no_grad():
        full = to_uint8(tiny_x2(to_tensor(img)[None])[0])
    assert out.shape == (90, 122, 3)
    assert np.abs(out.astype(int) - full.astype(int)).max() <= 1  # float rounding only
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png", "out.png"]


def test_refusals_leave_no_output(tmp_path, tiny_x2) -> None:
    src = tmp_path / "in.png"
    Image.fromarray(np.zeros((1, 9, 3), np.uint8)).save(src)
    with pytest.raises(SqueezeError, match="smaller than 2 px"):
        upscale(tiny_x2, src, tmp_path / "out.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG but truncated")
    with pytest.raises(SqueezeError, match="not a readable image"):
        upscale(tiny_x2, bad, tmp_path / "out.png")
    with pytest.raises(SqueezeError, match="image format"):
        upscale(tiny_x2, src, tmp_path / "out.xyz")
    with pytest.raises(SqueezeError, match="does not exist"):
        upscale(tiny_x2, src, tmp_path / "nowhere" / "out.png")
    with pytest.raises(SqueezeError, match="not an image-to-image"):
        upscale(torch.nn.Conv2d(3, 3, 3, stride=2, padding=1), src, tmp_path / "out.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.png", "in.png"]
