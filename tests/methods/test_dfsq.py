"""DFSQ: universal set, pinned-zero K-means against a loop reference, point selection, the quantizer,
layer selection on EDSR and on a differently shaped conv net, calibration time and config errors."""
from __future__ import annotations


import numpy as np
import pytest
import torch
from torch import nn

import squeeze
from squeeze.config import config_from_dict
from squeeze.errors import SqueezeError
from squeeze.methods.dfsq import (ChannelNormQuantizer, kmeans_pinned_zero, normalize_channels, quantize_layers_rtn,
                                  select_layers, select_points, uniform_points, universal_set)
from squeeze.methods.dfsq.subset import nearest_in_rows, quantize_to_points, squared_error
from squeeze.zoo.edsr import EDSRArch, build_edsr


def test_universal_set_has_the_papers_189_values() -> None:
    pos = universal_set(signed=False)
    both = universal_set()
    assert len(pos) == 189 and len(both) == 377
    assert pos[0] == 0 and pos[-1] == 1 and bool((pos[1:] > pos[:-1]).all())
    assert pos[1].item() == 2.0 ** -10  # smallest non-zero: one word at 2^-8, averaged over 4
    assert (0.5 + 0.25 + 0.125 + 0.0625) / 4 in set(pos.tolist())  # 2^-i in every word
    assert torch.equal(both[both >= 0], pos) and torch.equal(-both.flip(0)[both.flip(0) <= 0], pos)


@pytest.mark.parametrize("signed", [True, False])
def test_uniform_points_include_zero(signed: bool) -> None:
    pts = uniform_points(4, signed)
    assert len(pts) == 16 and (pts == 0).any()
    step = 2 / 15 if signed else 1 / 15
    assert torch.allclose(pts[1:] - pts[:-1], torch.full((15,), step))  # one affine grid over [-1, 1] / [0, 1]
    assert pts.min() >= (-1.0 - step if signed else 0.0) and pts.max() <= 1.0 + 1e-6


def _loop_kmeans(x: np.ndarray, init: np.ndarray, iters: int, tol: float) -> np.ndarray:
    """Plain per-row Lloyd loop (argmin over centroids), centroid 0 pinned at 0: the reference."""
    c = init.astype(np.float64).copy()
    c[0] = 0.0
    for _ in range(iters):
        assign = np.abs(x[:, None] - c[None, :]).argmin(1)
        new = c.copy()
        for j in range(len(c)):
            if (assign == j).any():
                new[j] = x[assign == j].mean()
        new[0] = 0.0
        moved = np.abs(new - c).max()
        c = new
        if moved < tol:
            break
    return c


def test_vectorized_kmeans_matches_a_loop_reference_and_keeps_zero() -> None:
    gen = torch.Generator().manual_seed(0)
    data = torch.cat([torch.randn(3, 400, generator=gen).double() * 0.3 + 0.5,
                      torch.rand(3, 400, generator=gen).double()])  # rows far from 0 and uniform rows
    init = data[:, torch.randperm(400, generator=gen)[:8]].clone()
    init[:, 0] = 0.3  # must be forced to 0
    for iters in (1, 3, 100):
        fast = kmeans_pinned_zero(data, init, iters=iters, tol=1e-3)
        assert bool((fast[:, 0] == 0).all())
        for r in range(len(data)):
            ref = _loop_kmeans(data[r].numpy(), init[r].numpy(), iters, 1e-3)
            assert np.allclose(np.sort(fast[r].numpy()), np.sort(ref), atol=1e-9), (iters, r)


def test_nearest_points_and_squared_error_match_brute_force() -> None:
    gen = torch.Generator().manual_seed(1)
    values, points = torch.randn(4, 300, generator=gen), torch.randn(4, 7, generator=gen)
    brute = points.gather(1, (values[:, :, None] - points[:, None, :]).abs().argmin(2))
    assert torch.allclose(nearest_in_rows(values, points), brute)
    err = ((brute - values) ** 2).sum(1).double()
    assert torch.allclose(squared_error(values, points), err, rtol=1e-5)
    u = torch.randn(2, 4, 5, 6, generator=gen)
    q = quantize_to_points(u, points)
    ref = points[None, :, None, None, :].expand(2, 4, 5, 6, 7)
    ref = ref.gather(-1, (u[..., None] - ref).abs().argmin(-1, keepdim=True)).squeeze(-1)
    assert torch.allclose(q, ref)


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_select_points_picks_2b_members_of_u_with_zero(bits: int) -> None:
    gen = torch.Generator().manual_seed(2)
    # a peaked, signed distribution in [-1, 1] (normalized activations look like this)
    data = (torch.distributions.Laplace(0.0, 0.08).sample((6, 2000)).clamp(-1, 1))
    universe = universal_set()
    pts = select_points(data, bits, universe, restarts=3, generator=gen)
    assert pts.shape == (6, 2 ** bits)
    assert bool(torch.isin(pts, universe).all()) and bool((pts == 0).any(1).all())
    if bits == 4:  # flexible points beat the uniform grid on a peaked distribution
        uni = uniform_points(4, True).expand(6, -1)
        assert bool((squared_error(data, pts) < squared_error(data, uni)).all())


def test_normalize_channels_ranges() -> None:
    x = torch.randn(2, 3, 5, 5) * 4 + 2
    u, mu, s = normalize_channels(x, signed=True)
    assert torch.allclose(u.abs().amax((2, 3)), torch.ones(2, 3)) and torch.allclose(u * s + mu, x, atol=1e-5)
    u, mu, _ = normalize_channels(x.relu(), signed=False)
    assert u.min() >= 0 and torch.allclose(u.amax((2, 3)), torch.ones(2, 3)) and bool((mu == 0).all())


