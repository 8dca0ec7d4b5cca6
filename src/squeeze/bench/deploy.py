"""``squeeze bench deploy``: fp32, bf16, int8 static QDQ, int8 dynamic and int4 weight-only, measured for real.

For each zoo model (``vit-fmnist``, ``resnet-fmnist``, ``dinov2-s14``, ``edsr-x2``; a model missing from
the zoo is skipped with a note) one process builds every variant, then times them *interleaved*
(:func:`squeeze.deploy.latency.interleaved`) at fixed intra-op threads at batch 1 and batch 32, and
evaluates each with the zoo metric. Variants and their runtimes:

* ``fp32`` -- ONNX Runtime, float export (the speed and size reference);
* ``bf16`` -- PyTorch eager in bfloat16: ORT's CPU provider has no bf16 MatMul/Conv kernels (an ONNX
  bf16 graph would run through Cast fallbacks), so the bf16 baseline is torch's native path;
* ``int8-static`` -- an ``rtn`` W8A8 squeeze run exported as U8S8 QDQ with its own scales
  (:func:`squeeze.deploy.onnx_export.export_quantized`), also compared with its fake-quant model;
* ``int8-dynamic`` -- ORT ``quantize_dynamic`` of the fp32 export (Conv becomes ConvInteger);
* ``int4-weight`` -- ORT ``MatMulNBits`` (block 32) of the fp32 export; not applicable to a model with
  no MatMul (convolutional nets), which gets a note instead of a row.

Writes ``deploy.{md,json,png}`` under the output folder. ``quick`` (the test path) uses a few images,
3 timed runs and skips the zoo metric (outputs are still compared with fp32).
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

from squeeze.bench.common import save_figure, write_results
from squeeze.deploy.latency import cpu_info, interleaved, ort_session
from squeeze.deploy.names import compact_file
from squeeze.deploy.onnx_export import (export_float, export_quantized, quantize_int4_weight,
                                        quantize_int8_dynamic)
from squeeze.deploy.plan import plan_export, quantizer_table
from squeeze.deploy.runner import OrtModule, agreement, batched
from squeeze.errors import SqueezeError
from squeeze.report import Report, format_table, peak_rss_mb
from squeeze.zoo.registry import load_model

COMMAND = "squeeze bench deploy"
MODELS = ("vit-fmnist", "resnet-fmnist", "dinov2-s14", "edsr-x2")
METHODS = ("fp32", "bf16", "int8-static", "int8-dynamic", "int4-weight")
BITS = {"fp32": (32, 32), "bf16": (16, 16), "int8-static": (8, 8), "int8-dynamic": (8, 8), "int4-weight": (4, 32)}
TARGETS = ("vit-fmnist", "edsr-x2")  # the int8-static claims
BATCHES = (1, 32)
CALIB, SEED = 32, 0


class Bf16Module(torch.nn.Module):
    """A bfloat16 copy of a float model taking and returning float32 tensors."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.inner = _copy(model).to(torch.bfloat16).eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x.to(torch.bfloat16)).float()


def _copy(model: torch.nn.Module) -> torch.nn.Module:
    import copy  # noqa: PLC0415

    return copy.deepcopy(model)


def bf16_bytes(model: torch.nn.Module) -> int:
    """Size of the bfloat16 safetensors checkpoint of ``model``."""
    from safetensors.torch import save as save_bytes  # noqa: PLC0415

    return len(save_bytes({k: v.to(torch.bfloat16).contiguous() for k, v in model.state_dict().items()
                           if v.is_floating_point()}))


def layer_weights(model: torch.nn.Module) -> int:
    """Number of Linear/Conv weight elements (the denominator of ``bits_per_weight``)."""
    return sum(m.weight.numel() for m in model.modules()
               if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d, torch.nn.ConvTranspose2d)))


def build_variants(zm: Any, work: Path, calib: torch.Tensor) -> tuple[dict[str, Any], dict[str, str], Any]:
    """Every variant of ``zm``: ``name -> (callable module, bytes, facts)``, skip notes, and the W8A8 run."""
    from squeeze.api import quantize  # noqa: PLC0415
    from squeeze.config import make_config  # noqa: PLC0415

    variants: dict[str, Any] = {}
    notes: dict[str, str] = {}
    fp32 = export_float(zm.model, calib[:1], work / "fp32.onnx")
    compact_file(fp32)  # short names like every shipped file, so the size ratios compare weights and graphs
    variants["fp32"] = (fp32, fp32.stat().st_size, {"runtime": "onnxruntime"})
    variants["bf16"] = (Bf16Module(zm.model), bf16_bytes(zm.model), {"runtime": "torch-eager"})
    qmodel = quantize(zm.model, make_config("rtn", wbits=8, abits=8, calib=len(calib), seed=SEED), calib,
                      name=zm.name)
    info = export_quantized(qmodel, calib, work / "int8-static.onnx", plan_export(quantizer_table(qmodel)))
    variants["int8-static"] = (work / "int8-static.onnx", info["bytes"], {"runtime": "onnxruntime", **info})
    dyn = work / "int8-dynamic.onnx"
    variants["int8-dynamic"] = (dyn, 0, {"runtime": "onnxruntime", **quantize_int8_dynamic(fp32, dyn)})
    try:
        facts = quantize_int4_weight(fp32, work / "int4-weight.onnx")
        variants["int4-weight"] = (work / "int4-weight.onnx", 0, {"runtime": "onnxruntime", **facts})
    except SqueezeError as exc:
        notes["int4-weight"] = str(exc)
    return variants, notes, qmodel


