"""``squeeze bench vit-ptq``: ViT post-training quantization, ERQ and I&S-ViT against their baselines.

Every method at W3A3, W3A4, W4A4 and W6A6 on ``vit-fmnist`` and ``dinov2-s14`` in one process, on the
same calibration images (32 for closed-form methods, 256 for reconstruction methods; image ``i`` of
seed ``s`` is the same for every method), three calibration seeds per cell, plus the ERQ and I&S-ViT
ablations. Writes ``vit-ptq.md`` (a table shaped like the papers' Table 1), ``vit-ptq.json`` (all
rows) and ``vit-ptq.png`` (accuracy versus bits). On a CPU run it also measures ERQ's cost on
``dinov2-s14`` in a separate process (seconds and peak memory, the issue's budget).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from squeeze.bench.common import (Cell, ZooRunner, aggregate, find_aggregate, fingerprint, order_verdict,
                                  page_command, run_cells, save_figure, weights_line, write_results)
from squeeze.report import format_table
from squeeze.train.checkpoint import write_json

COMMAND = "squeeze bench vit-ptq"
SETTINGS = ((3, 3), (3, 4), (4, 4), (6, 6))
CLOSED_FORM = ("rtn", "percentile", "repq-vit", "gptq", "ptq4vit", "erq")
RECONSTRUCTION = ("adaround", "brecq", "qdrop", "isvit")
CALIB = {**{m: 32 for m in CLOSED_FORM}, **{m: 256 for m in RECONSTRUCTION}}
# (label, method, options, settings): one component switched off, as in the papers' ablations.
ABLATIONS = (
    ("erq-no-aqer", "erq", {"aqer": False}, ((3, 4), (4, 4))),
    ("erq-no-refine", "erq", {"rounding_refinement": False}, ((3, 4), (4, 4))),
    ("erq-no-ridge", "erq", {"ridge_compensation": False}, ((3, 4), (4, 4))),
    ("isvit-log2", "isvit", {"softmax_quantizer": "log2"}, ((3, 3),)),
    ("isvit-uniform", "isvit", {"softmax_quantizer": "uniform"}, ((3, 3),)),
    ("isvit-single-stage", "isvit", {"stages": 1}, ((3, 3),)),
)
# The claims run first, so a run cut short still answers them.
PRIORITY = {((3, 4), "erq"), ((3, 4), "gptq"), ((3, 4), "rtn"), ((3, 3), "isvit"), ((3, 3), "repq-vit"),
            ((3, 3), "brecq"), ((4, 4), "erq"), ((4, 4), "isvit")}
TIMING = ("dinov2-s14", "erq", 3, 4)  # ERQ cost check: 32 images, 2 CPU cores, < 10 min and < 8 GB
TIMING_LIMITS = (600.0, 8192.0)


def _rank(cell: Cell, first_seed: int) -> int:
    """Run order: the issue's claims, then one seed of everything, then the other seeds."""
    if not cell.label and ((cell.wbits, cell.abits), cell.method) in PRIORITY:
        return 0
    return (1 if cell.seed == first_seed else 3) + (1 if cell.label else 0)


def cells(models: dict[str, str], seeds: list[int], quick: bool = False) -> list[Cell]:
    """All runs in priority order (a run cut short still answers the most); ``models``: name -> fingerprint."""
    settings = ((4, 4),) if quick else SETTINGS
    plan = [Cell(m, meth, w, a, s, options=(("calib", CALIB[meth]),), tag=tag)
            for m, tag in models.items() for (w, a) in settings for meth in (*CLOSED_FORM, *RECONSTRUCTION)
            for s in seeds]
    if not quick:
        plan += [Cell(m, meth, w, a, s, label=label, options=(("calib", CALIB[meth]), *sorted(opts.items())),
                      tag=tag)
                 for m, tag in models.items() for label, meth, opts, sets in ABLATIONS for (w, a) in sets
                 for s in seeds]
    return sorted(plan, key=lambda c: _rank(c, seeds[0]))


def _cached_timing(cache_dir: Path) -> dict[str, Any] | None:
    path = cache_dir / "vit-ptq-timing.json"
    return json.loads(path.read_text()) if path.is_file() else None


