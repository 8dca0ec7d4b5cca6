"""Shared block / layer reconstruction engine for post-training quantization.

Reconstruction tunes a few tensors of one *unit* (a transformer block, or a single layer such as
the patch embedding or the head) so that the unit's quantized output matches the full-precision
model's output of that unit, one unit at a time with cached inputs. It is the inner loop of
AdaRound (Nagel et al., ICML 2020, layer units), BRECQ (Li et al., ICLR 2021, block units), QDrop
(Wei et al., ICLR 2022, random dropping of activation quantization) and I&S-ViT's smooth
optimization stages (Zhong et al., arXiv 2311.10126, 2023).

Pieces:

* :func:`paired_walk` walks the model being quantized and an untouched float copy in lock step
  (:func:`squeeze.quant.calibrate.iter_stages`), so every handler sees the quantized-model inputs
  of a stage *and* the float model's inputs and outputs of the same stage;
* :func:`block_data` / :func:`layer_data` collect one unit's cached quantized inputs, float inputs
  and float targets for the whole calibration set (memory: one unit's activations, three times);
* :func:`reconstruct` minimises :func:`recon_loss` with Adam and a cosine schedule on random
  mini-batches drawn from that cache, with an optional extra regulariser (AdaRound's rounding
  term) and optional QDrop-style dropping of activation quantization.
"""
from __future__ import annotations

import math
import warnings
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Literal

import torch
from torch import nn
from tqdm import tqdm

from squeeze.errors import SqueezeError
from squeeze.quant.calibrate import Stage, iter_stages
from squeeze.quant.quantizer import Quantizer

InputSource = Literal["fp", "quant", "mix"]
Forward = Callable[[torch.Tensor], torch.Tensor]


# ----------------------------------------------------------------------------- pure math


def recon_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Squared error summed over dim 1 and averaged over the rest (I&S-ViT / BRECQ convention).

    For block outputs ``(batch, tokens, width)`` dim 1 is the token axis; for a conv output
    ``(batch, channels, h, w)`` it is the channel axis, for logits ``(batch, classes)`` the classes.
    """
    return (pred - target).pow(2).sum(1).mean()


def sample_indices(n: int, batch: int, generator: torch.Generator) -> torch.Tensor:
    """``batch`` distinct random indices in ``[0, n)`` (CPU; the caller moves them)."""
    return torch.randperm(n, generator=generator)[:batch]


def mix_inputs(quant: torch.Tensor, fp: torch.Tensor, fp_prob: float) -> torch.Tensor:
    """QDrop input mixing: each element comes from ``fp`` with probability ``fp_prob``."""
    return torch.where(torch.rand_like(quant) < fp_prob, fp, quant)


def drop_quant(x: torch.Tensor, x_quant: torch.Tensor, drop_prob: float) -> torch.Tensor:
    """QDrop: keep the float value of each element with probability ``drop_prob``."""
    return torch.where(torch.rand_like(x_quant) < drop_prob, x, x_quant)


# ----------------------------------------------------------------------------- cached unit data


@dataclass
class UnitData:
    """Cached tensors of one unit over the calibration set (rows = samples, dim 0).

    Attributes:
        q_inputs: the unit's input in the model being quantized (upstream units quantized).
        fp_inputs: the unit's input in the float model.
        targets: the float model's output of the unit on ``fp_inputs``.
        args, kwargs: extra call arguments of a block after its hidden state (batch independent).
    """

    q_inputs: torch.Tensor
    fp_inputs: torch.Tensor
    targets: torch.Tensor
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return self.targets.shape[0]

    def inputs(self, source: InputSource) -> torch.Tensor:
        """Inputs for evaluating the unit: float ones for ``fp``, quantized-model ones otherwise."""
        return self.fp_inputs if source == "fp" else self.q_inputs


def _hidden(out: Any) -> torch.Tensor:
    """A block's hidden-state output (first element of a tuple output)."""
    return out[0] if isinstance(out, (tuple, list)) else out


def _check_batch_free(args: tuple, kwargs: dict, batch: int) -> None:
    """Refuse extra block arguments that carry a per-sample dimension (they cannot be resampled)."""
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == batch and batch > 1:
            raise SqueezeError("reconstruction needs blocks whose only per-sample input is the hidden state; "
                               f"this block also takes a per-sample tensor of shape {tuple(value.shape)}")


def block_data(q_stage: Stage, fp_stage: Stage) -> UnitData:
    """Inputs (quantized and float) and float targets of a block stage, concatenated over batches."""
    q_in = torch.cat([a[0] for a, _ in q_stage.inputs])
    fp_in = torch.cat([a[0] for a, _ in fp_stage.inputs])
    targets = torch.cat([_hidden(o) for o in fp_stage.run()])
    args, kwargs = q_stage.inputs[0][0][1:], dict(q_stage.inputs[0][1])
    _check_batch_free(args, kwargs, q_stage.inputs[0][0][0].shape[0])
    return UnitData(q_in.detach(), fp_in.detach(), targets.detach(), args, kwargs)