def _callables(variants: dict[str, Any], threads: int) -> dict[str, torch.nn.Module]:
    """One model-like callable per variant (ORT sessions opened with ``threads`` intra-op threads)."""
    out = {}
    for name, (target, _, _) in variants.items():
        out[name] = OrtModule(ort_session(target, threads)) if isinstance(target, Path) else target
    return out


def time_variants(models: dict[str, torch.nn.Module], inputs: torch.Tensor, threads: int, runs: int,
                  warmup: int) -> dict[int, dict[str, dict[str, float]]]:
    """Interleaved latency of every variant at each batch size of :data:`BATCHES`."""
    torch.set_num_threads(threads)  # the torch (bf16) variant runs at the same thread count
    found = {}
    for batch in BATCHES:
        x = inputs[:batch].contiguous()

        def call(m: torch.nn.Module) -> Callable[[], Any]:
            return lambda: m(x)

        with torch.no_grad():
            found[batch] = interleaved({n: call(m) for n, m in models.items()}, runs=runs, warmup=warmup,
                                       progress=True)
    return found


def model_rows(zm: Any, threads: int, quick: bool, runs: int) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """All rows of one zoo model (see module docstring)."""
    name = zm.name
    calib = zm.calib_inputs(8 if quick else CALIB, SEED)
    inputs = zm.calib_inputs(max(BATCHES), SEED + 1)
    with tempfile.TemporaryDirectory(prefix="squeeze-deploy-") as work:
        start = time.perf_counter()
        variants, notes, qmodel = build_variants(zm, Path(work), calib)
        build_seconds = time.perf_counter() - start
        variants = {k: (t, b or t.stat().st_size, f) for k, (t, b, f) in variants.items()}
        models = _callables(variants, threads)
        timing = time_variants(models, inputs, threads, runs, warmup=1 if quick else 3)
        reference = batched(models["fp32"], inputs)
        fake = batched(qmodel, inputs)
        fp = None if quick else zm.evaluate(zm.model)
        fq_metric = None if quick else zm.evaluate(qmodel)
        n_weights = layer_weights(zm.model)
        rows = []
        for method, (target, size, facts) in variants.items():
            out = batched(models[method], inputs)
            row = Report(name, method, *BITS[method], len(calib), SEED, zm.metric, fp,
                         None if quick else zm.evaluate(models[method]), build_seconds, peak_rss_mb(),
                         simulated=False, extra={"runtime": facts["runtime"], "threads": threads}).to_dict()
            row.update(bytes=size, size_ratio=size / variants["fp32"][1], bits_per_weight=8 * size / n_weights)
            for b in BATCHES:
                row[f"latency_ms_b{b}"] = timing[b][method]["min_ms"]
                row[f"latency_median_ms_b{b}"] = timing[b][method]["median_ms"]
                row[f"speedup_b{b}"] = timing[b]["fp32"]["min_ms"] / timing[b][method]["min_ms"]
            row["runs"] = timing[BATCHES[-1]][method]["runs"]
            row.update({f"{k}_vs_fp32": v for k, v in agreement(reference, out).items()})
            if method == "int8-static":
                row.update(fakequant=fq_metric, **{f"{k}_vs_fakequant": v for k, v in agreement(fake, out).items()},
                           weight_storage_bits=facts.get("weight_storage_bits"))
            rows.append(row)
    return rows, notes


