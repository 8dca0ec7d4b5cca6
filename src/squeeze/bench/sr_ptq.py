"""``squeeze bench sr-ptq``: DFSQ against min-max, percentile and normalized-uniform PTQ on EDSR.

Every method at W3A3, W4A4, W6A6 and W8A8 on ``edsr-x2`` and ``edsr-x4``, each quantizing the same
layers (the residual-block convs, as the DFSQ paper does), calibrated on the same 32 LR patches of
the train photos per seed (three seeds), measured by PSNR-Y and SSIM-Y (shave = scale) on the test
photos. Writes ``sr-ptq.md`` (tables and the issue's checks), ``sr-ptq.json`` (one row per run:
``metric`` ``psnr_y``, ``ssim_y`` alongside) and ``sr-ptq.png`` (one test crop: HR / bicubic / FP /
min-max / DFSQ at W4A4). ``seconds`` is the quantization (calibration) time of a run.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from squeeze.bench.common import Cell, aggregate, device_label, find_aggregate, fingerprint, order_verdict, \
    run_cells, save_figure, write_results
from squeeze.report import Report, format_table, peak_rss_mb

COMMAND = "squeeze bench sr-ptq"
MODELS = ("edsr-x2", "edsr-x4")
SETTINGS = ((3, 3), (4, 4), (6, 6), (8, 8))
METHODS = ("rtn", "percentile", "uniform-norm", "dfsq")
LABELS = {"rtn": "rtn (min-max)", "percentile": "percentile", "uniform-norm": "uniform-norm", "dfsq": "dfsq"}
CALIB = 32
SEEDS = (0, 1, 2)
TARGETS = {"fp_gain_db": 1.5, "w4a4_drop_db": 0.3, "high_bit_drop_db": 0.05, "calib_seconds": 60.0}
Pairs = tuple[tuple[torch.Tensor, torch.Tensor], ...]


@dataclass
class Subject:
    """A float SR model with its calibration source and test pairs."""

    name: str
    model: nn.Module
    scale: int
    calib: Callable[[int, int], torch.Tensor]  # (n, seed) -> LR patches
    pairs: Pairs


def zoo_subject(name: str) -> Subject:
    """``edsr-x2`` / ``edsr-x4`` from their committed checkpoints, with the test photos."""
    from squeeze.data import sr as srdata  # noqa: PLC0415
    from squeeze.zoo.edsr import load_edsr_float  # noqa: PLC0415

    model, meta = load_edsr_float(name)
    scale = int(meta["arch"]["scale"])
    return Subject(name, model, scale, lambda n, s: srdata.calib_patches(scale, n, s), srdata.eval_pairs("test", scale))


def quantize_subject(subject: Subject, method: str, wbits: int, abits: int, seed: int) -> tuple[nn.Module, float]:
    """Quantize the subject's model (residual-block convs) with ``method``; returns the model and seconds."""
    import squeeze.methods.dfsq  # noqa: F401,PLC0415 (registers dfsq / uniform-norm)
    from squeeze.api import quantize  # noqa: PLC0415
    from squeeze.config import make_config  # noqa: PLC0415
    from squeeze.methods.dfsq import quantize_layers_rtn  # noqa: PLC0415

    config = make_config(method, wbits=wbits, abits=abits, calib=CALIB, seed=seed, batch_size=16)
    calib = subject.calib(CALIB, seed).to(next(subject.model.parameters()).device)
    start = time.perf_counter()
    if method in ("rtn", "percentile"):
        qmodel = quantize_layers_rtn(subject.model, config, calib, name=subject.name)
    else:
        qmodel = quantize(subject.model, config, calib, name=subject.name)
    return qmodel, time.perf_counter() - start


