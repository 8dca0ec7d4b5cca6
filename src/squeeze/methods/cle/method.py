"""DFQ glue (Nagel et al., "Data-Free Quantization Through Weight Equalization and Bias Correction", ICCV
2019): fold batch norm, equalize consecutive convs, absorb high biases, correct the biases for the expected
weight-quantization error, then quantize with round-to-nearest.

Folding and equalization through ReLU leave the float model's function unchanged, and the method checks
that on a probe input: a pair whose rescaling would change the output (a tensor that also flows into a
residual ``+``) is skipped rather than trusted. Bias absorption and equalization through ReLU6 (``bounded``)
change it only in the tails of the batch norm statistics; ``relu6=relu`` changes it by design (the paper's).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from squeeze.config import register_method
from squeeze.errors import SqueezeError
from squeeze.methods.cle import primitives as P
from squeeze.methods.cle.config import CLEConfig
from squeeze.methods.cle.graph import Pair, depthwise, find_links
from squeeze.methods.steps import rtn_stage
from squeeze.quant.attach import attach_quantizers, forward_with_hooks, probe_roles
from squeeze.quant.calibrate import walk
from squeeze.quant.custom import register_custom_quantizer
from squeeze.quant.modules import QUANT_LAYERS
from squeeze.quant.primitives import Granularity
from squeeze.quant.quantizer import Quantizer, QuantSpec

Stats = dict[str, tuple[torch.Tensor, torch.Tensor]]  # conv name -> per-channel (mean, std) after its batch norm
TOLERANCE = 1e-4  # relative change of the probe output that counts as "function preserved"
RELU6 = 6.0


@register_custom_quantizer
class ReLUFromReLU6(nn.ReLU):
    """A ReLU put in place of a ReLU6 so that equalization may rescale through it (Nagel et al. Sec. 5,
    MobileNetV2); registered so :func:`squeeze.load` rebuilds it."""

    def header(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_header(cls, info: dict[str, Any]) -> "ReLUFromReLU6":
        return cls()


def swap_relu6(model: nn.Module) -> dict[str, nn.Module]:
    """Replace every ``nn.ReLU6`` of ``model`` by a ReLU, in place; returns the originals by name."""
    originals = {n: m for n, m in model.named_modules() if isinstance(m, nn.ReLU6)}
    for name in originals:
        _put(model, name, ReLUFromReLU6())
    return originals


def _put(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent), attr, module)


def _output(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    if not isinstance(out, torch.Tensor):
        raise SqueezeError(f"cle needs a model that returns a tensor, got {type(out).__name__}; use --method rtn")
    return out


def _change(out: torch.Tensor, reference: torch.Tensor) -> float:
    """max |out - reference| relative to max |reference|."""
    out, reference = out.detach(), reference.detach()
    return float((out - reference).abs().max()) / max(float(reference.abs().max()), 1e-12)


def _same(out: torch.Tensor, reference: torch.Tensor) -> bool:
    return _change(out, reference) <= TOLERANCE


def _bias(layer: nn.Module) -> torch.Tensor:
    return layer.bias.data if layer.bias is not None else torch.zeros(layer.weight.shape[0])


def _set_bias(layer: nn.Module, bias: torch.Tensor) -> None:
    if layer.bias is None:  # a bias the float model did not have; squeeze.load recreates it from the file
        layer.bias = nn.Parameter(bias.clone())
    else:
        layer.bias.data.copy_(bias)


def fold_batchnorms(model: nn.Module, folds: list[tuple[str, str]]) -> Stats:
    """Fold each batch norm into its conv and make the batch norm an exact identity (the architecture stays,
    so the saved file loads into the zoo model). Returns each conv's output statistics: batch norm's
    output has mean beta and std |gamma| per channel."""
    stats: Stats = {}
    for conv_name, bn_name in folds:
        conv, bn = model.get_submodule(conv_name), model.get_submodule(bn_name)
        gamma = bn.weight.data if bn.affine else torch.ones_like(bn.running_mean)
        beta = bn.bias.data if bn.affine else torch.zeros_like(bn.running_mean)
        weight, bias = P.fold_batchnorm(conv.weight.data, _bias(conv), bn.running_mean, bn.running_var,
                                        gamma, beta, bn.eps)
        stats[conv_name] = (beta.clone(), gamma.abs().clone())
        conv.weight.data.copy_(weight)
        _set_bias(conv, bias)
        bn.running_mean.zero_()
        bn.running_var.fill_(1.0 - bn.eps)  # (x - 0) / sqrt(1 - eps + eps) = x
        if bn.affine:
            bn.weight.data.fill_(1.0)
            bn.bias.data.zero_()
    return stats


def rescale_pair(model: nn.Module, pair: Pair, s: torch.Tensor) -> None:
    """Divide ``pair.first``'s output channels by ``s`` and multiply ``pair.second``'s inputs by ``s``."""
    first, second = model.get_submodule(pair.first), model.get_submodule(pair.second)
    weight, bias = P.scale_output(first.weight.data, _bias(first), s)
    first.weight.data.copy_(weight)
    _set_bias(first, bias)
    second.weight.data.copy_(P.scale_input(second.weight.data, s, depthwise(second)))


def verified_pairs(model: nn.Module, pairs: list[Pair], sample: torch.Tensor, seed: int) -> list[Pair]:
    """The pairs whose random rescaling (s in [1/2, 2]) leaves ``model(sample)`` unchanged. ReLU6 layers are
    ReLUs meanwhile: this checks where each tensor flows, the clip is ``equalize``'s business."""
    gen = torch.Generator().manual_seed(seed)
    originals = swap_relu6(model)
    try:
        reference = _output(model, sample)
        kept = []
        for pair in pairs:
            n = model.get_submodule(pair.first).out_channels
            s = torch.exp((torch.rand(n, generator=gen) * 2 - 1) * 0.69)
            rescale_pair(model, pair, s)
            same = _same(_output(model, sample), reference)
            rescale_pair(model, pair, 1 / s)
            if same:
                kept.append(pair)
    finally:
        for name, module in originals.items():
            _put(model, name, module)
    return kept


