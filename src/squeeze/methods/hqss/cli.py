"""Command-line glue for ``squeeze train hqss`` (wired in ``squeeze.cli``; see docs/methods/hqss.md).

``squeeze train hqss [--method hqss|darken|mask-shadowgan|paired] [--shadow-data sim|FOLDER] [--set KEY=VALUE]``
trains the variant into ``WORKDIR/hqss-VARIANT`` (resumable with ``--resume``) and writes
``model.safetensors``, usable as ``squeeze restore MODEL IN.png OUT.png --mask MASK.png``.
``--method`` is shared with ``squeeze train nm``.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_train_hqss_args(parser: argparse.ArgumentParser) -> None:
    """Options of ``squeeze train hqss`` (added to the ``train`` sub-parser, whose ``--method`` picks the variant)."""
    parser.add_argument("--shadow-data", default="sim", help="hqss: 'sim' (simulated shadows on the offline "
                        "photos) or a folder with shadow/ and mask/ (ISTD train_A/ train_B/ also work)")


def hqss_fields(args: argparse.Namespace, options: dict[str, Any]) -> dict[str, Any]:
    """Config fields from the parsed arguments (``options``: the parsed ``--set`` pairs)."""
    return {"data": getattr(args, "shadow_data", "sim") or "sim", **options}


def cmd_train_hqss(args: argparse.Namespace, options: dict[str, Any]) -> dict[str, Any]:
    """Train one shadow-removal variant into ``WORKDIR/hqss-VARIANT``; returns its summary."""
    from squeeze.methods.hqss.config import make_shadow_config  # noqa: PLC0415
    from squeeze.methods.hqss.run import train_shadow_removal  # noqa: PLC0415

    cfg = make_shadow_config(getattr(args, "method", "") or "hqss", **hqss_fields(args, options))
    workdir = Path(args.workdir) / f"hqss-{cfg.variant}"
    engine = {"devices": args.devices, "nodes": args.nodes, "accelerator": args.accelerator,
              "precision": args.precision}
    return {"workdir": str(workdir), **train_shadow_removal(cfg, workdir, resume=args.resume, options=engine)}
