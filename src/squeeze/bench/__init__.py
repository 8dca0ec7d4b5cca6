"""Benchmark suites (``squeeze bench NAME``): each writes docs/results/NAME.{md,json} and a plot."""
from __future__ import annotations

from pathlib import Path

from squeeze.errors import SqueezeError

SUITES = ("foundation", "vit-ptq", "multiquant", "nm", "deploy", "sr-ptq", "dfq", "long-context")


def run_bench(name: str, out: Path, quick: bool = False, only: list[str] | None = None, device: str = "cpu",
              cache_dir: Path = Path("runs/bench"), cached_only: bool = False,
              methods: list[str] | None = None) -> None:
    """Run suite ``name`` and write its results under ``out`` (``only``: restrict to these models).

    ``cache_dir`` keeps each finished cell, so a killed run resumes; ``device`` is where models run.
    """
    if name == "foundation":
        from squeeze.bench.foundation import run  # noqa: PLC0415

        run(out, quick=quick, only=only, device=device, cache_dir=cache_dir)
        return
    if name == "vit-ptq":
        from squeeze.bench.vit_ptq import run as run_vit_ptq  # noqa: PLC0415

        run_vit_ptq(out, quick=quick, only=only, device=device, cache_dir=cache_dir, cached_only=cached_only,
                    methods=methods)
        return
    if name == "multiquant":
        from squeeze.bench.multiquant import run as run_multiquant  # noqa: PLC0415

        run_multiquant(out, quick=quick, only=only, device=device, cache_dir=cache_dir, cached_only=cached_only)
        return
    if name == "nm":
        from squeeze.bench.nm import run as run_nm  # noqa: PLC0415

        run_nm(out, quick=quick, only=methods or only, device=device, cache_dir=cache_dir)
        return
    if name == "sr-ptq":
        from squeeze.bench.sr_ptq import run as run_sr  # noqa: PLC0415

        run_sr(out, quick=quick, only=only, device=device, cache_dir=cache_dir, cached_only=cached_only,
               methods=methods)
        return
    if name == "dfq":
        from squeeze.bench.dfq import run as run_dfq  # noqa: PLC0415

        run_dfq(out, quick=quick, only=only, device=device, cache_dir=cache_dir, cached_only=cached_only,
                methods=methods)
        return
    if name == "long-context":
        from squeeze.bench.long_context import run as run_long  # noqa: PLC0415

        run_long(out, quick=quick, cache_dir=cache_dir)
        return
    if name == "deploy":
        from squeeze.bench.deploy import run as run_deploy  # noqa: PLC0415

        run_deploy(out, quick=quick, only=only)
        return
    raise SqueezeError(f"unknown benchmark {name!r}; available: {', '.join(SUITES)}")
