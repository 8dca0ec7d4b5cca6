"""``squeeze bench nm-seeds``: more seeds for the N:M runs that the papers' claims compare.

SpRe (TPAMI'25) claims to improve the N:M method it is added to (SR-STE); Bi-Mask (ICML'23) claims to beat
transposable masks. On ``resnet-fmnist`` those gaps are a few tenths of a point on one seed
(docs/results/nm.md), inside the run-to-run spread, so this suite trains the compared cells again with
seeds 1 and 2 on the ``nm`` bench's schedule (:data:`squeeze.bench.nm.BENCH_FIELDS`, only the seed
changes) and puts them next to that bench's seed-0 rows, read from its results file. Each run has its own
resumable folder beside the ``nm`` bench's; writes ``nm-seeds.{md,json,png}``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from squeeze.bench.common import diff_se, fingerprint, mean_std, save_figure, seeds_verdict, train_parallel
from squeeze.bench.nm import BENCH_FIELDS, row_of, run_cell, run_folder, train_in_worker
from squeeze.errors import SqueezeError
from squeeze.report import format_table, write_suite

COMMAND = "squeeze bench nm-seeds"
SEEDS = (1, 2)
TEST_LIMIT: int | None = None  # evaluate on every test image (a test shortens it)
# (method, its baseline, N, M): the comparisons of the two papers' claims, longest runs (SpRe) first
COMPARISONS = (("spre", "sr-ste", 2, 8), ("spre", "sr-ste", 1, 4),
               ("bimask", "transposable", 2, 4), ("bimask", "transposable", 1, 4))


def compared() -> list[tuple[str, int, int]]:
    """Every (method, n, m) the comparisons name, in their order, each method before its baseline."""
    return [(meth, n, m) for a, b, n, m in COMPARISONS for meth in (a, b)]


def cells() -> list[tuple[str, int, int, int]]:
    """Every (method, n, m, seed) run, seed by seed so a partial run has whole seeds to show."""
    return [(meth, n, m, seed) for seed in SEEDS for meth, n, m in compared()]


def seed_zero_rows(path: Path) -> list[dict[str, Any]]:
    """The ``nm`` bench's rows for the compared cells (its seed 0), from its results file."""
    try:
        rows = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SqueezeError(f"cannot read the nm bench's results {path}: {exc}; run `squeeze bench nm` first") from exc
    wanted = set(compared())
    return [r for r in rows if isinstance(r, dict) and (r.get("method"), r.get("n"), r.get("m")) in wanted]


def _side(rows: list[dict[str, Any]], method: str, n: int, m: int) -> dict[str, Any] | None:
    """Mean ± std of top-1 over the seeds of one (method, n, m), or None without rows."""
    values = [r["quant"] for r in rows if (r["method"], r["n"], r["m"]) == (method, n, m)]
    if not values:
        return None
    mean, std = mean_std(values)
    return {"method": method, "mean": mean, "std": std, "n": len(values)}


