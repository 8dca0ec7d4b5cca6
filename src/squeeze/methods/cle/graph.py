"""Finding what data-free quantization may fold and equalize, by one probing forward pass (no tracing).

Hooks on every leaf module record which tensor each call consumed and produced (they are always removed).
From that record: a batch norm whose input is a conv's output is a *fold*; a conv whose input comes from
another conv through at most a batch norm, one positively homogeneous activation (or a ReLU6, homogeneous
below its clip) and shape-only modules (padding, dropout, max pooling) is a *pair* (Nagel et al., ICCV 2019, Sec. 4.1: f(s x) = s f(x) for s > 0).
Hooks cannot see functional ops (a residual ``+``), so a tensor that also flows elsewhere looks like a pair
too; :func:`squeeze.methods.cle.method.verified_pairs` rescales each candidate and keeps only those that
leave the output unchanged.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import torch
from torch import nn

from squeeze.quant.attach import forward_with_hooks
from squeeze.quant.modules import QuantConv2d

ACTIVATIONS = (nn.ReLU, nn.LeakyReLU)  # f(s x) = s f(x) for s > 0
BOUNDED = (nn.ReLU6,)  # equal to ReLU on channels that never reach 6: equalizable there with bounded scales
PASS_THROUGH = (nn.ZeroPad2d, nn.Identity, nn.Dropout, nn.MaxPool2d)  # per-channel scaling commutes


@dataclass(frozen=True)
class Pair:
    """``second`` reads ``first``'s output channels, through ``path`` (module names, in order).

    ``activation`` is ``relu``, ``relu6``, ``linear`` (no activation) or ``other`` (equalizable, but the
    bias absorption and analytic bias correction formulas do not cover it); ``exact_mean`` says that the
    expected input of ``second`` follows from ``first``'s pre-activation statistics (only ReLU, ReLU6,
    padding, identity and dropout on the way)."""

    first: str
    second: str
    path: tuple[str, ...]
    activation: str
    exact_mean: bool


@dataclass
class Links:
    """``folds``: (conv, batch norm) names; ``pairs``: candidate equalization pairs in execution order."""

    folds: list[tuple[str, str]] = field(default_factory=list)
    pairs: list[Pair] = field(default_factory=list)


@dataclass
class _Call:
    name: str
    module: nn.Module
    order: int
    source: torch.Tensor  # the first tensor argument; both kept alive, so no later tensor reuses their ids
    output: torch.Tensor

    @property
    def inputs(self) -> int:
        return id(self.source)


@dataclass
class _Record:
    """Every leaf call of one forward pass: ``producer`` maps a tensor id to the call that made it,
    ``inplace`` to the calls that returned it modified (``ReLU(inplace=True)``) or unchanged (Identity)."""

    calls: list[_Call] = field(default_factory=list)
    producer: dict[int, _Call] = field(default_factory=dict)
    inplace: dict[int, list[_Call]] = field(default_factory=dict)
    inputs: dict[int, torch.Tensor] = field(default_factory=dict)


def _record(model: nn.Module, sample: torch.Tensor) -> _Record:
    rec = _Record()

    def hook(mod: nn.Module, args: tuple, out: object, name: str) -> None:
        if not (args and isinstance(args[0], torch.Tensor) and isinstance(out, torch.Tensor)):
            return
        call = _Call(name, mod, len(rec.calls), args[0], out)
        rec.calls.append(call)
        rec.inputs[id(args[0])] = args[0]
        if out is args[0]:
            rec.inplace.setdefault(id(out), []).append(call)
        else:
            rec.producer[id(out)] = call

    handles = [m.register_forward_hook(lambda m, a, o, n=n: hook(m, a, o, n))
               for n, m in model.named_modules() if not list(m.children())]
    forward_with_hooks(model, sample, handles)
    return rec


def depthwise(conv: nn.Conv2d) -> bool:
    return conv.groups > 1 and conv.groups == conv.in_channels == conv.out_channels


def _fits(first: nn.Conv2d, second: nn.Conv2d) -> bool:
    return second.in_channels == first.out_channels and (second.groups == 1 or depthwise(second))


def _functional(rec: _Record, tensor: int, before: int) -> _Call | None:
    """A pseudo call for ``F.relu(t)`` or a functional identity where ``t`` is an output recorded before
    ``before`` and the tensor's values are exactly relu(t) (hooks cannot see functional ops; the values can)."""
    x = rec.inputs.get(tensor)
    if x is None:
        return None
    for call in reversed(rec.calls[:before]):
        out = call.output
        if out.shape != x.shape or call.output is x:
            continue
        if torch.equal(out.clamp_min(0), x):
            module: nn.Module = nn.Identity() if torch.equal(out, x) else nn.ReLU()
            return _Call(f"functional {type(module).__name__}", module, before, out, x)
    return None


