"""MultiQuant: branch tables, quantizer math, topology against the float network, runs and bad input."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from squeeze.errors import SqueezeError
from squeeze.methods.multiquant import MultiBitResNet, MultiQuantConfig, branch_plan, eval_run, train_multiquant
from squeeze.methods.multiquant import layers as mq_layers
from squeeze.methods.multiquant.config import BRANCHES, VARIANTS
from squeeze.methods.multiquant.quantizers import (
    dorefa_activation, dorefa_weight, quantize_activation, quantize_weight, weight_range_mse,
)
from squeeze.methods.multiquant.reorder import channel_scores, order_by_importance
from squeeze.methods.multiquant.task import MultiQuantTask, step_bits
from squeeze.train.engine import EngineConfig
from squeeze.train.state import CHECKPOINT
from squeeze.zoo.resnet_fmnist import ResNetFmnistArch, build_resnet_fmnist

TINY = ResNetFmnistArch(widths=(4, 8, 8), blocks=1)
TWO_BLOCKS = ResNetFmnistArch(widths=(4, 8, 8), blocks=2)  # identity blocks too, for the channel reordering


def _float_net(arch: ResNetFmnistArch = TINY) -> torch.nn.Module:
    torch.manual_seed(0)
    net = build_resnet_fmnist(arch)
    with torch.no_grad():  # non-trivial batch-norm statistics, so tiling them is actually checked
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return net.eval()


def test_branch_tables_match_the_paper() -> None:
    used = {b: (p.start, p.full, p.partial) for b in range(2, 9) for p in [branch_plan(b, amortize=True)]}
    assert used == {2: (0, 1, False), 3: (0, 1, True), 4: (1, 2, False), 5: (1, 2, True), 6: (1, 3, False),
                    7: (0, 3, True), 8: (0, 4, False)}
    assert all(branch_plan(b, amortize=False).start == 0 for b in range(2, 9))


def test_quantizers_against_direct_formulas() -> None:
    w = torch.linspace(-2, 2, 101)
    q = quantize_weight(w, torch.tensor(-1.0), torch.tensor(1.0), 2)
    t = ((w + 1) / 2).clamp(0, 1)
    assert torch.allclose(q, torch.round(t * 3) / 3 * 2 - 1)
    assert torch.allclose(q.unique(), torch.tensor([-1.0, -1 / 3, 1 / 3, 1.0]))
    x = torch.linspace(-1, 5, 6001)
    for bits in (2, 5, 8):
        a = quantize_activation(x, torch.tensor(0.0), torch.tensor(4.0), bits)
        assert len(a.unique()) == 2 ** bits and a.min() == 0 and a.max() == 1
    w.requires_grad_(True)
    quantize_weight(w, torch.tensor(-1.0), torch.tensor(1.0), 2).sum().backward()
    assert w.grad[50] == 1.0 and w.grad[0] == 0.0  # straight-through inside the range, zero outside


def _composed_reference(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, bits: int) -> torch.Tensor:
    """The quantizer written as plain autograd ops (normalise, clamp, straight-through round)."""
    t = ((x - lo) / (hi - lo).clamp_min(1e-6)).clamp(0, 1) * (2 ** bits - 1)
    return (t + (torch.round(t) - t).detach()) / (2 ** bits - 1)


@pytest.mark.parametrize("shape,range_shape", [((6, 3, 4, 5, 5), (1, 3, 1, 1, 1)), ((7, 9), ())])
def test_fused_quantizer_gradients_match_autograd(shape: tuple[int, ...], range_shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    x = (torch.randn(shape) * 2).requires_grad_(True)
    lo = (torch.rand(range_shape) - 1.0).requires_grad_(True)
    hi = (torch.rand(range_shape) + 1.0).requires_grad_(True)
    upstream = torch.randn(shape)
    grads = []
    for fn in (quantize_activation, _composed_reference):
        out = fn(x, lo, hi, 3)
        grads.append((out, *torch.autograd.grad((out * upstream).sum(), (x, lo, hi))))
    for mine, ref in zip(*grads):
        assert torch.allclose(mine, ref, rtol=1e-4, atol=1e-5)
    assert grads[0][2].abs().sum() > 0 and grads[0][3].abs().sum() > 0  # the ranges do get gradient


def test_fused_quantizer_collapsed_range_matches_autograd() -> None:
    x = torch.linspace(-2e-6, 2e-6, 9, requires_grad=True)  # hi - lo = 0 is clamped to 1e-6: some x inside
    lo, hi = torch.tensor(0.0, requires_grad=True), torch.tensor(0.0, requires_grad=True)
    mine = torch.autograd.grad(quantize_activation(x, lo, hi, 2).sum(), (x, lo, hi))
    ref = torch.autograd.grad(_composed_reference(x, lo, hi, 2).sum(), (x, lo, hi))
    assert all(torch.allclose(m, r) for m, r in zip(mine, ref)) and mine[1].abs() > 0


def test_dorefa_quantizers_against_a_per_element_reference() -> None:
    """Any-Precision DNN's rule written element by element in plain Python: tanh, halve by the largest
    magnitude, shift to [0, 1], round onto 2**b - 1 steps, back to [-1, 1], times that largest magnitude."""
    torch.manual_seed(0)
    w = torch.randn(2, 3, 4) * 0.3
    for bits in (2, 3, 8):
        levels = 2 ** bits - 1
        got = dorefa_weight(w, bits)
        for i in range(2):  # one weight tensor per leading index
            vals = [float(v) for v in w[i].flatten()]
            top = max(abs(math.tanh(v)) for v in vals)
            ref = [(2 * round((math.tanh(v) / (2 * top) + 0.5) * levels) / levels - 1) * top for v in vals]
            torch.testing.assert_close(got[i].flatten(), torch.tensor(ref), rtol=1e-5, atol=1e-6)
        assert len(got[0].unique()) <= 2 ** bits
    x = torch.linspace(-1, 2, 301, requires_grad=True)
    a = dorefa_activation(x, 2)
    assert torch.allclose(a, torch.round(x.clamp(0, 1) * 3) / 3)
    a.sum().backward()
    inside = (x > 0) & (x < 1)
    assert torch.all(x.grad[inside] == 1.0) and torch.all(x.grad[(x < 0) | (x > 1)] == 0.0)


@pytest.mark.parametrize("variant", VARIANTS)
def test_forward_at_every_bit_width(variant: str) -> None:
    cfg = MultiQuantConfig(variant=variant)
    net = MultiBitResNet(TINY, cfg)
    net.init_from_float(_float_net())
    x = torch.randn(3, 1, 28, 28)
    for bits in cfg.bits:
        net.set_bits(bits)
        out = net(x)
        assert out.shape == (3, 10) and torch.isfinite(out).all()
    with pytest.raises(SqueezeError, match="trained for bit widths"):
        MultiBitResNet(TINY, MultiQuantConfig(bits=(2, 4, 8))).set_bits(3)


def test_without_quantization_the_topology_is_the_float_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Identity quantizers: every even width (tiled identical branches, averaged) reproduces the float net."""
    monkeypatch.setattr(mq_layers, "quantize_weight", lambda w, lo, hi, bits: w)
    monkeypatch.setattr(mq_layers, "quantize_activation", lambda x, lo, hi, bits: x)
    ref_net = _float_net()
    x = torch.randn(4, 1, 28, 28)
    ref = ref_net(x)
    for variant in ("multiquant", "multiquant-no-amortization", "any-precision"):
        cfg = MultiQuantConfig(variant=variant)
        net = MultiBitResNet(TINY, cfg)
        net.init_from_float(ref_net)
        net.eval()
        for bits in cfg.bits:
            net.set_bits(bits)
            if bits % 2 == 0 or variant == "any-precision":
                assert torch.allclose(net(x), ref, atol=1e-5), (variant, bits)


