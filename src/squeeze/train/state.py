"""Training-run checkpoints for :mod:`squeeze.train.engine`: one atomic safetensors file per run.

``last.safetensors`` holds the model weights (``model.*``), every optimizer's state flattened
(``opt{i}.{param}.{slot}``) and, in its header metadata, a JSON document with the task identity,
the finished epoch count, the metric log, the optimizers' param groups and a SHA-256 digest of all
tensors. Everything lives in one file written by rename, so a kill can never leave weights and
metadata out of step, and a corrupt or foreign file is refused with one line. ``last.json`` is a
human-readable copy of the metadata (never read back). No pickle anywhere.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import nn

from squeeze.errors import SqueezeError
from squeeze.train.checkpoint import atomic_save_tensors, optimizer_from_flat, optimizer_to_flat, write_json

FORMAT = 1
META_KEY = "squeeze.train"
CHECKPOINT = "last.safetensors"


@dataclass
class TrainState:
    """What a resumed run continues from: finished epochs and the per-epoch metric log."""

    epoch: int
    log: list[dict[str, Any]]


def tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes of ``tensors`` (sorted by name)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def save_state(path: Path, module: nn.Module, optimizers: list[torch.optim.Optimizer], identity: dict[str, Any],
               state: TrainState, frozen: tuple[str, ...] = ()) -> None:
    """Atomically write the run state to ``path`` (a ``.safetensors`` file) and a JSON copy beside it;
    module entries under the ``frozen`` prefixes are left out (the identity pins them)."""
    tensors = {f"model.{k}": v for k, v in module.state_dict().items() if not k.startswith(frozen)}
    groups = []
    for i, opt in enumerate(optimizers):
        flat, meta = optimizer_to_flat(opt)
        tensors.update({f"opt{i}.{k[4:]}": v for k, v in flat.items()})  # "opt.3.exp_avg" -> "opt0.3.exp_avg"
        groups.append(meta["param_groups"])
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    meta = {"format": FORMAT, "identity": identity, "epoch": state.epoch, "log": state.log,
            "param_groups": groups, "digest": tensor_digest(tensors)}
    atomic_save_tensors(path, tensors, metadata={META_KEY: json.dumps(meta)})
    write_json(path.with_suffix(".json"), {k: v for k, v in meta.items() if k != "param_groups"})


def read_meta(path: Path) -> dict[str, Any]:
    """The metadata document of a training checkpoint, or a one-line error for anything else."""
    if not path.is_file():
        raise SqueezeError(f"no training checkpoint at {path}; run without --resume to start")
    try:
        with safe_open(str(path), framework="pt") as handle:
            raw = (handle.metadata() or {}).get(META_KEY)
    except Exception as exc:  # safetensors raises several types for damaged headers
        raise SqueezeError(f"{path} is corrupt ({exc}); delete it (or its folder) and train again") from exc
    if raw is None:
        raise SqueezeError(f"{path} is not a squeeze training checkpoint (no run metadata); use a fresh --workdir")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise SqueezeError(f"{path} has corrupt run metadata; delete it and train again") from exc
    if meta.get("format") != FORMAT:
        raise SqueezeError(f"{path} has checkpoint format {meta.get('format')}, this squeeze reads {FORMAT}")
    return meta


def check_identity(path: Path, saved: dict[str, Any], wanted: dict[str, Any]) -> None:
    """Refuse to resume a run whose model or configuration differs from the requested one."""
    if saved == wanted:
        return
    keys = sorted(k for k in set(saved) | set(wanted) if saved.get(k) != wanted.get(k))
    detail = "; ".join(f"{k}: checkpoint {_short(saved.get(k))} vs now {_short(wanted.get(k))}" for k in keys[:3])
    raise SqueezeError(f"{path} belongs to another model or config ({detail}); resume with the same "
                       "settings or use another --workdir")


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."


def load_state(path: Path, module: nn.Module, optimizers: list[torch.optim.Optimizer],
               identity: dict[str, Any], frozen: tuple[str, ...] = ()) -> TrainState:
    """Verify and restore a checkpoint written by :func:`save_state` into ``module``/``optimizers``
    (entries under the ``frozen`` prefixes stay as the module has them)."""
    meta = read_meta(path)
    check_identity(path, meta["identity"], identity)
    tensors = _read_tensors(path, meta)
    if len(meta["param_groups"]) != len(optimizers):
        raise SqueezeError(f"{path} holds {len(meta['param_groups'])} optimizers, the task has {len(optimizers)}")
    weights = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    missing, unexpected = module.load_state_dict(weights, strict=False)
    missing = [k for k in missing if not k.startswith(frozen)]
    if missing or unexpected:
        raise SqueezeError(f"{path} does not fit the model (missing {missing[:3]}, unexpected {unexpected[:3]})")
    for i, opt in enumerate(optimizers):
        prefix = f"opt{i}."
        flat = {"opt." + k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        optimizer_from_flat(opt, flat, {"param_groups": meta["param_groups"][i]})
    return TrainState(int(meta["epoch"]), list(meta["log"]))


def _read_tensors(path: Path, meta: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Every tensor of checkpoint ``path``, checked against its metadata's digest."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    except Exception as exc:
        raise SqueezeError(f"{path} is corrupt ({exc}); delete it and train again") from exc
    if tensor_digest(tensors) != meta["digest"]:
        raise SqueezeError(f"{path} is corrupt (tensor checksum mismatch); delete it and train again")
    return tensors


def fork_state(src: Path, dst: Path, identity_update: dict[str, Any]) -> None:
    """Copy checkpoint ``src`` to ``dst`` (atomically, with its JSON copy) under another task identity: its
    own with the entries of ``identity_update`` replaced.

    For runs whose finished epochs are the same computation as ``src``'s although their configs differ
    (e.g. UIO gradient modes that agree until the curriculum ends: ``UIOConfig.curriculum_twin``); the
    caller vouches for that. Weights, optimizer state, epoch count and log are kept as they are."""
    meta = read_meta(src)
    tensors = _read_tensors(src, meta)
    meta = {**meta, "identity": {**meta["identity"], **identity_update}}
    dst.parent.mkdir(parents=True, exist_ok=True)
    atomic_save_tensors(dst, tensors, metadata={META_KEY: json.dumps(meta)})
    write_json(dst.with_suffix(".json"), {k: v for k, v in meta.items() if k != "param_groups"})
