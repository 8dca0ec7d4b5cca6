"""Block-by-block calibration engine with cached inputs (GPTQ-style sequential walk).

The model is cut into *stages*: the prefix (everything before the first repeated block, e.g. the
patch embedding), each block of the largest top-level stack of same-class blocks, and the suffix
(final norm, head). Inputs of the first block are captured once; afterwards each block runs only
on the cached outputs of the previous (already quantized) block, so peak memory is one block's
activations for the calibration set plus the model. The suffix runs the full model with every
block stubbed to return the cached final output. All hooks and stubs are removed in ``finally``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch
from torch import nn
from tqdm import tqdm

from squeeze.quant.modules import QuantMatMul, QUANT_LAYERS

QUANT_MODULES = (*QUANT_LAYERS, QuantMatMul)


class _Stop(Exception):
    """Raised by the capture hook to stop the forward pass at the first block."""


@dataclass
class Stage:
    """One unit of the walk. ``run()`` pushes every cached input through it (current modes).

    Attributes:
        name: ``prefix``, the block's qualified name, ``suffix`` or ``model``.
        module: the block (``None`` for prefix/suffix/model stages).
        members: quantizable modules executed in this stage, as ``(qualified name, module)``.
        inputs: what the stage runs on, one ``(args, kwargs)`` per calibration batch: the cached
            block inputs for a block stage (a snapshot; block outputs of the previous, already
            handled stage), the model inputs for ``prefix``/``model``, and the last block's
            outputs for ``suffix``.
    """

    name: str
    module: nn.Module | None
    members: list[tuple[str, nn.Module]]
    _run: Callable[[], list[Any]] = field(repr=False)
    inputs: list[tuple[tuple, dict]] = field(default_factory=list, repr=False)

    def run(self) -> list[Any]:
        """Run the stage on all cached inputs; returns the outputs (one per calibration batch)."""
        with torch.no_grad():
            return self._run()


def find_blocks(model: nn.Module) -> tuple[str, list[nn.Module]]:
    """The shallowest ``ModuleList``/``Sequential`` of >= 2 same-class blocks holding quant layers.

    Ties at the same depth go to the longer list. Returns ``("", [])`` when there is none.
    """
    best: tuple[int, int, str, list[nn.Module]] | None = None
    for name, mod in model.named_modules():
        if not isinstance(mod, (nn.ModuleList, nn.Sequential)) or len(mod) < 2:
            continue
        kids = list(mod.children())
        if len({type(k) for k in kids}) != 1:
            continue
        if not all(any(isinstance(m, QUANT_MODULES) for m in k.modules()) for k in kids):
            continue
        key = (name.count(".") + (1 if name else 0), -len(kids))
        if best is None or key < best[:2]:
            best = (*key, name, kids)
    return ("", []) if best is None else (best[2], best[3])


def _members(root: nn.Module, prefix: str) -> list[tuple[str, nn.Module]]:
    return [(f"{prefix}.{n}" if prefix else n, m) for n, m in root.named_modules() if isinstance(m, QUANT_MODULES)]


def _next_args(args: tuple, out: Any) -> tuple:
    """Feed a block's output to the next block: replace the first positional input."""
    hidden = out[0] if isinstance(out, (tuple, list)) else out
    return (hidden, *args[1:])


def walk(model: nn.Module, batches: list[torch.Tensor], handler: Callable[[Stage], None],
         desc: str = "calibrate") -> None:
    """Call ``handler(stage)`` on every stage in order, then run the stage to feed the next one."""
    for stage in iter_stages(model, batches, desc):
        handler(stage)


def iter_stages(model: nn.Module, batches: list[torch.Tensor], desc: str = "calibrate",
                progress: bool = True) -> Iterator[Stage]:
    """Generator form of :func:`walk`: yields each stage; resuming runs it to feed the next one.

    Two generators over structurally identical models (e.g. a float copy taken before quantizers
    are attached) can be advanced in lock step; close the generator (``contextlib.closing``) when
    stopping early so the progress bar closes.
    """
    blocks_name, blocks = find_blocks(model)
    model_inputs = [((b,), {}) for b in batches]
    if not blocks:
        yield Stage("model", None, _members(model, ""), lambda: [model(b) for b in batches], model_inputs)
        return
    block_ids = {id(m) for b in blocks for m in b.modules()}
    outside = [(n, m) for n, m in _members(model, "") if id(m) not in block_ids]
    cached: list[tuple[tuple, dict]] = []

    def capture() -> list[Any]:
        cached.clear()
        handle = blocks[0].register_forward_pre_hook(_capture_hook(cached), with_kwargs=True)
        try:
            for b in batches:
                try:
                    model(b)
                except _Stop:
                    pass
        finally:
            handle.remove()
        return []

    ran = _executed(outside, capture)
    if len(cached) != len(batches):  # the stack found is not on the forward path: walk the whole model
        yield Stage("model", None, _members(model, ""), lambda: [model(b) for b in batches], model_inputs)
        return
    bar = tqdm(total=len(blocks) + 2, desc=desc, leave=False, disable=not progress)
    try:
        yield Stage("prefix", None, [p for p in outside if id(p[1]) in ran], capture, model_inputs)
        capture()
        bar.update()
        outs: list[Any] = []
        for i, block in enumerate(blocks):
            def run_block(block: nn.Module = block) -> list[Any]:
                return [block(*a, **k) for a, k in cached]
            yield Stage(f"{blocks_name}.{i}", block, _members(block, f"{blocks_name}.{i}"), run_block, list(cached))
            with torch.no_grad():
                outs = run_block()
            cached[:] = [(_next_args(a, o), k) for (a, k), o in zip(cached, outs)]
            bar.update()
        suffix = [p for p in outside if id(p[1]) not in ran]
        yield Stage("suffix", None, suffix, lambda: _run_stubbed(model, blocks, batches, outs),
                    [((o,), {}) for o in outs])
        bar.update()
    finally:
        bar.close()


def _capture_hook(store: list[tuple[tuple, dict]]) -> Callable[..., None]:
    def hook(_mod: nn.Module, args: tuple, kwargs: dict) -> None:
        store.append((args, kwargs))
        raise _Stop
    return hook


def _executed(named: list[tuple[str, nn.Module]], fn: Callable[[], Any]) -> set[int]:
    """Ids of the modules in ``named`` that run while ``fn()`` executes (hooks removed after)."""
    seen: set[int] = set()
    handles = [m.register_forward_pre_hook(lambda mod, _a: seen.add(id(mod))) for _, m in named]
    try:
        with torch.no_grad():
            fn()
    finally:
        for h in handles:
            h.remove()
    return seen


def _run_stubbed(model: nn.Module, blocks: list[nn.Module], batches: list[torch.Tensor],
                 final: list[Any]) -> list[Any]:
    """Run the full model with every block returning the cached last-block output for the batch."""
    results = []
    try:
        for b, out in zip(batches, final):
            for block in blocks:
                block.forward = lambda *a, _o=out, **k: _o  # instance attribute shadows the method
            results.append(model(b))
    finally:
        for block in blocks:
            block.__dict__.pop("forward", None)
    return results
