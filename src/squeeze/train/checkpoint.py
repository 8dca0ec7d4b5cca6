"""Atomic, pickle-free training checkpoints: tensors in safetensors, everything else in JSON."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from squeeze.errors import SqueezeError


def umask_mode(folder: bool = False) -> int:
    """Permissions a plain ``open()`` (or ``mkdir``) would give a new file (folder); mkstemp uses 0600, mkdtemp 0700."""
    mask = os.umask(0)
    os.umask(mask)
    return (0o777 if folder else 0o666) & ~mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, umask_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Save a flat tensor dict as safetensors atomically (temp file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp, metadata=metadata)
        os.chmod(tmp, umask_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Load a safetensors file, turning corruption into a one-line :class:`SqueezeError`."""
    if not Path(path).is_file():
        raise SqueezeError(f"checkpoint {path} does not exist")
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises several types for corrupt headers/bodies
        raise SqueezeError(f"{path} is not a valid safetensors file ({exc}); re-create it") from exc


def read_format_file(path: str | Path, filename: str, fmt: str, max_version: int, kind: str,
                     made_by: str) -> tuple[Path, dict[str, str], dict[str, torch.Tensor]]:
    """Open a squeeze safetensors file (or ``path/filename``) whose metadata names ``fmt`` and a version.

    Returns ``(file, metadata, tensors)``. Missing, corrupt, foreign (another ``format``) and newer-version
    files each get one :class:`SqueezeError` line; ``kind`` names the file type and ``made_by`` the
    command that writes it, for the hint.
    """
    path = Path(path)
    target = path / filename if path.is_dir() else path
    if not target.is_file():
        raise SqueezeError(f"{target} does not exist; pass a file written by `{made_by}`")
    try:
        with safe_open(str(target), framework="pt") as handle:
            meta = handle.metadata() or {}
            tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    except Exception as exc:  # safetensors raises several types for corrupt headers / truncated bodies
        raise SqueezeError(f"{target} is corrupt or truncated ({type(exc).__name__}); re-run `{made_by}`") from exc
    if meta.get("format") != fmt:
        raise SqueezeError(f"{target} is not a squeeze {kind} (format {meta.get('format')!r}); "
                           f"pass a file written by `{made_by}`")
    version = int(meta.get("format_version", "0"))
    if version > max_version:
        raise SqueezeError(f"{target} uses {kind} format version {version}, newer than this squeeze "
                           f"({max_version}); upgrade squeeze to load it")
    return target, meta, tensors


def optimizer_to_flat(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state dict into tensors (for safetensors) and JSON-able metadata."""
    state = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    for idx, slots in state["state"].items():
        for name, value in slots.items():
            tensors[f"opt.{idx}.{name}"] = torch.as_tensor(value)
    return tensors, {"param_groups": state["param_groups"]}


def optimizer_from_flat(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Inverse of :func:`optimizer_to_flat`."""
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("opt."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically."""
    atomic_write_bytes(Path(path), (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def fingerprint(model: torch.nn.Module) -> str:
    """Short hash of a model's weights (names, shapes and values)."""
    import hashlib  # noqa: PLC0415

    digest = hashlib.sha1()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:10]
