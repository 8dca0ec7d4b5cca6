"""``squeeze bench nm``: N:M sparse fine-tuning of ``resnet-fmnist`` with SR-STE, transposable masks,
Bi-Mask (with/without permutation search), SpRe, one-shot magnitude and unstructured magnitude at
2:4, 1:4 and 2:8, against dense fine-tuning with the same schedule.

Every run starts from the committed float checkpoint and trains with the same schedule and seed
(:data:`BENCH_FIELDS`, sized to fit ~80 minutes on 2 CPU cores, see docs/methods/bimask.md), in its
own resumable folder under ``runs/bench/nm/``; a finished run is kept and not trained again.
Writes ``nm.{md,json,png}`` under the output folder.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from squeeze.bench.common import fingerprint, save_figure, train_parallel
from squeeze.report import Report, format_table, peak_rss_mb

COMMAND = "squeeze bench nm"
METHODS = ("dense", "magnitude", "sr-ste", "transposable", "bimask", "bimask-no-perm", "spre", "unstructured")
RATIOS = ((2, 4), (1, 4), (2, 8))
# Budget: 22 runs x 2 epochs x 32,000 images (250 steps of 128 per epoch). CPU cost per step relative to
# dense (measured, 1 thread): magnitude 1.0, sr-ste / transposable / unstructured ~1.05-1.1, bimask ~1.15,
# spre ~2.2 (the extra branch doubles every 3x3 conv) -> ~27 dense-run units x 1.07 epoch-equivalents of
# 60k images = ~29 dense epochs, plus ~2.5 for evaluation (1,000 test images per epoch, all 10,000 at the
# end): ~53 minutes at 100 s per dense epoch on 2 cores, ~63 at 120 s.
BENCH_FIELDS = {"epochs": 2, "subset": 32000, "batch_size": 128, "eval_subset": 1000, "seed": 0}
QUICK_FIELDS = {"epochs": 1, "subset": 64, "batch_size": 32, "eval_subset": 32, "seed": 0}
QUICK_RATIOS = ((2, 4),)
QUICK_TEST_IMAGES = 64


def run_cell(method: str, n: int, m: int, fields: dict[str, Any], folder: Path, accelerator: str,
             test_limit: int | None, splits: tuple[Any, Any]) -> dict[str, Any]:
    """Train (or resume, or reuse) one run in ``folder``; returns its ``nm.json``."""
    from squeeze.sparse.config import make_nm_config  # noqa: PLC0415
    from squeeze.sparse.run import RESULT, train_nm  # noqa: PLC0415
    from squeeze.train.engine import EngineConfig  # noqa: PLC0415
    from squeeze.train.state import CHECKPOINT  # noqa: PLC0415

    if not (folder / RESULT).is_file():
        cfg = make_nm_config(method, n=n, m=m, **fields)
        engine = EngineConfig(folder, resume=(folder / CHECKPOINT).is_file(), accelerator=accelerator)
        train_nm(cfg, engine, test_limit=test_limit, splits=splits)
    return json.loads((folder / RESULT).read_text())


def row_of(s: dict[str, Any]) -> dict[str, Any]:
    """One ``report.json`` row (weights stay float32 under the mask; dense is reported as 1:1)."""
    dense = s["method"] == "dense"
    n, m = (1, 1) if dense else (s["n"], s["m"])
    cfg = s["config"]["config"]
    extra = {"n": n, "m": m, "density": s["density"], "sparsity": {"n": n, "m": m, "density": s["density"]},
             "bwd_nm_coverage": s["bwd_nm_coverage"], "bwd_kept": s["bwd_kept"],
             "fwd_flop_saving": s["fwd_flop_saving"], "bwd_flop_saving": s["bwd_flop_saving"],
             "nm_forward": s["nm_forward"], "file_bytes": s["file_bytes"], "dense_bytes": s["dense_bytes"],
             "check_nm_failures": s["check_nm"], "train_images": cfg["epochs"] * cfg["subset"],
             "test_images": s["test_images"], "config": s["config"], "float_weights": s["float_weights"],
             "sparse_layers": s["sparse_layers"]}
    return Report(s["model"], s["method"], 32, 32, 0, cfg["seed"], "top1", s["float_top1"], s["top1"],
                  s["train_seconds"], peak_rss_mb(), simulated=True, extra=extra).to_dict()


def _acc(rows: list[dict[str, Any]], method: str, n: int, m: int) -> float | None:
    hit = [r["quant"] for r in rows if r["method"] == method and (method == "dense" or (r["n"], r["m"]) == (n, m))]
    return hit[0] if hit else None


def checks(rows: list[dict[str, Any]]) -> list[str]:
    """The issue's claims, stated against the measured numbers."""
    lines, dense = [], _acc(rows, "dense", 1, 1)
    if dense is not None:
        for method in ("sr-ste", "bimask", "spre"):
            got = _acc(rows, method, 2, 4)
            if got is not None:
                lines.append(f"- 2:4 {method} {got:.2f} vs dense {dense:.2f} (within 1 point): "
                             f"{'met' if dense - got <= 1.0 else 'NOT met'}")
    for n, m in ((1, 4), (2, 8)):
        a, b = _acc(rows, "spre", n, m), _acc(rows, "sr-ste", n, m)
        if a is not None and b is not None:
            lines.append(f"- {n}:{m} spre {a:.2f} vs sr-ste {b:.2f} (spre at or above): "
                         f"{'met' if a >= b else 'NOT met'}")
    a, b = _acc(rows, "bimask", 2, 4), _acc(rows, "transposable", 2, 4)
    if a is not None and b is not None:
        lines.append(f"- 2:4 bimask {a:.2f} vs transposable {b:.2f} (bimask at or above): "
                     f"{'met' if a >= b else 'NOT met'}")
    for r in rows:
        if r["file_bytes"] and (r["n"], r["m"]) == (2, 4):
            ratio = r["file_bytes"] / r["dense_bytes"]
            lines.append(f"- 2:4 {r['method']} file {ratio:.2f}x of dense (<= 0.6): "
                         f"{'met' if ratio <= 0.6 else 'NOT met'}; "
                         f"check-nm {'passes' if not r['check_nm_failures'] else 'FAILS'}")
    return lines


