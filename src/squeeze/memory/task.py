"""Training a UIO memory model on the shared engine, and saving/loading its adapters.

``squeeze train uio --base lm-shakespeare --segment 64 --memory 8`` runs :func:`train_uio`: a frozen
base, trainable memory token + LoRA (~2 % of the base), AdamW with warm-up + cosine, documents of
``doc_segments`` segments (half passkey documents by default), gradients by :mod:`squeeze.memory.tbptt`.
The engine checkpoints every epoch (resume with ``--resume``); the finished run writes only the
trainable tensors to ``WORKDIR/uio.safetensors`` with ``uio.json`` (config, base, log).
"""
from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn
from tqdm import tqdm

from squeeze.data.tokenizers import BYTES, Tokenizer, hf_folder_options, load_tokenizer
from squeeze.errors import SqueezeError
from squeeze.memory.config import UIOConfig
from squeeze.memory.data import training_batch
from squeeze.memory.model import MemoryLM, base_layout
from squeeze.memory.tbptt import batched_backward, tbptt_backward
from squeeze.train.classifier import lr_factor

ADAPTERS = "uio.safetensors"
META = "uio.json"
CURRICULUM = "curriculum.json"


def load_base(name: str) -> nn.Module:
    """The frozen base network: a zoo name (``lm-shakespeare``) or a local Hugging Face Llama folder."""
    path = Path(name)
    if path.is_dir():
        from transformers import AutoModelForCausalLM  # noqa: PLC0415

        try:
            return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, **hf_folder_options(path)).eval()
        except (OSError, ValueError, ImportError) as exc:  # not a model folder, or a missing optional package
            raise SqueezeError(f"cannot load a Hugging Face model from {path}: {exc}") from exc
    from squeeze.zoo.registry import load_model  # noqa: PLC0415

    return load_model(name).model.eval()


def check_tokenizer(base: nn.Module, tok: Tokenizer, name: str) -> None:
    """Refuse a base that cannot read the tokenizer's ids (e.g. a tiny test network given byte text)."""
    vocab = base_layout(base).embed.num_embeddings
    if vocab < tok.vocab:
        raise SqueezeError(f"base {name} has a vocabulary of {vocab}, smaller than its tokenizer's ({tok.name}: "
                           f"{tok.vocab}); give the base's own folder, or lm-shakespeare for byte text")


def text_tokens(tok: Tokenizer, split: str) -> torch.Tensor:
    """A Shakespeare split (``train``/``val``) as one token stream of ``tok``."""
    from squeeze.data.text import load_shakespeare  # noqa: PLC0415

    return tok.encode(load_shakespeare(split))  # with bytes: lm_shakespeare.split_tokens


