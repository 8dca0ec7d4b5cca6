"""Command-line glue for ``squeeze train undem`` (wired in ``squeeze.cli``; see docs/methods/undem.md).

Without folders it trains on the simulated unpaired pools the benchmark uses; with ``--moire DIR --clean
DIR`` on the user's unpaired photos. The result is ``WORKDIR/undem-VARIANT/model.safetensors``, which
``squeeze restore`` applies to a photo.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_train_undem_args(parser: argparse.ArgumentParser) -> None:
    """Options of ``squeeze train undem`` (added to the ``train`` sub-parser)."""
    parser.add_argument("--variant", default="undem", help="undem: undem, undem-no-group, undem-no-filter, "
                        "cyclegan, overlay or paired")
    parser.add_argument("--moire", default="", help="undem: folder of moire photos (default: simulated captures)")
    parser.add_argument("--clean", default="", help="undem: folder of unrelated clean photos (with --moire)")


def cmd_train_undem(args: argparse.Namespace, options: dict[str, Any]) -> dict[str, Any]:
    """Train one variant (resumable: finished generators and models are reused); returns its summary.

    ``options``: the parsed ``--set key=value`` pairs (UnDeMConfig fields, e.g. ``gen_steps=400``).
    """
    from squeeze.errors import SqueezeError  # noqa: PLC0415
    from squeeze.methods.undem.config import make_undem_config  # noqa: PLC0415
    from squeeze.methods.undem.data import folder_data, simulated_data  # noqa: PLC0415
    from squeeze.methods.undem.pipeline import train_undem  # noqa: PLC0415

    if getattr(args, "devices", 1) > 1 or getattr(args, "nodes", 1) > 1:
        raise SqueezeError("squeeze train undem runs on one process; drop --devices/--nodes")
    if getattr(args, "precision", "32-true") != "32-true":
        raise SqueezeError("squeeze train undem trains in float32 only; drop --precision")
    cfg = make_undem_config(args.variant, **options)
    if bool(args.moire) != bool(args.clean):
        raise SqueezeError("pass both --moire DIR and --clean DIR (or neither, for simulated data)")
    if args.moire:
        if cfg.variant == "paired":
            raise SqueezeError("the paired variant needs moire/clean pairs; it runs on simulated data only")
        data = folder_data(args.moire, args.clean, cfg.tile)
    else:
        data = simulated_data(96, 96, 12, 176, seed=cfg.seed)
    workdir = Path(args.workdir) / f"undem-{cfg.variant}"
    _, summary = train_undem(cfg, data, workdir)
    return {"workdir": str(workdir), "model": str(workdir / "model.safetensors"), **summary}
