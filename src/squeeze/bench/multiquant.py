"""``squeeze bench multiquant``: accuracy at every bit width of MultiQuant, Any-Precision and two ablations.

Any-Precision runs twice: with this module's learnable-range quantizers (``any-precision``, the baseline the
issue's checks use) and with Any-Precision DNN's own DoReFa quantizers (``any-precision-dorefa``, the
baseline as published). All five variants start from the committed float ``resnet-fmnist`` and train with the
same schedule (see :data:`BENCH_CONFIG`, sized to fit 90 minutes of training on 2 CPU cores) on seed 0; the two
the issue's checks compare also train on the other seeds of :data:`SEEDS`. Every bit width 2..8 is then
evaluated on the full Fashion-MNIST test set. Each run trains in its own resumable folder under
``runs/bench/multiquant/``; a finished run is kept and not trained again. Writes
``multiquant.{md,json,png}`` under the output folder.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from squeeze.bench.common import aggregate, diff_se, fingerprint, order_verdict, save_figure
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
# The two networks the checks compare train on three seeds, so a gap can be told from seed noise (one
# run's 2- and 3-bit top-1 moves by 0.1-0.3 between seeds); the ablations and the DoReFa baseline on seed 0.
SEEDS: dict[str, tuple[int, ...]] = {"multiquant": (0, 1, 2), "any-precision": (0, 1, 2)}
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


def seeds_of(variant: str, quick: bool) -> tuple[int, ...]:
    """The training seeds of one variant (``--quick``: seed 0 only)."""
    return (BENCH_CONFIG.seed,) if quick else SEEDS.get(variant, (BENCH_CONFIG.seed,))


def rows_of(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """One ``report.json`` row per evaluated bit width (its training seed in ``seed``)."""
    rows = []
    seed = summary["config"]["seed"]
    for bits, top1 in summary["top1"].items():
        wbits = int(bits) if switched_weights(summary["variant"]) else 2
        rows.append(Report(summary["model"], summary["variant"], wbits, int(bits), 0, seed, "top1",
                           summary["float_top1"], top1, summary["train_seconds"], peak_rss_mb(), simulated=True,
                           extra={"train_images": summary["config"]["epochs"] * summary["config"]["subset"],
                                  "config": summary["config"], "float_weights": summary["float_weights"],
                                  "test_images": summary.get("test_images", 10000)}).to_dict())
    return rows


def _cell(a: dict[str, Any], sep: str = "±") -> str:
    """An aggregated result as ``mean`` (one seed) or ``mean{sep}std``."""
    return f"{a['mean']:.2f}" if a["n"] == 1 else f"{a['mean']:.2f}{sep}{a['std']:.2f}"


def _versus(mq: dict[str, Any], ap: dict[str, Any]) -> str:
    """Verdict on multiquant > any-precision (a tie within one seed std), with the gap's standard error
    where both have several seeds."""
    several = mq["n"] > 1 and ap["n"] > 1
    verdict = order_verdict(mq, ap)
    gap = (f"; difference {mq['mean'] - ap['mean']:+.2f} ± {diff_se(mq, ap):.2f} (standard error, {mq['n']} and "
           f"{ap['n']} seeds)") if several else ""
    return f"{verdict} (target: multiquant higher){gap}"


def checks(rows: list[dict[str, Any]]) -> list[str]:
    """The issue's claims on the measured numbers (means over seeds where a variant has several)."""
    acc = {(a["method"], a["abits"]): a for a in aggregate(rows)}
    fp = rows[0]["fp"] if rows else float("nan")
    lines = []
    for b in (2, 3):
        mq, ap = acc.get(("multiquant", b)), acc.get(("any-precision", b))
        if mq is not None and ap is not None:
            lines.append(f"- {b} bits: multiquant {_cell(mq)} vs any-precision {_cell(ap)}: {_versus(mq, ap)}")
        dorefa = acc.get(("any-precision-dorefa", b))
        if mq is not None and dorefa is not None:  # information, not the check
            lines.append(f"  - against Any-Precision DNN's own quantizers (any-precision-dorefa {dorefa['mean']:.2f}): "
                         f"{mq['mean'] - dorefa['mean']:+.2f}")
    if ("multiquant", 8) in acc:
        drop = fp - acc[("multiquant", 8)]["mean"]
        lines.append(f"- 8 bits: multiquant {_cell(acc[('multiquant', 8)])} vs float {fp:.2f} (drop {drop:.2f}; "
                     f"target <= 2): {'met' if drop <= 2 else 'NOT met'}")
    train = {(r["method"], r.get("seed", 0)): r["seconds"] for r in rows}  # one entry per training run
    variants = {m for m, _ in train}
    total = sum(train.values()) / 60
    lines.append(f"- training time: {total:.0f} min for {len(variants)} of {len(VARIANTS)} variants, {len(train)} runs "
                 f"(target: all {len(VARIANTS)} under 90 min on 2 CPU cores): "
                 f"{'met' if total <= 90 and len(variants) == len(VARIANTS) else 'NOT met' if total > 90 else 'incomplete'}")
    # Ablations against MultiQuant on the same seed (paired: same data order, same start).
    same_seed = {(r["method"], r["abits"], r.get("seed", 0)): r["quant"] for r in rows}
    for ablation, what in (("multiquant-no-amortization", "amortization"), ("multiquant-no-distill", "distillation")):
        keys = sorted((b, s) for m, b, s in same_seed if m == ablation)
        if keys and all(("multiquant", b, s) in same_seed for b, s in keys):
            gain = sum(same_seed[("multiquant", b, s)] - same_seed[(ablation, b, s)] for b, s in keys) / len(keys)
            lines.append(f"- {what}: multiquant minus {ablation} on the same seed, mean over bit widths: "
                         f"{gain:+.2f} points")
    return lines


