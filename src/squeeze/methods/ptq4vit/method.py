"""PTQ4ViT (Yuan, Xu, Wang, Wu, Sun, "PTQ4ViT: Post-Training Quantization for Vision Transformers
with Twin Uniform Quantization", ECCV 2022), written from the paper.

* Twin uniform quantizers (:mod:`.twin`) for post-softmax probabilities (``matmul2.a_quantizer``)
  and post-GELU activations (the input quantizer of each Linear fed by a GELU, i.e. ``fc2``).
* Hessian-guided scale search (:mod:`.search`): every quantizer's scale is chosen from a grid of
  candidates by the layer's output error weighted by squared task-loss gradients (:mod:`.record`),
  alternating weight and input (or matmul operand A and B) searches for ``rounds`` rounds.

Layers are processed in execution order inside each block of the block walk, so a layer's inputs
come from the already-quantized layers before it (the paper's sequential calibration). By default
a layer's error is measured against the float layer applied to that same input (``target="local"``);
``target="float"`` uses the float model's own output of the layer, as the authors' code does.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from squeeze.config import QuantConfig, register_method
from squeeze.errors import SqueezeError
from squeeze.methods.ptq4vit.record import (BlockCache, LayerRecord, RowPicker, block_pass, global_pass,
                                            select)
from squeeze.methods.ptq4vit.search import (Candidate, alpha_grid, best_candidate, gelu_candidates,
                                            search_weight_channels, softmax_candidates, uniform_candidates,
                                            weighted_error)
from squeeze.methods.ptq4vit.twin import TwinUniformQuantizer
from squeeze.methods.steps import quantize_weight_rtn
from squeeze.quant.attach import attach_quantizers, forward_with_hooks, probe_roles
from squeeze.quant.calibrate import QUANT_MODULES, Stage, find_blocks, walk
from squeeze.quant.modules import QuantConv2d, QuantLinear, QuantMatMul
from squeeze.quant.quantizer import Quantizer


@dataclass
class PTQ4ViTConfig(QuantConfig):
    """PTQ4ViT. Example: ``make_config("ptq4vit", wbits=4, abits=4, calib=32)``.

    Attributes:
        twin_softmax: twin uniform post-softmax quantizer (else a per-tensor uniform grid).
        twin_gelu: twin uniform post-GELU quantizer (else a per-tensor uniform grid).
        hessian: weigh output errors by squared gradients (else plain output squared error).
        rounds: alternating weight/activation search rounds per layer.
        n_alphas: range factors in ``[0.01, 1.2]`` tried per quantizer (plus 1.0 = min-max).
        max_split: post-softmax splits ``2^-m`` tried, ``m = 0 .. max_split-1``.
        search_rows: token rows per layer used by the search (random subset of the calibration set).
        search_slices: ``(sample, head)`` slices per attention matmul used by the search.
        grad_batch: samples per float forward/backward when collecting gradients (bounds memory).
        target: the output a layer's error is measured against: ``local`` = the float layer on the
            same input the quantized layer sees (default), ``float`` = the float model's output of
            that layer, as in the authors' sequential calibration (this folds the upstream error into
            each layer's objective; on dinov2-s14 at W4A4 it did worse than min-max RTN).
    """

    method = "ptq4vit"
    twin_softmax: bool = True
    twin_gelu: bool = True
    hessian: bool = True
    rounds: int = 2
    n_alphas: int = 16
    max_split: int = 16
    search_rows: int = 1024
    search_slices: int = 32
    grad_batch: int = 8
    target: str = "local"

    def __post_init__(self) -> None:
        super().__post_init__()
        for name, low in (("rounds", 1), ("n_alphas", 1), ("max_split", 1), ("search_rows", 1),
                          ("search_slices", 1), ("grad_batch", 1)):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < low:
                raise SqueezeError(f"{name}={getattr(self, name)!r} must be an integer >= {low}")
        if self.target not in ("local", "float"):
            raise SqueezeError(f"target={self.target!r}; use local or float")


def find_post_gelu(model: nn.Module, sample: torch.Tensor) -> set[str]:
    """Names of Linear layers whose input is a GELU module's output tensor (one probing forward).

    Dropout/Identity between them return the same tensor, so ``fc1 -> GELU -> drop -> fc2`` is found.
    A functional ``F.gelu`` (no module) is not seen; such layers keep a uniform quantizer.
    """
    outputs: dict[int, torch.Tensor] = {}  # keep tensors alive so ids stay unique
    found: set[str] = set()
    handles = []
    for name, mod in model.named_modules():
        if "gelu" in type(mod).__name__.lower():
            handles.append(mod.register_forward_hook(lambda _m, _i, o: outputs.__setitem__(id(o), o)))
        elif isinstance(mod, QuantLinear):
            handles.append(mod.register_forward_pre_hook(
                lambda _m, a, n=name: found.add(n) if id(a[0]) in outputs else None))
    forward_with_hooks(model, sample, handles)
    return found


def install_twins(model: nn.Module, config: PTQ4ViTConfig, post_gelu: set[str]) -> None:
    """Replace the post-softmax and post-GELU quantizers by twin uniform ones (per the config)."""
    for name, mod in model.named_modules():
        abits = config.bits_for(name)[1]
        if config.twin_softmax and isinstance(mod, QuantMatMul) and name.endswith("matmul2") \
                and mod.a_quantizer is not None:
            mod.a_quantizer = TwinUniformQuantizer(abits, "softmax")
        if config.twin_gelu and name in post_gelu and getattr(mod, "input_quantizer", None) is not None:
            mod.input_quantizer = TwinUniformQuantizer(abits, "gelu")


@dataclass
class Operand:
    """A layer input seen by the search: the kept rows ``x`` and the min/max over *all* calibration rows.

    Candidate ranges scale the full min-max range, so subsampling rows never clips an outlier
    that min-max would keep.
    """

    x: torch.Tensor
    lo: torch.Tensor
    hi: torch.Tensor


def act_candidates(q: Quantizer, op: Operand, config: PTQ4ViTConfig,
                   alphas: list[float] | None = None) -> list[Candidate]:
    """Scale candidates of an activation quantizer (``alphas``: range factors, default the grid)."""
    alphas = alpha_grid(config.n_alphas) if alphas is None else alphas
    if isinstance(q, TwinUniformQuantizer):
        if q.twin == "softmax":
            return softmax_candidates(q.spec.bits, config.max_split)
        return gelu_candidates(op.lo, op.hi, q.spec.bits, alphas)
    return uniform_candidates(op.lo, op.hi, q.spec.bits, q.spec.symmetric, alphas)


def init_act(q: Quantizer, op: Operand, config: PTQ4ViTConfig) -> None:
    """Starting point before the output-error search: min-max (post-softmax twin: input-error split)."""
    if isinstance(q, TwinUniformQuantizer) and q.twin == "softmax":
        q.calibrate(op.x)
    else:
        install(q, act_candidates(q, op, config, [1.0])[0])


def install(q: Quantizer, cand: Candidate) -> None:
    """Set a quantizer to a searched candidate's parameters (twin deltas or scale / zero point)."""
    kind, p1, p2 = cand.params
    if kind == "twin":
        q.set_deltas(p1, p2)  # type: ignore[attr-defined]
    else:
        q.set_params(p1, p2)


