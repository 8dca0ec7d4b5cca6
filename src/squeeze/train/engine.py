"""The training engine every squeeze training method shares, on Lightning Fabric over torch.distributed.

A method describes *what* to train as a :class:`Task` (model and optimizers, deterministic batches,
one training step, an evaluation); :func:`fit` does the rest the same way for all of them:

* runs on one CPU by default, or ``devices`` processes/GPUs on each of ``nodes`` machines (DDP; gloo
  on CPU, NCCL on GPU). A multi-process run re-executes the command line once per extra local rank,
  as ``torchrun`` would; multi-node runs need ``MASTER_ADDR``/``MASTER_PORT``/``NODE_RANK`` set and
  a work folder on a shared file system.
* seeds everything, and re-seeds torch/numpy/random at every epoch from ``(seed, epoch, rank)``, so
  a resumed run continues the exact random stream without saving generator states;
* writes ``last.safetensors`` atomically after every epoch (see :mod:`squeeze.train.state`) and
  ``log.csv`` / ``log.json`` with one row per epoch; a failed run never replaces a checkpoint;
* resumes exactly from the last checkpoint (``resume=True``), refusing checkpoints of another
  task identity (model, config) or damaged ones with one clear line;
* shows a tqdm progress bar on rank 0;
* trains in float32 by default, or with bfloat16 autocast (``precision="bf16-mixed"``: matrix products in
  bfloat16, weights, optimizer state and reductions in float32). No loss scaling is needed for bfloat16, so
  a task may clip or read its gradients as usual. The precision is part of a checkpoint's identity.
"""
from __future__ import annotations

import csv
import io
import math
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterator, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from squeeze.errors import SqueezeError
from squeeze.train.checkpoint import atomic_write_bytes, write_json
from squeeze.train.state import CHECKPOINT, TrainState, load_state, read_meta, save_state

ACCELERATORS = ("auto", "cpu", "gpu")
PRECISIONS = ("32-true", "bf16-mixed")  # Lightning Fabric's names


@dataclass
class EngineConfig:
    """Where and how a task runs (nothing here but ``precision`` changes the result of a single-process run).

    Attributes:
        workdir: folder for ``last.safetensors``, ``last.json``, ``log.csv`` and ``log.json``.
        resume: continue from ``workdir/last.safetensors`` (must match the task identity).
        devices: processes (CPU) or GPUs per node; the global batch is split across all of them.
        nodes: number of machines.
        accelerator: ``auto`` (GPU when visible), ``cpu`` or ``gpu``.
        progress: show the tqdm bar (rank 0 only).
        max_epochs: stop after this many epochs of *this* call (``None``: run to the task's end);
            the checkpoint then resumes where it stopped. Used to split long runs and by tests.
        precision: ``32-true`` or ``bf16-mixed`` (autocast around each training step; evaluation stays
            float32). Unlike the fields above it changes the result, so resuming checks it.
    """

    workdir: Path
    resume: bool = False
    devices: int = 1
    nodes: int = 1
    accelerator: str = "cpu"
    progress: bool = True
    max_epochs: int | None = None
    precision: str = "32-true"

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir)
        if self.precision not in PRECISIONS:
            raise SqueezeError(f"precision {self.precision!r} is unknown; use one of {', '.join(PRECISIONS)}")
        if self.accelerator not in ACCELERATORS:
            raise SqueezeError(f"accelerator {self.accelerator!r} is unknown; use one of {', '.join(ACCELERATORS)}")
        if self.devices < 1 or self.nodes < 1:
            raise SqueezeError("--devices and --nodes must be at least 1")
        if self.accelerator == "gpu" and not torch.cuda.is_available():
            raise SqueezeError("--accelerator gpu asked for but no CUDA GPU is visible; use --accelerator cpu")

    @classmethod
    def from_args(cls, args: Any, workdir: Path) -> "EngineConfig":
        """The engine options of ``squeeze train`` (``--resume --devices --nodes --accelerator --precision``)."""
        return cls(Path(workdir), resume=args.resume, devices=args.devices, nodes=args.nodes,
                   accelerator=args.accelerator, precision=args.precision)


@dataclass
class StepContext:
    """What :meth:`Task.train_step` gets besides its batch.

    ``model`` is the distributed wrapper to call for forward passes; ``module`` the plain network
    (set switches such as the bit width on it); ``backward(loss)`` replaces ``loss.backward()``;
    ``no_sync(True)`` is a context that skips the gradient all-reduce of the backward inside it
    (gradient accumulation over several backward calls in one step; a no-op on one process).
    """

    model: nn.Module
    module: nn.Module
    optimizers: list[torch.optim.Optimizer]
    backward: Callable[[torch.Tensor], None]
    no_sync: Callable[[bool], ContextManager[Any]]
    device: torch.device
    epoch: int
    step: int  # global optimizer step, counted from 0 over the whole run
    total_steps: int
    rank: int
    world: int