def test_partial_widths_per_stage(monkeypatch: pytest.MonkeyPatch) -> None:
    """``partial_widths`` sets the partial branch's width per stage; at full width (identity quantizers) the
    partial branch is one more copy of the float body, so odd widths reproduce the float network too."""
    assert MultiBitResNet(TINY, MultiQuantConfig()).partial == [3, 6, 6]  # partial_ratio 0.75
    net = MultiBitResNet(TINY, MultiQuantConfig(partial_widths="4,6,8"))
    assert net.partial == [4, 6, 8] and net.layer2[0].conv1.partial_weight.shape[:2] == (6, 4)
    for bad in ((4, 6), (4, 9, 8)):
        with pytest.raises(SqueezeError, match="one width per stage"):
            MultiBitResNet(TINY, MultiQuantConfig(partial_widths=bad))
    monkeypatch.setattr(mq_layers, "quantize_weight", lambda w, lo, hi, bits: w)
    monkeypatch.setattr(mq_layers, "quantize_activation", lambda x, lo, hi, bits: x)
    ref_net, x = _float_net(), torch.randn(4, 1, 28, 28)
    net = MultiBitResNet(TINY, MultiQuantConfig(partial_widths=TINY.widths))
    net.init_from_float(ref_net)
    net.eval()
    for bits in (3, 5, 7):
        net.set_bits(bits)
        torch.testing.assert_close(net(x), ref_net(x), rtol=1e-5, atol=1e-5)