def search_act(q: Quantizer, op: Operand, forward: Callable[[torch.Tensor], torch.Tensor],
               target: torch.Tensor, g2: torch.Tensor | None, config: PTQ4ViTConfig) -> None:
    """Install the activation candidate with the lowest weighted output error."""
    best = best_candidate(act_candidates(q, op, config),
                          lambda fq: weighted_error(forward(fq(op.x)), target, g2))
    install(q, best)


def search_layer(layer: QuantLinear | QuantConv2d, op: Operand, target: torch.Tensor,
                 g2: torch.Tensor | None, config: PTQ4ViTConfig) -> None:
    """Alternate per-channel weight and per-tensor input searches for one Linear/Conv layer."""
    qa, qw = layer.input_quantizer, layer.weight_quantizer
    assert qw is not None
    if isinstance(layer, QuantConv2d):
        def fwd(xx: torch.Tensor, ww: torch.Tensor) -> torch.Tensor:
            return layer._conv_forward(xx, ww, layer.bias)
        out_dim = 1
    else:
        def fwd(xx: torch.Tensor, ww: torch.Tensor) -> torch.Tensor:
            return F.linear(xx, ww, layer.bias)
        out_dim = -1
    w = layer.weight.detach()
    if qw.spec.granularity.kind != "channel" or qw.spec.granularity.axis != 0:
        quantize_weight_rtn(layer)  # only per-output-channel weights are searched
        rounds, w_search = 1, False
    else:
        rounds, w_search = (config.rounds if qa is not None else 1), True
    if qa is not None:
        init_act(qa, op, config)
    alphas = alpha_grid(config.n_alphas)
    for _ in range(rounds):
        x_hat = qa.fake_quant(op.x) if qa is not None else op.x
        if w_search:
            scale, zp = search_weight_channels(w, lambda wh: fwd(x_hat, wh), target, g2, qw.spec.bits,
                                               qw.spec.symmetric, alphas, out_dim)
            qw.set_params(scale, zp)
        if qa is not None:
            w_hat = qw.fake_quant(w)
            search_act(qa, op, lambda xh: fwd(xh, w_hat), target, g2, config)
    qw.mode = "quant"
    if qa is not None:
        qa.mode = "quant"


