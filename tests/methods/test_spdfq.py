"""--method spdfq: config validation and the registry glue (real calibration images are ignored)."""
from __future__ import annotations

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

import squeeze
import squeeze.methods.spdfq  # noqa: F401  (registers the method until squeeze.methods imports it)
from squeeze.config import config_from_dict, make_config
from squeeze.dfq import Normalization, SynthConfig, save_synthetic, synthesize
from squeeze.errors import SqueezeError
from squeeze.methods.spdfq import backend_config, synth_config


def tiny_vit() -> torch.nn.Module:
    torch.manual_seed(0)
    return VisionTransformer(img_size=16, patch_size=4, in_chans=1, num_classes=5, embed_dim=32, depth=2,
                             num_heads=2, mlp_ratio=2.0).eval()


FAST = {"n_images": 4, "synth_iters": 2, "backend": "repq-vit", "calib": 2}


def test_config_validates_and_round_trips() -> None:
    cfg = make_config("spdfq", wbits=4, abits=4, msr=False, backend="isvit", backend_options={"iters": 5})
    assert config_from_dict(cfg.to_dict()) == cfg
    assert synth_config(cfg).msr is False and synth_config(cfg).generator == "spdfq"
    back = backend_config(cfg)
    assert back.method == "isvit" and back.iters == 5 and back.calib == cfg.n_images and back.wbits == 4
    for bad, match in (({"backend": "nope"}, "unknown method"), ({"backend": "spdfq"}, "other than spdfq"),
                       ({"generator": "gan"}, "generator"), ({"backend_options": {"itres": 3}}, "unknown .*option"),
                       ({"synth_iters": 0}, "iters"), ({"norm_mean": [0.5]}, "norm_std"),
                       ({"apa_weight": 1}, "unknown")):
        with pytest.raises(SqueezeError, match=match):
            make_config("spdfq", **bad)


def test_real_calibration_data_is_ignored() -> None:
    net = tiny_vit()
    cfg = make_config("spdfq", wbits=4, abits=4, norm_mean=[0.5], norm_std=[0.25], **FAST)
    x = torch.randn(3, 1, 16, 16)
    a = squeeze.quantize(net, cfg, torch.randn(2, 1, 16, 16))(x)
    b = squeeze.quantize(net, cfg, 10 * torch.rand(2, 1, 16, 16))(x)
    torch.testing.assert_close(a, b)
    real = make_config("repq-vit", wbits=4, abits=4, calib=2)
    c = squeeze.quantize(net, real, torch.randn(2, 1, 16, 16))(x)
    assert not torch.allclose(a, c)  # the comparison can fail: real calibration data does change the result


def test_saved_synthetic_set_is_reused_and_shape_checked(tmp_path) -> None:
    net = tiny_vit()
    sset = synthesize(net, (1, 16, 16), SynthConfig(generator="psaq-vit", n_images=4, iters=2),
                      Normalization((0.5,), (0.25,)), progress=False)
    save_synthetic(sset, tmp_path / "set")
    cfg = make_config("spdfq", wbits=6, abits=6, synthetic=str(tmp_path / "set"), **FAST)
    qmodel = squeeze.quantize(net, cfg, torch.randn(2, 1, 16, 16))
    assert qmodel.squeeze_synthetic.config.generator == "psaq-vit"
    torch.testing.assert_close(qmodel.squeeze_synthetic.images, sset.images)
    wide = VisionTransformer(img_size=16, patch_size=4, in_chans=3, num_classes=5, embed_dim=32, depth=1,
                             num_heads=2).eval()
    with pytest.raises(SqueezeError, match="synthetic images are"):
        squeeze.quantize(wide, cfg, torch.randn(2, 3, 16, 16))
