"""Compact N:M files: round trip, size, check-nm on corrupted layers, bad inputs."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from squeeze.errors import SqueezeError
from squeeze.sparse import masks as K
from squeeze.sparse.cli import cmd_check_nm
from squeeze.sparse.config import make_nm_config
from squeeze.sparse.export import check_nm, decode_layer, encode_layer, load_nm, nm_violations, save_nm
from squeeze.sparse.task import finalize, prepare_sparse
from squeeze.zoo.resnet_fmnist import ResNetFmnistArch, build_resnet_fmnist

ARCH = ResNetFmnistArch(blocks=1)


def _saved(tmp_path: Path, n: int = 2, m: int = 4) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    net = build_resnet_fmnist(ARCH).eval()
    info = prepare_sparse(net, make_nm_config("sr-ste", n=n, m=m))
    deploy = finalize(net)
    path = tmp_path / "model.nm.safetensors"
    save_nm(deploy, path, {"model": "resnet-fmnist", "arch": ARCH.to_dict(), "n": n, "m": m, "layers": info["layers"]})
    return path, deploy


def _rewrite(path: Path, edit) -> None:
    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata()
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    edit(tensors, meta)
    save_file(tensors, str(path), metadata=meta)


def test_encode_decode_round_trip() -> None:
    torch.manual_seed(1)
    w = torch.randn(8, 16, 3, 3)
    w = w * K.nm_mask(w, 1, 4)
    values, bits = encode_layer(w)
    assert values.numel() == w.numel() // 4 and bits.dtype == torch.uint8 and bits.numel() == w.numel() // 8
    assert torch.equal(decode_layer(values, bits, list(w.shape)), w)


@pytest.mark.parametrize("n,m", [(2, 4), (2, 8)])
def test_round_trip_and_size(tmp_path: Path, n: int, m: int) -> None:
    path, deploy = _saved(tmp_path, n, m)
    assert check_nm(path) == []
    loaded, header = load_nm(path)
    assert header["n"] == n and header["m"] == m
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(loaded(x), deploy(x), atol=1e-6)
    dense = sum(v.numel() * 4 for v in deploy.state_dict().values() if v.is_floating_point())
    assert path.stat().st_size < (0.6 if n / m == 0.5 else 0.5) * dense


def test_check_nm_names_a_corrupted_layer(tmp_path: Path) -> None:
    path, _ = _saved(tmp_path)

    def densify(tensors: dict, meta: dict) -> None:  # one more kept weight in the first group of layer2.0.conv2
        name = "layer2.0.conv2.weight"
        bits = tensors[f"{name}.bitmask"].clone()
        vals = tensors[f"{name}.values"]
        first = int(bits[0])
        free = next(b for b in range(4) if not first & (0x80 >> b))
        bits[0] = first | (0x80 >> free)
        tensors[f"{name}.bitmask"] = bits
        idx = sum(1 for b in range(free) if first & (0x80 >> b))  # insertion point in row-major values
        tensors[f"{name}.values"] = torch.cat([vals[:idx], torch.tensor([0.5]), vals[idx:]])

    _rewrite(path, densify)
    assert check_nm(path) == ["layer2.0.conv2"]
    assert "more than 2 of 4" in nm_violations(path)["layer2.0.conv2"]
    with pytest.raises(SqueezeError, match="layer layer2.0.conv2 is not 2:4"):
        load_nm(path)
    with pytest.raises(SqueezeError, match="first layer2.0.conv2"):
        cmd_check_nm(argparse.Namespace(file=str(path)))


def test_check_nm_detects_value_count_mismatch(tmp_path: Path) -> None:
    path, _ = _saved(tmp_path)
    _rewrite(path, lambda t, _meta: t.__setitem__("layer1.0.conv1.weight.values", torch.zeros(3)))
    bad = nm_violations(path)
    assert list(bad) == ["layer1.0.conv1"] and "values are stored" in bad["layer1.0.conv1"]


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(SqueezeError, match="does not exist"):
        check_nm(tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file at all")
    with pytest.raises(SqueezeError, match="corrupt"):
        check_nm(junk)
    other = tmp_path / "other.safetensors"
    save_file({"a": torch.zeros(2)}, str(other), metadata={"format": "squeeze-quant"})
    with pytest.raises(SqueezeError, match="not a squeeze N:M file"):
        check_nm(other)
    path, _ = _saved(tmp_path)
    _rewrite(path, lambda t, meta: meta.__setitem__("format_version", "99"))
    with pytest.raises(SqueezeError, match="newer"):
        check_nm(path)
    _rewrite(path, lambda t, meta: (meta.__setitem__("format_version", "1"), meta.__setitem__("squeeze", "{]")))
    with pytest.raises(SqueezeError, match="corrupt header"):
        check_nm(path)


def test_save_refuses_dense_layers_and_writes_nothing(tmp_path: Path) -> None:
    net = build_resnet_fmnist(ARCH)
    with pytest.raises(SqueezeError, match="layer layer1.0.conv1 is not 2:4"):
        save_nm(net, tmp_path / "x.safetensors", {"model": "resnet-fmnist", "n": 2, "m": 4,
                                                  "layers": ["layer1.0.conv1"]})
    assert list(tmp_path.iterdir()) == []


def test_load_refuses_a_foreign_architecture(tmp_path: Path) -> None:
    path, _ = _saved(tmp_path)

    def other_arch(tensors: dict, meta: dict) -> None:
        header = json.loads(meta["squeeze"])
        header["arch"]["blocks"] = 2
        meta["squeeze"] = json.dumps(header)

    _rewrite(path, other_arch)
    with pytest.raises(SqueezeError, match="does not match"):
        load_nm(path)
