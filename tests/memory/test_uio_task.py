"""Training a memory model on the engine: adapters written, reloaded identically, resume refused on change."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from squeeze.errors import SqueezeError
from squeeze.memory.config import UIOConfig
from squeeze.memory.task import load_uio, train_uio
from squeeze.train.engine import EngineConfig
from squeeze.zoo.lm_shakespeare import LMArch, TinyLlama, encode

TEXT = encode("Friends, Romans, countrymen, lend me your ears; I come to bury Caesar, not to praise him. " * 40)


def test_train_save_and_reload(tmp_path: Path) -> None:
    torch.manual_seed(0)
    base = TinyLlama(LMArch(dim=16, layers=2, heads=2, kv_heads=2, hidden=32, context=64)).eval()
    cfg = UIOConfig(segment=32, memory=4, doc_segments=4, steps=4, steps_per_epoch=2, batch_size=2, lr=1e-2,
                    warmup=1, passkey_frac=0.5)
    summary = train_uio(cfg, EngineConfig(tmp_path / "r", progress=False), base=base, tokens=TEXT, val_tokens=TEXT)
    assert len(summary["log"]) == 2 and summary["extra_params"] > 0
    model = load_uio(tmp_path / "r", base=base)
    assert model.lora_b["dec_k"].abs().sum() > 0  # trained away from the zero start
    ids = TEXT[:100][None]
    with torch.no_grad():
        again = load_uio(tmp_path / "r", base=base)
        assert torch.equal(model.stream(ids), again.stream(ids))
    with pytest.raises(SqueezeError, match="already holds a checkpoint"):
        train_uio(cfg, EngineConfig(tmp_path / "r", progress=False), base=base, tokens=TEXT, val_tokens=TEXT)
    with pytest.raises(SqueezeError, match="no finished UIO run"):
        load_uio(tmp_path / "nothing", base=base)
    with pytest.raises(SqueezeError, match="shorter than"):
        train_uio(cfg, EngineConfig(tmp_path / "s", progress=False), base=base, tokens=TEXT[:60], val_tokens=TEXT)


def test_a_base_that_cannot_read_its_tokenizer_is_refused(tmp_path: Path) -> None:
    base = TinyLlama(LMArch(vocab=32, dim=16, layers=2, heads=2, kv_heads=2, hidden=32, context=64)).eval()
    with pytest.raises(SqueezeError, match="vocabulary of 32, smaller than its tokenizer's \\(bytes: 256\\)"):
        train_uio(UIOConfig(segment=8, memory=2), EngineConfig(tmp_path / "r", progress=False), base=base)
    assert not (tmp_path / "r").exists()


def test_checkpoints_leave_the_frozen_base_out_and_resume_exactly(tmp_path: Path) -> None:
    from safetensors import safe_open  # noqa: PLC0415

    from squeeze.train.checkpoint import load_tensors  # noqa: PLC0415

    torch.manual_seed(0)
    base = TinyLlama(LMArch(dim=16, layers=2, heads=2, kv_heads=2, hidden=32, context=64)).eval()
    cfg = UIOConfig(segment=32, memory=4, doc_segments=4, steps=4, steps_per_epoch=2, batch_size=2, lr=1e-2,
                    warmup=1)
    data = {"base": base, "tokens": TEXT, "val_tokens": TEXT}
    train_uio(cfg, EngineConfig(tmp_path / "a", progress=False), **data)
    train_uio(cfg, EngineConfig(tmp_path / "b", progress=False, max_epochs=1), **data)  # stopped after epoch 1
    with safe_open(str(tmp_path / "b" / "last.safetensors"), framework="pt") as handle:
        keys = list(handle.keys())
    assert any(k.startswith("model.lora_b.") for k in keys) and not any(k.startswith("model.base.") for k in keys)
    train_uio(cfg, EngineConfig(tmp_path / "b", resume=True, progress=False), **data)
    a, b = load_tensors(tmp_path / "a" / "uio.safetensors"), load_tensors(tmp_path / "b" / "uio.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_batched_training_follows_the_segment_by_segment_run(tmp_path: Path) -> None:
    """``batched=true`` computes the same gradients, so a short run ends at the same adapters (to rounding)."""
    from squeeze.train.checkpoint import load_tensors  # noqa: PLC0415

    torch.manual_seed(0)
    base = TinyLlama(LMArch(dim=16, layers=2, heads=2, kv_heads=2, hidden=32, context=64)).eval()
    runs = {}
    for batched in (False, True):
        cfg = UIOConfig(segment=32, memory=4, doc_segments=4, steps=4, steps_per_epoch=2, batch_size=2, lr=1e-2,
                        warmup=1, batched=batched)
        train_uio(cfg, EngineConfig(tmp_path / str(batched), progress=False), base=base, tokens=TEXT,
                  val_tokens=TEXT)
        runs[batched] = load_tensors(tmp_path / str(batched) / "uio.safetensors")
    for k, v in runs[False].items():
        torch.testing.assert_close(runs[True][k], v, rtol=1e-4, atol=1e-5)


def _one_step(cfg: UIOConfig) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """One optimizer step of a tiny memory model whose LoRA B matrices start non-zero (at zero the A factors
    would get no gradient); returns the model after the step and its trainable weights before it."""
    from types import SimpleNamespace  # noqa: PLC0415

    from squeeze.memory.task import UIOTask  # noqa: PLC0415

    torch.manual_seed(0)
    base = TinyLlama(LMArch(dim=16, layers=2, heads=2, kv_heads=2, hidden=32, context=64)).eval()
    task = UIOTask(cfg, base, TEXT, TEXT)
    torch.manual_seed(1)
    model, opts = task.build()
    with torch.no_grad():
        for b in model.lora_b.values():
            b.normal_(0, 0.1)
    before = {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}
    ctx = SimpleNamespace(world=1, module=model, optimizers=opts, device=torch.device("cpu"), step=3,
                          total_steps=10, backward=torch.Tensor.backward)
    task.train_step(ctx, next(iter(task.batches(0, 0, 1))))
    return model, before


TINY = {"segment": 32, "memory": 4, "doc_segments": 4, "batch_size": 2, "grad_mode": "full-bptt"}


def test_grad_clip_scales_the_step_down_to_its_norm_and_zero_turns_it_off() -> None:
    grads = {}
    for clip in (0.0, 1e-3):
        model, _ = _one_step(UIOConfig(**TINY, grad_clip=clip))
        grads[clip] = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    free, clipped = grads[0.0], grads[1e-3]
    assert free.norm() > 1e-2  # unclipped: the raw gradient
    assert clipped.norm() == pytest.approx(1e-3, rel=1e-3)
    assert torch.allclose(clipped, free * (1e-3 / free.norm()), atol=1e-8)


def test_lora_b_lr_moves_only_the_b_matrices_faster() -> None:
    """LoRA+: an Adam step moves each weight by about its lr, so with ``lora_b_lr`` 8 the B matrices move 8 times as
    far as with 1 and every other weight as far."""
    moved = {}
    for ratio in (1.0, 8.0):
        model, before = _one_step(UIOConfig(**TINY, lr=1e-3, lora_b_lr=ratio, grad_clip=0.0))
        moved[ratio] = {k: float((v - before[k]).abs().max()) for k, v in model.named_parameters() if k in before}
    for name, step in moved[8.0].items():
        expected = 8.0 if name.startswith("lora_b.") else 1.0
        assert step == pytest.approx(expected * moved[1.0][name], rel=1e-3), name


def test_curriculum_batches_are_short_until_its_steps_run_out() -> None:
    from squeeze.memory.task import UIOTask  # noqa: PLC0415

    base = TinyLlama(LMArch(dim=16, layers=2, heads=2, kv_heads=2, hidden=32, context=64)).eval()
    cfg = UIOConfig(segment=32, memory=4, doc_segments=5, curriculum_segments=3, curriculum_steps=3, steps=6,
                    steps_per_epoch=2, batch_size=2, passkey_frac=0.0)
    task = UIOTask(cfg, base, TEXT, TEXT)
    lengths = [ids.shape[1] for epoch in range(3) for ids, _, _ in task.batches(epoch, 0, 1)]
    assert lengths == [3 * 32 + 1] * 3 + [5 * 32 + 1] * 3
    prefixed = UIOTask(replace(cfg, prefix_segments=2), base, TEXT, TEXT)
    drawn = [(ids.shape[1], p) for epoch in range(3) for ids, _, p in prefixed.batches(epoch, 0, 1)]
    assert [n for n, _ in drawn] == [(s + p) * 32 + 1 for s, (_, p) in zip([3] * 3 + [5] * 3, drawn)]
    assert {p for _, p in drawn} <= {0, 1, 2} and len({p for _, p in drawn}) > 1  # p drawn per step
    late = UIOTask(replace(cfg, prefix_segments=2, prefix_start=4), base, TEXT, TEXT)
    late_p = [p for epoch in range(3) for _, _, p in late.batches(epoch, 0, 1)]
    assert late_p == [0] * 4 + [p for _, p in drawn[4:]]  # none before prefix_start, the same draws after
    with pytest.raises(SqueezeError, match="too short for the needle"):  # checked before training starts
        UIOTask(replace(cfg, passkey_frac=0.5), base, TEXT, TEXT)  # 97 tokens: no room for a passkey


def test_restarts_drop_attempts_that_cannot_read_keys_when_the_curriculum_ends(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from squeeze.memory.task import UIOTask  # noqa: PLC0415
    from squeeze.train.checkpoint import load_tensors  # noqa: PLC0415
    from squeeze.train.engine import derived_seed  # noqa: PLC0415

    torch.manual_seed(0)
    base = TinyLlama(LMArch(dim=16, layers=2, heads=2, kv_heads=2, hidden=32, context=64)).eval()
    cfg = UIOConfig(segment=32, memory=4, doc_segments=5, curriculum_segments=3, curriculum_steps=2, steps=6,
                    steps_per_epoch=2, batch_size=2, passkey_frac=0.0, restarts=2)
    first = derived_seed(cfg.seed, 89, 1)  # attempt 1's seed: the only one that "reads" keys below

    def evaluate(self: UIOTask, module: torch.nn.Module) -> dict[str, float]:
        return {"val_passkey_acc": 1.0 if self.seed == first else 0.0}

    monkeypatch.setattr(UIOTask, "evaluate", evaluate)
    data = {"base": base, "tokens": TEXT, "val_tokens": TEXT}
    summary = train_uio(cfg, EngineConfig(tmp_path / "r", progress=False), **data)
    assert [(d["attempt"], d["seed"], d["gate_passkey_acc"]) for d in summary["restarted"]] == [(0, cfg.seed, 0.0)]
    assert len(summary["log"]) == cfg.epochs and not (tmp_path / "r" / "attempt-2").exists()
    assert len(json.loads((tmp_path / "r" / "attempt-0" / "log.json").read_text())) == 1  # stopped at the gate
    # attempt 1 is the plain run of its seed
    train_uio(replace(cfg, restarts=0, seed=first), EngineConfig(tmp_path / "plain", progress=False), **data)
    a, b = load_tensors(tmp_path / "r" / "uio.safetensors"), load_tensors(tmp_path / "plain" / "uio.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # an interrupted attempt resumes to the same adapters; max_epochs cannot split a run with restarts
    train_uio(replace(cfg, restarts=0), EngineConfig(tmp_path / "k" / "attempt-0", progress=False, max_epochs=1),
              **data)
    with pytest.raises(SqueezeError, match="already holds a checkpoint"):
        train_uio(cfg, EngineConfig(tmp_path / "k", progress=False), **data)
    train_uio(cfg, EngineConfig(tmp_path / "k", resume=True, progress=False), **data)
    c = load_tensors(tmp_path / "k" / "uio.safetensors")
    assert all(torch.equal(a[k], c[k]) for k in a)
    with pytest.raises(SqueezeError, match="max_epochs"):
        train_uio(cfg, EngineConfig(tmp_path / "m", progress=False, max_epochs=1), **data)
    with pytest.raises(SqueezeError, match="restarts need a curriculum"):
        replace(cfg, curriculum_steps=3)


def test_when_no_attempt_passes_the_gate_the_one_that_read_most_goes_on(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from squeeze.memory.task import UIOTask, _attempt  # noqa: PLC0415
    from squeeze.train.checkpoint import load_tensors  # noqa: PLC0415

    torch.manual_seed(0)
    base = TinyLlama(LMArch(dim=16, layers=2, heads=2, kv_heads=2, hidden=32, context=64)).eval()
    cfg = UIOConfig(segment=32, memory=4, doc_segments=5, curriculum_segments=3, curriculum_steps=2, steps=4,
                    steps_per_epoch=2, batch_size=2, passkey_frac=0.0, restarts=2, restart_below=0.75)
    # attempts 1 and 2 read 0.5, attempt 0 reads 0.25: none passes, attempt 1 (the earliest best) goes on
    reads = {_attempt(cfg, a).seed: r for a, r in enumerate((0.25, 0.5, 0.5))}

    def evaluate(self: UIOTask, module: torch.nn.Module) -> dict[str, float]:
        return {"val_passkey_acc": reads[self.seed]}

    monkeypatch.setattr(UIOTask, "evaluate", evaluate)
    data = {"base": base, "tokens": TEXT, "val_tokens": TEXT}
    summary = train_uio(cfg, EngineConfig(tmp_path / "r", progress=False), **data)
    assert [(d["attempt"], d["gate_passkey_acc"]) for d in summary["restarted"]] == [(0, 0.25), (2, 0.5)]
    logs = {a: json.loads((tmp_path / "r" / f"attempt-{a}" / "log.json").read_text()) for a in range(3)}
    assert [len(logs[a]) for a in range(3)] == [1, cfg.epochs, 1]  # only the kept attempt trained on
    train_uio(_attempt(cfg, 1), EngineConfig(tmp_path / "plain", progress=False), **data)
    a, b = load_tensors(tmp_path / "r" / "uio.safetensors"), load_tensors(tmp_path / "plain" / "uio.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # a resume of the finished run keeps the attempt that went on and lists the same dropped ones
    again = train_uio(cfg, EngineConfig(tmp_path / "r", resume=True, progress=False), **data)
    assert again["restarted"] == summary["restarted"]
    # a run whose last attempt went on although an earlier one read as much (the rule before this fallback)
    # resumes that attempt, not the earliest best
    old = tmp_path / "old"
    for attempt in range(3):
        engine = EngineConfig(old / f"attempt-{attempt}", progress=False, max_epochs=None if attempt == 2 else 1)
        train_uio(_attempt(cfg, attempt), engine, **data)
    resumed = train_uio(cfg, EngineConfig(old, resume=True, progress=False), **data)
    assert [d["attempt"] for d in resumed["restarted"]] == [0, 1]
    a, b = load_tensors(old / "uio.safetensors"), load_tensors(old / "attempt-2" / "uio.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_runs_with_one_curriculum_twin_share_its_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from squeeze.memory.task import UIOTask, train_curriculum  # noqa: PLC0415
    from squeeze.train.checkpoint import load_tensors  # noqa: PLC0415
    from squeeze.train.engine import derived_seed  # noqa: PLC0415

    torch.manual_seed(0)
    base = TinyLlama(LMArch(dim=16, layers=2, heads=2, kv_heads=2, hidden=32, context=64)).eval()
    cfg = UIOConfig(segment=32, memory=4, doc_segments=5, curriculum_segments=3, curriculum_steps=2, steps=4,
                    steps_per_epoch=2, batch_size=2, passkey_frac=0.0, restarts=1, keep=2, lr=1e-2, warmup=1)
    passing = derived_seed(cfg.seed, 89, 1)  # attempt 0 is dropped at the gate, attempt 1 goes on

    def evaluate(self: UIOTask, module: torch.nn.Module) -> dict[str, float]:
        return {"val_passkey_acc": 1.0 if self.seed == passing else 0.0}

    monkeypatch.setattr(UIOTask, "evaluate", evaluate)
    data = {"base": base, "tokens": TEXT, "val_tokens": TEXT}
    info = train_curriculum(cfg, EngineConfig(tmp_path / "cur", progress=False), **data)
    assert info["attempt"] == 1 and [d["attempt"] for d in info["dropped"]] == [0]
    for mode in ("uio", "uio-biased"):
        run = replace(cfg, grad_mode=mode)
        train_uio(run, EngineConfig(tmp_path / f"{mode}-alone", progress=False), **data)
        shared = train_uio(run, EngineConfig(tmp_path / mode, progress=False), curriculum=tmp_path / "cur", **data)
        a, b = (load_tensors(tmp_path / name / "uio.safetensors") for name in (f"{mode}-alone", mode))
        assert all(torch.equal(a[k], b[k]) for k in a)  # the same adapters, bit for bit
        assert shared["restarted"] == info["dropped"] and len(shared["log"]) == cfg.epochs
        assert shared["curriculum"] == "cur"  # where its first epochs and dropped attempts were trained
        # the curriculum's epoch is copied with its time, not trained again
        assert shared["log"][0] == json.loads((tmp_path / "cur" / "attempt-1" / "last.json").read_text())["log"][0]
    with pytest.raises(SqueezeError, match="no shared curriculum"):
        train_curriculum(replace(cfg, grad_mode="detached"), EngineConfig(tmp_path / "d", progress=False), **data)
    with pytest.raises(SqueezeError, match="trained for another config"):
        train_uio(replace(cfg, seed=3), EngineConfig(tmp_path / "s", progress=False), curriculum=tmp_path / "cur",
                  **data)
    with pytest.raises(SqueezeError, match="no trained curriculum"):
        train_uio(cfg, EngineConfig(tmp_path / "n", progress=False), curriculum=tmp_path / "nothing", **data)
