"""``squeeze bench foundation``: the foundation's PTQ baselines side by side.

rtn / gptq at W4A8 and W2A8, and rtn / percentile / repq-vit / gptq at W4A4, on ``vit-fmnist`` and
``dinov2-s14``, three calibration seeds each (32 calibration images), in one process.
Writes ``foundation.md``, ``foundation.json`` and ``foundation.png`` under the output folder.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from squeeze.bench.common import Cell, aggregate, bar_plot, is_tie, run_cells, write_results
from squeeze.config import make_config
from squeeze.report import format_table
from squeeze.runner import quantize_zoo_model
from squeeze.zoo.registry import ZooModel, load_model

COMMAND = "squeeze bench foundation"
SETTINGS = {(4, 8): ("rtn", "gptq"), (2, 8): ("rtn", "gptq"), (4, 4): ("rtn", "percentile", "repq-vit", "gptq")}


def cells(models: list[str], seeds: list[int]) -> list[Cell]:
    return [Cell(m, method, w, a, s) for m in models for (w, a), methods in SETTINGS.items()
            for method in methods for s in seeds]


class _Runner:
    """Loads each zoo model and measures its float metric once."""

    def __init__(self) -> None:
        self.models: dict[str, tuple[ZooModel, float]] = {}

    def __call__(self, cell: Cell) -> dict[str, Any]:
        if cell.model not in self.models:
            zm = load_model(cell.model)
            self.models[cell.model] = (zm, zm.evaluate(zm.model))
        zm, fp = self.models[cell.model]
        config = make_config(cell.method, wbits=cell.wbits, abits=cell.abits, calib=32, seed=cell.seed,
                             **dict(cell.options))
        _, report = quantize_zoo_model(zm, config, fp=fp)
        return report.to_dict()


def checks(agg: list[dict[str, Any]]) -> list[str]:
    """The issue's claims, evaluated on the aggregated numbers (ties reported as ties)."""
    def get(model: str, method: str, w: int, a: int) -> dict[str, Any] | None:
        hit = [r for r in agg if (r["model"], r["method"], r["wbits"], r["abits"]) == (model, method, w, a)]
        return hit[0] if hit else None

    lines = []
    for model in sorted({r["model"] for r in agg}):
        g48 = get(model, "gptq", 4, 8)
        if g48:
            drop = g48["fp"] - g48["mean"]
            lines.append(f"- {model}: gptq W4A8 loses {drop:.2f} points vs float (target <= 1.5): "
                         f"{'met' if drop <= 1.5 else 'NOT met'}")
        for (w, a), better, worse in (((2, 8), "gptq", "rtn"), ((4, 4), "repq-vit", "rtn")):
            b, x = get(model, better, w, a), get(model, worse, w, a)
            if b and x:
                verdict = "tie (within one std)" if is_tie(b, x) else ("met" if b["mean"] > x["mean"] else "NOT met")
                lines.append(f"- {model}: {better} {b['mean']:.2f}±{b['std']:.2f} vs {worse} "
                             f"{x['mean']:.2f}±{x['std']:.2f} at W{w}A{a}: {verdict}")
    return lines


def markdown(agg: list[dict[str, Any]], seeds: list[int]) -> str:
    table = []
    for r in sorted(agg, key=lambda r: (r["model"], -r["wbits"], -r["abits"], r["method"])):
        table.append({"model": r["model"], "setting": f"W{r['wbits']}A{r['abits']}", "method": r["method"],
                      "fp": r["fp"], "quant (mean±std)": f"{r['mean']:.2f} ± {r['std']:.2f}",
                      "delta": r["mean"] - r["fp"], "seconds": r["seconds"], "peak_rss_mb": r["peak_rss_mb"]})
    cols = ["model", "setting", "method", "fp", "quant (mean±std)", "delta", "seconds", "peak_rss_mb"]
    return "\n".join([
        "# Foundation PTQ baselines", "",
        f"Written by `{COMMAND}` (calibration seeds {seeds}, 32 calibration images from the training split; "
        "metric: top-1 % on the model's fixed test set). `seconds` is quantization time only; "
        "`peak_rss_mb` is the process peak. All rows are fake-quant simulations (`simulated: true`).", "",
        format_table(table, cols), "", "## Checks against the foundation issue", "", *checks(agg), "",
        "![accuracy per setting](foundation.png)", ""])


def run(out: Path, quick: bool = False) -> None:
    models = ["vit-fmnist"] if quick else ["vit-fmnist", "dinov2-s14"]
    seeds = [0] if quick else [0, 1, 2]
    name = "foundation-quick" if quick else "foundation"
    rows = run_cells(cells(models, seeds), Path("runs/bench") / f"{name}.cache.json", _Runner())
    agg = aggregate(rows)
    for r in agg:
        r["metric"] = "top1"
    write_results(out, name, rows, markdown(agg, seeds))
    bar_plot(agg, out / f"{name}.png", "PTQ baselines (mean ± std over calibration seeds)")
    print((out / f"{name}.md").read_text())