def test_quantizer_state_dict_round_trip() -> None:
    q = ChannelNormQuantizer(3, "subset", max_samples=500, restarts=2)
    x = torch.randn(4, 3, 8, 8)
    for mode in ("probe", "observe"):
        q.mode = mode
        q(x)
    q.finalize()
    q.mode = "quant"
    fresh = ChannelNormQuantizer(3)
    fresh.load_state_dict(q.state_dict())
    fresh.mode = "quant"
    assert torch.equal(fresh(x), q(x)) and bool(fresh.signed[0])
    assert not torch.equal(q(x), x)


class ToySR(nn.Module):
    """A differently shaped SR net: no residual-block stack, odd channel counts, x3 pixel shuffle."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Conv2d(3, 24, 5, padding=2)
        self.mid1 = nn.Conv2d(24, 12, 1)
        self.mid2 = nn.Conv2d(12, 20, 3, padding=1)
        self.up = nn.Conv2d(20, 27, 3, padding=1)
        self.shuffle = nn.PixelShuffle(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.first(x))
        h = torch.tanh(self.mid2(torch.relu(self.mid1(h))))
        return self.shuffle(self.up(h))


@pytest.mark.parametrize("method", ["dfsq", "uniform-norm"])
def test_any_conv_sr_network(method: str) -> None:
    torch.manual_seed(0)
    model, calib = ToySR().eval(), torch.rand(8, 3, 12, 12)
    with torch.no_grad():
        ref = model(calib)
    errs = {}
    for bits in (8, 2):
        cfg = squeeze.make_config(method, wbits=bits, abits=bits, calib=8, restarts=2) if method == "dfsq" else \
            squeeze.make_config(method, wbits=bits, abits=bits, calib=8)
        q = squeeze.quantize(model, cfg, calib)
        chosen = [n for n, m in q.named_modules() if isinstance(getattr(m, "input_quantizer", None),
                                                                   ChannelNormQuantizer)]
        assert chosen == ["mid1", "mid2"]  # default without a block stack: all but first and last conv
        with torch.no_grad():
            errs[bits] = float((q(calib) - ref).norm() / ref.norm())
    assert errs[8] < 0.02 < errs[2]
    q = squeeze.quantize(model, squeeze.make_config(method, wbits=8, abits=8, calib=8, layers=["up", "mid*"]), calib)
    assert q.up.input_quantizer is not None and q.first.input_quantizer is None


@pytest.mark.parametrize("method", ["dfsq", "uniform-norm"])
def test_saved_run_reloads_with_identical_outputs(method: str, tmp_path) -> None:
    """squeeze.save/load rebuild the channel-norm quantizers (custom-quantizer registry) bit for bit."""
    torch.manual_seed(0)
    model, calib = ToySR().eval(), torch.rand(8, 3, 12, 12)
    q = squeeze.quantize(model, squeeze.make_config(method, wbits=4, abits=4, calib=8), calib)
    squeeze.save(q, tmp_path / "run")
    back = squeeze.load(tmp_path / "run", ToySR())
    assert isinstance(back.mid1.input_quantizer, ChannelNormQuantizer)
    x = torch.rand(2, 3, 10, 10)
    with torch.no_grad():
        torch.testing.assert_close(back(x), q(x), rtol=0, atol=1e-6)


def test_edsr_default_layers_are_the_residual_block_convs() -> None:
    torch.manual_seed(0)
    model = build_edsr(EDSRArch(scale=2)).eval()
    calib = torch.rand(32, 3, 48, 48)
    # (calibration time on 32 patches is checked by `squeeze bench sr-ptq` on a quiet machine, not here)
    q = squeeze.quantize(model, squeeze.make_config("dfsq", wbits=4, abits=4, calib=32), calib)
    names = [n for n, m in q.named_modules() if getattr(m, "weight_quantizer", None) is not None]
    assert names == [f"body.{i}.conv{j}" for i in range(8) for j in (1, 2)]
    assert bool(q.body[0].conv1.input_quantizer.signed[0])  # block input: signed, [-1, 1]
    assert not bool(q.body[0].conv2.input_quantizer.signed[0])  # post-ReLU: [0, 1]
    rtn = quantize_layers_rtn(model, squeeze.make_config("rtn", wbits=4, abits=4, calib=32), calib)
    assert [n for n, m in rtn.named_modules() if getattr(m, "weight_quantizer", None) is not None] == names


def test_bad_configs_fail_with_one_line() -> None:
    with pytest.raises(SqueezeError, match="restarts"):
        squeeze.make_config("dfsq", restarts=0)
    with pytest.raises(SqueezeError, match="kmeans_tol"):
        squeeze.make_config("dfsq", kmeans_tol=2.0)
    with pytest.raises(SqueezeError, match="unknown .*option"):
        squeeze.make_config("dfsq", restart=5)
    with pytest.raises(SqueezeError, match="layers"):
        squeeze.make_config("uniform-norm", layers="body.*")
    with pytest.raises(SqueezeError, match="max_samples"):
        squeeze.make_config("dfsq", max_samples=3)
    cfg = squeeze.make_config("dfsq", wbits=4, abits=4, calib=4, layers=["nothing*"])
    with pytest.raises(SqueezeError, match="match no Conv2d"):
        squeeze.quantize(ToySR().eval(), cfg, torch.rand(4, 3, 8, 8))
    assert config_from_dict(cfg.to_dict()) == cfg
    prepared = build_edsr(EDSRArch(scale=2, n_blocks=1, n_feats=4))
    with pytest.raises(SqueezeError, match="no Conv2d"):
        select_layers(prepared)  # not prepared: no quant layers yet