def budget_line(rows: list[dict[str, Any]], missing: list[str] | None) -> str:
    """Summed training time of the runs, and the wall time with two at a time on 2 cores (``--workers 2``).

    Assumes each run's seconds were measured as the bench runs them on a 2-core machine with
    ``--workers 2`` (one thread per run, the other core busy with another run). Two workers taking the
    next run as one frees finish within ``sum / 2 + longest / 2`` (Graham's list-scheduling bound).
    """
    seconds = [r["seconds"] for r in rows]
    total, bound = sum(seconds) / 60, (sum(seconds) + max(seconds)) / 2 / 60
    verdict = "incomplete (runs missing)" if missing else ("met" if bound < 90 else "NOT met")
    return (f"- training: {len(rows)} runs, {total:.0f} min summed; if each was timed at one thread with the "
            "other core busy (as `--workers 2` runs them), two at a time on 2 cores take at most "
            f"{bound:.0f} min of wall time (target < 90): {verdict}")


def markdown(rows: list[dict[str, Any]], fields: dict[str, Any], name: str, command: str = COMMAND,
             missing: list[str] | None = None) -> str:
    """The results page: accuracy per method and N:M pattern, checks, training times."""
    dense = _acc(rows, "dense", 1, 1)
    table = []
    for r in rows:
        table.append({"method": r["method"], "N:M": f"{r['n']}:{r['m']}", "top1": r["quant"],
                      "vs dense": r["quant"] - dense if dense is not None else "", "density": r["density"],
                      "bwd N:M cov": r["bwd_nm_coverage"], "bwd kept": r["bwd_kept"],
                      "fwd save": r["fwd_flop_saving"], "bwd save": r["bwd_flop_saving"],
                      "file/dense": r["file_bytes"] / r["dense_bytes"] if r["file_bytes"] else "-",
                      "train s": r["seconds"]})
    cols = ["method", "N:M", "top1", "vs dense", "density", "bwd N:M cov", "bwd kept", "fwd save", "bwd save",
            "file/dense", "train s"]
    return "\n".join([
        "# N:M sparsity: SR-STE, transposable masks, Bi-Mask, SpRe", "",
        f"Written by `{command}`. Model `resnet-fmnist` (float top-1 {rows[0]['fp']:.2f} %), Fashion-MNIST test "
        f"top-1 % on {rows[0]['test_images']} test images. Every run fine-tunes the committed float checkpoint with "
        f"the same schedule and seed: {fields['epochs']} epochs of {fields['subset']} random training images, batch "
        f"{fields['batch_size']}, SGD (Nesterov 0.9) lr 0.01 cosine, weight decay 5e-4, seed {fields['seed']}; the "
        "stem conv and the classifier stay dense (`dense` is the same fine-tune without masks, shown as 1:1). "
        "`magnitude` is one-shot magnitude N:M from the float weights, frozen, then the same fine-tune (ASP). "
        "`density`: kept fraction of the sparse layers' weights. `bwd N:M cov`: fraction of the input-gradient "
        "weight's groups along output channels that are N:M (1.0 = the backward matmul can use N:M kernels). "
        "`bwd kept`: forward-kept weights also used by the input gradient. `fwd/bwd save`: theoretical fraction of "
        "conv/linear MACs saved in the forward / backward (input + weight gradient) pass. `file/dense`: compact "
        "N:M file vs float32 safetensors. All rows are simulated (masked float weights, dense kernels). "
        "Methods and deviations: docs/methods/bimask.md, docs/methods/spre.md.", "",
        *([f"**Not run yet** ({len(missing)} planned runs): {', '.join(missing)}.", ""] if missing else []),
        format_table(table, cols), "", "## Checks against the issue", "", *checks(rows),
        budget_line(rows, missing), "",
        f"![top-1 per method and N:M]({name}.png)", ""])


