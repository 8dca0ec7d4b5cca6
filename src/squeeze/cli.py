"""The ``squeeze`` command line. User errors print one ``error:`` line and exit with status 2."""
from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path
from typing import Any, Callable

from squeeze.errors import SqueezeError


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _options(pairs: list[str]) -> dict[str, Any]:
    """``--set key=value`` pairs (values parsed as JSON when possible)."""
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise SqueezeError(f"--set expects key=value, got {pair!r}")
        key, value = pair.split("=", 1)
        out[key.strip()] = _parse_value(value)
    return out


def cmd_zoo(args: argparse.Namespace) -> None:
    """``squeeze zoo list``: the registered models with their descriptions."""
    from squeeze.zoo.registry import list_models

    for name, desc in list_models(args.pattern).items():
        print(f"{name:20s} {desc}")


def _trained_methods() -> dict[str, str]:
    """The methods ``squeeze train NAME`` runs, with their papers and the variants each trains."""
    from squeeze.memory import GRAD_MODES
    from squeeze.methods.hqss.config import list_variants
    from squeeze.methods.multiquant.config import VARIANTS as MQ
    from squeeze.methods.undem.config import VARIANTS as UNDEM
    from squeeze.sparse.config import METHODS as NM

    return {
        "multiquant": "MultiQuant / MBQuant: one network for any activation bit width (baselines: squeeze train "
                      f"{'|'.join(MQ[1:])})",
        "nm": f"N:M sparse training, SpRe (TPAMI'25) and Bi-Mask (ICML'23) among --method {', '.join(NM)}",
        "uio": f"UIO-LLMs (arXiv'24): memory tokens, unbiased incremental TBPTT (--grad-mode {', '.join(GRAD_MODES)})",
        "undem": f"UnDeM (AAAI'24): demoireing from unpaired data via pseudo pairs (--method {', '.join(UNDEM)})",
        "hqss": f"HQSS (arXiv'22): shadow removal from pseudo shadows (--method {', '.join(list_variants())})",
    }


def cmd_methods(_args: argparse.Namespace) -> None:
    """``squeeze methods``: the post-training methods (``squeeze quantize --method``) and the trained ones."""
    from squeeze.config import list_methods

    print("post-training (squeeze quantize MODEL --method NAME):")
    for name, desc in list_methods().items():
        print(f"  {name:12s} {desc}")
    print("trained (squeeze train NAME ...):")
    for name, desc in _trained_methods().items():
        print(f"  {name:12s} {desc}")


# ``squeeze train NAME`` for the methods that own their training glue: module, function(args, options).
_TRAIN_GLUE = {
    "nm": ("squeeze.sparse.cli", "cmd_train_nm"),
    "uio": ("squeeze.memory.cli", "cmd_train_uio"),
    "undem": ("squeeze.methods.undem.cli", "cmd_train_undem"),
    "hqss": ("squeeze.methods.hqss.cli", "cmd_train_hqss"),
}


def cmd_train(args: argparse.Namespace) -> None:
    """``squeeze train``: a zoo recipe, or a training method (multiquant, nm, uio, undem, hqss)."""
    from squeeze.methods.multiquant import VARIANTS
    from squeeze.train.engine import EngineConfig

    if args.model in _TRAIN_GLUE:
        module, fn = _TRAIN_GLUE[args.model]
        print(json.dumps(getattr(importlib.import_module(module), fn)(args, _options(args.set)), indent=2))
        return

    engine = EngineConfig.from_args(args, Path(args.workdir))
    if args.model in VARIANTS:
        from squeeze.methods.multiquant import MultiQuantConfig, train_multiquant

        fields = {"variant": args.model, "model": args.base or "resnet-fmnist", **_options(args.set)}
        if args.bits:
            fields["bits"] = args.bits
        cfg = MultiQuantConfig.from_dict(fields)
        engine.workdir = engine.workdir / f"{cfg.variant}-{cfg.model}"
        result = train_multiquant(cfg, engine)
    else:
        from squeeze.zoo.recipes import train_recipe

        result = train_recipe(args.model, Path(args.workdir), resume=args.resume, engine=engine, epochs=args.epochs,
                              subset=args.subset)
    print(json.dumps(result, indent=2))