def cpu_timing(cache_dir: Path) -> dict[str, Any]:
    """ERQ on dinov2-s14 (W3A4, 32 images) in a fresh 2-thread process: its report.json (cached)."""
    cached = _cached_timing(cache_dir)
    if cached:
        return cached
    path = cache_dir / "vit-ptq-timing.json"
    model, method, w, a = TIMING
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "squeeze.cli", "quantize", model, "--method", method, "--wbits", str(w),
               "--abits", str(a), "--calib", "32", "--seed", "0", "--out", str(out)]
        print("[timing]", " ".join(cmd[2:]), flush=True)
        subprocess.run(cmd, check=True, env=env)
        row = json.loads((out / "report.json").read_text())
    row["threads"] = 2
    write_json(path, row)
    return row


def _compare(agg: list[dict[str, Any]], model: str, better: str, worse: str, w: int, a: int) -> str | None:
    b, x = find_aggregate(agg, model, better, w, a), find_aggregate(agg, model, worse, w, a)
    if not (b and x):
        return None
    verdict = order_verdict(b, x)
    return (f"- {model} W{w}A{a}: {better} {b['mean']:.2f}±{b['std']:.2f} vs {worse} "
            f"{x['mean']:.2f}±{x['std']:.2f}: {verdict}")


def checks(agg: list[dict[str, Any]], timing: dict[str, Any] | None) -> list[str]:
    """The issue's claims, evaluated on the aggregated numbers (ties reported as ties)."""
    lines = []
    for model in sorted({r["model"] for r in agg}):
        for better, worse, (w, a) in (("erq", "gptq", (3, 4)), ("erq", "rtn", (3, 4)),
                                      ("isvit", "repq-vit", (3, 3)), ("isvit", "brecq", (3, 3))):
            line = _compare(agg, model, better, worse, w, a)
            if line:
                lines.append(line)
    for method in ("erq", "isvit"):
        r = find_aggregate(agg, "vit-fmnist", method, 4, 4)
        if r:
            drop = r["fp"] - r["mean"]
            lines.append(f"- vit-fmnist W4A4: {method} loses {drop:.2f} points vs FP (target <= 3): "
                         f"{'met' if drop <= 3 else 'NOT met'}")
    if timing:
        ok = timing["seconds"] < TIMING_LIMITS[0] and timing["peak_rss_mb"] < TIMING_LIMITS[1]
        lines.append(f"- ERQ on dinov2-s14, 32 images, {timing['threads']} CPU threads: {timing['seconds']:.0f} s, "
                     f"peak {timing['peak_rss_mb']:.0f} MB (targets < 600 s, < 8192 MB): {'met' if ok else 'NOT met'}")
    return lines


def table(agg: list[dict[str, Any]], model: str) -> str:
    """Methods as rows, settings as columns (mean ± std over seeds), FP first, seconds per method."""
    rs = [r for r in agg if r["model"] == model]
    settings = [s for s in SETTINGS if any((r["wbits"], r["abits"]) == s for r in rs)]
    methods = [m for m in (*CLOSED_FORM, *RECONSTRUCTION, *(a[0] for a in ABLATIONS))
               if any(r["method"] == m for r in rs)]
    rows = [{"method": "FP (float)", **{f"W{w}A{a}": rs[0]["fp"] for w, a in settings}, "seconds": None}]
    for method in methods:
        hits = [r for r in rs if r["method"] == method]
        row: dict[str, Any] = {"method": method}
        for w, a in settings:
            r = find_aggregate(rs, model, method, w, a)
            row[f"W{w}A{a}"] = "-" if not r else (f"{r['mean']:.2f} ± {r['std']:.2f}" if r["n"] > 1
                                                   else f"{r['mean']:.2f} (1 seed)")
        row["seconds"] = sum(h["seconds"] for h in hits) / len(hits)
        rows.append(row)
    return format_table(rows, ["method", *(f"W{w}A{a}" for w, a in settings), "seconds"])


