"""``squeeze train hqss``: stage 1 (pseudo-shadow generator), stage 2 (removal network), evaluation.

Work folder layout (each stage resumable through the shared engine, each finished artefact reused):

* ``generator/`` - the stage-1 engine run (``hqss`` and ``mask-shadowgan`` only);
  ``generator.safetensors`` - its finished networks (+ the config identity in the header);
* ``removal/`` - the stage-2 engine run of the :class:`~squeeze.restore.nets.RestoreNet`;
* ``model.safetensors`` - the removal network as a restorer file (``squeeze restore MODEL IN OUT --mask M``);
* ``hqss.json`` - the summary: config, seconds per stage, test scores (simulated data only).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from squeeze.errors import SqueezeError
from squeeze.methods.hqss.config import HQSSConfig
from squeeze.methods.hqss.data import ShadowData, load_shadow_data
from squeeze.methods.hqss.generation import HQSSGenTask, MaskShadowGANTask
from squeeze.methods.hqss.pseudo import Pool, batch_sampler, darken_pool, hqss_pool, mask_shadowgan_pool, paired_pool

GENERATOR = "generator.safetensors"
MODEL = "model.safetensors"
SUMMARY = "hqss.json"


def _engine(folder: Path, resume: bool, options: dict[str, Any]) -> Any:
    """An EngineConfig for a stage folder: resume when asked *and* a checkpoint is there."""
    from squeeze.train.engine import EngineConfig  # noqa: PLC0415
    from squeeze.train.state import CHECKPOINT  # noqa: PLC0415

    return EngineConfig(folder, resume=resume and (folder / CHECKPOINT).is_file(), **options)


def train_generator(cfg: HQSSConfig, data: ShadowData, workdir: Path, resume: bool,
                    options: dict[str, Any]) -> nn.ModuleDict:
    """Stage 1 for ``hqss`` / ``mask-shadowgan`` (or reload its finished networks); returns them."""
    from squeeze.train.checkpoint import atomic_save_tensors, read_format_file  # noqa: PLC0415
    from squeeze.train.engine import fit  # noqa: PLC0415

    if cfg.variant == "hqss":
        task: Any = HQSSGenTask(cfg, data.images, data.masks, data.source)
    else:
        if data.clean is None:
            raise SqueezeError("mask-shadowgan needs unpaired shadow-free images; none were loaded")
        task = MaskShadowGANTask(cfg, data.images, data.masks, data.clean, data.source)
    identity = json.dumps(task.identity(), sort_keys=True)
    path = workdir / GENERATOR
    if path.is_file():
        _, meta, tensors = read_format_file(path, GENERATOR, "squeeze.hqss-generator", 1, "HQSS generator",
                                            "squeeze train hqss")
        if meta.get("identity") != identity:
            raise SqueezeError(f"{path} was trained with another config or data; use another --workdir")
        net, _ = task.build()
        net.load_state_dict(tensors)
        return net
    net = fit(task, _engine(workdir / "generator", resume, options)).module
    if len(json.loads((workdir / "generator" / "log.json").read_text())) == task.epochs:
        atomic_save_tensors(path, dict(net.state_dict()), metadata={"format": "squeeze.hqss-generator",
                                                                  "format_version": "1", "identity": identity})
    return net


def pseudo_pairs(cfg: HQSSConfig, data: ShadowData, nets: nn.ModuleDict | None) -> Pool:
    """The stage-2 training pairs of ``cfg.variant`` (see :mod:`squeeze.methods.hqss.pseudo`)."""
    if cfg.variant == "hqss":
        assert nets is not None
        return hqss_pool(cfg, data.images, data.masks, nets["F"], nets["G"])
    if cfg.variant == "mask-shadowgan":
        assert nets is not None and data.clean is not None
        return mask_shadowgan_pool(cfg, data.clean, data.masks, nets["G_fs"])
    if cfg.variant == "darken":
        return darken_pool(cfg, data.images, data.masks)
    if data.targets is None:
        raise SqueezeError("the paired variant needs shadow-free targets; none were loaded")
    return paired_pool(data.images, data.masks, data.targets)


@torch.no_grad()
def remove_shadows(model: nn.Module, images: torch.Tensor, masks: torch.Tensor, batch: int = 16) -> torch.Tensor:
    """Run the removal network on (N, 3, H, W) images with (N, 1, H, W) masks; outputs clamped to [0, 1]."""
    model.eval()
    outs = [model(torch.cat([images[s:s + batch], masks[s:s + batch]], 1)) for s in range(0, len(images), batch)]
    return torch.cat(outs).clamp(0, 1)


def evaluate_removal(model: nn.Module, test: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> dict[str, float]:
    """Lab "RMSE" (shadow / non-shadow / all), true RMSE and PSNR on the held-out triplets."""
    from squeeze.metrics.shadow import shadow_scores  # noqa: PLC0415

    images, masks, targets = test
    return shadow_scores(remove_shadows(model, images, masks), targets, masks)


def _log_seconds(folder: Path) -> float:
    """Training seconds of an engine run, summed over its epochs (resumed runs included)."""
    return float(sum(row.get("seconds", 0.0) for row in json.loads((folder / "log.json").read_text())))


def train_shadow_removal(cfg: HQSSConfig, workdir: Path, resume: bool = False,
                         options: dict[str, Any] | None = None, data: ShadowData | None = None) -> dict[str, Any]:
    """Train variant ``cfg.variant`` end to end into ``workdir`` (see the module docstring); returns the summary.

    ``options``: EngineConfig fields besides workdir/resume (devices, nodes, accelerator, progress,
    max_epochs). ``data`` replaces :func:`load_shadow_data` (tests).
    """
    from squeeze.restore.io import save_restorer  # noqa: PLC0415
    from squeeze.restore.train import RestoreTrainConfig, train_restorer  # noqa: PLC0415
    from squeeze.train.checkpoint import write_json  # noqa: PLC0415

    workdir, options = Path(workdir), dict(options or {})
    if (workdir / SUMMARY).is_file():
        done = json.loads((workdir / SUMMARY).read_text())
        if done.get("config") == cfg.to_dict():
            if not resume:
                raise SqueezeError(f"{workdir} already holds this finished run; pass --resume to reuse it or "
                                   "choose another --workdir")
            return done
        raise SqueezeError(f"{workdir} holds a finished run of another config; choose another --workdir")
    data = load_shadow_data(cfg) if data is None else data
    nets = train_generator(cfg, data, workdir, resume, options) if cfg.generative else None
    if cfg.generative and not (workdir / GENERATOR).is_file():
        return {"workdir": str(workdir), "stopped": "generator (max_epochs)"}
    pool = pseudo_pairs(cfg, data, nets)
    rcfg = RestoreTrainConfig(steps=cfg.remove_steps, batch=cfg.remove_batch, patch=cfg.size, lr=cfg.remove_lr,
                              seed=cfg.seed, width=cfg.width, levels=cfg.levels, blocks=cfg.blocks, in_channels=4)
    identity = json.dumps({"hqss": cfg.to_dict(), "data": data.source}, sort_keys=True)
    model = train_restorer(f"{cfg.variant}-removal", batch_sampler(pool, cfg.remove_batch, cfg.seed), rcfg,
                           _engine(workdir / "removal", resume, options), identity=identity)
    log = json.loads((workdir / "removal" / "log.json").read_text())
    if len(log) != cfg.remove_steps // rcfg.epoch_steps:
        return {"workdir": str(workdir), "stopped": "removal (max_epochs)"}
    gen_s = _log_seconds(workdir / "generator") if cfg.generative else 0.0
    rem_s = _log_seconds(workdir / "removal")
    summary: dict[str, Any] = {"config": cfg.to_dict(), "method": cfg.variant, "data": data.source,
                               "pseudo_pairs": len(pool[0]), "generator_seconds": gen_s,
                               "removal_seconds": rem_s,
                               "train_seconds": gen_s + rem_s}
    if data.test is not None:
        summary["test"] = evaluate_removal(model, data.test)
        summary["test_images"] = len(data.test[0])
    save_restorer(workdir / MODEL, model, {"method": "hqss", "variant": cfg.variant, "config": cfg.to_dict()})
    write_json(workdir / SUMMARY, summary)
    return summary
