"""Benchmark suites (``squeeze bench NAME``): each writes docs/results/NAME.{md,json} and a plot."""
from __future__ import annotations

import importlib
from pathlib import Path

from squeeze.errors import SqueezeError

# suite name -> (module whose ``run`` writes it, the options that ``run`` takes besides ``out`` and ``quick``)
_SUITES: dict[str, tuple[str, tuple[str, ...]]] = {
    "foundation": ("squeeze.bench.foundation", ("only", "device", "cache_dir")),
    "vit-ptq": ("squeeze.bench.vit_ptq", ("only", "device", "cache_dir", "cached_only", "methods")),
    "multiquant": ("squeeze.bench.multiquant", ("only", "device", "cache_dir", "cached_only")),
    "nm": ("squeeze.bench.nm", ("only", "device", "cache_dir", "cached_only", "workers")),
    "nm-seeds": ("squeeze.bench.nm_seeds", ("cache_dir", "cached_only", "workers")),
    "sr-ptq": ("squeeze.bench.sr_ptq", ("only", "device", "cache_dir", "cached_only", "methods")),
    "dfq": ("squeeze.bench.dfq", ("only", "device", "cache_dir", "cached_only", "methods")),
    "dfq-cnn": ("squeeze.bench.dfq_cnn", ("device", "cache_dir", "cached_only")),
    "cle": ("squeeze.bench.cle", ("device", "cache_dir", "cached_only")),
    "long-context": ("squeeze.bench.long_context", ("cache_dir", "workers")),
    "deploy": ("squeeze.bench.deploy", ("only",)),
    "undem": ("squeeze.bench.undem", ("cache_dir",)),
    "hqss": ("squeeze.bench.hqss", ("cache_dir",)),
    "claims": ("squeeze.bench.claims", ()),
}
SUITES = tuple(_SUITES)


def run_bench(name: str, out: Path, quick: bool = False, only: list[str] | None = None, device: str = "cpu",
              cache_dir: Path = Path("runs/bench"), cached_only: bool = False,
              methods: list[str] | None = None, workers: int = 1) -> None:
    """Run suite ``name`` and write its results under ``out`` (``only``: restrict to these models).

    ``cache_dir`` keeps each finished cell, so a killed run resumes; ``device`` is where models run.
    The ``nm`` suite's cells are methods, so ``methods`` (or ``only``) restricts it.
    """
    if name not in _SUITES:
        raise SqueezeError(f"unknown benchmark {name!r}; available: {', '.join(SUITES)}")
    module, accepted = _SUITES[name]
    given = {"only": (methods or only) if name == "nm" else only, "device": device, "cache_dir": cache_dir,
             "cached_only": cached_only, "methods": methods, "workers": workers}
    if workers < 1:
        raise SqueezeError(f"--workers {workers} must be >= 1")
    for option, value in (("cached_only", cached_only), ("methods", methods), ("workers", workers > 1)):
        if value and option not in accepted and not (name == "nm" and option == "methods"):
            raise SqueezeError(f"--{option.replace('_', '-')} does not apply to the {name} suite")
    importlib.import_module(module).run(out, quick=quick, **{k: given[k] for k in accepted})