def checks(rows: list[dict[str, Any]]) -> list[str]:
    """The issue's targets for int8-static on :data:`TARGETS`, one line each."""
    lines = []
    for row in rows:
        if row["method"] != "int8-static" or row["model"] not in TARGETS:
            continue
        tol = 0.2 if row["metric"].startswith("psnr") else 1.0
        agree = row.get("top1_agreement_vs_fakequant")
        items = [("file <= 0.3x fp32", row["size_ratio"] <= 0.3, f"{row['size_ratio']:.3f}")]
        if "speedup_b32" in row:
            items.insert(0, ("speedup at batch 32 >= 1.5x", row["speedup_b32"] >= 1.5, f"{row['speedup_b32']:.2f}x"))
        if row["quant"] is not None and row.get("fakequant") is not None:
            delta = row["quant"] - row["fakequant"]
            items.append((f"metric within {tol} of fake-quant", abs(delta) <= tol, f"{delta:+.2f}"))
        if agree is not None:
            items.append(("top-1 agreement >= 99 %", agree >= 99.0, f"{agree:.1f} %"))
        for what, ok, value in items:
            lines.append(f"- {row['model']} int8-static {what}: {'met' if ok else 'NOT met'} ({value})")
    return lines


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def markdown(rows: list[dict[str, Any]], notes: list[str], cpu: dict[str, Any], threads: int, command: str) -> str:
    """The results page: table, CPU facts, notes and checks."""
    small, big = BATCHES[0], BATCHES[-1]
    columns = ["model", "method", "runtime", "metric", "quant", "bytes", "size_ratio", "bits_per_weight",
               f"latency_ms_b{small}", f"latency_ms_b{big}", f"latency_median_ms_b{big}", f"speedup_b{big}",
               "cosine_vs_fp32"]
    flags = ", ".join(f for f, on in cpu["flags"].items() if on) or "none of " + ", ".join(cpu["flags"])
    parts = [f"# Deployment: real CPU kernels vs fp32\n\nCommand: `{command}` "
             f"(int8-static from an `rtn` W8A8 run, calib {CALIB}, seed {SEED}).\n",
             f"CPU: {cpu['cpu']} ({cpu['logical_cpus']} logical CPUs); ISA flags: {flags}; "
             f"intra-op threads: {threads}. Latency = min (and median) of {rows[0]['runs'] if rows else 0} "
             "interleaved runs after warm-up, batch 1 and 32; speedup = fp32 min / variant min, same run.\n",
             format_table(rows, columns), "",
             "int8-static vs its fake-quant model: " + "; ".join(
                 f"{r['model']}: {r['metric']} {_num(r['quant'])} vs {_num(r['fakequant'])}, cosine "
                 f"{r['cosine_vs_fakequant']:.5f}" + (f", top-1 agreement {r['top1_agreement_vs_fakequant']:.1f} %"
                                                       if "top1_agreement_vs_fakequant" in r else "")
                 for r in rows if r["method"] == "int8-static"), "",
             "bf16 runs in PyTorch eager (ONNX Runtime's CPU provider has no bf16 kernels)"
             + ("" if cpu["flags"]["avx512_bf16"] or cpu["flags"]["amx_bf16"] else
                "; this CPU has no bf16 instructions (avx512_bf16/amx_bf16), so bf16 is emulated and slow here")
             + ". int8-static stores weights in " + ", ".join(sorted({f"{r.get('weight_storage_bits')} bits"
                                                                    for r in rows if r["method"] == "int8-static"}))
             + " (7 on CPUs without VNNI, where MLAS's u8 x s8 int16 pair sums saturate with 8-bit weights). "
             "bits_per_weight = 8 x file bytes / Linear+Conv weight count (everything in the file counted).", ""]
    if notes:
        parts += ["## Notes", *[f"- {n}" for n in notes], ""]
    parts += ["## Checks (issue targets)", *(checks(rows) or ["- no target model in this run"]), ""]
    return "\n".join(parts)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Large-batch latency and file size (relative to fp32) per model and method."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    models = sorted({r["model"] for r in rows})
    fig, axes = plt.subplots(2, len(models), figsize=(4.5 * len(models), 6), squeeze=False)
    for j, model in enumerate(models):
        rs = [r for r in rows if r["model"] == model]
        names = [r["method"] for r in rs]
        axes[0][j].bar(names, [r[f"latency_ms_b{BATCHES[-1]}"] for r in rs], color="tab:blue")
        axes[0][j].set_title(f"{model}: latency, batch {BATCHES[-1]} (ms)")
        axes[1][j].bar(names, [r["size_ratio"] for r in rs], color="tab:orange")
        axes[1][j].set_title("file size / fp32")
        for ax in axes[:, j]:
            ax.tick_params(axis="x", labelrotation=30, labelsize=7)
    fig.tight_layout()
    save_figure(fig, path)


def run(out: Path, quick: bool = False, only: list[str] | None = None, threads: int = 2,
        runs: int | None = None) -> list[dict[str, Any]]:
    """Measure every model of :data:`MODELS` (or ``only``) and write ``deploy.{md,json,png}`` to ``out``."""
    runs = runs or (3 if quick else 20)
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    failed: list[str] = []
    for name in only or MODELS:
        try:
            zm = load_model(name)
        except SqueezeError as exc:
            if only:
                raise
            notes.append(f"{name}: skipped, not available in the zoo ({exc})")
            continue
        try:
            model_rows_, model_notes = model_rows(zm, threads, quick, runs)
        except Exception as exc:  # noqa: BLE001 (reported; the other models still run)
            print(f"FAILED {name}: {type(exc).__name__}: {exc}", flush=True)
            notes.append(f"{name}: FAILED ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})")
            failed.append(name)
            continue
        rows += model_rows_
        notes += [f"{name} {m}: no row ({why})" for m, why in model_notes.items()]
    if not rows:
        raise SqueezeError(f"no model could be measured: {'; '.join(notes)}")
    cpu = cpu_info()
    command = COMMAND + (" --quick" if quick else "") + (f" --models {','.join(only)}" if only else "")
    for row in rows:
        row["cpu"] = cpu
    write_results(Path(out), "deploy", rows, markdown(rows, notes, cpu, threads, command))
    plot(rows, Path(out) / "deploy.png")
    print("\n".join(checks(rows)))
    if failed:
        raise SqueezeError(f"bench deploy: {', '.join(failed)} failed (see the log and the page's notes); "
                           "the other models' results were written")
    return rows