def _fmt(value: object) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def cmd_quantize(args: argparse.Namespace) -> None:
    """``squeeze quantize``: post-training quantization of a model, written to ``--out``."""
    from squeeze.config import make_config, read_recipe
    from squeeze.dfq import GENERATORS
    from squeeze.report import format_table
    from squeeze.runner import run_quantize

    flags = {k: v for k in ("wbits", "abits", "calib", "seed") if (v := getattr(args, k)) is not None}
    fields = {**flags, **_options(args.set)}
    method = args.method
    if args.recipe:  # the recipe's fields, then the flags and --set on top
        if args.method or args.data:
            raise SqueezeError("--recipe names the method and its data; drop --method/--data or edit the recipe")
        method, recipe_fields = read_recipe(Path(args.recipe))
        fields = {**recipe_fields, **fields}
    elif not method or args.wbits is None or args.abits is None:
        raise SqueezeError("squeeze quantize needs --method, --wbits and --abits, or --recipe FILE")
    if args.data:  # data-free: synthesize the calibration images; --method names the PTQ backend
        kind, _, generator = args.data.partition(":")
        if kind != "synthetic" or not generator:
            raise SqueezeError(f"--data {args.data!r}: use synthetic:GENERATOR with one of {', '.join(GENERATORS)}")
        fields.update(generator=generator, backend=args.method)
        method = "spdfq"
    config = make_config(method, **fields)
    row = run_quantize(args.model, config, Path(args.out), force=args.force)
    row["delta"] = row["quant"] - row["fp"]
    print(format_table([row], ["model", "method", "wbits", "abits", "calib", "seed", "metric", "fp", "quant",
                               "delta", "seconds", "peak_rss_mb", "size_ratio"]))
    if row.get("method_summary"):  # what the method found and changed, e.g. cle's folds and pairs
        print("method summary: " + ", ".join(f"{k} {_fmt(v)}" for k, v in row["method_summary"].items()))
    print(f"wrote {args.out}/report.json and {args.out}/model.safetensors")
    if "calibration" in row:
        print(f"synthetic calibration images: {args.out}/synthetic.png (reuse: --set synthetic={args.out})")


def cmd_eval(args: argparse.Namespace) -> None:
    """``squeeze eval``: re-measure a saved run (quantized model, MultiQuant or UIO run folder)."""
    from squeeze.memory.task import META
    from squeeze.methods.multiquant.run import RESULT, eval_run
    from squeeze.runner import run_eval

    if (Path(args.dir) / RESULT).is_file():
        print(json.dumps(eval_run(Path(args.dir), args.abits), indent=2))
        return
    if args.abits is not None:
        raise SqueezeError(f"--abits applies to runs of `squeeze train multiquant`; {args.dir} is not one")
    if (Path(args.dir) / META).is_file():  # a run of `squeeze train uio`
        from squeeze.memory.cli import eval_uio

        print(json.dumps(eval_uio(Path(args.dir)), indent=2))
        return
    print(json.dumps(run_eval(Path(args.dir)), indent=2))


def cmd_export(args: argparse.Namespace) -> None:
    """``squeeze export``: write a saved run as an ONNX file."""
    from squeeze.deploy.runner import export_run

    deploy = export_run(Path(args.dir), nearest=args.nearest, int4_weight=args.int4_weight)
    print(json.dumps(deploy, indent=2))
    print(f"wrote {args.dir}/{deploy['file']} ({deploy['kind']}, simulated: {str(deploy['simulated']).lower()})")


def cmd_run(args: argparse.Namespace) -> None:
    """``squeeze run``: evaluate an exported run in ONNX Runtime."""
    from squeeze.deploy.runner import run_artifact

    print(json.dumps(run_artifact(Path(args.dir), threads=args.threads), indent=2))


def cmd_upscale(args: argparse.Namespace) -> None:
    """``squeeze upscale``: super-resolve an image file with an SR model or run."""
    from squeeze.sr_upscale import upscale

    out = upscale(args.model, Path(args.input), Path(args.output), tile=args.tile, overlap=args.overlap,
                  device=args.device)
    print(f"wrote {out}")


def cmd_bench(args: argparse.Namespace) -> None:
    """``squeeze bench SUITE``: run a benchmark and write its docs/results page."""
    from squeeze.bench import run_bench

    only = [m for m in args.models.split(",") if m] if args.models else None
    run_bench(args.suite, Path(args.out), quick=args.quick, only=only, device=args.device,
              cache_dir=Path(args.cache_dir), cached_only=args.cached_only,
              methods=[m for m in args.methods.split(",") if m] or None, workers=args.workers)