class SRRunner:
    """Runs one cell; measures each subject's float and bicubic scores once."""

    def __init__(self, subjects: dict[str, Subject], device: str = "cpu") -> None:
        self.subjects, self.device = subjects, device
        self.base: dict[str, dict[str, float]] = {}

    def baseline(self, name: str) -> dict[str, float]:
        from squeeze.zoo.edsr import bicubic_scores, sr_scores  # noqa: PLC0415

        if name not in self.base:
            s = self.subjects[name]
            fp, bic = sr_scores(s.model, s.pairs, s.scale), bicubic_scores(s.pairs, s.scale)
            self.base[name] = {"fp_psnr_y": fp["psnr_y"], "fp_ssim_y": fp["ssim_y"],
                               "bicubic_psnr_y": bic["psnr_y"], "bicubic_ssim_y": bic["ssim_y"]}
        return self.base[name]

    def __call__(self, cell: Cell) -> dict[str, Any]:
        from squeeze.zoo.edsr import sr_scores  # noqa: PLC0415

        s, base = self.subjects[cell.model], self.baseline(cell.model)
        qmodel, seconds = quantize_subject(s, cell.method, cell.wbits, cell.abits, cell.seed)
        q = sr_scores(qmodel, s.pairs, s.scale)
        report = Report(cell.model, cell.method, cell.wbits, cell.abits, CALIB, cell.seed, "psnr_y",
                        base["fp_psnr_y"], q["psnr_y"], seconds, peak_rss_mb(), simulated=True,
                        extra={"ssim_y": q["ssim_y"], **base, "device": device_label(self.device),
                               "config": qmodel.squeeze_meta["config"]})
        return report.to_dict()


def cells(models: dict[str, str], seeds: list[int], quick: bool = False) -> list[Cell]:
    """All runs, the issue's claims first (W4A4 every method, then DFSQ at 6/8 bits); ``models``: name -> tag."""
    settings = ((4, 4),) if quick else SETTINGS
    plan = [Cell(m, meth, w, a, s, tag=tag) for m, tag in models.items() for (w, a) in settings
            for meth in METHODS for s in seeds]

    def rank(c: Cell) -> tuple[int, int]:
        claim = (c.wbits, c.abits) == (4, 4) or (c.method == "dfsq" and c.wbits >= 6)
        return (0 if claim and c.seed == seeds[0] else 1 if c.seed == seeds[0] else 2, list(models).index(c.model))

    return sorted(plan, key=rank)


def checks(agg: list[dict[str, Any]], rows: list[dict[str, Any]], primary: str) -> list[str]:
    """The issue's claims on the aggregated numbers (``primary`` plays the role of edsr-x2)."""
    lines = []
    for model in sorted({r["model"] for r in rows}):
        r0 = next(r for r in rows if r["model"] == model)
        gain = r0["fp"] - r0["bicubic_psnr_y"]
        lines.append(f"- {model}: FP {r0['fp']:.2f} dB vs bicubic {r0['bicubic_psnr_y']:.2f} dB, gain {gain:.2f} dB "
                     f"(target >= {TARGETS['fp_gain_db']}): {'met' if gain >= TARGETS['fp_gain_db'] else 'NOT met'}")
    d = find_aggregate(agg, primary, "dfsq", 4, 4)
    if d:
        drop = d["fp"] - d["mean"]
        lines.append(f"- {primary} W4A4: dfsq loses {drop:.3f} dB vs FP (target <= {TARGETS['w4a4_drop_db']}): "
                     f"{'met' if drop <= TARGETS['w4a4_drop_db'] else 'NOT met'}")
        for other in ("rtn", "percentile", "uniform-norm"):
            o = find_aggregate(agg, primary, other, 4, 4)
            if o:
                verdict = order_verdict(d, o)
                lines.append(f"- {primary} W4A4: dfsq {d['mean']:.3f}±{d['std']:.3f} vs {other} "
                             f"{o['mean']:.3f}±{o['std']:.3f} dB: {verdict}")
    for w, a in ((6, 6), (8, 8)):
        r = find_aggregate(agg, primary, "dfsq", w, a)
        if r:
            drop = r["fp"] - r["mean"]
            ok = drop <= TARGETS["high_bit_drop_db"]
            lines.append(f"- {primary} W{w}A{a}: dfsq within {drop:.3f} dB of FP (target <= "
                         f"{TARGETS['high_bit_drop_db']}): {'met' if ok else 'NOT met'}")
    calib = [r for r in rows if r["method"] == "dfsq" and r["model"] == primary and (r["wbits"], r["abits"]) == (4, 4)]
    if calib:
        worst = max(r["seconds"] for r in calib)
        ok = worst < TARGETS["calib_seconds"]
        lines.append(f"- DFSQ calibration on {CALIB} patches ({primary}, W4A4, slowest seed): {worst:.1f} s on "
                     f"{calib[0].get('device', 'cpu')} (target < {TARGETS['calib_seconds']:.0f} s on 2 CPU cores): "
                     f"{'met' if ok else 'NOT met'}")
    return lines


