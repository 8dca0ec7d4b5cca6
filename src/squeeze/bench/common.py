"""Shared benchmark machinery: resumable cells, seed aggregation, markdown tables, plots."""
from __future__ import annotations

import json
import math
import os
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    import torch

from squeeze.report import save_figure  # noqa: F401  (re-exported for the suites)
from squeeze.train.checkpoint import fingerprint, write_json  # noqa: F401  (fingerprint: re-exported)


@dataclass(frozen=True)
class Cell:
    """One run of a benchmark: a model, a method with options, bit widths and a seed."""

    model: str
    method: str
    wbits: int
    abits: int
    seed: int
    label: str = ""  # method name as reported (defaults to ``method``)
    options: tuple[tuple[str, Any], ...] = ()
    tag: str = ""  # fingerprint of the model weights, so a retrained checkpoint invalidates cached rows

    @property
    def key(self) -> str:
        key = f"{self.model}@{self.tag}|{self.label or self.method}|w{self.wbits}a{self.abits}|s{self.seed}"
        return key + "|" + ",".join(f"{k}={v}" for k, v in self.options) if self.options else key


def run_cells(cells: list[Cell], cache: Path, run_one: Callable[[Cell], dict[str, Any]],
              cached_only: bool = False) -> list[dict[str, Any]]:
    """Run every cell not already in ``cache`` (a JSON dict key -> row), saving after each one.

    A killed benchmark therefore resumes where it stopped; delete the cache to start afresh.
    A cell that raises is reported and skipped so the others still run; the run then fails with
    one line naming the failed cells (their rows are not cached, so a rerun retries them).
    ``cached_only`` runs nothing and returns the rows of the cells already in the cache.
    """
    from squeeze.errors import SqueezeError  # noqa: PLC0415

    done: dict[str, dict[str, Any]] = json.loads(cache.read_text()) if cache.is_file() else {}
    failed: list[str] = []
    for i, cell in enumerate(cells):
        if cell.key in done or cached_only:
            continue
        print(f"[{i + 1}/{len(cells)}] {cell.key}", flush=True)
        try:
            row = run_one(cell)
        except Exception as exc:  # noqa: BLE001 (reported below; the remaining cells still run)
            print(f"FAILED {cell.key}: {type(exc).__name__}: {exc}", flush=True)
            failed.append(cell.key)
            continue
        row["method"] = cell.label or cell.method
        done[cell.key] = row
        write_json(cache, done)
    if failed:
        raise SqueezeError(f"{len(failed)} benchmark cell(s) failed (first: {failed[0]}); see the log above, "
                           "fix and rerun to resume")
    return [done[c.key] for c in cells if c.key in done]


class ZooRunner:
    """Runs one cell: loads each zoo model once (onto ``device``), measures its float metric once."""

    def __init__(self, device: str = "cpu") -> None:
        self.device = device
        self.models: dict[str, tuple[Any, float | None]] = {}

    def load(self, name: str) -> tuple[Any, float | None]:
        """The zoo model ``name`` (on the runner's device) and its float metric once measured."""
        from squeeze.devices import resolve_device  # noqa: PLC0415
        from squeeze.zoo.registry import load_model  # noqa: PLC0415

        if name not in self.models:
            zm = load_model(name)
            zm.model.to(resolve_device(self.device))
            self.models[name] = (zm, None)
        return self.models[name]

    def __call__(self, cell: Cell) -> dict[str, Any]:
        """Quantize and evaluate one cell (``calib`` defaults to 32 unless the cell's options set it)."""
        from squeeze.config import make_config  # noqa: PLC0415
        from squeeze.runner import quantize_zoo_model  # noqa: PLC0415

        zm, fp = self.load(cell.model)
        if fp is None:
            fp = zm.evaluate(zm.model)
            self.models[cell.model] = (zm, fp)
        fields = {"calib": 32, **dict(cell.options)}
        config = make_config(cell.method, wbits=cell.wbits, abits=cell.abits, seed=cell.seed, **fields)
        _, report = quantize_zoo_model(zm, config, fp=fp)
        row = report.to_dict()
        row["device"] = device_label(self.device)
        return row


def page_command(command: str, out: Path, only: list[str] | None, device: str, cache_dir: Path,
                 cached_only: bool) -> str:
    """The command line that reproduces a results page (only the flags that differ from the defaults)."""
    parts = [command]
    parts += [f"--models {','.join(only)}"] if only else []
    parts += [f"--device {device}"] if device != "cpu" else []
    parts += [f"--cache-dir {cache_dir}"] if Path(cache_dir) != Path("runs/bench") else []
    parts += ["--cached-only"] if cached_only else []
    parts += [f"--out {out}"] if Path(out) != Path("docs/results") else []
    return " ".join(parts)


def weights_line(tags: dict[str, str]) -> str:
    """'Model weight fingerprints: ...', naming a dinov2 backbone read from ``$SQUEEZE_DINOV2_BACKBONE``."""
    weights = ", ".join(f"{m} {t}" for m, t in sorted(tags.items()))
    backbone = os.environ.get("SQUEEZE_DINOV2_BACKBONE")
    source = f" dinov2-s14 backbone read from `$SQUEEZE_DINOV2_BACKBONE` ({Path(backbone).name})." if backbone else ""
    return f"Model weight fingerprints: {weights}.{source}"