def markdown(rows: list[dict[str, Any]], cfg: MultiQuantConfig, name: str, missing: list[str] | None = None) -> str:
    """The results page: top-1 per method and bit width (mean ± std over seeds), checks against the issue."""
    agg = aggregate(rows)
    bits = sorted({r["abits"] for r in rows})
    seeds = {m: ", ".join(map(str, sorted({r.get("seed", 0) for r in rows if r["method"] == m}))) for m in VARIANTS}
    table = []
    for method in VARIANTS:
        got = {a["abits"]: a for a in agg if a["method"] == method}
        if got:
            table.append({"method": method, **{f"A{b}": _cell(got[b], " ± ") for b in bits if b in got},
                          "seeds": seeds[method], "train s": next(iter(got.values()))["seconds"]})
    cols = ["method", *[f"A{b}" for b in bits], "seeds", "train s"]
    several = "; ".join(f"{m} on seeds {s}" for m, s in seeds.items() if "," in s)  # "0, 1, 2": several seeds
    return "\n".join([
        "# MultiQuant: one network at any bit width", "",
        f"Written by `{COMMAND}{' --cached-only' if missing else ''}`. Model `resnet-fmnist` (float top-1 {rows[0]['fp']:.2f} %), Fashion-MNIST test "
        f"top-1 % at each activation bit width `A{{b}}` (MultiQuant and its ablations: 2-bit weights in 4 branches; "
        "any-precision: weights at the same bit width as activations, with our learnable-range quantizers; "
        "any-precision-dorefa: the same network with Any-Precision DNN's own quantizers, DoReFa weights and "
        "activations clamped to [0, 1]). Every variant starts from the float "
        f"checkpoint and trains with the same schedule: {cfg.epochs} epochs of {cfg.subset} random "
        f"training images, batch {cfg.batch_size}, bit list {list(cfg.bits)}, {cfg.train_bits or 'all'} bit "
        f"widths per step (the widest, the narrowest and random others), SGD lr {cfg.lr} cosine, seed {cfg.seed} "
        "(it fixes the images drawn, their order and the widths per step)"
        + (f"; the networks the issue's checks compare also train on other seeds ({several}), and their cells are "
           "mean ± std over those runs. " if several else ". ") +
        f"MultiQuant variants add {cfg.partial_loss} x the loss of the partial branch alone at odd widths "
        f"(`partial_loss`) and start the partial branch from the float channels chosen by "
        f"`partial_init={cfg.partial_init}`; both are deviations. Partial branch widths per stage: "
        f"{'/'.join(map(str, cfg.partial_widths)) or f'{cfg.partial_ratio} of each stage'} "
        "(the authors' CIFAR ResNet-20 uses 16/24/48). "
        "`train s` is the training time of one run of the variant (mean over its seeds). All rows are fake-quant "
        "simulations. Deviations from the paper: docs/methods/multiquant.md.", "",
        *([f"**Not run yet** (results written with `--cached-only`): {', '.join(missing)}.", ""] if missing else []),
        format_table(table, cols), "", "## Checks against the issue", "", *checks(rows), "",
        f"![accuracy vs bit width]({name}.png)", ""])


def line_plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    """Top-1 versus activation bit width, one line per method (mean, bars: std over seeds), float dashed."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    agg = aggregate(rows)
    fig, ax = plt.subplots(figsize=(6, 4))
    for method in VARIANTS:
        pts = sorted((a["abits"], a["mean"], a["std"], a["n"]) for a in agg if a["method"] == method)
        if pts:
            x, y, err, n = zip(*pts)
            label = f"{method} ({n[0]} seeds)" if n[0] > 1 else method
            ax.errorbar(x, y, yerr=err if n[0] > 1 else None, marker="o", capsize=3, label=label)
    ax.axhline(rows[0]["fp"], color="k", linestyle="--", linewidth=1, label="float")
    ax.set_xlabel("activation bit width")
    ax.set_ylabel("top-1 (%)")
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)


def run(out: Path, quick: bool = False, only: list[str] | None = None, device: str = "cpu",
        cache_dir: Path = Path("runs/bench"), cached_only: bool = False) -> None:
    """Train the five variants on their seeds (``only``: these variants, into the cache only); write the results.

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
        for seed in seeds_of(variant, quick):
            vcfg = replace(cfg, variant=variant, seed=seed)
            folder = Path(cache_dir) / name / f"{variant}-{tag}-{config_tag(vcfg)}"
            if cached_only and not (folder / RESULT).is_file():
                missing.append(f"{variant} (seed {seed})")
                continue
            summary = run_variant(vcfg, folder, accelerator, QUICK_TEST_IMAGES if quick else None)
            rows += rows_of(summary)
    if only and not cached_only:
        return
    if not rows:
        raise SqueezeError(f"no finished variant under {cache_dir}/{name}; run `{COMMAND}` first")
    write_suite(rows, out / f"{name}.json")
    atomic_write_bytes(out / f"{name}.md", markdown(rows, cfg, name, missing).encode())
    line_plot(rows, out / f"{name}.png", "MultiQuant vs Any-Precision on resnet-fmnist")
    print((out / f"{name}.md").read_text())