@runtime_checkable
class Task(Protocol):
    """A training job the engine can run, checkpoint and resume.

    ``identity()`` must contain everything that defines the run's result (model name, every
    hyper-parameter, seed): a checkpoint is only resumed when it matches exactly.
    ``batches(epoch, rank, world)`` must be a pure function of its arguments (use
    :func:`epoch_indices`), yield ``steps_per_epoch(world)`` CPU batches for this rank, and split
    one global batch across ranks. ``train_step`` computes losses, calls ``ctx.backward`` (possibly
    several times) and returns scalar metrics; the engine zeroes gradients before and steps every
    optimizer after it. ``evaluate`` runs on rank 0 with the plain module and returns metrics.
    Optional hook: ``prepare(module, device)`` runs once on a fresh (not resumed) model, after it
    was moved to its device (e.g. data-driven quantizer initialisation). Optional attribute:
    ``frozen_state``, state-dict prefixes left out of checkpoints (a frozen base that ``identity()``
    pins by fingerprint: saving it would cost its full size every epoch, and tied weights cannot be saved).
    """

    name: str
    epochs: int
    seed: int
    find_unused_parameters: bool

    def identity(self) -> dict[str, Any]: ...

    def build(self) -> tuple[nn.Module, list[torch.optim.Optimizer]]: ...

    def steps_per_epoch(self, world: int) -> int: ...

    def batches(self, epoch: int, rank: int, world: int) -> Iterator[Any]: ...

    def train_step(self, ctx: StepContext, batch: Any) -> dict[str, float]: ...

    def evaluate(self, module: nn.Module) -> dict[str, float]: ...


@dataclass
class FitResult:
    """The trained plain module and the per-epoch log (rank 0's view; identical on every rank)."""

    module: nn.Module
    log: list[dict[str, Any]] = field(default_factory=list)
    rank: int = 0


def derived_seed(seed: int, *parts: int) -> int:
    """A 63-bit seed mixing ``seed`` with epoch/rank numbers (stable across runs and machines)."""
    value = seed & 0xFFFFFFFF
    for part in parts:
        value = (value * 1_000_003 + part + 0x9E3779B9) % (2 ** 61 - 1)
    return value