def bar_plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Top-1 per method, one group of bars per N:M ratio, dense as a dashed line."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    ratios = sorted({(r["n"], r["m"]) for r in rows if r["method"] != "dense"}, key=lambda t: -t[0] / t[1])
    methods = [mth for mth in METHODS if mth != "dense" and any(r["method"] == mth for r in rows)]
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / max(1, len(methods))
    for j, method in enumerate(methods):
        pts = [(i + j * width, _acc(rows, method, n, m)) for i, (n, m) in enumerate(ratios)]
        pts = [(x, y) for x, y in pts if y is not None]
        if pts:
            ax.bar(*zip(*pts), width, label=method)
    dense = _acc(rows, "dense", 1, 1)
    if dense is not None:
        ax.axhline(dense, color="k", linestyle="--", linewidth=1, label="dense fine-tune")
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(ratios))], [f"{n}:{m}" for n, m in ratios])
    values = [r["quant"] for r in rows]
    ax.set_ylim(max(0.0, min(values) - 2), min(100.0, max(values) + 1))
    ax.set_ylabel("top-1 (%)")
    ax.set_title("N:M sparse fine-tuning of resnet-fmnist")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    save_figure(fig, path)


def run_folder(cache_dir: Path, name: str, tag: str, fields: dict[str, Any], method: str, n: int, m: int) -> Path:
    """A run's resumable folder: its method, pattern, the float weights' tag and a hash of its schedule."""
    schedule = hashlib.sha1(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:6]
    return Path(cache_dir) / name / f"{method}-{n}of{m}-{tag}-{schedule}"


