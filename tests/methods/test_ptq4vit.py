"""PTQ4ViT: twin uniform quantizers (hand values), Hessian-guided search, end-to-end, save refusal."""
import pytest
import torch
from torch import nn

import squeeze
from squeeze.errors import SqueezeError
from squeeze.methods.ptq4vit import TwinUniformQuantizer, find_post_gelu, twin_gelu_quantize, twin_softmax_quantize
from squeeze.methods.ptq4vit.search import (alpha_grid, best_candidate, search_weight_channels, uniform_candidates,
                                            weighted_error)
from squeeze.methods.ptq4vit.twin import gelu_delta1, softmax_delta1
from squeeze.quant import primitives as P
from squeeze.quant.modules import QuantMatMul
from squeeze.quant.prepare import prepare_model


def test_twin_softmax_hand_values() -> None:
    # 3 bits: n = 4 levels per range; delta2 = 1/4; split 2^-2 -> delta1 = 0.25/4 = 0.0625
    d1 = softmax_delta1(2, 3)
    assert d1 == pytest.approx(0.0625)
    x = torch.tensor([0.01, 0.05, 0.2, 0.24, 0.3, 0.9, 1.0])
    # R1 (x < 0.25): 0.16 -> 0; 0.8 -> 1; 3.2 -> 3; 3.84 -> 4 -> clamp 3.  R2: 1.2 -> 1; 3.6 -> 3; 4 -> 3
    expected = torch.tensor([0.0, 0.0625, 0.1875, 0.1875, 0.25, 0.75, 0.75])
    assert torch.allclose(twin_softmax_quantize(x, d1, 3), expected)


def test_twin_gelu_hand_values_and_power_of_two_tie() -> None:
    # 3 bits: magnitudes 0..3; negatives on 0.05, positives on 0.5
    x = torch.tensor([-0.17, -0.04, -0.01, 0.0, 0.3, 1.2, 5.0])
    # -3.4 -> -3; -0.8 -> -1; -0.2 -> 0; 0; 0.6 -> 1; 2.4 -> 2; 10 -> 3
    expected = torch.tensor([-0.15, -0.05, 0.0, 0.0, 0.5, 1.0, 1.5])
    assert torch.allclose(twin_gelu_quantize(x, 0.05, 0.5, 3), expected)
    # delta2 = 0.5, most negative -0.17: 0.5*3/0.17 = 8.8 -> m = 3 -> delta1 = 0.0625 (3*0.0625 >= 0.17)
    assert gelu_delta1(torch.tensor(0.5), torch.tensor(0.17), 3).item() == pytest.approx(0.0625)


def test_twin_quantizer_modes_and_straight_through_gradient() -> None:
    torch.manual_seed(0)
    q = TwinUniformQuantizer(4, "softmax")
    q.mode = "observe"
    q(torch.softmax(torch.randn(4, 8, 8) * 3, -1))
    q.finalize()
    q.mode = "quant"
    assert q.calibrated and q.delta2.item() == pytest.approx(1 / 8)
    x = torch.tensor([0.001, 0.3, 0.5], requires_grad=True)
    q(x).sum().backward()
    assert torch.equal(x.grad, torch.ones(3))


def test_weight_search_beats_minmax_under_hessian_weights() -> None:
    torch.manual_seed(0)
    w = torch.randn(6, 32)
    w[:, 0] = 8.0  # an outlier column stretches every row's min-max range
    x = torch.randn(256, 32) * 0.2
    x[:, 0] = 0.01  # ... but its input is almost zero, so clipping it costs little
    target = x @ w.T
    g2 = torch.rand(256, 6) ** 4  # uneven importance of outputs
    alphas = alpha_grid(24)
    scale, zp = search_weight_channels(w, lambda wh: x @ wh.T, target, g2, 3, False, alphas, -1)
    w_best = P.fake_quantize(w, scale, zp, 0, 7)
    s0, z0 = P.params_from_range(*P.minmax_range(w, 1), 3, False)
    w_minmax = P.fake_quantize(w, s0, z0, 0, 7)
    err_best = weighted_error(x @ w_best.T, target, g2, -1)
    err_minmax = weighted_error(x @ w_minmax.T, target, g2, -1)
    assert (err_best <= err_minmax + 1e-6).all() and err_best.sum() < 0.8 * err_minmax.sum()


