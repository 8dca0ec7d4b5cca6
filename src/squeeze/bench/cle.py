"""``squeeze bench cle``: data-free quantization by cross-layer equalization and bias correction (Nagel et
al., ICCV 2019) against its baselines and ablations, on the ImageNet ``efficientnet-lite0`` (depthwise
convs, ReLU6: the MobileNetV2-like case the paper targets) at W8A8 and ``resnet-fmnist`` at W4A8.

Variants (``VARIANTS``): ``rtn`` is the project's default round-to-nearest (per-channel weights, batch norm
left unfolded); ``fold`` folds batch norm and quantizes each weight tensor with one range, the paper's
baseline; ``fold+bc``, ``cle``, ``cle+ba`` and ``dfq`` (equalization + absorption + analytic bias
correction) add the paper's steps; ``dfq-empirical`` measures the expected inputs of bias correction on
the calibration images instead; ``dfq-relu`` replaces ReLU6 by ReLU as the paper does for MobileNetV2
(models with ReLU6 only); ``dfq-zeroq`` sets the activation ranges from ZeroQ images synthesized from the
batch norm statistics instead of training images, so nothing but the model is used (``--data
synthetic:zeroq``); ``dfq-per-channel`` is the full method with per-channel weights. Activation
ranges come from 32 calibration images (min-max; ZeroQ's for ``dfq-zeroq``), so a seed changes only them.
Writes ``cle.{md,json,png}``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from squeeze.bench.common import (Cell, ZooRunner, aggregate, find_aggregate, fingerprint, page_command,
                                  run_cells, seeds_verdict, write_results)
from squeeze.bench.dfq import SYNTH_ITERS
from squeeze.report import format_table

COMMAND = "squeeze bench cle"
EVAL_CROPS = 256  # efficientnet-lite0 photo crops (the zoo's default 96 make one crop 1.04 points)
_OFF = (("equalize", False), ("absorb", False), ("bias_correction", "none"))
VARIANTS: dict[str, tuple[str, tuple[tuple[str, Any], ...]]] = {
    "rtn": ("rtn", ()),
    "fold": ("cle", _OFF),
    "fold+bc": ("cle", (("equalize", False), ("absorb", False))),
    "cle": ("cle", (("absorb", False), ("bias_correction", "none"))),
    "cle+ba": ("cle", (("bias_correction", "none"),)),
    "dfq": ("cle", ()),
    "dfq-empirical": ("cle", (("bias_correction", "empirical"),)),
    "dfq-relu": ("cle", (("relu6", "relu"),)),
    "dfq-zeroq": ("spdfq", (("generator", "zeroq"), ("backend", "cle"))),
    "dfq-per-channel": ("cle", (("per_channel_weights", True),)),
}
_ORDER = list(VARIANTS)
PLANS = {"efficientnet-lite0": ((8, 8), tuple(VARIANTS)),
         "resnet-fmnist": ((4, 8), tuple(v for v in VARIANTS if v != "dfq-relu"))}  # it has no ReLU6
QUICK_PLANS = {"resnet-fmnist": ((4, 8), ("fold", "dfq"))}
SEEDS, QUICK_SEEDS = (0, 1, 2), (0,)


class CLERunner(ZooRunner):
    """:class:`ZooRunner` with ``EVAL_CROPS`` evaluation crops for efficientnet-lite0."""

    def load(self, name: str) -> tuple[Any, float | None]:
        if name == "efficientnet-lite0" and name not in self.models:
            from squeeze.devices import resolve_device  # noqa: PLC0415
            from squeeze.zoo.efficientnet import build_efficientnet_lite0  # noqa: PLC0415

            zm = build_efficientnet_lite0(n_eval=EVAL_CROPS)
            zm.model.to(resolve_device(self.device))
            self.models[name] = (zm, None)
        return super().load(name)


def _options(model: str, variant: str) -> tuple[tuple[str, Any], ...]:
    """A variant's config fields; ZeroQ synthesis gets the dfq-cnn bench's step count for the model."""
    options = VARIANTS[variant][1]
    if variant == "dfq-zeroq":
        options += (("synth_iters", SYNTH_ITERS.get(model, 300)),)
    return options


def cells(tags: dict[str, str], quick: bool = False) -> list[Cell]:
    """Every (model, variant, seed) of the models in ``tags``."""
    plans, seeds = (QUICK_PLANS, QUICK_SEEDS) if quick else (PLANS, SEEDS)
    out = []
    for model, ((w, a), variants) in plans.items():
        if model in tags:
            out += [Cell(model, VARIANTS[v][0], w, a, s, label=v, options=_options(model, v), tag=tags[model])
                    for s in seeds for v in variants]
    return out


CHECKS = (("dfq", "fold", "the paper's headline: one range per tensor after folding, rescued"),
          ("cle", "fold", "equalization alone"), ("fold+bc", "fold", "bias correction alone"),
          ("dfq", "cle+ba", "bias correction on top of equalization"),
          ("dfq", "rtn", "the paper: DFQ with one range per tensor above plain per-channel rounding"),
          ("dfq-empirical", "dfq", "measured expected inputs against batch norm statistics"),
          ("dfq-zeroq", "dfq", "no data at all against 32 training images for activation ranges"),
          ("dfq", "dfq-relu", "ours against the paper's ReLU6 swap"),
          ("dfq-per-channel", "rtn", "DFQ's steps with per-channel weights"))


def checks(agg: list[dict[str, Any]]) -> list[str]:
    """Each comparison of ``CHECKS`` present in ``agg``, per model, with its verdict over seeds."""
    lines = []
    for model in sorted({r["model"] for r in agg}):
        w, a = next((r["wbits"], r["abits"]) for r in agg if r["model"] == model)
        for better, worse, what in CHECKS:
            b, x = find_aggregate(agg, model, better, w, a), find_aggregate(agg, model, worse, w, a)
            if b and x:
                lines.append(f"- {model} W{w}A{a}, {what}: {better} {b['mean']:.2f} ± {b['std']:.2f} > {worse} "
                             f"{x['mean']:.2f} ± {x['std']:.2f} ({b['mean'] - x['mean']:+.2f}): {seeds_verdict(b, x)}")
        dfq = find_aggregate(agg, model, "dfq", w, a)
        if dfq:
            lines.append(f"- {model}: dfq is {dfq['fp'] - dfq['mean']:.2f} points under the float model")
    return lines


def _summary(rows: list[dict[str, Any]], model: str, method: str) -> str:
    """What the method did on ``model`` (the same for every seed): pairs equalized, sweeps, biases corrected."""
    s = next((r.get("method_summary") for r in rows if r["model"] == model and r["method"] == method), None)
    if not s:
        return ""
    equalized = f"{s['pairs']}/{s['candidate_pairs']} pairs in {s['sweeps']} sweeps" if s["sweeps"] else "none"
    return f"{s['folded']} folded; equalized {equalized}; {s['absorbed']} absorbed; {s['corrected']} corrected"


def markdown(rows: list[dict[str, Any]], agg: list[dict[str, Any]], command: str, missing: int, name: str,
             models: list[str]) -> str:
    """The page: one table per model (variants), the checks and the plot."""
    parts = [
        "# Data-free quantization by cross-layer equalization and bias correction (DFQ)", "",
        f"Written by `{command}` (seeds {sorted({r['seed'] for r in rows})}: each seed draws the 32 training "
        "images that set the activation ranges, or for `dfq-zeroq` the 32 synthesized ones; everything else "
        "is data-free and deterministic). Metric: "
        "resnet-fmnist top-1 % on the 10,000 Fashion-MNIST test images; efficientnet-lite0 top-1 agreement % "
        f"with the float model on {EVAL_CROPS} photo crops. `what it did`: batch norms folded, pairs equalized of the "
        "candidates found (and sweeps), bias absorptions, bias corrections. All rows are fake-quant simulations. "
        "Method notes: docs/methods/cle.md.", "",
        *([f"**{missing} planned cell(s) were not run.**", ""] if missing else [])]
    for model in [m for m in models if any(r["model"] == m for r in agg)]:
        table = [{"variant": r["method"], "setting": f"W{r['wbits']}A{r['abits']}", "fp": r["fp"],
                  "quant (mean ± std)": f"{r['mean']:.2f} ± {r['std']:.2f}", "delta": r["mean"] - r["fp"],
                  "what it did": _summary(rows, model, r["method"]), "seconds": r["seconds"]}
                 for r in sorted((r for r in agg if r["model"] == model), key=lambda r: _ORDER.index(r["method"]))]
        parts += [f"## {model}", "", format_table(table, ["variant", "setting", "fp", "quant (mean ± std)", "delta",
                                                           "what it did", "seconds"]), ""]
    parts += ["## Comparisons", "", *checks(agg), "",
              "Verdicts use the tie rule of every bench here (a difference inside the larger seed std is a tie).", "",
              f"![accuracy per variant]({name}.png)", ""]
    return "\n".join(parts)


def plot(agg: list[dict[str, Any]], path: Path, models: list[str]) -> None:
    """One panel per model: a horizontal bar per variant in ``VARIANTS`` order (mean ± std, value written),
    the float model as a dashed line, the axis starting near the lowest bar so small gaps stay visible."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    from squeeze.report import save_figure  # noqa: PLC0415

    models = [m for m in models if any(r["model"] == m for r in agg)]
    fig, axes = plt.subplots(1, len(models), figsize=(7 * len(models), 3.6), squeeze=False, layout="constrained")
    for ax, model in zip(axes[0], models):
        rs = sorted((r for r in agg if r["model"] == model), key=lambda r: _ORDER.index(r["method"]))
        ys = range(len(rs))[::-1]
        colors = ["tab:gray" if r["method"] in ("rtn", "fold") else "tab:blue" for r in rs]
        ax.barh(list(ys), [r["mean"] for r in rs], xerr=[r["std"] for r in rs], color=colors, capsize=2)
        for y, r in zip(ys, rs):
            ax.text(r["mean"] + r["std"], y, f" {r['mean']:.2f}", va="center", fontsize=7)
        ax.axvline(rs[0]["fp"], color="k", linestyle="--", linewidth=1, label="float")
        low = min([r["mean"] - r["std"] for r in rs] + [rs[0]["fp"]])
        high = max([r["mean"] + r["std"] for r in rs] + [rs[0]["fp"]])
        ax.set_xlim(max(0.0, low - 0.15 * (high - low) - 0.1), high + 0.12 * (high - low) + 0.2)
        ax.set_yticks(list(ys), [r["method"] for r in rs])
        ax.set_title(f"{model}, W{rs[0]['wbits']}A{rs[0]['abits']} (gray: baselines)", fontsize=9)
        ax.set_xlabel(rs[0].get("metric", "metric"))
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle("DFQ variants: mean ± std over calibration seeds")
    save_figure(fig, path)


def run(out: Path, quick: bool = False, device: str = "cpu", cache_dir: Path = Path("runs/bench"),
        cached_only: bool = False, runner: ZooRunner | None = None) -> None:
    """Run (or resume from ``cache_dir``) every cell and write the page; ``runner``: a substitute (tests)."""
    name = "cle-quick" if quick else "cle"
    runner = runner or CLERunner(device)
    plans = QUICK_PLANS if quick else PLANS
    tags = {m: fingerprint(runner.load(m)[0].model) for m in plans}
    plan = cells(tags, quick)
    rows = run_cells(plan, cache_dir / f"{name}.cache.json", runner, cached_only=cached_only)
    if not rows:
        return
    agg = aggregate(rows)
    for r in agg:  # the axis label of the plot
        r["metric"] = next(row["metric"] for row in rows if row["model"] == r["model"])
    out.mkdir(parents=True, exist_ok=True)
    command = page_command(COMMAND, out, None, device, cache_dir, cached_only)
    write_results(out, name, rows, markdown(rows, agg, command, len(plan) - len(rows), name, list(plans)))
    plot(agg, out / f"{name}.png", list(plans))
    print((out / f"{name}.md").read_text())
