"""``squeeze bench multiquant``: accuracy at every bit width of MultiQuant, Any-Precision and two ablations.

Any-Precision runs twice: with this module's learnable-range quantizers (``any-precision``, the baseline the
issue's checks use) and with Any-Precision DNN's own DoReFa quantizers (``any-precision-dorefa``, the
baseline as published). All five variants start from the committed float ``resnet-fmnist`` and train with the same schedule and
seed (see :data:`BENCH_CONFIG`, sized to fit 90 minutes of training on 2 CPU cores), then every bit
width 2..8 is evaluated on the full Fashion-MNIST test set. Each variant trains in its own resumable
run folder under ``runs/bench/multiquant/``; a finished run is kept and not trained again. Writes
``multiquant.{md,json,png}`` under the output folder.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from squeeze.bench.common import fingerprint, save_figure
from squeeze.methods.multiquant.config import VARIANTS, MultiQuantConfig, switched_weights
from squeeze.methods.multiquant.run import RESULT, load_float, train_multiquant
from squeeze.report import Report, format_table, peak_rss_mb
from squeeze.train.engine import EngineConfig
from squeeze.train.state import CHECKPOINT

COMMAND = "squeeze bench multiquant"
# Budget (docs/methods/multiquant.md): 2 epochs x 19,200 images = 300 steps of 128 per variant; each step
# trains the teacher (8 bits), 2 bits and one other width drawn from 3..7. 400 steps measured ~105 min.
# partial_loss=1 and partial_init=importance (deviations, docs/methods/multiquant.md): the partial branch is
# also trained alone and starts from the float network's most active channels. partial_widths: the authors'
# CIFAR ResNet-20 widths. The Any-Precision baseline has no partial branch and ignores all three.
BENCH_CONFIG = MultiQuantConfig(bits=(2, 3, 4, 5, 6, 7, 8), train_bits=3, epochs=2, subset=19200, batch_size=128,
                                lr=0.01, quant_lr=1e-4, eval_subset=2000, seed=0, partial_loss=1.0,
                                partial_init="importance", partial_widths=(16, 24, 48))
QUICK_CONFIG = replace(BENCH_CONFIG, epochs=1, subset=256, eval_subset=200)
QUICK_TEST_IMAGES = 500


def config_tag(cfg: MultiQuantConfig) -> str:
    """Short hash of the config's identity: a changed schedule trains afresh instead of reusing old runs."""
    return hashlib.sha256(json.dumps(cfg.identity(), sort_keys=True).encode()).hexdigest()[:8]


def run_variant(cfg: MultiQuantConfig, folder: Path, accelerator: str, test_limit: int | None) -> dict[str, Any]:
    """Train (or resume, or reuse) one variant's run in ``folder``; returns its ``multiquant.json``."""
    if not (folder / RESULT).is_file():
        engine = EngineConfig(folder, resume=(folder / CHECKPOINT).is_file(), accelerator=accelerator)
        train_multiquant(cfg, engine, test_limit=test_limit)
    return json.loads((folder / RESULT).read_text())


def rows_of(summary: dict[str, Any], seed: int) -> list[dict[str, Any]]:
    """One ``report.json`` row per evaluated bit width."""
    rows = []
    for bits, top1 in summary["top1"].items():
        wbits = int(bits) if switched_weights(summary["variant"]) else 2
        rows.append(Report(summary["model"], summary["variant"], wbits, int(bits), 0, seed, "top1",
                           summary["float_top1"], top1, summary["train_seconds"], peak_rss_mb(), simulated=True,
                           extra={"train_images": summary["config"]["epochs"] * summary["config"]["subset"],
                                  "config": summary["config"], "float_weights": summary["float_weights"],
                                  "test_images": summary.get("test_images", 10000)}).to_dict())
    return rows


def checks(rows: list[dict[str, Any]]) -> list[str]:
    """The issue's claims on the measured numbers."""
    acc = {(r["method"], r["abits"]): r["quant"] for r in rows}
    fp = rows[0]["fp"] if rows else float("nan")
    lines = []
    for b in (2, 3):
        mq, ap = acc.get(("multiquant", b)), acc.get(("any-precision", b))
        if mq is not None and ap is not None:
            lines.append(f"- {b} bits: multiquant {mq:.2f} vs any-precision {ap:.2f}: "
                         f"{'met' if mq > ap else 'NOT met'} (target: multiquant higher)")
        dorefa = acc.get(("any-precision-dorefa", b))
        if mq is not None and dorefa is not None:  # information, not the check
            lines.append(f"  - against Any-Precision DNN's own quantizers (any-precision-dorefa {dorefa:.2f}): "
                         f"{mq - dorefa:+.2f}")
    if ("multiquant", 8) in acc:
        drop = fp - acc[("multiquant", 8)]
        lines.append(f"- 8 bits: multiquant {acc[('multiquant', 8)]:.2f} vs float {fp:.2f} (drop {drop:.2f}; "
                     f"target <= 2): {'met' if drop <= 2 else 'NOT met'}")
    train = {r["method"]: r["seconds"] for r in rows}
    total = sum(train.values()) / 60
    lines.append(f"- training time: {total:.0f} min for {len(train)} of {len(VARIANTS)} variants "
                 f"(target: all {len(VARIANTS)} under 90 min on 2 CPU cores): "
                 f"{'met' if total <= 90 and len(train) == len(VARIANTS) else 'NOT met' if total > 90 else 'incomplete'}")
    for ablation, what in (("multiquant-no-amortization", "amortization"), ("multiquant-no-distill", "distillation")):
        bits = sorted(b for m, b in acc if m == ablation)
        if bits and all(("multiquant", b) in acc for b in bits):
            gain = sum(acc[("multiquant", b)] - acc[(ablation, b)] for b in bits) / len(bits)
            lines.append(f"- {what}: multiquant minus {ablation}, mean over bit widths: {gain:+.2f} points")
    return lines