class UIOTask:
    """Engine task for one gradient mode; ``base`` is an already built network (tests pass a tiny one)."""

    name = "uio"
    find_unused_parameters = True
    frozen_state = ("base.",)  # the frozen base is pinned by its fingerprint in identity()

    def __init__(self, cfg: UIOConfig, base: nn.Module, tokens: torch.Tensor, val_tokens: torch.Tensor,
                 eval_docs: int = 8, tok: Tokenizer = BYTES) -> None:
        self.cfg, self.base, self.tokens, self.val_tokens, self.tok = cfg, base, tokens, val_tokens, tok
        self.epochs, self.seed, self.eval_docs = cfg.epochs, cfg.seed, eval_docs
        for segments in {cfg.doc_segments, cfg.segments_at(0)}:  # fail early (documents too short for a needle)
            training_batch(tokens, 1, segments, cfg.segment, float(cfg.passkey_frac > 0), 0, tok=tok)

    def identity(self) -> dict[str, Any]:
        from squeeze.train.checkpoint import fingerprint  # noqa: PLC0415

        return {"config": self.cfg.to_dict(), "base_fingerprint": fingerprint(self.base)}

    def build(self) -> tuple[nn.Module, list[torch.optim.Optimizer]]:
        model = MemoryLM(self.base, self.cfg)
        trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        b = [p for n, p in trainable if n.startswith("lora_b.")]  # LoRA+: the B matrices at lora_b_lr x lr
        rest = [p for n, p in trainable if not n.startswith("lora_b.")]
        groups = [{"params": rest, "lr_scale": 1.0}, {"params": b, "lr_scale": self.cfg.lora_b_lr}]
        opt = torch.optim.AdamW(groups, lr=self.cfg.lr, betas=(0.9, 0.95), weight_decay=self.cfg.weight_decay)
        return model, [opt]

    def steps_per_epoch(self, world: int) -> int:
        return self.cfg.steps_per_epoch

    def batches(self, epoch: int, rank: int, world: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
        """(ids, weights, p) per step: documents behind ``p`` distractor segments (``prefix_segments``)."""
        from squeeze.train.engine import derived_seed  # noqa: PLC0415

        c = self.cfg
        for step in range(c.steps_per_epoch):
            at = epoch * c.steps_per_epoch + step  # the optimizer step
            segments, most = c.segments_at(at), c.prefix_at(at)
            seed = derived_seed(c.seed, epoch, step)
            prefix = random.Random(derived_seed(seed, 47)).randint(0, most) if most else 0
            ids, weights = training_batch(self.tokens, c.batch_size, segments, c.segment, c.passkey_frac, seed,
                                          c.recall_frac, c.raw_window, self.tok, prefix)
            yield ids, weights, prefix

    def train_step(self, ctx: Any, batch: tuple[torch.Tensor, torch.Tensor, int]) -> dict[str, float]:
        from squeeze.train.engine import derived_seed  # noqa: PLC0415

        if ctx.world > 1:
            raise SqueezeError("squeeze train uio runs on one process (its incremental backward is not DDP-aware); "
                               "drop --devices/--nodes")
        model: MemoryLM = ctx.module
        for group in ctx.optimizers[0].param_groups:
            group["lr"] = self.cfg.lr * group["lr_scale"] * lr_factor(ctx.step, ctx.total_steps, self.cfg.warmup)
        ids, weights, prefix = batch[0].to(ctx.device), batch[1].to(ctx.device), batch[2]
        rng = random.Random(derived_seed(self.cfg.seed, ctx.step, 31))
        step = batched_backward if self.cfg.batched else tbptt_backward
        loss = step(model, ids, weights, self.cfg.grad_mode, self.cfg.keep, rng, ctx.backward,
                    per_document=self.cfg.reservoir == "document", prefix=prefix)
        if self.cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], self.cfg.grad_clip)
        return {"loss": loss}

    def evaluate(self, module: nn.Module) -> dict[str, float]:
        from squeeze.memory.evaluate import passkey_accuracy, perplexity  # noqa: PLC0415

        c = self.cfg
        length = c.doc_segments * c.segment
        module.eval()
        ppl = perplexity("uio", module, self.val_tokens, length, self.eval_docs, seed=5)
        acc, digits = passkey_accuracy("uio", module, self.val_tokens, length, self.eval_docs, seed=6,
                                       hide_beyond=c.raw_span, tok=self.tok)
        module.train()
        return {"val_ppl": ppl, "val_passkey_acc": acc, "val_passkey_digits": digits}


def _make_task(cfg: UIOConfig, base: nn.Module | None, tokens: torch.Tensor | None,
               val_tokens: torch.Tensor | None) -> Callable[[UIOConfig], UIOTask]:
    """The task factory of a run: the base (loaded if None) and the Shakespeare text in its tokenizer."""
    base = load_base(cfg.base) if base is None else base
    tok = load_tokenizer(cfg.base)
    if tokens is None:  # the Shakespeare text in the base's tokenizer
        check_tokenizer(base, tok, cfg.base)
        tokens = text_tokens(tok, "train")
    val = text_tokens(tok, "val") if val_tokens is None else val_tokens
    return lambda c: UIOTask(c, base, tokens, val, tok=tok)


def train_uio(cfg: UIOConfig, engine: Any, base: nn.Module | None = None, tokens: torch.Tensor | None = None,
              val_tokens: torch.Tensor | None = None, curriculum: Path | None = None) -> dict[str, Any]:
    """Train (or resume) a UIO run in ``engine.workdir``; writes the adapters when finished. ``curriculum``: a
    folder of :func:`train_curriculum` for ``cfg.curriculum_twin()``; the run starts where it ended."""
    from squeeze.train.checkpoint import atomic_save_tensors, write_json  # noqa: PLC0415
    from squeeze.train.engine import fit  # noqa: PLC0415

    make_task = _make_task(cfg, base, tokens, val_tokens)
    staged = cfg.restarts or curriculum is not None
    result, dropped = fit_with_restarts(cfg, engine, make_task, curriculum) if staged else (
        fit(make_task(cfg), engine), [])
    model: MemoryLM = result.module
    # threads: of the process that finished the run (one-thread runs are bit-reproducible, two-thread ones not)
    base_params = sum(p.numel() for p in model.base.parameters())
    summary = {"config": cfg.to_dict(), "extra_params": model.extra_parameters(), "base_params": base_params,
               "log": result.log, "threads": torch.get_num_threads()}
    if cfg.restarts:  # the attempts dropped at the end of the curriculum (their training time counts too)
        summary["restarted"] = dropped
    if curriculum is not None:  # its epochs up to the gate and its dropped attempts were trained there, once
        summary["curriculum"] = Path(curriculum).name
    summary["extra_ratio"] = summary["extra_params"] / summary["base_params"]
    if result.rank == 0 and result.log and result.log[-1]["epoch"] == cfg.epochs:
        trainable = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        atomic_save_tensors(engine.workdir / ADAPTERS, trainable)
        write_json(engine.workdir / META, summary)
    return summary