def test_step_bits_sampling() -> None:
    bits = (2, 3, 4, 5, 6, 7, 8)
    assert step_bits(bits, 0, 5, 0) == [8, 7, 6, 5, 4, 3, 2]
    picks = [step_bits(bits, 3, s, 0) for s in range(40)]
    assert all(p[0] == 8 and p[-1] == 2 and len(p) == 3 for p in picks)
    assert {p[1] for p in picks} == {3, 4, 5, 6, 7}
    assert picks == [step_bits(bits, 3, s, 0) for s in range(40)]


@pytest.mark.parametrize("bad, match", [
    ({"bits": "1,2,8"}, "outside 2..8"), ({"bits": "2,4,9"}, "outside 2..8"),
    ({"bits": "2,3,4"}, "lacks the distillation teacher"), ({"bits": "2,x"}, "comma list"),
    ({"variant": "nope"}, "variant"), ({"teacher_bits": 4, "bits": "2,4,8"}, "widest"),
    ({"partial_init": "leadng"}, "partial_init"), ({"weight_init": "lsq"}, "weight_init"),
    ({"partial_widths": "4,x"}, "comma list"),
    ({"partial_widths": [4, 0, 8]}, "positive"),
])
def test_bad_config(bad: dict, match: str) -> None:
    with pytest.raises(SqueezeError, match=match):
        MultiQuantConfig(**bad)


def test_train_eval_resume_refusals(tmp_path: Path) -> None:
    """A two-step run end to end: per-bit results, eval by bit width, refusals keep the checkpoint."""
    cfg = MultiQuantConfig(bits=(2, 3, 4, 8), train_bits=3, epochs=1, subset=64, batch_size=32, eval_subset=32)
    run = tmp_path / "run"
    torch.set_num_threads(1)
    out = train_multiquant(cfg, EngineConfig(run, progress=False), float_net=_float_net(), float_top1=50.0,
                           test_limit=64)
    assert set(out["top1"]) == {"2", "3", "4", "8"}
    saved = json.loads((run / "multiquant.json").read_text())
    assert saved["test_images"] == 64 and saved["log"][0]["epoch"] == 1
    ckpt = (run / CHECKPOINT).read_bytes()
    with pytest.raises(SqueezeError, match="not among"):
        eval_run(run, abits=5)
    bigger = MultiQuantConfig(bits=(2, 3, 4, 8), train_bits=3, epochs=2, subset=64, batch_size=32, eval_subset=32)
    with pytest.raises(SqueezeError, match="another model or config"):
        train_multiquant(bigger, EngineConfig(run, resume=True, progress=False), float_net=_float_net(),
                         float_top1=50.0)
    with pytest.raises(SqueezeError, match="already holds"):
        train_multiquant(cfg, EngineConfig(run, progress=False), float_net=_float_net(), float_top1=50.0)
    assert (run / CHECKPOINT).read_bytes() == ckpt