def markdown(rows: list[dict[str, Any]], cfg: MultiQuantConfig, name: str, missing: list[str] | None = None) -> str:
    """The results page: top-1 per method and bit width, checks against the issue, training times."""
    bits = sorted({r["abits"] for r in rows})
    table = []
    for method in VARIANTS:
        got = {r["abits"]: r for r in rows if r["method"] == method}
        if got:
            table.append({"method": method, **{f"A{b}": got[b]["quant"] for b in bits if b in got},
                          "train s": next(iter(got.values()))["seconds"]})
    cols = ["method", *[f"A{b}" for b in bits], "train s"]
    return "\n".join([
        "# MultiQuant: one network at any bit width", "",
        f"Written by `{COMMAND}{' --cached-only' if missing else ''}`. Model `resnet-fmnist` (float top-1 {rows[0]['fp']:.2f} %), Fashion-MNIST test "
        f"top-1 % at each activation bit width `A{{b}}` (MultiQuant and its ablations: 2-bit weights in 4 branches; "
        "any-precision: weights at the same bit width as activations, with our learnable-range quantizers; "
        "any-precision-dorefa: the same network with Any-Precision DNN's own quantizers, DoReFa weights and "
        "activations clamped to [0, 1]). Every variant starts from the float "
        f"checkpoint and trains with the same schedule and seed: {cfg.epochs} epochs of {cfg.subset} random "
        f"training images, batch {cfg.batch_size}, bit list {list(cfg.bits)}, {cfg.train_bits or 'all'} bit "
        f"widths per step (the widest, the narrowest and random others), SGD lr {cfg.lr} cosine, seed {cfg.seed}. "
        f"MultiQuant variants add {cfg.partial_loss} x the loss of the partial branch alone at odd widths "
        f"(`partial_loss`) and start the partial branch from the float channels chosen by "
        f"`partial_init={cfg.partial_init}`; both are deviations. Partial branch widths per stage: "
        f"{'/'.join(map(str, cfg.partial_widths)) or f'{cfg.partial_ratio} of each stage'} "
        "(the authors' CIFAR ResNet-20 uses 16/24/48). "
        "`train s` is training time of the variant. All rows are fake-quant simulations. "
        "Deviations from the paper: docs/methods/multiquant.md.", "",
        *([f"**Not run yet** (results written with `--cached-only`): {', '.join(missing)}.", ""] if missing else []),
        format_table(table, cols), "", "## Checks against the issue", "", *checks(rows), "",
        f"![accuracy vs bit width]({name}.png)", ""])


def line_plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    """Top-1 versus activation bit width, one line per method, float as a dashed line."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(6, 4))
    for method in VARIANTS:
        pts = sorted((r["abits"], r["quant"]) for r in rows if r["method"] == method)
        if pts:
            ax.plot(*zip(*pts), marker="o", label=method)
    ax.axhline(rows[0]["fp"], color="k", linestyle="--", linewidth=1, label="float")
    ax.set_xlabel("activation bit width")
    ax.set_ylabel("top-1 (%)")
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)


def run(out: Path, quick: bool = False, only: list[str] | None = None, device: str = "cpu",
        cache_dir: Path = Path("runs/bench"), cached_only: bool = False) -> None:
    """Train the five variants (``only``: these variants, into the cache only) and write the results.

    ``cached_only`` trains nothing and writes the results of the variants already finished, naming the
    missing ones on the page.
    """
    from squeeze.errors import SqueezeError  # noqa: PLC0415
    from squeeze.report import write_suite  # noqa: PLC0415
    from squeeze.train.checkpoint import atomic_write_bytes  # noqa: PLC0415

    cfg = QUICK_CONFIG if quick else BENCH_CONFIG
    name = "multiquant-quick" if quick else "multiquant"
    unknown = sorted(set(only or []) - set(VARIANTS))
    if unknown:
        raise SqueezeError(f"--models {unknown}: this suite's variants are {', '.join(VARIANTS)}")
    tag = fingerprint(load_float(cfg)[0])
    accelerator = "gpu" if device.startswith("cuda") else "cpu"
    rows, missing = [], []
    for variant in only or VARIANTS:
        vcfg = replace(cfg, variant=variant)
        folder = Path(cache_dir) / name / f"{variant}-{tag}-{config_tag(vcfg)}"
        if cached_only and not (folder / RESULT).is_file():
            missing.append(variant)
            continue
        summary = run_variant(vcfg, folder, accelerator, QUICK_TEST_IMAGES if quick else None)
        rows += rows_of(summary, cfg.seed)
    if only and not cached_only:
        return
    if not rows:
        raise SqueezeError(f"no finished variant under {cache_dir}/{name}; run `{COMMAND}` first")
    write_suite(rows, out / f"{name}.json")
    atomic_write_bytes(out / f"{name}.md", markdown(rows, cfg, name, missing).encode())
    line_plot(rows, out / f"{name}.png", "MultiQuant vs Any-Precision on resnet-fmnist")
    print((out / f"{name}.md").read_text())