def _add_train_parser(sub: argparse._SubParsersAction) -> None:
    from squeeze.memory.cli import add_train_uio_args
    from squeeze.methods.hqss.cli import add_train_hqss_args
    from squeeze.methods.undem.cli import add_train_undem_args
    from squeeze.sparse.cli import add_train_nm_args

    train = sub.add_parser("train", help="reproduce a zoo checkpoint with its recipe, or train a method "
                           "(multiquant, nm, uio, undem, hqss)")
    train.add_argument("model", help="zoo recipe (vit-fmnist, resnet-fmnist, dinov2-s14, edsr-x2, edsr-x4, "
                       "lm-shakespeare); multiquant, any-precision, any-precision-dorefa, multiquant-no-amortization, "
                       "multiquant-no-distill; nm (N:M sparsity); uio (memory-enhanced long context); undem "
                       "(demoireing from unpaired data); or hqss (shadow removal; --method hqss, darken, "
                       "mask-shadowgan or paired)")
    train.add_argument("--workdir", default="runs/train")
    train.add_argument("--resume", action="store_true", help="continue from the last epoch checkpoint")
    train.add_argument("--devices", type=int, default=1, help="processes (CPU) or GPUs per node")
    train.add_argument("--nodes", type=int, default=1, help="machines (set MASTER_ADDR/MASTER_PORT/NODE_RANK)")
    train.add_argument("--accelerator", default="cpu", choices=["auto", "cpu", "gpu"])
    train.add_argument("--precision", default="32-true", choices=["32-true", "bf16-mixed"],
                       help="bf16-mixed: matrix products in bfloat16 (faster on CPUs with AVX512-BF16/AMX and on "
                       "GPUs; results differ slightly from float32)")
    train.add_argument("--model", dest="base", default="", metavar="MODEL",
                       help="multiquant, nm: float zoo model to start from")
    train.add_argument("--bits", default="", help="multiquant: activation bit widths, e.g. 2,3,4,5,6,7,8")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="a field of the method's config (multiquant, nm, uio, undem, hqss), e.g. --set steps=480")
    train.add_argument("--epochs", type=int, default=None, help="zoo recipe: shorter smoke run (no export)")
    train.add_argument("--subset", type=int, default=None, help="zoo recipe: train on this many images (smoke)")
    add_train_nm_args(train)
    add_train_uio_args(train)
    add_train_undem_args(train)
    add_train_hqss_args(train)
    train.set_defaults(fn=cmd_train)


def _add_run_folder_parsers(sub: argparse._SubParsersAction) -> None:
    """quantize, eval, export and run: a post-training run folder from its creation to ONNX Runtime."""
    q = sub.add_parser("quantize", help="post-training quantization of MODEL")
    q.add_argument("model", help="zoo name (squeeze zoo list), timm:NAME@weights.safetensors or an HF folder")
    q.add_argument("--method", default="", help="a name from `squeeze methods` (required without --recipe)")
    q.add_argument("--wbits", type=int, default=None, help="weight bits (required without --recipe)")
    q.add_argument("--abits", type=int, default=None, help="activation bits (required without --recipe)")
    q.add_argument("--calib", type=int, default=None, help="calibration samples (default 32)")
    q.add_argument("--seed", type=int, default=None, help="calibration and method seed (default 0)")
    q.add_argument("--recipe", default="", help="a JSON config document ({method, version, config}) or a run's "
                   "report.json: its fields, with any flags and --set given on top")
    q.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="method option")
    q.add_argument("--data", default="", help="synthetic:spdfq|psaq-vit|psaq-vit-v2|smi|noise (ViTs), "
                   "synthetic:zeroq (CNNs with batch norm): calibrate on synthetic images (no data needed); "
                   "--method then names the PTQ backend (isvit, repq-vit, rtn, gptq, ...)")
    q.add_argument("--out", required=True)
    q.add_argument("--force", action="store_true", help="replace an existing output folder")
    q.set_defaults(fn=cmd_quantize)
    ev = sub.add_parser("eval", help="reload a saved run and re-measure it")
    ev.add_argument("dir")
    ev.add_argument("--abits", type=int, default=None, help="MultiQuant run: evaluate at this bit width only")
    ev.set_defaults(fn=cmd_eval)
    ex = sub.add_parser("export", help="export a saved run to a file a real runtime executes (ONNX Runtime)")
    ex.add_argument("dir", help="a folder written by `squeeze quantize`")
    ex.add_argument("--format", default="onnx", choices=["onnx"])
    ex.add_argument("--nearest", action="store_true", help="a run with no CPU integer kernel (W4A4, log2 softmax, "
                    "...): export the nearest deployable configuration, labelled simulated: true")
    ex.add_argument("--int4-weight", action="store_true", help="4-bit weight-only artifact (ORT MatMulNBits)")
    ex.set_defaults(fn=cmd_export)
    rn = sub.add_parser("run", help="evaluate an exported run in ONNX Runtime; record metric and agreement")
    rn.add_argument("dir", help="a run folder after `squeeze export DIR --format onnx`")
    rn.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0 = its default)")
    rn.set_defaults(fn=cmd_run)