def test_branch_noise_breaks_the_tie_of_tiled_branches() -> None:
    """Plain tiling starts every branch as the float weights; branch_noise perturbs B1..B3 independently."""
    float_net = _float_net()
    w = float_net.layer1[0].conv1.weight.detach()
    for noise in (0.0, 0.1):
        net = MultiBitResNet(TINY, MultiQuantConfig(branch_noise=noise))
        net.init_from_float(float_net, noise, seed=3)
        branches = net.layer1[0].conv1.weight.detach().unflatten(0, (4, len(w)))
        assert torch.equal(branches[0], w)  # B0 runs alone at 2 bits: always the float copy
        for k in (1, 2, 3):
            rel = float((branches[k] - w).std() / w.std())
            assert rel == pytest.approx(noise, abs=0.03)
        assert torch.equal(branches[1], branches[2]) == (noise == 0.0)
    with pytest.raises(SqueezeError, match="branch_noise"):
        MultiQuantConfig(branch_noise=-0.1)


def test_partial_logits_are_the_classifier_on_the_partial_branch_alone() -> None:
    """``with_partial`` returns the partial branch's own logits at odd widths (what partial_loss trains), None at
    even ones, and leaves the network's logits unchanged; only odd widths' partial weights get its gradient."""
    net = MultiBitResNet(TINY, MultiQuantConfig())
    net.init_from_float(_float_net())
    net.eval()
    x = torch.randn(3, 1, 28, 28)
    for bits in (3, 4):
        net.set_bits(bits)
        logits, partial = net(x, with_partial=True)
        assert torch.equal(logits, net(x))
        feats = net.branch_features(x)
        if bits % 2:
            assert torch.allclose(partial, net.fc(feats[:, -1]), atol=1e-6)
            partial.sum().backward()
            conv = net.layer1[0].conv1
            assert conv.partial_weight.grad.abs().sum() > 0
            assert conv.weight.grad.abs().sum() == 0  # the partial branch alone reads no full branch
            net.zero_grad(set_to_none=True)
        else:
            assert partial is None
    with pytest.raises(SqueezeError, match="partial_loss"):
        MultiQuantConfig(partial_loss=-1.0)


def test_reordered_network_computes_the_same_logits() -> None:
    net, x = _float_net(TWO_BLOCKS), torch.randn(16, 1, 28, 28)
    ordered = order_by_importance(net, x)
    with torch.no_grad():
        torch.testing.assert_close(ordered(x), net(x), rtol=1e-5, atol=1e-5)
    assert not torch.equal(ordered.conv1.weight, net.conv1.weight)  # something was actually permuted
    assert torch.equal(net.conv1.weight, _float_net(TWO_BLOCKS).conv1.weight)  # the input network is left as it was


def test_leading_channels_score_highest_after_reordering() -> None:
    net, x = _float_net(TWO_BLOCKS), torch.randn(16, 1, 28, 28)
    stream, inner = channel_scores(order_by_importance(net, x), x)
    before_stream, before_inner = channel_scores(net, x)
    flat = lambda s, i: s + [t for stage in i for t in stage]  # noqa: E731
    for after, before in zip(flat(stream, inner), flat(before_stream, before_inner)):
        torch.testing.assert_close(after, before.sort(descending=True).values)