def device_label(device: str) -> str:
    """``cpu (N threads)`` or the GPU's name, for the rows' ``device`` field."""
    import torch  # noqa: PLC0415

    if device.startswith("cuda"):
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return f"{device} ({torch.get_num_threads()} threads)"


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation over seeds (std 0 for a single value)."""
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def aggregate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and standard deviation over seeds for each (model, method, wbits, abits)."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["model"], row["method"], row["wbits"], row["abits"]), []).append(row)
    out = []
    for (model, method, wbits, abits), rs in groups.items():
        mean, std = mean_std([r["quant"] for r in rs])
        out.append({"model": model, "method": method, "wbits": wbits, "abits": abits, "n": len(rs),
                    "fp": rs[0]["fp"], "mean": mean, "std": std,
                    "seconds": statistics.mean(r["seconds"] for r in rs),
                    "peak_rss_mb": max(r["peak_rss_mb"] for r in rs)})
    return out


def find_aggregate(agg: list[dict[str, Any]], model: str, method: str, w: int, a: int) -> dict[str, Any] | None:
    """The aggregated result of ``method`` on ``model`` at WwAa, or None."""
    hit = [r for r in agg if (r["model"], r["method"], r["wbits"], r["abits"]) == (model, method, w, a)]
    return hit[0] if hit else None


def diff_se(a: dict[str, Any], b: dict[str, Any]) -> float:
    """Standard error of ``a["mean"] - b["mean"]`` from two aggregated results (independent seeds, Welch form).

    The seed std says how far one run strays; this says how well the mean gap is known, which shrinks as
    seeds are added while the std does not.
    """
    return math.sqrt(a["std"] ** 2 / a["n"] + b["std"] ** 2 / b["n"])


def is_tie(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Two aggregated results tie when their means differ by less than the larger std."""
    return abs(a["mean"] - b["mean"]) < max(a["std"], b["std"])


def order_verdict(better: dict[str, Any], worse: dict[str, Any]) -> str:
    """The claim ``better > worse`` on two aggregated results: ``met``, ``NOT met`` or a tie (:func:`is_tie`)."""
    if is_tie(better, worse):
        return "tie (within one std)"
    return "met" if better["mean"] > worse["mean"] else "NOT met"


def seeds_verdict(better: dict[str, Any], worse: dict[str, Any]) -> str:
    """:func:`order_verdict` when both sides have seeds; with one seed on either side, only the sign."""
    if min(better["n"], worse["n"]) > 1:
        return order_verdict(better, worse)
    sign = "ahead" if better["mean"] > worse["mean"] else ("behind" if better["mean"] < worse["mean"] else "equal")
    return f"one seed: {sign}"


def write_results(out: Path, name: str, rows: list[dict[str, Any]], markdown: str) -> None:
    """Write ``name.json`` (all rows) and ``name.md`` atomically."""
    from squeeze.report import write_suite  # noqa: PLC0415
    from squeeze.train.checkpoint import atomic_write_bytes  # noqa: PLC0415

    write_suite(rows, out / f"{name}.json")
    atomic_write_bytes(out / f"{name}.md", markdown.encode())


def bar_plot(agg: list[dict[str, Any]], path: Path, title: str) -> None:
    """Grouped bars: one panel per model, settings on the x axis, one bar per method (mean +- std)."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    models = sorted({r["model"] for r in agg})
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4), squeeze=False)
    for ax, model in zip(axes[0], models):
        rs = [r for r in agg if r["model"] == model]
        settings = sorted({(r["wbits"], r["abits"]) for r in rs}, reverse=True)
        methods = sorted({r["method"] for r in rs})
        width = 0.8 / len(methods)
        for j, method in enumerate(methods):
            xs, ys, es = [], [], []
            for i, s in enumerate(settings):
                hit = [r for r in rs if r["method"] == method and (r["wbits"], r["abits"]) == s]
                if hit:
                    xs.append(i + j * width)
                    ys.append(hit[0]["mean"])
                    es.append(hit[0]["std"])
            ax.bar(xs, ys, width, yerr=es, label=method, capsize=2)
        ax.axhline(rs[0]["fp"], color="k", linestyle="--", linewidth=1, label="float")
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(settings))], [f"W{w}A{a}" for w, a in settings])
        ax.set_title(model)
        ax.set_ylabel(rs[0].get("metric", "metric"))
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)


def train_parallel(worker: Callable[[tuple[Any, ...]], str], jobs: list[tuple[Any, ...]], workers: int,
                   after: list[int | None] | None = None) -> None:
    """Run ``worker(job + (threads,))`` for every job, ``workers`` at a time in spawned processes, each with
    an equal share of the CPU threads (``worker`` must be a module-level function that sets them).

    A free worker takes the first job in list order whose ``after[i]`` (the index of a job it starts from,
    or None) has finished. The jobs are training runs sharing nothing but such finished files, so this is
    plain process parallelism; each run still resumes from its own folder if killed.
    """
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait  # noqa: PLC0415
    from multiprocessing import get_context  # noqa: PLC0415

    after = after or [None] * len(jobs)
    threads = max(1, (os.cpu_count() or 1) // workers)
    pending, finished, running = list(range(len(jobs))), set(), {}
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        while pending or running:
            ready = [i for i in pending if after[i] is None or after[i] in finished]
            for i in ready[:workers - len(running)]:
                pending.remove(i)
                running[pool.submit(worker, (*jobs[i], threads))] = i
            if not running:
                raise ValueError(f"jobs {pending} wait for jobs that never run; check `after`")
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                finished.add(running.pop(future))
                print(f"finished {future.result()}", flush=True)
