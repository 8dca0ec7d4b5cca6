"""Command-line glue for ``squeeze train nm`` and ``squeeze check-nm FILE`` (wired in ``squeeze.cli``)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from squeeze.errors import SqueezeError


def add_train_nm_args(parser: argparse.ArgumentParser) -> None:
    """Options of ``squeeze train nm`` (added to the ``train`` sub-parser; ``--model`` is shared with
    multiquant and arrives as ``args.base``)."""
    parser.add_argument("--method", default="", help="nm: dense, magnitude, sr-ste, transposable, bimask, "
                        "bimask-no-perm, spre, unstructured")
    parser.add_argument("--n", type=int, default=2, help="nm: keep N of every M weights along the input dim")
    parser.add_argument("--m", type=int, default=4, help="nm: group size M")


def nm_fields(args: argparse.Namespace, options: dict[str, Any]) -> dict[str, Any]:
    """Config fields from the parsed arguments (``options``: the parsed ``--set`` pairs)."""
    fields = {"model": args.base or "resnet-fmnist", "n": args.n, "m": args.m, **options}
    if isinstance(fields.get("dense"), str):
        fields["dense"] = [p for p in fields["dense"].split(",") if p]
    return fields


def cmd_train_nm(args: argparse.Namespace, options: dict[str, Any]) -> dict[str, Any]:
    """Train one N:M run into ``WORKDIR/nm-METHOD-NofM-MODEL`` (resumable); returns the summary."""
    from squeeze.sparse.config import make_nm_config  # noqa: PLC0415
    from squeeze.sparse.run import train_nm  # noqa: PLC0415
    from squeeze.train.engine import EngineConfig  # noqa: PLC0415

    if not args.method:
        raise SqueezeError("squeeze train nm needs --method (e.g. --method spre --n 2 --m 4)")
    cfg = make_nm_config(args.method, **nm_fields(args, options))
    workdir = Path(args.workdir) / f"nm-{cfg.method}-{cfg.n}of{cfg.m}-{cfg.model}"
    engine = EngineConfig.from_args(args, workdir)
    return train_nm(cfg, engine)


def add_check_nm_parser(sub: Any) -> None:
    """Register ``squeeze check-nm FILE`` on the top-level sub-parsers."""
    check = sub.add_parser("check-nm", help="verify every sparse layer of an N:M file is exactly N:M")
    check.add_argument("file", help="model.nm.safetensors (or its run folder)")
    check.set_defaults(fn=cmd_check_nm)


def cmd_check_nm(args: argparse.Namespace) -> None:
    """Print one line per layer; raise (exit status 2) naming the first offending layer."""
    from squeeze.sparse.export import nm_violations, read_nm  # noqa: PLC0415

    header, _ = read_nm(args.file)
    bad = nm_violations(args.file)
    for name in header["layers"]:
        print(f"{name:32s} {'FAIL: ' + bad[name] if name in bad else 'ok'}")
    if bad:
        first = sorted(bad)[0]
        raise SqueezeError(f"{len(bad)} layer(s) are not {header['n']}:{header['m']}, first {first} ({bad[first]})")
    print(json.dumps({"file": str(args.file), "n": header["n"], "m": header["m"], "layers": len(header["layers"]),
                      "ok": True}))
