"""``squeeze sensitivity RUN``: the per-layer analysis of a saved quantized run, written next to it."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from squeeze.analysis.sensitivity import per_layer, ranked, suggest_overrides
from squeeze.errors import SqueezeError
from squeeze.report import format_table, save_figure
from squeeze.train.checkpoint import atomic_write_bytes, write_json


def run_sensitivity(folder: Path, out: Path | None = None, top: int = 3, alone: bool = False,
                    target: float | None = None, max_layers: int = 8) -> dict[str, Any]:
    """Analyse the run saved in ``folder``; write ``sensitivity.{json,md,png}`` to ``out`` (default: ``folder``).

    The saved file holds integer weights, so a layer could not be put back in float from it. The run is
    quantized again instead, from the config and seed its ``report.json`` names (calibration is seeded), and
    the result says whether the metric matches the saved one. Then one evaluation per quantized layer (two
    with ``alone``) on the zoo model's evaluation set. With ``target``, :func:`search_overrides` then
    quantizes again with the 1, 2, ... most sensitive layers wider until the metric reaches it.
    """
    from squeeze.api import quantize  # noqa: PLC0415
    from squeeze.runner import calibration_inputs  # noqa: PLC0415
    from squeeze.zoo.registry import load_model  # noqa: PLC0415

    if top < 0 or (target is not None and max_layers < 1):  # fail before minutes of evaluation, not after
        raise SqueezeError(f"--top {top} must be >= 0 and --max-layers {max_layers} >= 1")
    folder = Path(folder)
    name, config, saved_quant = _read_run(folder)
    zm = load_model(name)
    qmodel = quantize(zm.model, config, calibration_inputs(zm, config), name=name)
    result = per_layer(qmodel, zm.evaluate, alone=alone)
    wide = {"wbits": max(8, config.wbits), "abits": max(8, config.abits)}
    result.update(model=name, metric=zm.metric, run=str(folder), config=config.to_dict(), saved_quant=saved_quant,
                  suggested_overrides=suggest_overrides(result["layers"], top, **wide))
    if target is not None:
        result["search"] = search_overrides(zm, config, result["layers"], target, max_layers, **wide)
    out = folder if out is None else Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "sensitivity.json", result)
    atomic_write_bytes(out / "sensitivity.md", markdown(result).encode())
    plot(result, out / "sensitivity.png")
    return result


def _read_run(folder: Path) -> tuple[str, Any, float | None]:
    """``(model name, config, saved metric)`` from a run folder's report.json (JSON only, never a pickle)."""
    from squeeze.config import config_from_dict  # noqa: PLC0415

    report_path = folder / "report.json"
    if not report_path.is_file():
        raise SqueezeError(f"{folder} holds no report.json; pass a folder written by `squeeze quantize`")
    try:
        report = json.loads(report_path.read_text())
        return report["model"], config_from_dict(report["config"]), report.get("quant")
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise SqueezeError(f"{report_path} is not a `squeeze quantize` report ({exc}); quantize again") from exc


def search_overrides(zm: Any, config: Any, rows: list[dict[str, Any]], target: float, max_layers: int,
                     wbits: int, abits: int) -> dict[str, Any]:
    """Quantize ``zm`` again with the 1, 2, ... most sensitive layers at ``wbits``/``abits`` until its metric
    reaches ``target`` (at most ``max_layers`` layers, only layers whose float version helped).

    Each try is a full run of the method with the overrides, so the neighbours are calibrated as they would
    be in that run. Returns ``{"target", "reached", "tries": [{"layers", "overrides", "quant"}, ...]}``.
    """
    import dataclasses  # noqa: PLC0415

    from squeeze.api import quantize  # noqa: PLC0415
    from squeeze.runner import calibration_inputs  # noqa: PLC0415

    if max_layers < 1:
        raise SqueezeError(f"--max-layers {max_layers} must be >= 1")
    tries: list[dict[str, Any]] = []
    for k in range(1, max_layers + 1):
        overrides = suggest_overrides(rows, k, wbits=wbits, abits=abits)
        if len(overrides) < k:  # no further layer whose float version helped
            break
        # the new exact names first: the first matching pattern wins, and the run's own patterns stay behind
        cfg = dataclasses.replace(config, overrides={**overrides, **config.overrides})
        metric = zm.evaluate(quantize(zm.model, cfg, calibration_inputs(zm, cfg), name=zm.name))
        tries.append({"layers": k, "overrides": overrides, "quant": metric})
        if metric >= target:
            break
    return {"target": target, "reached": bool(tries) and tries[-1]["quant"] >= target, "tries": tries}


def markdown(result: dict[str, Any]) -> str:
    """The layers most worth keeping in float first, and the overrides that would keep them wider."""
    saved = "no metric" if result["saved_quant"] is None else f"{result['saved_quant']:.2f}"
    columns = ["layer", "without", "recovered"] + (["alone", "cost"] if "alone" in result["layers"][0] else [])
    lines = [f"# Per-layer sensitivity of {result['run']}", "",
             f"Model `{result['model']}`, metric {result['metric']}: {result['quant']:.2f} quantized again from the "
             f"run's config (the run saved {saved}), {result['float']:.2f} with every quantizer "
             "off. `without`: the metric with only that layer in float; `recovered`: what that gains. `alone`: "
             "only that layer quantized; `cost`: what that loses. Written by `squeeze sensitivity`.", "",
             format_table(ranked(result["layers"]), columns), ""]
    if "search" in result:
        lines += _search_lines(result["search"])
    if result["suggested_overrides"]:
        setting = json.dumps(result["suggested_overrides"])
        lines += ["Keep the layers that recover most at wider bits:", "",
                  f"    squeeze quantize ... --set 'overrides={setting}'", ""]
    return "\n".join(lines)


def _search_lines(search: dict[str, Any]) -> list[str]:
    """The runs quantized again with the most sensitive layers wider, and whether one reached the target."""
    lines = [f"Quantized again with the most sensitive layers wider, until {search['target']:.2f}:", ""]
    lines += [f"- {t['layers']} layer(s) wider: {t['quant']:.2f}" for t in search["tries"]]
    if search["reached"]:
        setting = json.dumps(search["tries"][-1]["overrides"])
        lines += ["", "Reached with:", "", f"    squeeze quantize ... --set 'overrides={setting}'", ""]
    else:
        lines += ["", "Not reached within the layers tried; a wider method or more bits everywhere may be needed.", ""]
    return lines


def plot(result: dict[str, Any], path: Path) -> None:
    """Horizontal bars, one per layer in model order: the metric recovered by keeping it in float."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    rows = result["layers"]
    chosen = set(result["suggested_overrides"])
    fig, ax = plt.subplots(figsize=(7, 0.25 * len(rows) + 1.5))
    ax.barh([r["layer"] for r in rows], [r["recovered"] for r in rows],
            color=["tab:red" if r["layer"] in chosen else "tab:blue" for r in rows])
    ax.invert_yaxis()  # first layer on top
    ax.axvline(0, color="k", linewidth=0.8)
    ax.set_xlabel(f"{result['metric']} recovered with the layer in float (quantized: {result['quant']:.2f}, "
                  f"float: {result['float']:.2f})")
    ax.tick_params(axis="y", labelsize=7)
    ax.set_title(f"{result['model']}: per-layer sensitivity (red: suggested overrides)")
    fig.tight_layout()
    save_figure(fig, path)
