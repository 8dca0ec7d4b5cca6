"""SULQ (I&S-ViT shift-uniform-log2 quantizer) and log2 quantizers: hand values, eta search, save/load."""
import math

import pytest
import torch

import squeeze
from squeeze.quant import primitives as P
from squeeze.quant.modules import QuantMatMul
from squeeze.quant.quantizer import Quantizer, QuantSpec


def _sulq_reference(xs: list[float], eta: float, lo: float, hi: float, bits: int) -> list[float]:
    """Scalar re-derivation: 2^bits levels, exponent lo + q*step rounded to an integer."""
    step = (hi - lo) / (2 ** bits - 1)
    out = []
    for x in xs:
        q = min(max(round((math.log2(x + eta) - lo) / step), 0), 2 ** bits - 1)
        out.append(2.0 ** round(lo + q * step) - eta)
    return out


def test_sulq_hand_values_integer_grid() -> None:
    # eta 0.5, [lo, hi] = [-1, 2], 2 bits: step 1, exponents -1, 0, 1, 2 -> levels 0, 0.5, 1.5, 3.5
    x = torch.tensor([0.0, 0.3, 1.0, 10.0])
    # 0 -> log2(0.5) = -1 -> q 0; 0.3 -> log2(0.8) = -0.32 -> q 1; 1 -> log2(1.5) = 0.58 -> q 2; 10 -> clamp q 3
    expected = torch.tensor([0.0, 0.5, 1.5, 3.5])
    assert torch.allclose(P.sulq_quantize(x, 0.5, -1.0, 2.0, 2), expected)


def test_sulq_hand_values_rounded_exponents() -> None:
    # eta 0.001, [lo, hi] = [-3, 0], 3 bits: step 3/7; x = 0.2 -> log2(0.201) = -2.315 -> (t+3)/step = 1.60
    # -> q 2 -> e = -2.14 -> round -2 -> 0.25 - 0.001; x = 0.05 -> t = -4.29 < lo -> q 0 -> 2^-3 - 0.001;
    # x = 0.9 -> t = -0.151 -> 6.65 -> q 7 -> e = 0 -> 0.999
    x = torch.tensor([0.2, 0.05, 0.9])
    out = P.sulq_quantize(x, 0.001, -3.0, 0.0, 3)
    assert torch.allclose(out, torch.tensor([0.249, 0.124, 0.999]))


def test_sulq_matches_scalar_reference_on_random_data() -> None:
    torch.manual_seed(0)
    x = torch.softmax(torch.randn(200) * 3, 0)
    for eta, bits in [(0.01, 3), (0.1, 4), (0.001, 2)]:
        lo, hi = math.log2(x.min().item() + eta), math.log2(x.max().item() + eta)
        ref = torch.tensor(_sulq_reference(x.double().tolist(), eta, lo, hi, bits), dtype=torch.float32)
        assert torch.allclose(P.sulq_quantize(x, eta, lo, hi, bits), ref, atol=1e-6)


def test_log2_hand_values() -> None:
    # 3-bit log2 with delta 1: 0.5 -> index 1 -> 0.5; 0.3 -> -log2 0.3 = 1.74 -> 2 -> 0.25;
    # 2.38e-5 (the paper's example) -> index 15 > 7 -> 0, while SULQ keeps a non-zero level
    x = torch.tensor([0.5, 0.3, 2.38e-5])
    assert torch.allclose(P.log2_quantize(x, torch.tensor(1.0), 3, False), torch.tensor([0.5, 0.25, 0.0]))
    eta, lo, hi = 0.001, math.log2(2.38e-5 + 0.001), math.log2(1.001)
    assert P.sulq_quantize(x, eta, lo, hi, 3)[2] != 0


def test_eta_search_picks_min_error_eta() -> None:
    # with eta = 0.5 these four values sit exactly on the 2-bit grid (exponents -1, 0, 1, 2): error 0
    x = torch.tensor([0.0, 0.5, 1.5, 3.5]).repeat(10)
    eta, lo, hi = P.sulq_search(x, 2)
    assert eta.item() == pytest.approx(0.5)
    assert lo.item() == pytest.approx(-1.0) and hi.item() == pytest.approx(2.0)
    errors = {e: P.sulq_error(x, e, 2)[0].item() for e in P.SULQ_ETAS}
    assert errors[0.5] < 1e-12 and min(v for e, v in errors.items() if e != 0.5) > 1e-4


def test_quantizer_observes_exact_extremes_and_has_ste_gradient() -> None:
    torch.manual_seed(0)
    q = Quantizer(QuantSpec(4, kind="sulq"))
    q.mode = "observe"
    batches = [torch.softmax(torch.randn(8, 16) * s, -1) for s in (1.0, 4.0)]
    for b in batches:
        q(b)
    q.finalize()
    q.mode = "quant"
    assert q.calibrated and q.scale.numel() == 0
    both = torch.cat([b.flatten() for b in batches])
    eta = q.eta.item()
    assert min(abs(eta - e) for e in P.SULQ_ETAS) < 1e-7
    assert q.lo.item() == pytest.approx(math.log2(both.min().item() + eta), abs=1e-5)
    assert q.hi.item() == pytest.approx(math.log2(both.max().item() + eta), abs=1e-5)
    x = batches[0].clone().requires_grad_(True)
    out = q(x)
    out.sum().backward()
    inside = (x > both.min()) & (x < both.max())
    expected = (out.detach() + eta) / (x.detach() + eta)
    assert torch.allclose(x.grad[inside], expected[inside], rtol=1e-4)


def test_sulq_one_bit_is_refused_clearly() -> None:
    with pytest.raises(ValueError, match="SULQ at 1 bit is undefined"):
        QuantSpec(1, kind="sulq")
    with pytest.raises(ValueError, match="per-tensor"):
        QuantSpec(4, kind="sulq", granularity=P.Granularity("channel", -1))


def test_sulq_quantizer_roundtrips_through_save_load(tiny_vit, tiny_images, tmp_path) -> None:
    qmodel = squeeze.quantize(tiny_vit, squeeze.make_config("rtn", wbits=8, abits=8, calib=16), tiny_images)
    mms = [m for m in qmodel.modules() if isinstance(m, QuantMatMul) and m.a_quantizer is not None]
    for mm in mms[1::2] or mms:  # any quantizer works; install SULQ on some
        mm.a_quantizer = Quantizer(QuantSpec(3, kind="sulq"))
        mm.a_quantizer.mode = "observe"
    with torch.no_grad():
        qmodel(tiny_images)
    for mm in mms:
        if mm.a_quantizer.mode == "observe":
            mm.a_quantizer.finalize()
            mm.a_quantizer.mode = "quant"
    squeeze.save(qmodel, tmp_path / "run")
    loaded = squeeze.load(tmp_path / "run", model=tiny_vit)
    sulq = [(n, q) for n, q in loaded.named_modules() if isinstance(q, Quantizer) and q.spec.kind == "sulq"]
    assert sulq and all(q.calibrated for _, q in sulq)
    ref = dict(qmodel.named_modules())
    for name, q in sulq:
        assert torch.equal(q.eta, ref[name].eta) and torch.equal(q.hi, ref[name].hi)
    with torch.no_grad():
        assert torch.allclose(loaded(tiny_images), qmodel(tiny_images), atol=1e-5)