def _steps_back(call: _Call, rec: _Record) -> tuple[_Call | None, list[_Call]]:
    """The calls between ``call``'s input and the conv that produced it, in forward order (None: no conv)."""
    steps: list[_Call] = []
    tensor, before = call.inputs, call.order
    while True:
        steps += [op for op in reversed(rec.inplace.get(tensor, [])) if op.order < before]
        current = rec.producer.get(tensor) or _functional(rec, tensor, before)
        if current is None or isinstance(current.module, QuantConv2d):
            return current, steps[::-1]
        steps.append(current)
        tensor, before = current.inputs, current.order


def _trace_back(call: _Call, rec: _Record, folded: set[str]) -> tuple[_Call | None, list[_Call]]:
    """Walk from a conv's input back to the conv that produced it; (None, []) when the path is not allowed:
    only the batch norm folded into that conv (right after it), one activation and pass-through modules."""
    first, path = _steps_back(call, rec)
    activations = 0
    for i, step in enumerate(path):
        if isinstance(step.module, nn.BatchNorm2d):
            if i != 0 or step.name not in folded:
                return None, []
        elif isinstance(step.module, ACTIVATIONS + BOUNDED):
            activations += 1
        elif not isinstance(step.module, PASS_THROUGH):
            return None, []
    if first is None or activations > 1:
        return None, []
    return first, path


def _pair(first: _Call, second: _Call, path: list[_Call]) -> Pair:
    acts = [c.module for c in path if isinstance(c.module, ACTIVATIONS + BOUNDED)]
    activation = ("linear" if not acts else "relu" if isinstance(acts[0], nn.ReLU) else
                  "relu6" if isinstance(acts[0], nn.ReLU6) else "other")
    exact = all(isinstance(c.module, (nn.BatchNorm2d, nn.ReLU, nn.ReLU6, nn.ZeroPad2d, nn.Identity, nn.Dropout))
                for c in path)
    return Pair(first.name, second.name, tuple(c.name for c in path), activation, exact and activation != "other")


def find_links(model: nn.Module, sample: torch.Tensor) -> Links:
    """Folds and candidate pairs of a prepared model (``QuantConv2d`` layers) seen on ``model(sample)``.
    Pairs through a ReLU6 are listed with ``activation="relu6"``: bias correction reads them, equalization
    only with bounded scales (``relu6=bounded``)."""
    rec = _record(model, sample)
    counts = Counter(c.name for c in rec.calls)
    links = Links()
    for c in rec.calls:
        before = rec.producer.get(c.inputs)
        if isinstance(c.module, nn.BatchNorm2d) and before is not None and isinstance(before.module, QuantConv2d) \
                and counts[before.name] == 1 and counts[c.name] == 1 and not rec.inplace.get(c.inputs):
            links.folds.append((before.name, c.name))
    folded = {bn for _, bn in links.folds}
    for c in rec.calls:
        if not isinstance(c.module, QuantConv2d) or counts[c.name] != 1:
            continue
        first, path = _trace_back(c, rec, folded)
        if first is not None and counts[first.name] == 1 and _fits(first.module, c.module):  # type: ignore[arg-type]
            links.pairs.append(_pair(first, c, path))
    return links
