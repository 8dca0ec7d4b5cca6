"""EDSR-baseline: shapes, untrained forward, checkpoint loading and its missing-file error, a short training."""
from __future__ import annotations

import json
from dataclasses import asdict

import pytest
import torch

from squeeze.errors import SqueezeError
from squeeze.train.checkpoint import atomic_save_tensors
from squeeze.train.engine import EngineConfig, fit
from squeeze.zoo.edsr import CHECKPOINTS, BicubicUpscale, EDSRArch, SRRecipe, SRTask, build_edsr, load_edsr_float
from squeeze.zoo.registry import load_model


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_output_shape_and_untrained_forward(scale: int) -> None:
    torch.manual_seed(0)
    model = build_edsr(EDSRArch(scale=scale, n_blocks=2, n_feats=8)).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 10, 7))
    assert out.shape == (2, 3, 10 * scale, 7 * scale) and bool(torch.isfinite(out).all())
    assert [n for n, _ in model.body.named_children()] == ["0", "1"]


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_bicubic_upscale_equals_interpolate(scale: int) -> None:
    x = torch.rand(2, 3, 9, 6)  # 6 < 2 * 5-tap radius: the edge replication is exercised on both sides
    ref = torch.nn.functional.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False)
    assert torch.allclose(BicubicUpscale(scale)(x), ref, atol=2e-6)
    assert not BicubicUpscale(scale).state_dict()  # a constant, not part of checkpoints


def test_zoo_architecture_size() -> None:
    model = build_edsr(EDSRArch(scale=2))
    n = sum(p.numel() for p in model.parameters())
    assert 100_000 < n < 250_000  # 8 blocks x 32 features
    with pytest.raises(SqueezeError, match="scale 5"):
        EDSRArch(scale=5)


def test_checkpoint_missing_error_and_round_trip(tmp_path) -> None:
    with pytest.raises(SqueezeError, match="squeeze train edsr-x2"):
        load_edsr_float("edsr-x2", tmp_path)
    arch = EDSRArch(scale=2, n_blocks=1, n_feats=4)
    model = build_edsr(arch)
    atomic_save_tensors(tmp_path / "edsr-x2.safetensors", {k: v.half() for k, v in model.state_dict().items()})
    (tmp_path / "edsr-x2.json").write_text(json.dumps({"arch": asdict(arch)}))
    loaded, _ = load_edsr_float("edsr-x2", tmp_path)
    x = torch.rand(1, 3, 6, 6)
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x), atol=2e-2)
    if not (CHECKPOINTS / "edsr-x2.safetensors").is_file():
        with pytest.raises(SqueezeError, match="checkpoint missing"):
            load_model("edsr-x2")


def test_a_few_training_steps_lower_the_loss(tmp_path) -> None:
    pytest.importorskip("skimage")
    arch = EDSRArch(scale=2, n_blocks=1, n_feats=8)
    recipe = SRRecipe(epochs=2, steps_per_epoch=12, batch_size=4, lr_patch=16, lr=2e-3)
    result = fit(SRTask("edsr-test", arch, recipe, val_limit=1), EngineConfig(tmp_path, progress=False))
    first, last = result.log[0], result.log[-1]
    assert last["train_loss"] < first["train_loss"] and "val_psnr_y" in last
