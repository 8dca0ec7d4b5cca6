"""I&S-ViT: stage-2 reparameterization is lossless, end-to-end runs, ablation options, bad input."""
import pytest
import torch
from torch import nn

import squeeze
from squeeze.errors import SqueezeError
from squeeze.methods.isvit import ISViTConfig
from squeeze.methods.isvit.method import attach_isvit_quantizers, stage2_reparameterize
from squeeze.methods.steps import calibrate_activations
from squeeze.quant.attach import probe_roles
from squeeze.quant.calibrate import walk
from squeeze.quant.modules import iter_quantizers, set_mode
from squeeze.quant.prepare import prepare_model


def test_stage2_leaves_float_outputs_unchanged(tiny_vit, tiny_images) -> None:
    prepare_model(tiny_vit)
    cfg = ISViTConfig(wbits=4, abits=4, calib=16)
    roles = probe_roles(tiny_vit, tiny_images[:1])
    attach_isvit_quantizers(tiny_vit, cfg, roles)
    batches = list(tiny_images.chunk(2))
    walk(tiny_vit, batches, calibrate_activations)  # stage-1 state: activations quantized, weights float
    qkv = tiny_vit.blocks[0].attn.qkv
    assert qkv.input_quantizer.spec.granularity.kind == "channel"
    with torch.no_grad():
        act_before = tiny_vit(tiny_images)
        set_mode(tiny_vit, "off")
        float_before = tiny_vit(tiny_images)
        set_mode(tiny_vit, "quant", which="act")
    stage2_reparameterize(tiny_vit, roles, batches)
    assert qkv.input_quantizer.spec.granularity.kind == "tensor"
    assert tiny_vit.blocks[1].mlp.fc1.input_quantizer.spec.granularity.kind == "tensor"
    with torch.no_grad():
        act_after = tiny_vit(tiny_images)
        set_mode(tiny_vit, "off")
        float_after = tiny_vit(tiny_images)
    assert torch.allclose(float_after, float_before, atol=1e-4)
    # the per-tensor grid equals the per-channel one (up to rounding ties), so quantized outputs barely move
    assert (act_after - act_before).norm() / act_before.norm() < 0.05


@pytest.mark.parametrize("options", [dict(), dict(softmax_quantizer="log2"), dict(softmax_quantizer="uniform"),
                                     dict(stages=1)])
def test_end_to_end_on_tiny_vit(options, tiny_vit, tiny_images) -> None:
    cfg = squeeze.make_config("isvit", wbits=3, abits=4, calib=16, batch_size=8, iters=15, recon_batch=8, **options)
    q = squeeze.quantize(tiny_vit, cfg, tiny_images)
    assert {qz.mode for _, qz in iter_quantizers(q)} == {"quant"}
    kind = options.get("softmax_quantizer", "sulq")
    assert q.blocks[0].attn.matmul2.a_quantizer.spec.kind == kind
    assert q.blocks[0].norm1.weight.requires_grad == tiny_vit.blocks[0].norm1.weight.requires_grad
    with torch.no_grad():
        out, ref = q(tiny_images), tiny_vit(tiny_images)
    assert torch.isfinite(out).all() and (out - ref).norm() / ref.norm() < 0.6


def test_reconstruction_beats_no_training(tiny_vit, tiny_images) -> None:
    def err(iters: int) -> float:
        cfg = squeeze.make_config("isvit", wbits=3, abits=4, calib=16, batch_size=8, iters=iters, recon_batch=8)
        q = squeeze.quantize(tiny_vit, cfg, tiny_images)
        with torch.no_grad():
            return float((q(tiny_images) - tiny_vit(tiny_images)).pow(2).mean())
    assert err(20) < err(0)


def test_model_without_attention_is_refused(tiny_images) -> None:
    cnn = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 14 * 14, 3))
    with pytest.raises(SqueezeError, match="isvit needs a vision transformer with attention blocks"):
        squeeze.quantize(cnn, squeeze.make_config("isvit", calib=16, recon_batch=8), tiny_images)


@pytest.mark.parametrize("bad, match", [
    (dict(softmax_quantizer="log4"), "softmax_quantizer"),
    (dict(stages=2), "stages"),
    (dict(recon_batch=0), "recon_batch"),
    (dict(weight_estimator="x"), "weight_estimator"),
])
def test_bad_configs(bad, match) -> None:
    with pytest.raises(SqueezeError, match=match):
        squeeze.make_config("isvit", **bad)
