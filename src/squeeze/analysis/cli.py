"""Command-line glue for ``squeeze sensitivity RUN`` (wired in ``squeeze.cli``)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def cmd_sensitivity(args: argparse.Namespace) -> None:
    """Run the per-layer analysis, print the layers worth keeping in float and where the files went."""
    from squeeze.analysis.run import run_sensitivity  # noqa: PLC0415
    from squeeze.analysis.sensitivity import ranked  # noqa: PLC0415
    from squeeze.report import format_table  # noqa: PLC0415

    out = Path(args.out) if args.out else Path(args.dir)
    result = run_sensitivity(Path(args.dir), out, top=args.top, alone=args.alone, target=args.target,
                             max_layers=args.max_layers)
    print(f"{result['model']}: {result['metric']} {result['quant']:.2f} quantized, {result['float']:.2f} float")
    columns = ["layer", "without", "recovered"] + (["alone", "cost"] if args.alone else [])
    print(format_table(ranked(result["layers"])[: max(args.top, 5)], columns))
    if result["suggested_overrides"]:
        print(f"keep them wider: --set 'overrides={json.dumps(result['suggested_overrides'])}'")
    search = result.get("search")
    if search:
        for t in search["tries"]:
            print(f"{t['layers']} layer(s) wider: {result['metric']} {t['quant']:.2f}")
        if search["reached"]:
            print(f"target {args.target} reached: --set 'overrides={json.dumps(search['tries'][-1]['overrides'])}'")
        else:
            print(f"target {args.target} not reached with up to {len(search['tries'])} layer(s) wider")
    print(f"wrote {out}/sensitivity.json, sensitivity.md and sensitivity.png")


def add_sensitivity_parser(sub: argparse._SubParsersAction) -> None:
    """``squeeze sensitivity RUN [--top K] [--alone] [--target T [--max-layers N]] [--out DIR]``."""
    p = sub.add_parser("sensitivity", help="which quantized layers of a saved run cost the most accuracy "
                       "(one evaluation per layer)")
    p.add_argument("dir", help="a folder written by `squeeze quantize`")
    p.add_argument("--top", type=int, default=3, help="suggest overrides for this many layers (default 3)")
    p.add_argument("--alone", action="store_true", help="also measure each layer quantized alone "
                   "(a second evaluation per layer)")
    p.add_argument("--target", type=float, default=None, help="then quantize again with the 1, 2, ... most "
                   "sensitive layers at 8 bits until the metric reaches this value (one run each)")
    p.add_argument("--max-layers", type=int, default=8, help="with --target: try at most this many layers wider")
    p.add_argument("--out", default="", help="where to write sensitivity.{json,md,png} (default: the run folder)")
    p.set_defaults(fn=cmd_sensitivity)
