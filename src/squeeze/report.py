"""The ``report.json`` schema shared by every method and benchmark, and suite writers.

One row per run: ``model, method, wbits, abits, calib, seed, metric, fp, quant, seconds,
peak_rss_mb, simulated, versions`` plus optional method-specific fields. Benchmarks write a list
of rows to ``docs/results/SUITE.json`` next to ``SUITE.md``.
"""
from __future__ import annotations

import platform
import resource
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from squeeze.train.checkpoint import write_json

REQUIRED = ("model", "method", "wbits", "abits", "calib", "seed", "metric", "fp", "quant", "seconds",
            "peak_rss_mb", "simulated", "versions")
_PACKAGES = ("squeeze", "torch", "torchvision", "timm", "transformers", "numpy", "onnxruntime")


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that affect results, plus Python and the CPU."""
    found = {"python": platform.python_version(), "machine": platform.machine()}
    for name in _PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


@dataclass
class Report:
    """One result row (see module docstring); ``extra`` holds method-specific fields."""

    model: str
    method: str
    wbits: int
    abits: int
    calib: int
    seed: int
    metric: str
    fp: float
    quant: float
    seconds: float
    peak_rss_mb: float
    simulated: bool = True
    versions: dict[str, str] = field(default_factory=package_versions)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        row = asdict(self)
        row.update(row.pop("extra"))
        return row


def write_suite(rows: list[dict[str, Any]], json_path: Path) -> None:
    """Write benchmark rows atomically (each must carry the required fields)."""
    for row in rows:
        missing = [k for k in REQUIRED if k not in row]
        if missing:
            raise ValueError(f"result row lacks {missing}")
    write_json(json_path, rows)


def format_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """A markdown table of ``rows`` restricted to ``columns`` (floats with 2 decimals)."""
    def cell(v: Any) -> str:
        return f"{v:.2f}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def save_figure(fig: Any, path: Path) -> None:
    """Write a matplotlib figure atomically (temporary file, then rename) and close it."""
    import matplotlib.pyplot as plt  # noqa: PLC0415

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