def table(agg: list[dict[str, Any]], rows: list[dict[str, Any]], model: str) -> str:
    """Methods as rows, settings as columns: PSNR-Y mean ± std (SSIM-Y mean), FP and bicubic first."""
    rs = [r for r in rows if r["model"] == model]
    settings = [s for s in SETTINGS if any((r["wbits"], r["abits"]) == s for r in rs)]
    r0 = rs[0]
    head = {"FP (float)": (r0["fp"], r0["fp_ssim_y"]), "bicubic": (r0["bicubic_psnr_y"], r0["bicubic_ssim_y"])}
    out = [{"method": k, **{f"W{w}A{a}": f"{p:.2f} / {s:.4f}" for w, a in settings}, "seconds": ""}
           for k, (p, s) in head.items()]
    for method in METHODS:
        hits = [r for r in rs if r["method"] == method]
        if not hits:
            continue
        row: dict[str, Any] = {"method": LABELS[method], "seconds": statistics.mean(h["seconds"] for h in hits)}
        for w, a in settings:
            g = find_aggregate(agg, model, method, w, a)
            ssim = [h["ssim_y"] for h in hits if (h["wbits"], h["abits"]) == (w, a)]
            row[f"W{w}A{a}"] = "-" if not g else f"{g['mean']:.2f} ± {g['std']:.2f} / {statistics.mean(ssim):.4f}"
        out.append(row)
    return format_table(out, ["method", *(f"W{w}A{a}" for w, a in settings), "seconds"])


def markdown(agg: list[dict[str, Any]], rows: list[dict[str, Any]], seeds: list[int], primary: str,
             missing: int = 0, command: str = COMMAND) -> str:
    """The results page: PSNR / SSIM per method and setting, devices and checks."""
    devices = sorted({r.get("device", "cpu") for r in rows})
    parts = [
        "# Super-resolution PTQ: DFSQ against min-max, percentile and normalized-uniform", "",
        f"Written by `{command}` (calibration seeds {seeds}; {CALIB} LR patches of 48 px from the train photos; "
        "test: centre crops of the test photos, bicubic degradation; rows ran on: "
        f"{', '.join(devices)}). Cells: PSNR-Y in dB, mean ± std over seeds / SSIM-Y mean (Y of ITU-R BT.601, "
        "border shave = scale). Every method quantizes the same layers, the convs of the residual blocks (as the "
        "DFSQ paper); weights per output channel min-max. `seconds`: mean quantization time per run. All rows are "
        "fake-quant simulations. Method notes: docs/methods/dfsq.md.", ""]
    if missing:
        parts += [f"**{missing} planned cell(s) were not run**; cells marked `-` are missing.", ""]
    for model in sorted({r["model"] for r in rows}):
        parts += [f"## {model}", "", table(agg, rows, model), ""]
    parts += ["## Checks against the issue", "", *checks(agg, rows, primary), "",
              "![FP / min-max / DFSQ on a test crop](sr-ptq.png)", ""]
    return "\n".join(parts)