def _record(stage: Stage, module: nn.Module, outputs: bool) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Inputs (and outputs) of ``module`` over one run of ``stage`` (hooks removed in ``finally``)."""
    ins: list[torch.Tensor] = []
    outs: list[torch.Tensor] = []

    def on_input(_m: nn.Module, args: tuple) -> None:
        ins.append(args[0].detach())

    def on_output(_m: nn.Module, _args: tuple, out: torch.Tensor) -> None:
        outs.append(out.detach())

    handles = [module.register_forward_pre_hook(on_input)]
    if outputs:
        handles.append(module.register_forward_hook(on_output))
    try:
        stage.run()
    finally:
        for h in handles:
            h.remove()
    return ins, outs


def layer_data(q_stage: Stage, fp_stage: Stage, layer: nn.Module, fp_layer: nn.Module) -> UnitData:
    """Inputs and float targets of one layer, recorded by hooks while both stages run."""
    q_in, _ = _record(q_stage, layer, outputs=False)
    fp_in, fp_out = _record(fp_stage, fp_layer, outputs=True)
    if not q_in or len(q_in) != len(fp_in):
        raise RuntimeError(f"layer ran {len(q_in)} times in the quantized stage and {len(fp_in)} in the float one")
    return UnitData(torch.cat(q_in), torch.cat(fp_in), torch.cat(fp_out))


def unit_forward(unit: nn.Module, data: UnitData) -> Forward:
    """``x -> unit(x, *extra args)`` returning the hidden state."""
    return lambda x: _hidden(unit(x, *data.args, **data.kwargs))


# ----------------------------------------------------------------------------- walking


def paired_walk(model: nn.Module, fp_model: nn.Module, batches: list[torch.Tensor],
                handler: Callable[[Stage, Stage], None], desc: str) -> None:
    """Call ``handler(stage, fp_stage)`` on every stage of ``model`` and of its float copy.

    ``fp_model`` must be a copy of ``model`` taken after preparation and before quantizers are
    attached; both walks advance together, so ``fp_stage.inputs`` are the float model's inputs of
    the stage and ``fp_stage.run()`` its float outputs.
    """
    with closing(iter_stages(model, batches, desc)) as q_it, \
            closing(iter_stages(fp_model, batches, desc, progress=False)) as fp_it:
        for stage, fp_stage in zip(q_it, fp_it):
            if stage.name != fp_stage.name:
                raise RuntimeError(f"float copy walks {fp_stage.name!r} where the model walks {stage.name!r}")
            handler(stage, fp_stage)


def float_copy(model: nn.Module) -> nn.Module:
    """Frozen deep copy of a prepared model (take it before attaching quantizers)."""
    import copy  # noqa: PLC0415

    fp = copy.deepcopy(model).eval()
    for p in fp.parameters():
        p.requires_grad_(False)
    return fp


# ----------------------------------------------------------------------------- training loop


@dataclass
class ReconOptions:
    """How one unit is reconstructed.

    Attributes:
        iters: optimisation steps (0 only evaluates).
        batch_size: samples drawn at random from the cache per step; clamped (with a warning) to
            the cache size when larger.
        input_source: ``quant`` (the quantized model's inputs), ``fp`` (the float model's) or
            ``mix`` (QDrop: elementwise float with probability ``fp_input_prob``).
        fp_input_prob: see ``input_source``.
        drop_quantizers: activation quantizers whose quantization is dropped (QDrop) with
            probability ``drop_prob`` per element during training (never when evaluating).
        seed: seed of the mini-batch sampler.
        desc: progress-bar label.
    """

    iters: int
    batch_size: int
    input_source: InputSource = "quant"
    fp_input_prob: float = 0.5
    drop_quantizers: list[Quantizer] = field(default_factory=list)
    drop_prob: float = 0.0
    seed: int = 0
    desc: str = "reconstruct"


@dataclass
class ReconResult:
    """Unit loss (:func:`recon_loss` on the whole cache) before and after reconstruction."""

    loss_before: float
    loss_after: float
    steps: int


@torch.no_grad()
def evaluate_loss(forward: Forward, inputs: torch.Tensor, targets: torch.Tensor, chunk: int) -> float:
    """Mean :func:`recon_loss` over the cache, in chunks of ``chunk`` samples."""
    total, n = 0.0, inputs.shape[0]
    for i in range(0, n, chunk):
        total += recon_loss(forward(inputs[i:i + chunk]), targets[i:i + chunk]).item() * min(chunk, n - i)
    return total / n


@contextmanager
def quant_dropout(quantizers: list[Quantizer], drop_prob: float) -> Iterator[None]:
    """QDrop (Wei et al., ICLR 2022): each active quantizer keeps an element float w.p. ``drop_prob``."""
    def hook(mod: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
        return drop_quant(args[0], out, drop_prob) if mod.mode == "quant" else out

    handles = [q.register_forward_hook(hook) for q in quantizers] if drop_prob > 0 else []
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@contextmanager
def trainable_only(modules: list[nn.Module], tensors: list[torch.Tensor]) -> Iterator[None]:
    """Within the block: only ``tensors`` require grad among the parameters of ``modules``."""
    params = {id(p): p for m in modules for p in m.parameters()}
    saved = {k: p.requires_grad for k, p in params.items()}
    ids = {id(t) for t in tensors}
    try:
        for k, p in params.items():
            p.requires_grad_(k in ids)
        for t in tensors:
            t.requires_grad_(True)
        yield
    finally:
        for k, p in params.items():
            p.requires_grad_(saved[k])


def _batch_inputs(data: UnitData, idx: torch.Tensor, options: ReconOptions) -> torch.Tensor:
    if options.input_source == "fp":
        return data.fp_inputs[idx]
    if options.input_source == "mix":
        return mix_inputs(data.q_inputs[idx], data.fp_inputs[idx], options.fp_input_prob)
    return data.q_inputs[idx]


def effective_batch(batch: int, cached: int) -> int:
    """The reconstruction batch, clamped to the cache size with a warning (documented fallback).

    Each step draws distinct samples, so a batch larger than the calibration set cannot be drawn;
    training on the whole set each step instead is the closest well-defined behaviour.
    """
    if batch > cached:
        warnings.warn(f"reconstruction batch {batch} is larger than the {cached} cached calibration samples; "
                      f"using {cached} per step (pass calib >= recon_batch to avoid this)", stacklevel=3)
        return cached
    return batch


def reconstruct(forward: Forward, data: UnitData, param_groups: list[dict[str, Any]], options: ReconOptions,
                modules: list[nn.Module], regularizer: Callable[[int], torch.Tensor] | None = None,
                finish: Callable[[], None] | None = None) -> ReconResult:
    """Minimise ``recon_loss(forward(x), target) + regularizer(step)`` over the unit's cache.

    Args:
        forward: the unit as a function of its input batch (quantizers in their current modes).
        data: the unit's cached inputs and float targets.
        param_groups: Adam parameter groups (``{"params": [...], "lr": ...}``); every tensor must be
            a leaf; only these are trained.
        options: iterations, batch, input source, QDrop settings (:class:`ReconOptions`).
        modules: modules whose other parameters are frozen meanwhile (the unit).
        regularizer: ``step -> scalar`` added to the loss (e.g. AdaRound's rounding term).
        finish: called after the last step and before the final loss (e.g. harden the rounding).

    Returns the loss on the whole cache before and after. A unit whose loss is already 0 (nothing
    quantized in it) is not trained. The learning rates follow a cosine decay to 0 over ``iters``.
    """
    batch = effective_batch(options.batch_size, len(data))
    eval_inputs = data.inputs(options.input_source)
    before = evaluate_loss(forward, eval_inputs, data.targets, options.batch_size)
    tensors = [t for g in param_groups for t in g["params"]]
    if before == 0.0 or options.iters == 0 or not tensors:
        if finish is not None:
            finish()
        return ReconResult(before, evaluate_loss(forward, eval_inputs, data.targets, options.batch_size), 0)
    gen = torch.Generator().manual_seed(options.seed)
    with trainable_only(modules, tensors), torch.enable_grad():
        opt = torch.optim.Adam(param_groups)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=options.iters, eta_min=0.0)
        bar = tqdm(range(options.iters), desc=options.desc, leave=False)
        with quant_dropout(options.drop_quantizers, options.drop_prob):
            for step in bar:
                idx = sample_indices(len(data), batch, gen).to(data.targets.device)
                loss = recon_loss(forward(_batch_inputs(data, idx, options)), data.targets[idx])
                total = loss if regularizer is None else loss + regularizer(step)
                opt.zero_grad(set_to_none=True)
                total.backward()
                opt.step()
                sched.step()
                if step % 25 == 0 or step == options.iters - 1:
                    bar.set_postfix(loss=f"{loss.item():.4g}")
        bar.close()
    if finish is not None:
        finish()
    after = evaluate_loss(forward, eval_inputs, data.targets, options.batch_size)
    if not math.isfinite(after):
        raise SqueezeError(f"reconstruction of {options.desc} diverged (loss {after}); lower the learning rate (lr)")
    return ReconResult(before, after, options.iters)
