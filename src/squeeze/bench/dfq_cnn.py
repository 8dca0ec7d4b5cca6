"""``squeeze bench dfq-cnn``: data-free quantization of a CNN -- which calibration images work?

The ViT suite (``squeeze bench dfq``) answers this for vision transformers, whose LayerNorms keep no
statistics. A CNN's batch norm layers do: ZeroQ (Cai et al., CVPR 2020) optimizes images until
each image's per-channel mean and std at every layer match the layer's running ones. Sources, 32 images
each, through two backends (round-to-nearest with min-max activation ranges, which come straight from
the calibration images' extremes, and with percentile ranges):
Gaussian ``noise``, ``spdfq-no-apa`` (what the ViT generator does on a CNN: soft-label cross-entropy,
multi-semantic crops and total variation, no attention), ``zeroq`` and ``real`` training images.
``resnet-fmnist`` (W4A4, W6A6) and the ImageNet ``efficientnet-lite0`` (W8A8, W8A6), seeds 0-2 (see
:data:`PLANS`). A seed fixes the images; the synthetic sets are cached with their contact sheets and
shared by a model's bit widths. Writes ``dfq-cnn.{md,json,png}``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from squeeze.bench import dfq
from squeeze.bench.common import (Cell, ZooRunner, aggregate, find_aggregate, fingerprint, page_command,
                                  run_cells, seeds_verdict, write_results)
from squeeze.report import format_table

COMMAND = "squeeze bench dfq-cnn"
BACKENDS = ("rtn", "percentile")
SOURCES = ("noise", "zeroq", "real", "spdfq-no-apa")  # the costly label inversion last: a cut run has the rest


@dataclass(frozen=True)
class Plan:
    """One model's settings (wbits, abits) and seeds."""

    settings: tuple[tuple[int, int], ...]
    seeds: tuple[int, ...]


# efficientnet-lite0 at 224 px costs ~2.5 s per synthesis step on 2 cores, so 100 steps (dfq.SYNTH_ITERS), ~8 min
# per seed for its two generators; its 4-bit weights collapse under round-to-nearest whatever the data, so its
# settings keep 8-bit weights and vary the activations, where calibration data matter.
PLANS = {"resnet-fmnist": Plan(((4, 4), (6, 6)), (0, 1, 2)),
         "efficientnet-lite0": Plan(((8, 8), (8, 6)), (0, 1, 2))}
QUICK_PLANS = {"resnet-fmnist": Plan(((4, 4),), (0,))}


def cells(tags: dict[str, str], backend: str, quick: bool = False) -> list[Cell]:
    """Every (model, setting, source, seed) of the models in ``tags``; seed 0 of every source first."""
    plans = QUICK_PLANS if quick else PLANS
    plan = [Cell(m, backend, w, a, s, label=src, tag=tags[m]) for m in plans if m in tags
            for w, a in plans[m].settings for s in plans[m].seeds for src in SOURCES]
    return sorted(plan, key=lambda c: (c.seed > 0, SOURCES.index(c.label) == len(SOURCES) - 1))


def checks(agg: list[dict[str, Any]]) -> list[str]:
    """ZeroQ against the other data-free sources and against real images, per model and setting."""
    lines = []
    for r in agg:
        if r["method"] != "zeroq":
            continue
        model, w, a = r["model"], r["wbits"], r["abits"]
        for other in ("noise", "spdfq-no-apa"):
            x = find_aggregate(agg, model, other, w, a)
            if x is not None:
                lines.append(f"- {model} W{w}A{a}: zeroq {r['mean']:.2f} > {other} {x['mean']:.2f}: "
                             f"{seeds_verdict(r, x)}")
        real = find_aggregate(agg, model, "real", w, a)
        if real is not None:
            lines.append(f"- {model} W{w}A{a}: zeroq minus real images ({real['mean']:.2f}): "
                         f"{r['mean'] - real['mean']:+.2f} points")
    return lines


def statistics_distance(runner: dfq.DfqRunner, plan: list[Cell]) -> dict[tuple[str, str], float]:
    """ZeroQ's loss (every batch norm layer, per image) of each source's calibration images, mean over seeds.

    Read from the cached synthetic sets (noise and real images are drawn again from their seeds), so it
    shows how well each source matches the statistics the network was trained on, whatever it was made for.
    """
    import torch  # noqa: PLC0415

    from squeeze.devices import model_device  # noqa: PLC0415
    from squeeze.dfq.batchnorm import record_batchnorm  # noqa: PLC0415

    assert runner.load is not None
    values: dict[tuple[str, str], list[float]] = {}
    for cell in {(c.model, c.label, c.seed): c for c in plan}.values():
        zm = runner.load(cell.model)[0]
        made = (runner.synth_folder(cell) / "synthetic.safetensors").is_file()
        if dfq.SOURCES[cell.label][0] is not None and not made:
            continue  # a synthetic set not made yet
        images = runner.calibration(zm, cell)[0]
        with torch.no_grad(), record_batchnorm(zm.model) as rec:
            zm.model(images.to(model_device(zm.model)))
            values.setdefault((cell.model, cell.label), []).append(rec.loss().item())
    return {k: sum(v) / len(v) for k, v in values.items()}