def search_matmul(mm: QuantMatMul, a: Operand, b: Operand, target: torch.Tensor,
                  g2: torch.Tensor | None, config: PTQ4ViTConfig) -> None:
    """Alternate searches of the two operand quantizers of an attention matmul."""
    qa, qb = mm.a_quantizer, mm.b_quantizer
    for q, op in ((qa, a), (qb, b)):
        if q is not None:
            init_act(q, op, config)
    for _ in range(config.rounds):
        if qa is not None:
            b_hat = qb.fake_quant(b.x) if qb is not None else b.x
            search_act(qa, a, lambda ah: ah @ b_hat, target, g2, config)
        if qb is not None:
            a_hat = qa.fake_quant(a.x) if qa is not None else a.x
            search_act(qb, b, lambda bh: a_hat @ bh, target, g2, config)
    for q in (qa, qb):
        if q is not None:
            q.mode = "quant"


def capture_inputs(stage: Stage, module: nn.Module, picker: RowPicker) -> list[Operand]:
    """The inputs of ``module`` when the stage runs now: kept rows over all batches, full min/max."""
    store: list[list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = []

    def hook(_m: nn.Module, args: tuple) -> None:
        n = args[0].shape[0]
        batch = (len(store), 0, n, n)
        n_in = 2 if isinstance(module, QuantMatMul) else 1
        store.append([(select(picker, module, t, batch), t.min(), t.max())
                      for t in (args[i].detach() for i in range(n_in))])

    handle = module.register_forward_pre_hook(hook)
    try:
        stage.run()
    finally:
        handle.remove()
    if not store:
        return []
    return [Operand(torch.cat([s[i][0] for s in store], 0), torch.stack([s[i][1] for s in store]).min(),
                    torch.stack([s[i][2] for s in store]).max()) for i in range(len(store[0]))]


@torch.no_grad()
def float_output(module: nn.Module, inputs: list[Operand]) -> torch.Tensor:
    """The layer's float output on the given (unquantized) inputs, with float weights."""
    if isinstance(module, QuantMatMul):
        return inputs[0].x @ inputs[1].x
    if isinstance(module, QuantConv2d):
        return module._conv_forward(inputs[0].x, module.weight, module.bias)
    return F.linear(inputs[0].x, module.weight, module.bias)  # type: ignore[arg-type]


def quantize_member(stage: Stage, module: nn.Module, record: LayerRecord | None, picker: RowPicker,
                    config: PTQ4ViTConfig) -> None:
    """Search every quantizer of one layer or matmul of the stage."""
    inputs = capture_inputs(stage, module, picker) if record is not None else []
    if not inputs:  # not executed on the calibration data: weights by RTN, activations stay off
        if isinstance(module, (QuantLinear, QuantConv2d)) and module.weight_quantizer is not None:
            quantize_weight_rtn(module)
        return
    outs = [record.cat(j) for j in sorted(record.out)]
    g2 = torch.cat([g for _, g in outs], 0) if all(g is not None for _, g in outs) else None
    if config.target == "local":
        target = float_output(module, inputs)
    else:
        target = torch.cat([o for o, _ in outs], 0)
    if isinstance(module, QuantMatMul):
        search_matmul(module, inputs[0], inputs[1], target, g2, config)
    elif module.weight_quantizer is not None:  # type: ignore[union-attr]
        search_layer(module, inputs[0], target, g2, config)  # type: ignore[arg-type]


def _outside(model: nn.Module, blocks: list[nn.Module]) -> list[str]:
    inside = {id(m) for b in blocks for m in b.modules()}
    return [n for n, m in model.named_modules() if isinstance(m, QUANT_MODULES) and id(m) not in inside]


def ptq4vit_stage(fp: nn.Module, blocks_name: str, fp_blocks: list[nn.Module], cache: BlockCache,
                  outside: tuple[dict[str, LayerRecord], list[str]], batches: list[torch.Tensor],
                  picker: RowPicker, config: PTQ4ViTConfig) -> Callable[[Stage], None]:
    """Stage handler: float records for the stage's layers, then a search per layer in execution order."""
    def handle(stage: Stage) -> None:
        if stage.module is not None:
            i = int(stage.name[len(blocks_name) + 1:])
            records, order = block_pass(fp_blocks[i], stage.name, cache, i, picker, config.hessian)
        elif stage.name == "model":  # no block stack on the forward path: record every layer at once
            named = {n: fp.get_submodule(n) for n, _ in stage.members}
            _, records, order = global_pass(fp, [], named, batches, picker, config.grad_batch, config.hessian)
        else:
            records, order = outside
        members = dict(stage.members)
        for name in [n for n in order if n in members] + [n for n in members if n not in order]:
            quantize_member(stage, members[name], records.get(name), picker, config)
    return handle


@register_method(PTQ4ViTConfig, "PTQ4ViT: twin uniform quantizers + Hessian-guided scale search (ECCV'22)")
def apply_ptq4vit(model: nn.Module, config: PTQ4ViTConfig, batches: list[torch.Tensor]) -> None:
    """Quantize a prepared ViT in place with PTQ4ViT."""
    if not any(isinstance(m, QuantMatMul) for m in model.modules()):
        raise SqueezeError("ptq4vit is a vision-transformer method but this model has no attention block "
                           "squeeze can quantize; use rtn, percentile or gptq")
    if config.hessian and not batches[0].is_floating_point():
        raise SqueezeError("ptq4vit's Hessian-guided search differentiates through the input images, but these "
                           "inputs are integer tokens; pass --set hessian=false")
    sample = batches[0][:1]
    roles = probe_roles(model, sample)
    post_gelu = find_post_gelu(model, sample)
    fp = copy.deepcopy(model).requires_grad_(False)  # float reference for targets and gradients
    attach_quantizers(model, config, roles, "minmax")
    install_twins(model, config, post_gelu)
    blocks_name, blocks = find_blocks(model)
    fp_blocks = [fp.get_submodule(f"{blocks_name}.{i}") for i in range(len(blocks))]
    named: dict[str, Any] = {n: fp.get_submodule(n) for n in _outside(model, blocks)}
    picker = RowPicker(config.search_rows, config.search_slices, sum(len(b) for b in batches), config.seed)
    cache, records, order = global_pass(fp, fp_blocks, named, batches, picker, config.grad_batch, config.hessian)
    walk(model, batches, ptq4vit_stage(fp, blocks_name, fp_blocks, cache, (records, order), batches, picker,
                                       config), desc="ptq4vit")