def test_hessian_weights_change_the_activation_choice() -> None:
    # output 0 reads only the outlier input column, output 1 only the others; the gradient says
    # output 0 matters: the weighted search keeps the outliers, plain MSE clips them
    torch.manual_seed(0)
    x = torch.randn(512, 8) * 0.1
    x[::200, 0] = 4.0  # three large values in column 0
    w = torch.zeros(2, 8)
    w[0, 0], w[1, 1:] = 1.0, 3.0
    target = x @ w.T
    g2 = torch.tensor([[100.0, 0.01]]).expand(512, 2)
    cands = uniform_candidates(x.min(), x.max(), 3, False, alpha_grid(24))

    def score(weights):
        return lambda fq: weighted_error(fq(x) @ w.T, target, weights)

    hess = best_candidate(cands, score(g2))
    plain = best_candidate(cands, score(None))
    minmax = cands[alpha_grid(24).index(1.0)]
    err = {k: score(g2)(c.fq).item() for k, c in (("hess", hess), ("plain", plain), ("minmax", minmax))}
    assert err["hess"] <= err["minmax"] and err["hess"] < err["plain"]


def test_find_post_gelu(tiny_vit) -> None:
    prepare_model(tiny_vit)
    assert find_post_gelu(tiny_vit, torch.randn(1, 1, 16, 16)) == {"blocks.0.mlp.fc2", "blocks.1.mlp.fc2"}


@pytest.fixture()
def calib32() -> torch.Tensor:
    torch.manual_seed(2)
    return torch.randn(32, 1, 16, 16)


def test_end_to_end_tiny_vit(tiny_vit, calib32) -> None:
    qmodel = squeeze.quantize(tiny_vit, squeeze.make_config("ptq4vit", wbits=4, abits=4), calib32)
    twins = {n for n, m in qmodel.named_modules() if isinstance(m, TwinUniformQuantizer)}
    assert {"blocks.0.attn.matmul2.a_quantizer", "blocks.1.mlp.fc2.input_quantizer"} <= twins
    quantizers = [m for m in qmodel.modules() if isinstance(m, squeeze.quant.quantizer.Quantizer)]
    assert all(q.mode == "quant" and q.calibrated for q in quantizers)
    with torch.no_grad():
        ref, out = tiny_vit(calib32), qmodel(calib32)
        rtn = squeeze.quantize(tiny_vit, squeeze.make_config("rtn", wbits=4, abits=4), calib32)(calib32)
    assert torch.isfinite(out).all()
    assert (out - ref).pow(2).mean() < (rtn - ref).pow(2).mean()


def test_save_refuses_twin_quantizers_but_works_without(tiny_vit, calib32, tmp_path) -> None:
    cfg = squeeze.make_config("ptq4vit", wbits=4, abits=4, calib=16, rounds=1, n_alphas=4)
    with pytest.raises(SqueezeError, match="twin uniform"):
        squeeze.save(squeeze.quantize(tiny_vit, cfg, calib32), tmp_path / "a")
    cfg = squeeze.make_config("ptq4vit", wbits=4, abits=4, calib=16, rounds=1, n_alphas=4, twin_softmax=False,
                              twin_gelu=False)
    qmodel = squeeze.quantize(tiny_vit, cfg, calib32)
    squeeze.save(qmodel, tmp_path / "b")
    loaded = squeeze.load(tmp_path / "b", model=tiny_vit)
    with torch.no_grad():
        assert torch.allclose(loaded(calib32), qmodel(calib32), atol=1e-5)


def test_bad_inputs() -> None:
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(16, 4), nn.GELU(), nn.Linear(4, 2))
    with pytest.raises(SqueezeError, match="no attention"):
        squeeze.quantize(mlp, squeeze.make_config("ptq4vit", calib=4), torch.randn(4, 16))
    with pytest.raises(SqueezeError, match="rounds"):
        squeeze.make_config("ptq4vit", rounds=0)
    assert not any(isinstance(m, QuantMatMul) for m in mlp.modules())


def test_float_target_and_plain_error_options_run(tiny_vit, calib32) -> None:
    cfg = squeeze.make_config("ptq4vit", wbits=4, abits=4, calib=16, target="float", hessian=False, rounds=1,
                              n_alphas=4, search_rows=64, search_slices=4)
    with torch.no_grad():
        out = squeeze.quantize(tiny_vit, cfg, calib32)(calib32)
    assert torch.isfinite(out).all()
    with pytest.raises(SqueezeError, match="target"):
        squeeze.make_config("ptq4vit", target="global")
