"""DFQ (squeeze.methods.cle): finding pairs without tracing, keeping the float function, end to end."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import squeeze
from squeeze.errors import SqueezeError
from squeeze.methods.cle import ReLUFromReLU6, find_links, transform, verified_pairs
from squeeze.methods.cle.method import fold_batchnorms, measured_means
from squeeze.quant.prepare import prepare_model


def _bn(c: int, gen: torch.Generator) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(c)
    bn.running_mean.copy_(torch.randn(c, generator=gen) * 0.3)
    bn.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
    bn.weight.data.copy_(torch.rand(c, generator=gen) * 0.5 + 0.2)
    bn.bias.data.copy_(torch.randn(c, generator=gen) * 0.2)
    return bn


class Tiny(nn.Module):
    """An inverted residual block with one ReLU6 module used three times, a residual add, an in-place ReLU
    and a functional one: what hooks alone cannot see."""

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        torch.manual_seed(0)
        self.stem, self.bn0 = nn.Conv2d(3, 8, 3, padding=1, bias=False), _bn(8, gen)
        self.act = nn.ReLU6()
        self.expand, self.bn1 = nn.Conv2d(8, 16, 1, bias=False), _bn(16, gen)
        self.pad = nn.ZeroPad2d(1)
        self.dw, self.bn2 = nn.Conv2d(16, 16, 3, groups=16, bias=False), _bn(16, gen)
        self.project, self.bn3 = nn.Conv2d(16, 8, 1, bias=False), _bn(8, gen)
        self.c1, self.bn4, self.relu = nn.Conv2d(8, 8, 3, padding=1), _bn(8, gen), nn.ReLU(inplace=True)
        self.c2, self.bn5 = nn.Conv2d(8, 8, 3, padding=1), _bn(8, gen)
        self.c3 = nn.Conv2d(8, 8, 1)
        self.head = nn.Linear(8, 4)
        self.bn1.running_var.copy_(torch.logspace(-3, 1, 16))  # folded: ranges 100x apart, one range per tensor hurts
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn0(self.stem(x)))
        y = self.act(self.bn1(self.expand(x)))
        y = self.act(self.bn2(self.dw(self.pad(y))))
        x = x + self.bn3(self.project(y))
        z = self.relu(self.bn4(self.c1(x)))
        z = self.c3(F.relu(self.bn5(self.c2(z))))
        return self.head(z.mean((2, 3)))


def _prepared() -> tuple[nn.Module, torch.Tensor]:
    model = Tiny()
    prepare_model(model)
    return model, torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))


def _pairs(links) -> dict[tuple[str, str], str]:  # noqa: ANN001
    return {(p.first, p.second): p.activation for p in links.pairs}


def test_links_seen_through_shared_inplace_and_functional_activations() -> None:
    model, x = _prepared()
    links = find_links(model, x[:1])
    assert len(links.folds) == 6
    assert _pairs(links) == {("stem", "expand"): "relu6", ("expand", "dw"): "relu6", ("dw", "project"): "relu6",
                             ("c1", "c2"): "relu", ("c2", "c3"): "relu"}  # project -> c1 crosses the add
    assert all(not m._forward_hooks for m in model.modules())  # hooks removed


def test_verification_drops_a_pair_whose_tensor_also_feeds_the_residual() -> None:
    model, x = _prepared()
    links = find_links(model, x[:1])
    fold_batchnorms(model, links.folds)
    kept = {(p.first, p.second) for p in verified_pairs(model, links.pairs, x[:1], seed=0)}
    assert ("stem", "expand") not in kept and ("expand", "dw") in kept and ("c2", "c3") in kept
    assert all(isinstance(m, nn.ReLU6) for m in [model.act])  # the ReLU6 was put back after verification


def test_keep_relu6_equalizes_around_it_but_still_corrects_behind_it() -> None:
    model, x = _prepared()
    with torch.no_grad():
        done = transform(model, squeeze.make_config("cle", relu6="keep"), [x])
    assert done["pairs"] == 2 and done["candidate_pairs"] == 2  # c1 -> c2 and c2 -> c3 only
    assert {"expand", "dw", "project", "c2", "c3"} <= set(done["means"])  # E[clip(z, 0, 6)] behind a ReLU6


@pytest.mark.parametrize("relu6", ["relu", "bounded"])
def test_transform_keeps_the_float_function(relu6: str) -> None:
    model, x = _prepared()
    if relu6 == "relu":
        ref_model = copy.deepcopy(model)
        ref_model.act = nn.ReLU()
        ref = ref_model(x)
    else:
        ref = model(x)
    cfg = squeeze.make_config("cle", relu6=relu6, absorb=False)
    with torch.no_grad():
        done = transform(model, cfg, [x])
        torch.testing.assert_close(model(x), ref, rtol=1e-4, atol=1e-4)
    assert done["pairs"] == 4 and done["sweeps"] > 0 and done["folded"] == 6
    assert done["means"]  # analytic expected inputs for bias correction


def test_measured_means_are_each_layers_input_mean_per_channel() -> None:
    model, x = _prepared()
    means = measured_means(model, [x[:2], x[2:]])
    with torch.no_grad():  # Tiny.forward step by step
        a = model.act(model.bn0(model.stem(x)))
        y = model.act(model.bn2(model.dw(model.pad(model.act(model.bn1(model.expand(a)))))))
        z = model.relu(model.bn4(model.c1(a + model.bn3(model.project(y)))))
        z = model.c3(F.relu(model.bn5(model.c2(z))))
    torch.testing.assert_close(means["expand"], a.mean((0, 2, 3)))
    torch.testing.assert_close(means["stem"], x.mean((0, 2, 3)))
    torch.testing.assert_close(means["head"], z.mean((2, 3)).mean(0))
    assert all(not m._forward_pre_hooks for m in model.modules())


def _error(cfg_fields: dict, x: torch.Tensor) -> float:
    """Output error with 4-bit weights in ``expand`` and ``dw`` only (the pair with unequal ranges)."""
    model = Tiny()
    wide = {name: {"wbits": 16} for name in ("stem", "project", "c?", "head")}
    q = squeeze.quantize(model, squeeze.make_config("cle", wbits=4, abits=16, calib=4, overrides=wide, **cfg_fields), x)
    with torch.no_grad():
        return float((q(x) - model(x)).pow(2).mean())


def test_equalization_cuts_the_per_tensor_error() -> None:
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    fold = _error({"equalize": False, "absorb": False, "bias_correction": "none", "relu6": "relu"}, x)
    cle = _error({"absorb": False, "bias_correction": "none", "relu6": "relu"}, x)
    assert cle < 0.5 * fold, (cle, fold)


def test_quantized_file_reloads_with_its_relu_and_new_biases(tmp_path) -> None:  # noqa: ANN001
    model, x = Tiny(), torch.randn(4, 3, 8, 8)
    q = squeeze.quantize(model, squeeze.make_config("cle", wbits=6, abits=8, calib=4, relu6="relu"), x)
    assert isinstance(q.act, ReLUFromReLU6) and q.stem.bias is not None
    assert q.method_summary["corrected"] > 0
    squeeze.save(q, tmp_path / "q")
    again = squeeze.load(tmp_path / "q", model=model)
    assert isinstance(again.act, ReLUFromReLU6)
    with torch.no_grad():
        torch.testing.assert_close(again(x), q(x))


@pytest.mark.parametrize(("field", "value"), [("relu6", "clip"), ("bias_correction", "exact"), ("iterations", 0),
                                              ("equalize", "yes"), ("n_std", -1.0), ("act_scheme", "mse"),
                                              ("relu6_std", 0.0)])
def test_bad_options_fail_in_one_line(field: str, value: object) -> None:
    with pytest.raises(SqueezeError, match=field) as info:
        squeeze.make_config("cle", **{field: value})
    assert "\n" not in str(info.value)