def test_partial_init_importance_starts_the_partial_branch_from_the_reordered_network() -> None:
    net = _float_net(TWO_BLOCKS)
    data = (torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,)))
    cfg = MultiQuantConfig(bits=(2, 3, 8), partial_init="importance", batch_size=16)
    task = MultiQuantTask(cfg, net, "tag", data, data)
    mq, _ = task.build()
    ordered = order_by_importance(net, next(iter(task.batches(-1, 0, 1)))[0])
    p = mq.partial[0]
    torch.testing.assert_close(mq.layer1[0].conv1.partial_weight, ordered.layer1[0].conv1.weight[:p, :p])
    leading, _ = MultiQuantTask(MultiQuantConfig(bits=(2, 3, 8), batch_size=16), net, "tag", data, data).build()
    torch.testing.assert_close(leading.layer1[0].conv1.partial_weight, net.layer1[0].conv1.weight[:p, :p])


def test_shared_partial_branch_is_the_leading_slice_of_the_next_branch() -> None:
    """``partial_source=next`` (the authors' code): no weights of its own; at 3 bits (B0 + partial) the partial
    branch convolves with B1's leading channels, at 5 and 7 bits with B3's, and its gradient lands there."""
    net = MultiBitResNet(TINY, MultiQuantConfig(partial_source="next"))
    net.init_from_float(_float_net())
    conv = net.layer1[0].conv1
    assert conv.partial_weight is None
    assert MultiQuantConfig(partial_source="next").identity()["partial_source"] == "next"
    assert "partial_source" not in MultiQuantConfig().identity()  # runs made before the option keep their tag
    own = MultiBitResNet(TINY, MultiQuantConfig())
    own.init_from_float(_float_net())  # tiled start: B1's leading slice is what the own partial copies
    x = torch.randn(3, 1, 28, 28)
    c, p = conv.c_out, conv.p_out
    for bits, nxt in ((3, 1), (5, 3), (7, 3)):
        net.set_bits(bits)
        own.set_bits(bits)
        torch.testing.assert_close(net(x), own(x))
        _, partial = net(x, with_partial=True)
        partial.sum().backward()
        grad = conv.weight.grad.unflatten(0, (BRANCHES, c))  # (branch, C_out, C_in, k, k)
        assert grad[nxt, :p, : conv.p_in].abs().sum() > 0
        assert grad[nxt, p:].abs().sum() == 0 and grad[nxt, :, conv.p_in:].abs().sum() == 0
        assert sum(grad[j].abs().sum() for j in range(BRANCHES) if j != nxt) == 0
        net.zero_grad(set_to_none=True)
    with pytest.raises(SqueezeError, match="partial_source"):
        MultiQuantConfig(partial_source="mine")


@pytest.mark.parametrize(("bits", "max_level"), [(2, 1.4936), (3, 2.0510), (4, 2.5140)])
def test_mse_weight_range_matches_the_optimal_uniform_quantizer_of_a_gaussian(bits: int, max_level: float) -> None:
    """Max (1960), uniform quantizers of a unit Gaussian: optimal steps 0.9957 / 0.5860 / 0.3352 for 4 / 8 / 16
    levels, so the outermost level (our range) sits at 1.4936 / 2.0510 / 2.5140 standard deviations."""
    w = torch.randn(200_000, generator=torch.Generator().manual_seed(0)) * 0.05
    lo, hi = weight_range_mse(w, bits)
    assert torch.equal(lo, -hi)
    assert abs(float(hi) / float(w.std()) - max_level) < 0.03


def test_weight_init_mse_sets_one_range_per_weight_bit_width() -> None:
    """MultiQuant's single 2-bit column and Any-Precision's seven switched columns each get their own optimum."""
    ref = _float_net()
    for variant, cols in (("multiquant", [2]), ("any-precision", list(range(2, 9)))):
        net = MultiBitResNet(TINY, MultiQuantConfig(variant=variant, weight_init="mse"))
        net.init_from_float(ref, weight_init="mse")
        conv, w = net.layer2[0].conv1, ref.layer2[0].conv1.weight
        expect = torch.stack([weight_range_mse(w, b)[1] for b in cols])
        torch.testing.assert_close(conv.w_hi[0], expect)
        torch.testing.assert_close(conv.w_lo[0], -expect)
    assert "weight_init" in MultiQuantConfig(weight_init="mse").identity()
    assert "weight_init" not in MultiQuantConfig().identity()