def _attempt(cfg: UIOConfig, attempt: int) -> UIOConfig:
    """The plain run (``restarts=0``) of restart attempt ``attempt``: attempt 0 on ``cfg.seed``, later ones
    on derived seeds."""
    from squeeze.train.engine import derived_seed  # noqa: PLC0415

    return replace(cfg, restarts=0, seed=derived_seed(cfg.seed, 89, attempt) if attempt else cfg.seed)


def _attempt_dir(cfg: UIOConfig, workdir: Path, attempt: int) -> Path:
    """Where attempt ``attempt`` trains: ``WORKDIR/attempt-a`` with restarts, else the run folder itself."""
    return workdir / f"attempt-{attempt}" if cfg.restarts else workdir


def run_curriculum(cfg: UIOConfig, engine: Any, make_task: Callable[[UIOConfig], UIOTask]
                   ) -> tuple[int, list[dict[str, Any]]]:
    """Train attempts of ``cfg`` to the end of the curriculum (see :class:`UIOConfig` ``restarts``) until one
    reads ``restart_below`` of the validation keys there; if none does, the one that read most goes on (the
    earliest of equals; on resume, the one already trained past the curriculum). Returns the attempt that
    goes on and, per dropped attempt, its seed, gate accuracy, seconds and end time."""
    from squeeze.train.engine import fit  # noqa: PLC0415
    from squeeze.train.state import CHECKPOINT, read_meta  # noqa: PLC0415

    gate = cfg.curriculum_steps // cfg.steps_per_epoch  # the epoch that ends the curriculum (1-based)
    readings: list[dict[str, Any]] = []
    went_on = None  # an attempt already trained past the gate (a resumed run): it was chosen then
    for attempt in range(cfg.restarts + 1):
        run, folder = _attempt(cfg, attempt), _attempt_dir(cfg, engine.workdir, attempt)
        # --resume continues every attempt already on disk; without it an existing attempt is refused by fit
        resume = engine.resume and (attempt == 0 or (folder / CHECKPOINT).is_file())
        done = read_meta(folder / CHECKPOINT)["epoch"] if resume else 0
        if done < gate:
            fit(make_task(run), replace(engine, workdir=folder, resume=resume, max_epochs=gate - done))
        log = read_meta(folder / CHECKPOINT)["log"]
        readings.append({"attempt": attempt, "seed": run.seed,
                         "gate_passkey_acc": float(log[gate - 1]["val_passkey_acc"]),
                         "seconds": round(sum(e["seconds"] for e in log[:gate]), 2),
                         "ended": log[gate - 1].get("ended")})
        went_on = attempt if len(log) > gate else went_on
        if readings[-1]["gate_passkey_acc"] >= cfg.restart_below:
            return attempt, readings[:-1]
        if attempt < cfg.restarts:
            tqdm.write(f"attempt {attempt} (seed {run.seed}) reads {readings[-1]['gate_passkey_acc']:.3f} of the "
                       f"validation keys when its curriculum ends, below restart_below {cfg.restart_below}: restarting")
    # max returns the first of equals: the earliest attempt
    kept = went_on if went_on is not None else max(readings, key=lambda r: r["gate_passkey_acc"])["attempt"]
    tqdm.write(f"no attempt reads restart_below {cfg.restart_below} of the validation keys when its curriculum "
               f"ends: attempt {kept} ({readings[kept]['gate_passkey_acc']:.3f}) goes on")
    return kept, [r for r in readings if r["attempt"] != kept]


