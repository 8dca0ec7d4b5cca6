"""save/load: reloaded outputs equal the fake-quant model; bad files are refused cleanly."""
import json
import struct

import pytest
import torch

import squeeze
from squeeze.errors import SqueezeError


@pytest.fixture()
def quantized(tiny_vit, tiny_images):
    cfg = squeeze.make_config("repq-vit", wbits=4, abits=4, calib=16, batch_size=8)
    return squeeze.quantize(tiny_vit, cfg, tiny_images)


def test_roundtrip_equal_outputs(quantized, tiny_vit, tiny_images, tmp_path) -> None:
    path = squeeze.save(quantized, tmp_path / "run")
    loaded = squeeze.load(tmp_path / "run", model=tiny_vit)
    with torch.no_grad():
        assert torch.allclose(loaded(tiny_images), quantized(tiny_images), atol=1e-5)
    fp32 = sum(v.numel() * 4 for v in tiny_vit.state_dict().values())
    assert path.stat().st_size < 0.6 * fp32  # tiny model: the JSON header dominates; see test_zoo_quant


def test_unquantized_model_cannot_be_saved(tiny_vit, tmp_path) -> None:
    with pytest.raises(SqueezeError):
        squeeze.save(tiny_vit, tmp_path / "x")


def test_truncated_file_is_refused(quantized, tiny_vit, tmp_path) -> None:
    path = squeeze.save(quantized, tmp_path / "run")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(SqueezeError, match="corrupt or truncated"):
        squeeze.load(path, model=tiny_vit)


def test_newer_format_version_is_refused(quantized, tiny_vit, tmp_path) -> None:
    path = squeeze.save(quantized, tmp_path / "run")
    data = path.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    header["__metadata__"]["format_version"] = "99"
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + n:])
    with pytest.raises(SqueezeError, match="newer"):
        squeeze.load(path, model=tiny_vit)


def test_not_a_squeeze_file(tmp_path, tiny_vit) -> None:
    from safetensors.torch import save_file

    save_file({"a": torch.zeros(2)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(SqueezeError, match="not a squeeze .*; pass a file written by `squeeze quantize`"):
        squeeze.load(tmp_path, model=tiny_vit)