def _busiest_crop(hr: torch.Tensor, size: int) -> tuple[int, int]:
    """Top-left (y, x) of the ``size`` HR window with the most gradient energy (a detailed region)."""
    g = (hr[:, 1:, :-1] - hr[:, :-1, :-1]).abs().sum(0) + (hr[:, :-1, 1:] - hr[:, :-1, :-1]).abs().sum(0)
    g = torch.nn.functional.pad(g, (0, 1, 0, 1))  # back to (H, W)
    energy = torch.nn.functional.avg_pool2d(g[None, None], size, stride=max(1, size // 4))[0, 0]
    idx = int(energy.argmax())
    stride = max(1, size // 4)
    return (idx // energy.shape[1]) * stride, (idx % energy.shape[1]) * stride


@torch.no_grad()
def comparison_figure(subject: Subject, path: Path, bits: tuple[int, int] = (4, 4), crop: int = 96) -> None:
    """One test crop: HR, bicubic, FP, min-max (rtn) and DFSQ at ``bits``, PSNR-Y of the crop in titles."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    from squeeze.data.sr import bicubic_upscale  # noqa: PLC0415
    from squeeze.metrics.sr import psnr_y, quantize_8bit  # noqa: PLC0415

    lr, hr = subject.pairs[0]
    s = subject.scale
    crop = min(crop - crop % s, hr.shape[1] - hr.shape[1] % s, hr.shape[2] - hr.shape[2] % s)
    y, x = _busiest_crop(hr, crop)
    y, x = y - y % s, x - x % s
    device = next(subject.model.parameters()).device
    panels = {"HR": hr, "bicubic": bicubic_upscale(lr, s), "FP": subject.model(lr[None].to(device))[0].cpu()}
    for method, label in (("rtn", "min-max"), ("dfsq", "DFSQ")):
        qmodel, _ = quantize_subject(subject, method, *bits, seed=0)
        panels[f"{label} W{bits[0]}A{bits[1]}"] = qmodel(lr[None].to(device))[0].cpu()
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 3.0))
    for ax, (title, img) in zip(axes, panels.items()):
        img = quantize_8bit(img.float())[:, y:y + crop, x:x + crop]
        ref = hr[:, y:y + crop, x:x + crop]
        label = title if title == "HR" else f"{title}\n{psnr_y(img, ref, s):.2f} dB"
        ax.imshow(img.permute(1, 2, 0).numpy(), interpolation="nearest")
        ax.set_title(label, fontsize=9)
        ax.axis("off")
    fig.suptitle(f"{subject.name}: a {crop}px crop of a test photo (PSNR-Y of the crop)", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


def run(out: Path, quick: bool = False, only: list[str] | None = None, device: str = "cpu",
        cache_dir: Path = Path("runs/bench"), cached_only: bool = False, methods: list[str] | None = None,
        subjects: dict[str, Subject] | None = None) -> None:
    """Run (or resume) the suite and write ``sr-ptq.{md,json,png}`` under ``out``.

    ``only`` restricts the models and fills the cache without writing results (with ``cached_only``:
    writes results for only those models); ``methods`` restricts the cells run now; ``cached_only``
    writes results from the cache; ``subjects`` replaces the zoo
    models (tests use a tiny untrained network).
    """
    from squeeze.devices import resolve_device  # noqa: PLC0415

    if subjects is None:
        names = list(only or MODELS[:1] if quick else only or MODELS)
        subjects = {n: zoo_subject(n) for n in names}
    for s in subjects.values():
        s.model.to(resolve_device(device)).eval()
    seeds = [0] if quick else list(SEEDS)
    name = "sr-ptq-quick" if quick else "sr-ptq"
    tags = {n: fingerprint(s.model) for n, s in subjects.items()}
    plan = cells(tags, seeds, quick)
    runner = SRRunner(subjects, device)
    todo = [c for c in plan if not methods or c.method in methods]
    rows = run_cells(todo, cache_dir / f"{name}.cache.json", runner, cached_only=cached_only)
    if methods:
        rows = run_cells(plan, cache_dir / f"{name}.cache.json", runner, cached_only=True)
    if (only and not cached_only) or not rows:
        return
    agg = aggregate(rows)
    primary = next(iter(subjects))
    out.mkdir(parents=True, exist_ok=True)
    command = f"{COMMAND} --models {','.join(only)} --cached-only" if only else COMMAND
    md = markdown(agg, rows, seeds, primary, len(plan) - len(rows), command).replace("sr-ptq.png", f"{name}.png")
    write_results(out, name, rows, md)
    comparison_figure(subjects[primary], out / f"{name}.png")
    print((out / f"{name}.md").read_text())