def seed_all(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def epoch_indices(n: int, batch_size: int, epoch: int, seed: int, rank: int = 0, world: int = 1,
                  subset: int | None = None) -> list[torch.Tensor]:
    """Shuffled index batches of one epoch over ``n`` samples, this rank's share of each global batch.

    The permutation depends only on ``(seed, epoch)``; ``subset`` keeps the first ``subset`` of it
    (a fresh random subset every epoch). Incomplete last batches are dropped. Each global batch of
    ``batch_size`` is split into ``world`` strided parts (``batch_size`` must divide by ``world``).
    """
    if batch_size % world:
        raise SqueezeError(f"batch size {batch_size} does not split over {world} processes; use a multiple")
    gen = torch.Generator().manual_seed(derived_seed(seed, epoch, 7))
    perm = torch.randperm(n, generator=gen)[: subset or n]
    steps = len(perm) // batch_size
    return [perm[i * batch_size:(i + 1) * batch_size][rank::world] for i in range(steps)]


def _make_fabric(cfg: EngineConfig, find_unused: bool) -> Any:
    from lightning.fabric import Fabric  # noqa: PLC0415 (heavy import, only when training)
    from lightning.fabric.strategies import DDPStrategy  # noqa: PLC0415

    accelerator = {"gpu": "cuda", "cpu": "cpu"}.get(cfg.accelerator, "cuda" if torch.cuda.is_available() else "cpu")
    strategy: Any = "auto"
    if cfg.devices * cfg.nodes > 1:
        strategy = DDPStrategy(process_group_backend="gloo" if accelerator == "cpu" else "nccl",
                               find_unused_parameters=find_unused)
    fabric = Fabric(accelerator=accelerator, devices=cfg.devices, num_nodes=cfg.nodes, strategy=strategy,
                    precision=cfg.precision)
    fabric.launch()
    return fabric


def _check_start(cfg: EngineConfig) -> None:
    """Refuse to silently overwrite an existing checkpoint, or to resume one that does not exist."""
    ckpt = cfg.workdir / CHECKPOINT
    if cfg.resume and not ckpt.is_file():
        raise SqueezeError(f"--resume: no checkpoint at {ckpt}; drop --resume to start a new run")
    if not cfg.resume and ckpt.exists():
        epoch = read_meta(ckpt)["epoch"] if ckpt.is_file() else "?"
        raise SqueezeError(f"{cfg.workdir} already holds a checkpoint (epoch {epoch}); pass --resume to continue "
                           "it or choose another --workdir")


def fit(task: Task, cfg: EngineConfig) -> FitResult:
    """Train ``task`` as configured by ``cfg`` (see the module docstring); returns the trained module."""
    _check_start(cfg)
    fabric = _make_fabric(cfg, task.find_unused_parameters)
    rank, world = fabric.global_rank, fabric.world_size
    seed_all(derived_seed(task.seed, 0))  # the same initial model on every rank
    module, optimizers = task.build()
    identity = {"task": task.name, **task.identity()}
    if cfg.precision != "32-true":  # float32 runs keep the identity of checkpoints made before the option
        identity["precision"] = cfg.precision
    frozen = tuple(getattr(task, "frozen_state", ()))
    ckpt = cfg.workdir / CHECKPOINT
    model, *wrapped = fabric.setup(module, *optimizers)
    state = TrainState(0, [])
    if cfg.resume:
        state = load_state(ckpt, module, optimizers, identity, frozen)
    elif hasattr(task, "prepare"):
        task.prepare(module, fabric.device)
    steps = task.steps_per_epoch(world)
    last = task.epochs if cfg.max_epochs is None else min(task.epochs, state.epoch + cfg.max_epochs)
    for epoch in range(state.epoch, last):
        seed_all(derived_seed(task.seed, epoch + 1, rank))
        ctx = StepContext(model, module, list(wrapped), _backward(fabric), _no_sync(fabric, model, world),
                          fabric.device, epoch, epoch * steps, task.epochs * steps, rank, world)
        start = time.perf_counter()
        train_metrics = _train_epoch(task, ctx, steps, cfg.progress and rank == 0, fabric.autocast)
        seconds = time.perf_counter() - start
        # ended: wall-clock time (Unix seconds) when the epoch's training ended, before its evaluation, so
        # runs trained side by side can be told from runs trained one after another
        ended = round(time.time(), 1)
        _sync_buffers(module, world)
        eval_metrics = task.evaluate(module) if rank == 0 else None
        eval_metrics = fabric.broadcast(eval_metrics, src=0)
        state.log.append({"epoch": epoch + 1, **train_metrics, **eval_metrics, "seconds": round(seconds, 2),
                          "ended": ended})
        state.epoch = epoch + 1
        if rank == 0:
            save_state(ckpt, module, optimizers, identity, state, frozen)
            write_log(cfg.workdir, state.log)
            tqdm.write(" ".join(f"{k}={_fmt(v)}" for k, v in state.log[-1].items() if k != "ended"))
        fabric.barrier()
    return FitResult(module, state.log, rank)


def _sync_buffers(module: nn.Module, world: int) -> None:
    """Give every rank rank 0's buffers (batch-norm statistics): DDP only broadcasts them before each
    forward, so after the last step ranks differ by their own last update."""
    if world == 1:
        return
    import torch.distributed as dist  # noqa: PLC0415

    for buf in module.buffers():
        dist.broadcast(buf.data, src=0)


def _backward(fabric: Any) -> Callable[[torch.Tensor], None]:
    """``fabric.backward`` with autocast off: a task calls it inside its (autocast) step, and backward ops
    already run in the dtypes their forward ops chose."""
    def backward(loss: torch.Tensor) -> None:
        with torch.autocast(fabric.device.type, enabled=False):
            fabric.backward(loss)
    return backward


def _no_sync(fabric: Any, model: nn.Module, world: int) -> Callable[[bool], ContextManager[Any]]:
    if world == 1:
        return lambda enabled: nullcontext()
    return lambda enabled: fabric.no_backward_sync(model, enabled=enabled)


def _train_epoch(task: Task, ctx: StepContext, steps: int, progress: bool,
                 autocast: Callable[[], ContextManager[Any]]) -> dict[str, float]:
    """One epoch of optimizer steps, each ``train_step`` inside ``autocast()``; returns the mean of each
    metric ``train_step`` reported."""
    sums: dict[str, float] = {}
    ctx.model.train()
    batches = task.batches(ctx.epoch, ctx.rank, ctx.world)
    bar = tqdm(batches, total=steps, desc=f"{task.name} epoch {ctx.epoch + 1}/{task.epochs}", leave=False,
               disable=not progress)
    count = 0
    for count, batch in enumerate(bar, start=1):
        for opt in ctx.optimizers:
            opt.zero_grad(set_to_none=True)
        with autocast():
            metrics = task.train_step(ctx, batch)
        bad = [k for k, v in metrics.items() if not math.isfinite(v)]
        if bad:
            raise SqueezeError(f"{task.name}: {bad[0]} became {metrics[bad[0]]} at epoch {ctx.epoch + 1}, step "
                               f"{count}; lower the learning rate (the last checkpoint is kept)")
        for opt in ctx.optimizers:
            opt.step()
        for k, v in metrics.items():
            sums[k] = sums.get(k, 0.0) + v
        ctx.step += 1
        if progress:
            bar.set_postfix({k: f"{v:.3f}" for k, v in metrics.items()}, refresh=False)
    if count != steps:
        raise SqueezeError(f"{task.name} yielded {count} batches in epoch {ctx.epoch + 1}, expected {steps}")
    return {f"train_{k}": v / max(1, count) for k, v in sums.items()}


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def write_log(workdir: Path, log: list[dict[str, Any]]) -> None:
    """Write the per-epoch log as ``log.json`` and ``log.csv`` (atomically)."""
    write_json(workdir / "log.json", log)
    columns: list[str] = []
    for row in log:
        columns += [k for k in row if k not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(log)
    atomic_write_bytes(workdir / "log.csv", buffer.getvalue().encode())
