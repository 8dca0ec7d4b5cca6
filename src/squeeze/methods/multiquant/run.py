"""Orchestration behind ``squeeze train multiquant`` and ``squeeze eval RUN --abits B``.

A run folder holds the engine's ``last.safetensors`` (weights + optimizer state, resumable) while
training, and once finished ``model.safetensors`` (weights) plus ``multiquant.json`` (config, float
checkpoint fingerprint, accuracy at every bit width on the full Fashion-MNIST test set).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from squeeze.data.fashion_mnist import load_fashion_mnist
from squeeze.errors import SqueezeError
from squeeze.methods.multiquant.config import MultiQuantConfig, switched_weights
from squeeze.methods.multiquant.network import MultiBitResNet
from squeeze.methods.multiquant.task import MultiQuantTask, evaluate_bits
from squeeze.report import package_versions
from squeeze.train.checkpoint import atomic_save_tensors, fingerprint, load_tensors, write_json
from squeeze.train.engine import EngineConfig, fit
from squeeze.zoo.resnet_fmnist import ResNetFmnist, ResNetFmnistArch, load_resnet_fmnist_float

RESULT = "multiquant.json"
WEIGHTS = "model.safetensors"


def load_float(cfg: MultiQuantConfig) -> tuple[ResNetFmnist, float]:
    """The float starting network and its recorded test top-1."""
    if cfg.model != "resnet-fmnist":
        raise SqueezeError(f"MultiQuant is implemented for resnet-fmnist, not {cfg.model!r}")
    net, meta = load_resnet_fmnist_float()
    return net, float(meta["test_top1_fp32"])


def train_multiquant(cfg: MultiQuantConfig, engine: EngineConfig, float_net: ResNetFmnist | None = None,
                     float_top1: float | None = None, test_limit: int | None = None) -> dict[str, Any]:
    """Train one variant from the float checkpoint; on completion write the weights and the per-bit results.

    ``float_net`` overrides the committed zoo checkpoint (tests, smoke runs); ``test_limit`` evaluates
    the finished network on the first ``test_limit`` test images only (smoke runs).
    """
    if float_net is None:
        float_net, float_top1 = load_float(cfg)
    data, test = load_fashion_mnist("train"), load_fashion_mnist("test")
    task = MultiQuantTask(cfg, float_net, fingerprint(float_net), data, test)
    start = time.perf_counter()
    result = fit(task, engine)
    seconds = time.perf_counter() - start
    finished = bool(result.log) and result.log[-1]["epoch"] == cfg.epochs
    if result.rank != 0 or not finished:
        return {"variant": cfg.variant, "finished": False, "epochs_done": len(result.log)}
    net = result.module
    x_test, y_test = test[0][:test_limit], test[1][:test_limit]
    top1 = {b: evaluate_bits(net, x_test, y_test, b) for b in tqdm(cfg.bits, desc="final evaluation", leave=False)}
    summary = {"variant": cfg.variant, "model": cfg.model, "config": cfg.identity(), "float_weights": task.float_tag,
               "float_top1": float_top1, "top1": {str(b): v for b, v in top1.items()}, "test_images": len(x_test),
               "train_seconds": sum(r["seconds"] for r in result.log), "seconds_this_call": seconds,
               "log": result.log, "arch": float_net.arch.to_dict(), "versions": package_versions(),
               "command": f"squeeze train {cfg.variant} --model {cfg.model} --bits {','.join(map(str, cfg.bits))}"}
    atomic_save_tensors(engine.workdir / WEIGHTS, {k: v.float() for k, v in net.state_dict().items()})
    write_json(engine.workdir / RESULT, summary)
    return {k: summary[k] for k in ("variant", "top1", "float_top1", "train_seconds")}


def load_run(folder: Path) -> tuple[MultiBitResNet, dict[str, Any]]:
    """Rebuild a finished run's network from ``folder`` (``multiquant.json`` + ``model.safetensors``)."""
    folder = Path(folder)
    meta_path = folder / RESULT
    if not meta_path.is_file():
        raise SqueezeError(f"{folder} holds no finished MultiQuant run ({RESULT} missing); finish training first")
    try:
        meta = json.loads(meta_path.read_text())
        cfg = MultiQuantConfig.from_dict(meta["config"])
        arch = ResNetFmnistArch.from_dict(meta["arch"])
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise SqueezeError(f"{meta_path} is corrupt ({exc}); train the run again") from exc
    net = MultiBitResNet(arch, cfg)
    missing, unexpected = net.load_state_dict(load_tensors(folder / WEIGHTS), strict=False)
    if missing or unexpected:
        raise SqueezeError(f"{folder / WEIGHTS} does not match its {RESULT} (missing {missing[:2]}, "
                           f"unexpected {unexpected[:2]})")
    return net.eval(), meta


def eval_run(folder: Path, abits: int | None = None) -> dict[str, Any]:
    """Top-1 on the full test set at ``abits`` (default: every trained bit width), vs the saved numbers."""
    net, meta = load_run(folder)
    bits = [abits] if abits is not None else list(net.bits_list)
    if abits is not None and abits not in net.bits_list:
        raise SqueezeError(f"--abits {abits} is not among this run's bit widths {list(net.bits_list)}")
    x, y = load_fashion_mnist("test")
    start = time.perf_counter()
    out = {}
    for b in bits:
        value = evaluate_bits(net, x, y, b)
        saved = meta["top1"].get(str(b))
        out[str(b)] = {"quant": value, "saved_quant": saved, "difference": value - saved if saved is not None else None}
    weights = "switched with abits" if switched_weights(meta["variant"]) else "2-bit branches"
    return {"model": meta["model"], "method": meta["variant"], "metric": "top1", "weights": weights, "abits": out,
            "seconds": time.perf_counter() - start}
