"""Command-line glue for ``squeeze restore MODEL IN.png OUT.png [--mask M.png]`` (wired in ``squeeze.cli``)."""
from __future__ import annotations

import argparse
from typing import Any


def add_restore_parser(sub: Any) -> None:
    """Add the ``restore`` sub-command to the top-level sub-parsers ``sub``."""
    rs = sub.add_parser("restore", help="remove moire / shadows from an image with a trained restorer file")
    rs.add_argument("model", help="a restorer .safetensors file (e.g. written by `squeeze train undem`)")
    rs.add_argument("input", help="input image (PNG, JPEG, ...)")
    rs.add_argument("output", help="output PNG (written atomically)")
    rs.add_argument("--mask", default=None, help="mask image, for restorers trained with one (shadow removal)")
    rs.add_argument("--tile", type=int, default=256, help="tile size in pixels (bounds memory)")
    rs.add_argument("--overlap", type=int, default=16, help="context pixels around each tile")
    rs.set_defaults(fn=cmd_restore)


def cmd_restore(args: argparse.Namespace) -> None:
    """Run :func:`squeeze.restore.io.restore_file` and print the output path."""
    from squeeze.restore.io import restore_file  # noqa: PLC0415

    print(restore_file(args.model, args.input, args.output, args.mask, tile=args.tile, overlap=args.overlap))
