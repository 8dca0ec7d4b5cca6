"""AdaRound / BRECQ / QDrop: rounding math, baked weights on the grid, end-to-end runs, bad configs."""
import pytest
import torch

import squeeze
from squeeze.errors import SqueezeError
from squeeze.methods.recon import AdaRoundWeight, adaround, rectified_sigmoid
from squeeze.methods.recon.rounding import annealed_beta, init_logits, rounding_regularizer
from squeeze.quant.attach import weight_spec
from squeeze.quant.modules import QuantLinear, iter_quantizers
from squeeze.quant.quantizer import Quantizer


def test_rectified_sigmoid_inverts_init_and_saturates() -> None:
    frac = torch.linspace(0, 0.999, 50)
    assert torch.allclose(rectified_sigmoid(init_logits(frac)), frac, atol=1e-5)
    assert rectified_sigmoid(torch.tensor([-20.0, 20.0])).tolist() == [0.0, 1.0]
    h = torch.tensor([0.0, 1.0, 0.5])
    assert rounding_regularizer(h, 2.0).item() == pytest.approx(1.0)  # only 0.5 pays: 1 - 0^2


def test_beta_schedule() -> None:
    assert annealed_beta(10, 100, 0.2) is None
    assert annealed_beta(20, 100, 0.2) == pytest.approx(20.0)
    assert annealed_beta(100, 100, 0.2) == pytest.approx(2.0)
    assert annealed_beta(60, 100, 0.2) == pytest.approx(11.0)


def _layer(bits: int = 3) -> QuantLinear:
    torch.manual_seed(0)
    layer = QuantLinear.from_float(torch.nn.Linear(16, 8))
    layer.weight_quantizer = Quantizer(weight_spec(bits))
    layer.weight_quantizer.calibrate(layer.weight)
    layer.weight_quantizer.mode = "quant"
    return layer


def test_soft_weight_starts_at_float_weight() -> None:
    layer = _layer()
    q = layer.weight_quantizer
    ada = AdaRoundWeight(q, layer.weight)
    # the soft weight is the float weight, clipped to the grid's range (zero-point rounding can clip)
    clipped = (torch.clamp(layer.weight / q.scale + q.zero_point, 0, 7) - q.zero_point) * q.scale
    assert torch.allclose(ada(layer.weight), clipped, atol=1e-5)


def test_baked_weights_are_on_the_grid_and_idempotent() -> None:
    layer = _layer(bits=3)
    q = layer.weight_quantizer
    with adaround([layer]) as (ada,):
        assert layer.weight_quantizer is ada
        with torch.no_grad():
            ada.alpha.normal_(0, 3)  # arbitrary learned rounding
        expected = torch.clamp(ada.floor + (ada.alpha >= 0).float() + q.zero_point, 0, 7)
    assert layer.weight_quantizer is q and q.mode == "quant"
    w = layer.weight.detach()
    codes = w / q.scale + q.zero_point
    assert torch.allclose(codes, codes.round(), atol=1e-4)  # exactly on the grid
    assert torch.equal(codes.round(), expected)  # the hardened choice, not plain rounding
    with torch.no_grad():
        assert torch.allclose(q(w), w, atol=1e-6)  # the weight quantizer reproduces it
        assert torch.equal(q(q(w)), q(w))


def test_failed_reconstruction_restores_quantizer() -> None:
    layer = _layer()
    q, before = layer.weight_quantizer, layer.weight.detach().clone()
    with pytest.raises(ValueError), adaround([layer]):
        raise ValueError("boom")
    assert layer.weight_quantizer is q and torch.equal(layer.weight, before)


@pytest.mark.parametrize("method", ["adaround", "brecq", "qdrop"])
def test_end_to_end_on_tiny_vit(method, tiny_vit, tiny_images) -> None:
    cfg = squeeze.make_config(method, wbits=3, abits=4, calib=16, batch_size=8, iters=20, recon_batch=8)
    q = squeeze.quantize(tiny_vit, cfg, tiny_images)
    assert {qz.mode for _, qz in iter_quantizers(q)} == {"quant"}
    assert not any(isinstance(m, AdaRoundWeight) for m in q.modules())
    assert all(not qz.scale.requires_grad for _, qz in iter_quantizers(q))
    for layer in (q.blocks[0].attn.qkv, q.blocks[1].mlp.fc2, q.head, q.patch_embed.proj):
        wq = layer.weight_quantizer
        with torch.no_grad():
            assert torch.allclose(wq(layer.weight), layer.weight, atol=1e-5), method
    with torch.no_grad():
        out, ref = q(tiny_images), tiny_vit(tiny_images)
    assert torch.isfinite(out).all() and (out - ref).norm() / ref.norm() < 0.6


def test_reconstruction_beats_no_training(tiny_vit, tiny_images) -> None:
    def err(iters: int) -> float:
        cfg = squeeze.make_config("brecq", wbits=3, abits=4, calib=16, batch_size=8, iters=iters, recon_batch=8)
        q = squeeze.quantize(tiny_vit, cfg, tiny_images)
        with torch.no_grad():
            return float((q(tiny_images) - tiny_vit(tiny_images)).pow(2).mean())
    assert err(30) < err(0)


@pytest.mark.parametrize("bad, match", [
    (dict(recon_batch=0), "recon_batch"),
    (dict(iters=-1), "iters"),
    (dict(lr=0.0), "lr"),
    (dict(act_scheme="foo"), "act_scheme"),
    (dict(drop_prob=1.0), "drop_prob"),
    (dict(warmup=1.0), "warmup"),
])
def test_bad_configs(bad, match) -> None:
    with pytest.raises(SqueezeError, match=match):
        squeeze.make_config("qdrop", **bad)


def test_config_round_trip() -> None:
    cfg = squeeze.make_config("qdrop", wbits=3, abits=3, calib=256, iters=100, drop_prob=0.25)
    assert squeeze.config.config_from_dict(cfg.to_dict()) == cfg
