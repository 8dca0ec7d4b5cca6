"""Interleaved latency measurement at fixed threads, and the CPU facts a latency number depends on.

Shared CPUs drift (other processes, frequency changes), so variants are timed *round-robin*: one call
of every variant per round, ``runs`` rounds after ``warmup`` rounds, and each variant reports the
minimum (the least-disturbed run, the usual figure for comparisons) and the median.
"""
from __future__ import annotations

import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any, Callable

from squeeze.errors import SqueezeError

ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")
_VNNI = ("avx512_vnni", "avx_vnni", "amx_int8")


def cpu_info(cpuinfo: str | Path = "/proc/cpuinfo") -> dict[str, Any]:
    """CPU model name, logical CPUs and which of :data:`ISA_FLAGS` the CPU reports."""
    path = Path(cpuinfo)
    flags: set[str] = set()
    model = platform.processor() or platform.machine()
    if path.is_file():
        for line in path.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "flags" and not flags:
                flags = set(value.split())
            elif key.strip() == "model name":
                model = value.strip()
    return {"cpu": model, "logical_cpus": os.cpu_count() or 1,
            "flags": {f: f in flags for f in ISA_FLAGS}}


def has_vnni(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """Whether the CPU has an 8-bit dot-product instruction (AVX512-VNNI, AVX-VNNI or AMX-INT8)."""
    flags = cpu_info(cpuinfo)["flags"]
    return any(flags[f] for f in _VNNI)


def summarize(times_ms: list[float]) -> dict[str, float]:
    """``min_ms``, ``median_ms`` and ``runs`` of a list of timings in milliseconds."""
    return {"min_ms": min(times_ms), "median_ms": statistics.median(times_ms), "runs": len(times_ms)}


def interleaved(variants: dict[str, Callable[[], Any]], runs: int = 20, warmup: int = 3,
                progress: bool = False) -> dict[str, dict[str, float]]:
    """Time zero-argument callables round-robin: ``warmup`` untimed rounds, then ``runs`` timed ones.

    Returns ``name -> {"min_ms", "median_ms", "runs"}``. The order within a round rotates so no
    variant always runs right after the same neighbour.
    """
    if runs < 1 or warmup < 0 or not variants:
        raise SqueezeError("latency needs at least one variant, runs >= 1 and warmup >= 0")
    names = list(variants)
    times: dict[str, list[float]] = {n: [] for n in names}
    rounds = range(warmup + runs)
    if progress:
        from tqdm import tqdm  # noqa: PLC0415

        rounds = tqdm(rounds, desc="latency", leave=False)
    for r in rounds:
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            variants[name]()
            elapsed = (time.perf_counter() - start) * 1000.0
            if r >= warmup:
                times[name].append(elapsed)
    return {n: summarize(t) for n, t in times.items()}


def ort_session(path: str | Path, threads: int = 1) -> Any:
    """An ONNX Runtime CPU session with ``threads`` intra-op threads, one inter-op thread, full graph
    optimization (the QDQ -> integer-kernel fusions happen here) and sequential execution."""
    import onnxruntime as ort  # noqa: PLC0415

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
