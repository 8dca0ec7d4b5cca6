"""Orchestration behind ``squeeze train nm``: fine-tune, finalize, measure, export.

A run folder holds the engine's ``last.safetensors`` while training (resumable) and, once finished,
``model.nm.safetensors`` (compact N:M weights, see :mod:`squeeze.sparse.export`) and ``nm.json``
(config, float checkpoint fingerprint, top-1 on the test set, measured density, backward N:M coverage,
theoretical FLOP savings, file sizes).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from squeeze.data.fashion_mnist import load_fashion_mnist
from squeeze.errors import SqueezeError
from squeeze.report import package_versions
from squeeze.sparse.config import NMConfig
from squeeze.sparse.export import FILENAME, check_nm, save_nm
from squeeze.sparse.flops import flop_savings, layer_macs
from squeeze.sparse.layers import layer_stats
from squeeze.sparse.task import NMTask, finalize, load_float
from squeeze.train.checkpoint import fingerprint, write_json
from squeeze.train.classifier import evaluate_top1
from squeeze.train.engine import EngineConfig, fit

RESULT = "nm.json"


def summarize_stats(stats: dict[str, dict[str, float]], macs: dict[str, int], cfg: NMConfig) -> dict[str, Any]:
    """Model-level density, backward coverage and FLOP savings from per-layer statistics."""
    total = sum(int(s["numel"]) for s in stats.values())
    kept = sum(int(s["kept"]) for s in stats.values())
    density = {k: s["kept"] / s["numel"] for k, s in stats.items()}
    bwd_nm = {k: s["bwd_nm"] >= 1.0 and cfg.method in ("transposable", "bimask", "bimask-no-perm")
              for k, s in stats.items()}
    fwd, bwd = flop_savings(macs, density, bwd_nm, cfg.n, cfg.m)
    weights = [s["numel"] for s in stats.values()]
    mean = (lambda key: sum(s[key] * w for s, w in zip(stats.values(), weights)) / max(1, sum(weights)))
    return {"density": kept / total if total else 1.0, "sparse_weights": total,
            "bwd_nm_coverage": mean("bwd_nm") if stats else 0.0, "bwd_kept": mean("bwd_kept") if stats else 1.0,
            "fwd_flop_saving": fwd, "bwd_flop_saving": bwd, "nm_forward": cfg.method not in ("dense", "unstructured")}


def _export(deploy: nn.Module, cfg: NMConfig, info: dict[str, Any], arch: dict[str, Any], folder: Path) -> dict:
    """Write the compact file and check it (N:M methods); dense and unstructured runs are not N:M, so
    only their dense size is recorded."""
    if cfg.method in ("dense", "unstructured"):
        from safetensors.torch import save as save_bytes  # noqa: PLC0415

        size = len(save_bytes({k: v.detach().float().cpu().contiguous() for k, v in deploy.state_dict().items()}))
        return {"file_bytes": None, "dense_bytes": size, "check_nm": None}
    sizes = save_nm(deploy, folder / FILENAME, {"model": cfg.model, "arch": arch, "n": cfg.n, "m": cfg.m,
                                                "layers": info["layers"], "merged": info["pairs"],
                                                "config": cfg.to_dict()})
    return {**sizes, "check_nm": check_nm(folder / FILENAME)}


def train_nm(cfg: NMConfig, engine: EngineConfig, float_net: nn.Module | None = None, float_top1: float | None = None,
             test_limit: int | None = None, arch: dict[str, Any] | None = None,
             splits: tuple[Any, Any] | None = None) -> dict[str, Any]:
    """Fine-tune one method from the float checkpoint; on completion export and write ``nm.json``.

    ``float_net``/``float_top1``/``arch`` override the committed checkpoint (tests); ``test_limit``
    evaluates the finished network on the first ``test_limit`` test images only (smoke runs);
    ``splits`` passes already loaded ``(train, test)`` Fashion-MNIST tensors (benchmarks).
    """
    if float_net is None:
        float_net, float_top1, arch = load_float(cfg.model)
    data, test = splits or (load_fashion_mnist("train"), load_fashion_mnist("test"))
    task = NMTask(cfg, float_net, fingerprint(float_net), data, test)
    start = time.perf_counter()
    result = fit(task, engine)
    seconds = time.perf_counter() - start
    finished = bool(result.log) and result.log[-1]["epoch"] == cfg.epochs
    if result.rank != 0 or not finished:
        return {"method": cfg.method, "finished": False, "epochs_done": len(result.log)}
    net = result.module.eval()
    stats = layer_stats(net)
    deploy = finalize(net)
    x_test, y_test = test[0][:test_limit], test[1][:test_limit]
    top1 = evaluate_top1(deploy, x_test, y_test)
    with torch.no_grad():
        check = (deploy(x_test[:16]) - net(x_test[:16])).abs().max().item()
    if check > 1e-3:
        raise SqueezeError(f"the deploy network differs from the trained one by {check:.2g}; this is a bug")
    macs = layer_macs(deploy, x_test)
    summary = {"method": cfg.method, "model": cfg.model, "n": cfg.n, "m": cfg.m, "config": cfg.to_dict(),
               "float_weights": task.float_tag, "float_top1": float_top1, "top1": top1, "test_images": len(x_test),
               **summarize_stats(stats, macs, cfg), "layers": stats, "sparse_layers": task.info["layers"],
               "spre_pairs": task.info["pairs"], **_export(deploy, cfg, task.info, arch or {}, engine.workdir),
               "deploy_max_diff": check, "train_seconds": sum(r["seconds"] for r in result.log),
               "seconds_this_call": seconds, "log": result.log, "versions": package_versions(),
               "command": f"squeeze train nm --model {cfg.model} --method {cfg.method} --n {cfg.n} --m {cfg.m}"}
    write_json(engine.workdir / RESULT, summary)
    return {k: summary[k] for k in ("method", "n", "m", "top1", "float_top1", "density", "bwd_nm_coverage",
                                    "fwd_flop_saving", "bwd_flop_saving", "file_bytes", "dense_bytes", "check_nm",
                                    "train_seconds")}