def compare(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per comparison: each side's mean ± std over the seeds present, the gap, its standard error, a verdict."""
    out = []
    for method, baseline, n, m in COMPARISONS:
        a, b = _side(rows, method, n, m), _side(rows, baseline, n, m)
        if a is None or b is None:
            continue
        out.append({"pattern": f"{n}:{m}", "ours": a, "baseline": b, "gap": a["mean"] - b["mean"],
                    "gap_se": diff_se(a, b), "verdict": seeds_verdict(a, b)})
    return out


def markdown(rows: list[dict[str, Any]], command: str, missing: list[str]) -> str:
    """The page: each comparison over seeds, then one line per run."""
    order = compared()
    table = [{"method": r["method"], "N:M": f"{r['n']}:{r['m']}", "seed": r["seed"], "top1": r["quant"],
              "train s": r["seconds"]}
             for r in sorted(rows, key=lambda r: (order.index((r["method"], r["n"], r["m"])), r["seed"]))]
    trained = [r["seconds"] for r in rows if r["seed"] in SEEDS]
    comparisons = []
    for c in compare(rows):
        a, b = c["ours"], c["baseline"]
        comparisons.append({"N:M": c["pattern"], "method": f"{a['method']} ({a['n']})", "top1": a["mean"],
                            "std": a["std"], "baseline": f"{b['method']} ({b['n']})", "baseline top1": b["mean"],
                            "baseline std": b["std"], "gap": c["gap"], "gap se": c["gap_se"],
                            "method above baseline": c["verdict"]})
    fields = BENCH_FIELDS
    return "\n".join([
        "# N:M sparsity over seeds: the runs the papers' claims compare", "",
        f"Written by `{command}`. Seeds {', '.join(map(str, SEEDS))} are trained by this command on the `nm` "
        f"bench's schedule ({fields['epochs']} epochs of {fields['subset']} random training images from the "
        f"committed `resnet-fmnist`, batch {fields['batch_size']}, only the seed changes); the seed-0 rows are that "
        "bench's own (`squeeze bench nm`, read from docs/results/nm.json). Top-1 % on "
        f"{rows[-1]['test_images']} Fashion-MNIST test images. The claims: SpRe (TPAMI'25) improves the N:M "
        "method it is added to (SR-STE); Bi-Mask (ICML'23) beats transposable masks. Verdict: met when the mean "
        "gap exceeds the larger seed std, a tie when it does not (the rule of every bench here); gap se: the "
        "standard error of the mean gap.", "",
        *([f"**Not run yet** ({len(missing)} planned runs): {', '.join(missing)}.", ""] if missing else []),
        "## Over seeds", "",
        format_table(comparisons, list(comparisons[0]) if comparisons else ["N:M"]), "",
        "## Every run", "", format_table(table, ["method", "N:M", "seed", "top1", "train s"]), "",
        f"Training of this command's {len(trained)} runs: {sum(trained) / 60:.0f} min summed; `--workers 2` trains "
        "two at a time, one thread each (a run's seconds depend on what else the machine ran meanwhile).", "",
        "![top-1 per seed](nm-seeds.png)", ""])


def dot_plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Each run's top-1 as a dot, one column per (method, N:M), the seeds' mean as a bar."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(8, 4))
    labels = []
    for i, (method, baseline, n, m) in enumerate(COMPARISONS):
        for j, meth in enumerate((method, baseline)):
            x = 2.5 * i + j
            values = [r["quant"] for r in rows if (r["method"], r["n"], r["m"]) == (meth, n, m)]
            if values:
                ax.bar(x, mean_std(values)[0], 0.8, color="C0" if j == 0 else "C1", alpha=0.4)
                ax.plot([x] * len(values), values, "k.")
            labels.append((x, f"{meth}\n{n}:{m}"))
    ax.set_xticks(*zip(*labels))
    ax.tick_params(axis="x", labelsize=7)
    values = [r["quant"] for r in rows]
    ax.set_ylim(min(values) - 0.5, max(values) + 0.5)
    ax.set_ylabel("top-1 (%)")
    ax.set_title("resnet-fmnist N:M fine-tuning: each seed (dots) and their mean (bars)")
    fig.tight_layout()
    save_figure(fig, path)


def run(out: Path, quick: bool = False, cache_dir: Path = Path("runs/bench"), cached_only: bool = False,
        workers: int = 1) -> None:
    """Train seeds 1 and 2 of the compared cells (resumable, ``workers`` at a time) and write the page.

    ``cached_only``: write it from the runs already finished, listing the others.
    """
    from squeeze.data.fashion_mnist import load_fashion_mnist  # noqa: PLC0415
    from squeeze.sparse.run import RESULT  # noqa: PLC0415
    from squeeze.sparse.task import load_float  # noqa: PLC0415
    from squeeze.train.checkpoint import atomic_write_bytes  # noqa: PLC0415

    if quick:
        raise SqueezeError("nm-seeds has no quick version; `squeeze bench nm --quick` smoke-tests the same runs")
    zero = seed_zero_rows(out / "nm.json")
    tag = fingerprint(load_float("resnet-fmnist")[0])
    # seed 0's folder would be the nm bench's own: the same name, fields and tag
    folders = {(meth, n, m, seed): run_folder(cache_dir, "nm", tag, {**BENCH_FIELDS, "seed": seed}, meth, n, m)
               for meth, n, m, seed in cells()}
    todo = [(meth, n, m, {**BENCH_FIELDS, "seed": seed}, f, "cpu", TEST_LIMIT)
            for (meth, n, m, seed), f in folders.items() if not (f / RESULT).is_file()]
    if workers > 1 and not cached_only and todo:
        train_parallel(train_in_worker, todo, workers)
    splits = (load_fashion_mnist("train"), load_fashion_mnist("test"))
    rows, missing = list(zero), []
    for (meth, n, m, seed), folder in folders.items():
        if cached_only and not (folder / RESULT).is_file():
            missing.append(f"{meth} {n}:{m} seed {seed}")
            continue
        fields = {**BENCH_FIELDS, "seed": seed}
        rows.append(row_of(run_cell(meth, n, m, fields, folder, "cpu", TEST_LIMIT, splits)))
    command = COMMAND + (" --cached-only" if cached_only else "")
    write_suite(rows, out / "nm-seeds.json")
    atomic_write_bytes(out / "nm-seeds.md", markdown(rows, command, missing).encode())
    dot_plot(rows, out / "nm-seeds.png")
    print((out / "nm-seeds.md").read_text())