def markdown(agg: list[dict[str, Any]], rows: list[dict[str, Any]], seeds: list[int],
             timing: dict[str, Any] | None, missing: int = 0, command: str = COMMAND,
             tags: dict[str, str] | None = None) -> str:
    """The results page: top-1 per method and setting, timing, devices and checks."""
    devices = sorted({r.get("device", "cpu") for r in rows})
    parts = [
        "# ViT post-training quantization: ERQ and I&S-ViT against their baselines", "",
        f"Written by `{command}` (calibration seeds {seeds}; {CALIB['rtn']} calibration images from the training "
        f"split for closed-form methods, {CALIB['isvit']} for reconstruction methods; metric: top-1 % on the "
        f"model's fixed test set; rows ran on: {', '.join(devices)}). Cells are mean ± std over seeds; "
        "`seconds` is the mean quantization time per run on that device. All rows are fake-quant "
        "simulations (`simulated: true`). Method notes: docs/methods/erq.md, docs/methods/isvit.md.", "",
        weights_line(tags or {}), ""]
    if missing:
        parts += [f"**{missing} planned cell(s) were not run** (results written with `--cached-only`); "
                  "cells marked `(1 seed)` or `-` are incomplete.", ""]
    for model in sorted({r["model"] for r in agg}):
        parts += [f"## {model}", "", table(agg, model), ""]
    parts += ["## Checks against the issue", "", *checks(agg, timing), "",
              "![top-1 versus bit width](vit-ptq.png)", ""]
    return "\n".join(parts)


def line_plot(agg: list[dict[str, Any]], path: Path) -> None:
    """Accuracy versus setting, one line per method, one panel per model (main methods only)."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    models = sorted({r["model"] for r in agg})
    fig, axes = plt.subplots(1, len(models), figsize=(6.5 * len(models), 4.5), squeeze=False)
    for ax, model in zip(axes[0], models):
        rs = [r for r in agg if r["model"] == model]
        settings = [s for s in SETTINGS if any((r["wbits"], r["abits"]) == s for r in rs)]
        for method in (*CLOSED_FORM, *RECONSTRUCTION):
            pts = [(i, find_aggregate(rs, model, method, *s)) for i, s in enumerate(settings)]
            pts = [(i, r) for i, r in pts if r]
            if pts:
                style = "-o" if method in ("erq", "isvit") else "--."
                ax.errorbar([i for i, _ in pts], [r["mean"] for _, r in pts], [r["std"] for _, r in pts],
                            fmt=style, capsize=2, label=method, linewidth=2 if style == "-o" else 1)
        ax.axhline(rs[0]["fp"], color="k", linestyle=":", label="float")
        ax.set_xticks(range(len(settings)), [f"W{w}A{a}" for w, a in settings])
        ax.set_title(model)
        ax.set_ylabel("top-1 (%)")
        ax.legend(fontsize=7, ncol=2)
    fig.suptitle("ViT PTQ: top-1 versus bit width (mean ± std over calibration seeds)")
    fig.tight_layout()
    save_figure(fig, path)


def run(out: Path, quick: bool = False, only: list[str] | None = None, device: str = "cpu",
        cache_dir: Path = Path("runs/bench"), cached_only: bool = False, methods: list[str] | None = None) -> None:
    """Run (or resume) the suite; ``only`` restricts the models and fills the cache without writing results.

    ``cached_only`` writes the results from the cells already run, listing the missing ones;
    ``methods`` restricts the cells run now to these methods (staged runs; results from the cache).
    """
    names = ["vit-fmnist"] if quick else ["vit-fmnist", "dinov2-s14"]
    seeds = [0] if quick else [0, 1, 2]
    name = "vit-ptq-quick" if quick else "vit-ptq"
    runner = ZooRunner(device)
    tags = {m: fingerprint(runner.load(m)[0].model) for m in (only or names)}
    plan = cells(tags, seeds, quick)
    todo = [c for c in plan if not methods or c.method in methods]
    rows = run_cells(todo, cache_dir / f"{name}.cache.json", runner, cached_only=cached_only)
    timing = (cpu_timing(cache_dir) if device == "cpu" and not quick and "dinov2-s14" in tags and not cached_only
              else _cached_timing(cache_dir))
    if methods:
        rows = run_cells(plan, cache_dir / f"{name}.cache.json", runner, cached_only=True)
    missing = len(plan) - len(rows)
    if only and not cached_only:
        return
    agg = aggregate(rows)
    for r in agg:
        r["metric"] = "top1"
    out.mkdir(parents=True, exist_ok=True)
    write_results(out, name, rows + ([{**timing, "method": "erq-cpu-timing"}] if timing else []),
                  markdown(agg, rows, seeds, timing, missing, page_command(COMMAND, out, only, device, cache_dir, cached_only), tags))
    line_plot(agg, out / f"{name}.png")
    print((out / f"{name}.md").read_text())