def fit_with_restarts(cfg: UIOConfig, engine: Any, make_task: Callable[[UIOConfig], UIOTask],
                      curriculum: Path | None = None) -> tuple[Any, list[dict[str, Any]]]:
    """Fit ``cfg`` past its curriculum: :func:`run_curriculum` in ``engine.workdir``, or the curriculum already
    trained in ``curriculum`` (:func:`fork_curriculum`); the attempt that goes on resumes to the end.
    Returns the engine's result for that attempt and the dropped attempts."""
    from squeeze.train.engine import fit  # noqa: PLC0415

    if engine.max_epochs is not None:
        raise SqueezeError("a run with restarts or a shared curriculum cannot be split into max_epochs pieces; "
                           "drop max_epochs or set restarts=0")
    attempt, dropped = (run_curriculum(cfg, engine, make_task) if curriculum is None
                        else fork_curriculum(cfg, Path(curriculum), engine.workdir))
    folder = _attempt_dir(cfg, engine.workdir, attempt)
    return fit(make_task(_attempt(cfg, attempt)), replace(engine, workdir=folder, resume=True)), dropped


def train_curriculum(cfg: UIOConfig, engine: Any, base: nn.Module | None = None, tokens: torch.Tensor | None = None,
                     val_tokens: torch.Tensor | None = None) -> dict[str, Any]:
    """Train the curriculum (with its restarts) of ``cfg.curriculum_twin()`` once in ``engine.workdir``, for
    every run with that twin to start from (``train_uio(..., curriculum=folder)``); writes
    ``WORKDIR/curriculum.json`` (the twin config, the attempt that goes on, the dropped attempts)."""
    from squeeze.train.checkpoint import write_json  # noqa: PLC0415

    twin = cfg.curriculum_twin()
    if twin is None:
        raise SqueezeError(f"grad mode {cfg.grad_mode} with curriculum_segments {cfg.curriculum_segments}, keep "
                           f"{cfg.keep} has no shared curriculum (it needs curriculum_segments <= keep + 1, a "
                           "mode other than detached, and a curriculum that ends at an epoch boundary)")
    attempt, dropped = run_curriculum(twin, engine, _make_task(twin, base, tokens, val_tokens))
    info = {"config": twin.to_dict(), "attempt": attempt, "dropped": dropped}
    write_json(engine.workdir / CURRICULUM, info)
    return info


def fork_curriculum(cfg: UIOConfig, shared: Path, workdir: Path) -> tuple[int, list[dict[str, Any]]]:
    """Start ``cfg``'s run in ``workdir`` from the curriculum trained in ``shared`` (:func:`train_curriculum`):
    the attempt that went on there is copied under ``cfg``'s identity (its log and dropped attempts too, with
    their times, so runs sharing it count its training once when they overlap). A run already started
    keeps its own checkpoint. Returns that attempt and the dropped attempts."""
    from squeeze.train.state import CHECKPOINT, fork_state  # noqa: PLC0415

    if not (shared / CURRICULUM).is_file():
        raise SqueezeError(f"no trained curriculum in {shared} ({CURRICULUM} missing); run train_curriculum first")
    info = json.loads((shared / CURRICULUM).read_text())
    twin = cfg.curriculum_twin()
    if twin is None or info["config"] != twin.to_dict():
        raise SqueezeError(f"the curriculum in {shared} was trained for another config; train one for "
                           f"grad mode {cfg.grad_mode}'s twin (UIOConfig.curriculum_twin)")
    attempt = int(info["attempt"])
    dst = _attempt_dir(cfg, workdir, attempt) / CHECKPOINT
    if not dst.is_file():
        fork_state(_attempt_dir(twin, shared, attempt) / CHECKPOINT, dst, {"config": _attempt(cfg, attempt).to_dict()})
    return attempt, list(info["dropped"])


def load_uio(folder: Path, base: nn.Module | None = None) -> MemoryLM:
    """A trained memory model from ``folder/uio.{safetensors,json}`` (eval mode)."""
    from squeeze.train.checkpoint import load_tensors  # noqa: PLC0415

    folder = Path(folder)
    if not (folder / ADAPTERS).is_file() or not (folder / META).is_file():
        raise SqueezeError(f"no finished UIO run in {folder} ({ADAPTERS} missing); train it with `squeeze train uio`")
    cfg = UIOConfig.from_dict(json.loads((folder / META).read_text())["config"])
    model = MemoryLM(load_base(cfg.base) if base is None else base, cfg)
    missing = model.load_state_dict(load_tensors(folder / ADAPTERS), strict=False)
    if missing.unexpected_keys or any(not k.startswith("base.") for k in missing.missing_keys):
        raise SqueezeError(f"{folder / ADAPTERS} does not match the UIO model (unexpected {missing.unexpected_keys[:2]})")
    return model.eval()
