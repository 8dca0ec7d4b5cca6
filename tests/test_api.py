"""The one-call API on a tiny ViT: every registered method runs, input is validated."""
import pytest
import torch

import squeeze
from squeeze.errors import SqueezeError
from squeeze.quant.modules import QuantMatMul, iter_quantizers

CONV_ONLY = {"dfsq", "uniform-norm"}


@pytest.mark.parametrize("method", sorted(squeeze.list_methods()))
def test_every_method_runs_on_tiny_vit(method, tiny_vit, tiny_images) -> None:
    cfg = squeeze.make_config(method, wbits=4, abits=8, calib=16, batch_size=8)
    if method in CONV_ONLY:  # SR-network methods refuse a ViT in one line
        with pytest.raises(SqueezeError, match="Conv2d") as exc:
            squeeze.quantize(tiny_vit, cfg, tiny_images)
        assert "\n" not in str(exc.value)
        return
    q = squeeze.quantize(tiny_vit, cfg, tiny_images)
    with torch.no_grad():
        out, ref = q(tiny_images), tiny_vit(tiny_images)
    assert out.shape == ref.shape and not torch.equal(out, ref)
    rel = (out - ref).norm() / ref.norm()
    assert rel < 0.5, float(rel)
    modes = {qz.mode for _, qz in iter_quantizers(q)}
    assert modes == {"quant"}
    assert sum(isinstance(m, QuantMatMul) for m in q.modules()) == 4  # 2 blocks x 2 matmuls
    assert not any(isinstance(m, QuantMatMul) for m in tiny_vit.modules())  # original untouched


def test_overrides_keep_head_at_8_bits(tiny_vit, tiny_images) -> None:
    cfg = squeeze.make_config("rtn", wbits=2, abits=8, calib=16, overrides={"head": {"wbits": 8}})
    q = squeeze.quantize(tiny_vit, cfg, tiny_images)
    assert q.head.weight_quantizer.spec.bits == 8
    assert q.blocks[0].attn.qkv.weight_quantizer.spec.bits == 2


@pytest.mark.parametrize("bad", [
    dict(wbits=1), dict(abits=17), dict(calib=0), dict(wbitz=4), dict(overrides={"x": {"bits": 3}}),
])
def test_bad_configs_fail_loudly(bad) -> None:
    fields = dict(wbits=4, abits=8) | bad
    with pytest.raises(SqueezeError):
        squeeze.make_config("rtn", **fields)


def test_unknown_method() -> None:
    with pytest.raises(SqueezeError, match="unknown method"):
        squeeze.make_config("awq")


def test_bad_calibration_data(tiny_vit, tiny_images) -> None:
    cfg = squeeze.make_config("rtn", wbits=4, abits=8, calib=4)
    with pytest.raises(SqueezeError, match="does not fit"):
        squeeze.quantize(tiny_vit, cfg, torch.randn(8, 3, 16, 16))
    with pytest.raises(SqueezeError, match="empty"):
        squeeze.quantize(tiny_vit, cfg, torch.randn(0, 1, 16, 16))
    bad = tiny_images.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(SqueezeError, match="NaN"):
        squeeze.quantize(tiny_vit, cfg, bad)
    with pytest.raises(SqueezeError, match="calib=4"):
        squeeze.quantize(tiny_vit, cfg, tiny_images[:2])


def test_nan_weights_are_refused(tiny_vit, tiny_images) -> None:
    with torch.no_grad():
        tiny_vit.head.weight[0, 0] = float("inf")
    with pytest.raises(SqueezeError, match="NaN or inf"):
        squeeze.quantize(tiny_vit, squeeze.make_config("rtn", wbits=4, abits=8, calib=4), tiny_images)


def test_config_json_roundtrip() -> None:
    from squeeze.config import config_from_dict

    cfg = squeeze.make_config("gptq", wbits=3, abits=4, act_scheme="minmax", overrides={"head": {"wbits": 8}})
    assert config_from_dict(cfg.to_dict()) == cfg
    newer = cfg.to_dict() | {"version": 99}
    with pytest.raises(SqueezeError, match="newer"):
        config_from_dict(newer)