def train_in_worker(args: tuple[Any, ...]) -> str:
    """One run in a worker process with ``threads`` torch threads (its own copy of the data)."""
    import torch  # noqa: PLC0415

    from squeeze.data.fashion_mnist import load_fashion_mnist  # noqa: PLC0415

    method, n, m, fields, folder, accelerator, test_limit, threads = args
    torch.set_num_threads(threads)
    run_cell(method, n, m, fields, folder, accelerator, test_limit,
             (load_fashion_mnist("train"), load_fashion_mnist("test")))
    return f"{method} {n}:{m}"


def plan(ratios: tuple[tuple[int, int], ...], only: list[str] | None = None) -> list[tuple[str, int, int]]:
    """Every (method, n, m) run, those the issue's claims compare first (so a staged run answers them first)."""
    cells = [(method, n, m) for method in only or METHODS for n, m in (ratios[:1] if method == "dense" else ratios)]
    claims = [("dense", *ratios[0])] + [(meth, *ratios[0]) for meth in ("sr-ste", "bimask", "spre", "transposable")]
    claims += [(meth, n, m) for n, m in ratios[1:] for meth in ("sr-ste", "spre")]
    return sorted(cells, key=lambda c: claims.index(c) if c in claims else len(claims))


def run(out: Path, quick: bool = False, only: list[str] | None = None, device: str = "cpu",
        cache_dir: Path = Path("runs/bench"), cached_only: bool = False, workers: int = 1) -> None:
    """Train every (method, N:M) run and write the results.

    ``only``: these methods, into the cache only; ``cached_only``: write the page from the finished runs
    (with ``only``: of those methods), listing the planned runs that have not finished; ``workers``:
    train that many runs at once (CPU), each with an equal share of the threads.
    """
    from squeeze.data.fashion_mnist import load_fashion_mnist  # noqa: PLC0415
    from squeeze.errors import SqueezeError  # noqa: PLC0415
    from squeeze.report import write_suite  # noqa: PLC0415
    from squeeze.sparse.run import RESULT  # noqa: PLC0415
    from squeeze.sparse.task import load_float  # noqa: PLC0415
    from squeeze.train.checkpoint import atomic_write_bytes  # noqa: PLC0415

    fields, ratios = (QUICK_FIELDS, QUICK_RATIOS) if quick else (BENCH_FIELDS, RATIOS)
    name = "nm-quick" if quick else "nm"
    unknown = sorted(set(only or []) - set(METHODS))
    if unknown:
        raise SqueezeError(f"--models {unknown}: this suite's methods are {', '.join(METHODS)}")
    tag = fingerprint(load_float("resnet-fmnist")[0])
    accelerator = "gpu" if device.startswith("cuda") else "cpu"
    splits = (load_fashion_mnist("train"), load_fashion_mnist("test"))
    test_limit = QUICK_TEST_IMAGES if quick else None
    folders = {c: run_folder(cache_dir, name, tag, fields, *c) for c in plan(ratios, only)}
    todo = [(*c, fields, f, accelerator, test_limit) for c, f in folders.items() if not (f / RESULT).is_file()]
    if workers > 1 and not cached_only and todo:
        train_parallel(train_in_worker, todo, workers)
    rows, missing = [], []
    for (method, n, m), folder in folders.items():
        if cached_only and not (folder / RESULT).is_file():
            missing.append(f"{method} {n}:{m}")
            continue
        summary = run_cell(method, n, m, fields, folder, accelerator, test_limit, splits)
        rows.append(row_of(summary))
    if (only and not cached_only) or not rows:
        return
    rows.sort(key=lambda r: (METHODS.index(r["method"]), -r["n"] / r["m"], r["m"]))  # table order
    command = COMMAND + (f" --models {','.join(only)}" if only else "") + (" --cached-only" if cached_only else "")
    write_suite(rows, out / f"{name}.json")
    atomic_write_bytes(out / f"{name}.md", markdown(rows, fields, name, command, missing).encode())
    bar_plot(rows, out / f"{name}.png")
    print((out / f"{name}.md").read_text())