def _add_bench_parser(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser("bench", help="run a benchmark suite and write docs/results")
    bench.add_argument("suite")
    bench.add_argument("--out", default="docs/results")
    bench.add_argument("--quick", action="store_true", help="one seed, fewer cells (smoke run)")
    bench.add_argument("--models", default="", help="comma list: run only these models' cells into the "
                       "resumable cache (staged runs; the full command then writes the results); with "
                       "--cached-only, write results for only these models")
    bench.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (recorded in every row)")
    bench.add_argument("--cache-dir", default="runs/bench", help="where finished cells are kept for resuming")
    bench.add_argument("--methods", default="", help="comma list: run only these methods' cells now (vit-ptq, dfq, sr-ptq)")
    bench.add_argument("--workers", type=int, default=1, help="nm, long-context: train this many runs at once, "
                       "each process with an equal share of the CPU threads (2 on a 2-core machine)")
    bench.add_argument("--cached-only", action="store_true",
                       help="write results from the cells/runs already finished, listing the missing ones")
    bench.set_defaults(fn=cmd_bench)


def build_parser() -> argparse.ArgumentParser:
    """The ``squeeze`` argument parser with every subcommand."""
    from squeeze.analysis.cli import add_sensitivity_parser
    from squeeze.memory.cli import add_generate_parser
    from squeeze.restore.cli import add_restore_parser
    from squeeze.sparse.cli import add_check_nm_parser

    import torch

    from squeeze import __version__

    parser = argparse.ArgumentParser(prog="squeeze", description="Compress PyTorch models and measure them honestly.")
    parser.add_argument("--version", action="version", version=f"squeeze {__version__} (torch {torch.__version__})")
    sub = parser.add_subparsers(dest="command", required=True)
    zoo = sub.add_parser("zoo", help="model zoo")
    zoo.add_argument("action", choices=["list"])
    zoo.add_argument("pattern", nargs="?", default="*")
    zoo.set_defaults(fn=cmd_zoo)
    sub.add_parser("methods", help="list compression methods").set_defaults(fn=cmd_methods)
    _add_train_parser(sub)
    _add_run_folder_parsers(sub)
    add_sensitivity_parser(sub)
    add_check_nm_parser(sub)
    up = sub.add_parser("upscale", help="super-resolve an image with an SR zoo model or a quantized run folder")
    up.add_argument("model", help="edsr-x2, edsr-x4 or a folder written by `squeeze quantize`")
    up.add_argument("input", help="input image (PNG, JPEG, ...)")
    up.add_argument("output", help="output PNG (written atomically)")
    up.add_argument("--tile", type=int, default=128, help="tile size in input pixels (bounds memory)")
    up.add_argument("--overlap", type=int, default=16, help="context pixels around each tile")
    up.add_argument("--device", default="cpu")
    up.set_defaults(fn=cmd_upscale)
    add_restore_parser(sub)
    add_generate_parser(sub)
    _add_bench_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point: run one subcommand; a :class:`SqueezeError` becomes one ``error:`` line and exit 2."""
    args = build_parser().parse_args(argv)
    fn: Callable[[argparse.Namespace], None] = args.fn
    try:
        fn(args)
    except SqueezeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
