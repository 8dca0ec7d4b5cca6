"""Benchmark suites (``squeeze bench NAME``): each writes docs/results/NAME.{md,json} and a plot."""
from __future__ import annotations

from pathlib import Path

from squeeze.errors import SqueezeError

SUITES = ("foundation",)


def run_bench(name: str, out: Path, quick: bool = False, only: list[str] | None = None) -> None:
    """Run suite ``name`` and write its results under ``out`` (``only``: restrict to these models)."""
    if name == "foundation":
        from squeeze.bench.foundation import run  # noqa: PLC0415

        run(out, quick=quick, only=only)
        return
    raise SqueezeError(f"unknown benchmark {name!r}; available: {', '.join(SUITES)}")