def equalize(model: nn.Module, pairs: list[Pair], stats: Stats, iterations: int, relu6_std: float = 6.0,
             tol: float = 1e-4) -> int:
    """Sweep cross-layer equalization over ``pairs`` until no scale moves by more than ``tol``; returns the
    number of sweeps. ``stats`` follow the rescaled channels. Through a ReLU6 a channel is rescaled only if
    its mean + ``relu6_std`` std stays below 6 before and after."""
    for sweep in range(1, iterations + 1):
        change = 0.0
        for pair in pairs:
            first, second = model.get_submodule(pair.first), model.get_submodule(pair.second)
            s = P.equalization_scales(P.output_ranges(first.weight.data),
                                      P.input_ranges(second.weight.data, depthwise(second)))
            if pair.activation == "relu6":  # no statistics: no bound, so leave the channels alone
                s = P.bounded_scales(s, *stats[pair.first], RELU6, relu6_std) if pair.first in stats \
                    else torch.ones_like(s)
            rescale_pair(model, pair, s)
            if pair.first in stats:
                mean, std = stats[pair.first]
                stats[pair.first] = (mean / s, std / s)
            change = max(change, float((s - 1).abs().max()))
        if change < tol:
            return sweep
    return iterations


def absorb_biases(model: nn.Module, pairs: list[Pair], stats: Stats, n_std: float) -> int:
    """High-bias absorption on each pair through a ReLU (or nothing) whose first conv has statistics;
    returns how many pairs moved any bias. Approximate where ``second`` zero-pads (the paper ignores it)."""
    moved = 0
    for pair in pairs:
        if pair.activation not in ("relu", "linear") or pair.first not in stats:
            continue
        mean, std = stats[pair.first]
        c = P.absorbed_bias(mean, std, n_std)
        if not bool((c > 0).any()):
            continue
        first, second = model.get_submodule(pair.first), model.get_submodule(pair.second)
        _set_bias(first, _bias(first) - c)
        _set_bias(second, _bias(second) + P.input_response(second.weight.data, c, depthwise(second)))
        stats[pair.first] = (mean - c, std)
        moved += 1
    return moved


def analytic_means(pairs: list[Pair], stats: Stats) -> dict[str, torch.Tensor]:
    """E[input] per channel of every layer fed by a batch-normed conv through a ReLU or nothing."""
    means = {}
    for pair in pairs:
        if pair.exact_mean and pair.first in stats:
            mean, std = stats[pair.first]
            means[pair.second] = (P.relu_mean(mean, std) if pair.activation == "relu" else
                                  P.clipped_relu_mean(mean, std, RELU6) if pair.activation == "relu6" else mean)
    return means


