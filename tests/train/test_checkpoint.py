"""Atomic writers give their files the permissions a plain open() would (not mkstemp's 0600)."""
from __future__ import annotations

from pathlib import Path

import torch

from squeeze.deploy.onnx_export import atomic_path
from squeeze.train.checkpoint import atomic_save_tensors, atomic_write_bytes


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_atomic_writers_follow_the_umask(tmp_path: Path, umask_022) -> None:
    atomic_write_bytes(tmp_path / "a.json", b"{}")
    atomic_save_tensors(tmp_path / "b.safetensors", {"x": torch.zeros(2)})
    with atomic_path(tmp_path / "c.onnx") as tmp:
        tmp.write_bytes(b"onnx")
    assert [_mode(tmp_path / n) for n in ("a.json", "b.safetensors", "c.onnx")] == [0o644] * 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.safetensors", "c.onnx"]  # no temp files