def markdown(rows_by: dict[str, list[dict[str, Any]]], runner: dfq.DfqRunner, command: str, missing: int,
             name: str, plans: dict[str, Plan], distance: dict[tuple[str, str], float]) -> str:
    """The page: per model, one table per backend (sources x settings) and the statistics distances; then
    the comparisons per backend and the contact sheets."""
    rows = [r for rs in rows_by.values() for r in rs]
    models = [m for m in plans if any(r["model"] == m for r in rows)]
    seeds = {m: sorted({r["seed"] for r in rows if r["model"] == m}) for m in models}
    steps = {m: runner.iters(m) for m in models}
    parts = [
        "# Data-free quantization of CNNs: ZeroQ against noise, label inversion and real images", "",
        f"Written by `{command}` (seeds {seeds}; {dfq.N_IMAGES} calibration images per source; backends "
        f"{', '.join(f'`{b}`' for b in rows_by)} with per-channel weights: `rtn` sets each activation range "
        "from the calibration images' min and max, `percentile` from their 0.1 / 99.9 percentiles; synthesis "
        f"steps {steps}; both backends calibrate on the same images). Cells are the model's metric "
        "(resnet-fmnist: top-1 % on the 10,000 Fashion-MNIST test images; efficientnet-lite0: top-1 agreement % "
        "with the float model on 96 photo crops, so one crop is 1.04 points), mean ± std over seeds; "
        "`synthesis s` is the mean time to make the 32 images. `spdfq-no-apa` is the ViT generator with its "
        "attention term off (soft-label cross-entropy, multi-semantic crops, total variation): what a CNN "
        "got before `zeroq`. Method notes: docs/methods/zeroq.md.", "",
        *([f"**{missing} planned cell(s) were not run.**", ""] if missing else [])]
    aggs = {b: aggregate(rs) for b, rs in rows_by.items() if rs}
    for model in models:
        parts += [f"## {model}", ""]
        for backend, agg in aggs.items():
            parts += [f"Backend `{backend}`:", "", dfq.table(agg, rows_by[backend], model, plans[model].settings), ""]
        dist = [{"source": src, "batch norm statistics loss": f"{distance[(model, src)]:.4g}"}
                for src in SOURCES if (model, src) in distance]
        if dist:
            parts += ["How far each source's images are from the statistics the network was trained on (ZeroQ's "
                      "loss over every batch norm layer, per image; mean over seeds; lower is closer):", "",
                      format_table(dist, ["source", "batch norm statistics loss"]), ""]
    parts += ["## ZeroQ against the others", ""]
    for backend, agg in aggs.items():
        parts += [f"Backend `{backend}`:", "", *checks(agg), ""]
    parts += ["Verdicts use the tie rule of every bench here (a difference inside the larger seed std is a tie); "
              "with one seed only the sign is given.", "",
              f"![contact sheets of each generator]({name}.png)", ""]
    return "\n".join(parts)


def run(out: Path, quick: bool = False, device: str = "cpu", cache_dir: Path = Path("runs/bench"),
        cached_only: bool = False, load: Callable[[str], tuple[Any, float | None]] | None = None) -> None:
    """Run (or resume from ``cache_dir``) every cell and write the page; ``cached_only``: from the cache.

    ``load``: substitutes the zoo loader of :class:`squeeze.bench.dfq.DfqRunner` (tests).
    """
    name = "dfq-cnn-quick" if quick else "dfq-cnn"
    plans = QUICK_PLANS if quick else PLANS
    load = load or ZooRunner(device).load  # one loader for both backends: each model is loaded once
    runners = {b: dfq.DfqRunner(cache_dir, device, quick, load=load, backend=b, backend_options={})
               for b in BACKENDS}
    runner = runners[BACKENDS[0]]
    tags = {m: fingerprint(load(m)[0].model) for m in plans}
    rows_by, missing = {}, 0
    for backend, r in runners.items():
        plan = cells(tags, backend, quick)
        rows_by[backend] = run_cells(plan, cache_dir / f"{name}.{backend}.cache.json", r, cached_only=cached_only)
        for row in rows_by[backend]:
            row["ptq"] = backend
        missing += len(plan) - len(rows_by[backend])
    rows = [row for rs in rows_by.values() for row in rs]
    if not rows:
        return
    out.mkdir(parents=True, exist_ok=True)
    command = page_command(COMMAND, out, None, device, cache_dir, cached_only)
    plan = cells(tags, BACKENDS[0], quick)
    write_results(out, name, rows, markdown(rows_by, runner, command, missing, name, plans,
                                            statistics_distance(runner, plan)))
    dfq.sheets_figure(runner, plan, out / f"{name}.png")
    print((out / f"{name}.md").read_text())