def measured_means(model: nn.Module, batches: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """E[input] per channel of every conv and linear layer, measured on ``batches`` (hooks always removed)."""
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}

    def hook(mod: nn.Module, args: tuple, name: str) -> None:
        x = args[0].detach()
        x = x.transpose(1, -1) if isinstance(mod, nn.Conv2d) else x  # channels last
        flat = x.reshape(-1, x.shape[-1])
        sums[name] = sums.get(name, 0) + flat.sum(0)
        counts[name] = counts.get(name, 0) + flat.shape[0]

    handles = [m.register_forward_pre_hook(lambda m, a, n=n: hook(m, a, n))
               for n, m in model.named_modules() if isinstance(m, QUANT_LAYERS)]
    forward_with_hooks(model, batches, handles)
    return {n: sums[n] / counts[n] for n in sums}


def correct_biases(model: nn.Module, means: dict[str, torch.Tensor]) -> int:
    """Subtract (W_q - W) E[x] from each layer's bias (its weight quantizer is calibrated here on the weight
    alone); returns the number of layers corrected."""
    done = 0
    for name, mean in means.items():
        layer = model.get_submodule(name)
        q = getattr(layer, "weight_quantizer", None)
        if q is None:
            continue
        q.calibrate(layer.weight)
        quantized = q.fake_quant(layer.weight.detach().clone())  # fake_quant may work in place without grad
        dw = isinstance(layer, nn.Conv2d) and depthwise(layer)
        _set_bias(layer, _bias(layer) - P.bias_correction(layer.weight.data, quantized, mean, dw))
        done += 1
    return done


def per_tensor_weights(model: nn.Module) -> None:
    """One range per weight tensor (the paper's setting) instead of per output channel."""
    for mod in model.modules():
        if isinstance(mod, QUANT_LAYERS) and mod.weight_quantizer is not None:
            bits = mod.weight_quantizer.spec.bits
            mod.weight_quantizer = Quantizer(QuantSpec(bits, granularity=Granularity("tensor")))


def transform(model: nn.Module, config: CLEConfig, batches: list[torch.Tensor]) -> dict[str, Any]:
    """Every float-model step of DFQ, in place: ReLU6 swap, folding, equalization, absorption; then the
    expected inputs for bias correction. Returns what was done, with the means under ``means``."""
    sample = batches[0][:1]
    swapped = swap_relu6(model) if config.relu6 == "relu" else {}
    with torch.no_grad():
        reference = _output(model, sample)
        links = find_links(model, sample)
        stats = fold_batchnorms(model, links.folds)
        if not _same(_output(model, sample), reference):
            raise SqueezeError("folding batch norm changed the model's output (a conv output used by more than "
                               "its batch norm?); quantize this model with --method rtn")
        candidates = [p for p in links.pairs if p.activation != "relu6" or config.relu6 == "bounded"]
        pairs = verified_pairs(model, candidates, sample, config.seed)
        sweeps = equalize(model, pairs, stats, config.iterations, config.relu6_std) if config.equalize else 0
        change = _change(_output(model, sample), reference)  # 0 up to rounding, but for ReLU6 tails
        absorbed = absorb_biases(model, pairs, stats, config.n_std) if config.absorb else 0
    means = {"analytic": lambda: analytic_means(links.pairs, stats), "none": dict,
             "empirical": lambda: measured_means(model, batches)}[config.bias_correction]()
    return {"relu6_swapped": len(swapped), "folded": len(links.folds), "pairs": len(pairs),
            "candidate_pairs": len(candidates), "sweeps": sweeps, "equalized_output_change": change,
            "absorbed": absorbed, "means": means}


@register_method(CLEConfig, "DFQ: batch norm folding, cross-layer equalization, bias absorption and correction")
def apply_cle(model: nn.Module, config: CLEConfig, batches: list[torch.Tensor]) -> None:
    """Quantize ``model`` (already prepared) in place with DFQ, then round-to-nearest (Nagel et al. 2019)."""
    done = transform(model, config, batches)
    attach_quantizers(model, config, probe_roles(model, batches[0][:1]), config.act_scheme,  # type: ignore[arg-type]
                      percentile=config.percentile)
    if not config.per_channel_weights:
        per_tensor_weights(model)
    done["corrected"] = correct_biases(model, done.pop("means"))
    model.method_summary = done  # what was folded / equalized / corrected, for report.json
    walk(model, batches, rtn_stage, desc="cle")
