"""ERQ end to end on the tiny ViT: every ablation flag runs, weights end on the grid, save/load
round-trips, bad models and options are refused with one clear line."""
import pytest
import torch
from torch import nn

import squeeze
from squeeze.errors import SqueezeError
from squeeze.quant.modules import QuantConv2d, QuantLinear


def _quantize(model: nn.Module, images: torch.Tensor, **options) -> nn.Module:
    cfg = squeeze.make_config("erq", wbits=3, abits=4, calib=16, batch_size=8, **options)
    return squeeze.quantize(model, cfg, images)


def _output_error(q: nn.Module, model: nn.Module, images: torch.Tensor) -> float:
    with torch.no_grad():
        return float((q(images) - model(images)).pow(2).mean())


@pytest.mark.parametrize("options", [
    {}, {"aqer": False}, {"rounding_refinement": False}, {"ridge_compensation": False},
    {"reparam_init": False}, {"dual_uniform": True},
])
def test_ablation_flags_run_end_to_end(tiny_vit, tiny_images, options) -> None:
    q = _quantize(tiny_vit, tiny_images, **options)
    err = _output_error(q, tiny_vit, tiny_images)
    with torch.no_grad():
        assert 0 < err < float(tiny_vit(tiny_images).pow(2).mean())  # quantized, yet still close to float
    layers = [m for m in q.modules() if isinstance(m, (QuantLinear, QuantConv2d))]
    assert layers and all(m.weight_quantizer.mode == "quant" for m in layers)
    for m in layers:  # weights lie exactly on their grid: the fake-quantizer is idempotent on them
        with torch.no_grad():
            assert torch.allclose(m.weight_quantizer(m.weight), m.weight, atol=1e-6)


def test_erq_beats_rtn_on_tiny_vit(tiny_vit, tiny_images) -> None:
    erq = _output_error(_quantize(tiny_vit, tiny_images), tiny_vit, tiny_images)
    rtn_cfg = squeeze.make_config("rtn", wbits=3, abits=4, calib=16, batch_size=8)
    rtn = _output_error(squeeze.quantize(tiny_vit, rtn_cfg, tiny_images), tiny_vit, tiny_images)
    assert erq < rtn


@pytest.mark.parametrize("options", [{}, {"dual_uniform": True}])
def test_save_load_roundtrip(tiny_vit, tiny_images, tmp_path, options) -> None:
    q = _quantize(tiny_vit, tiny_images, **options)
    squeeze.save(q, tmp_path / "run")
    loaded = squeeze.load(tmp_path / "run", model=tiny_vit)
    with torch.no_grad():
        assert torch.allclose(loaded(tiny_images), q(tiny_images), atol=1e-5)


def test_model_without_linear_layers_is_refused(tiny_images) -> None:
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten())
    with pytest.raises(SqueezeError, match="no nn.Linear"):
        _quantize(model, tiny_images)


def test_model_without_attention_is_refused(tiny_images) -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(256, 32), nn.ReLU(), nn.Linear(32, 5))
    with pytest.raises(SqueezeError, match="no supported attention"):
        _quantize(model, tiny_images)


@pytest.mark.parametrize("field, value", [
    ("aqer_lambda", 0.0), ("wqer_lambda", -1.0), ("refine_steps", -1), ("refine_rows", 0), ("aqer", "yes"),
])
def test_bad_options_are_refused(field, value) -> None:
    with pytest.raises(SqueezeError, match=field):
        squeeze.make_config("erq", **{field: value})
