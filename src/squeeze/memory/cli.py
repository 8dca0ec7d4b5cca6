"""Command-line glue for ``squeeze train uio`` (wired in ``squeeze.cli``; see docs/methods/uio.md)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_train_uio_args(parser: argparse.ArgumentParser) -> None:
    """Options of ``squeeze train uio`` (added to the ``train`` sub-parser; ``--base`` shares ``args.base``
    with ``--model``)."""
    parser.add_argument("--base", dest="base", default="", help="uio: base LM (zoo name lm-shakespeare or a HF Llama folder)")
    parser.add_argument("--segment", type=int, default=64, help="uio: tokens per segment")
    parser.add_argument("--memory", type=int, default=8, help="uio: memory tokens per segment")
    parser.add_argument("--grad-mode", default="uio", help="uio: uio, uio-biased, full-bptt or detached")
    parser.add_argument("--keep", type=int, default=2, help="uio: encoder graphs kept alive (K)")


def uio_fields(args: argparse.Namespace, options: dict[str, Any]) -> dict[str, Any]:
    """Config fields from the parsed arguments (``options``: the parsed ``--set`` pairs)."""
    return {"base": getattr(args, "base", "") or "lm-shakespeare", "segment": args.segment, "memory": args.memory,
            "grad_mode": args.grad_mode, "keep": args.keep, **options}


def cmd_train_uio(args: argparse.Namespace, options: dict[str, Any]) -> dict[str, Any]:
    """Train one UIO run into ``WORKDIR/uio-MODE-LxM`` (resumable); returns its summary."""
    from squeeze.memory.config import UIOConfig  # noqa: PLC0415
    from squeeze.memory.task import train_uio  # noqa: PLC0415
    from squeeze.train.engine import EngineConfig  # noqa: PLC0415

    cfg = UIOConfig.from_dict(uio_fields(args, options))
    workdir = Path(args.workdir) / f"uio-{cfg.grad_mode}-{cfg.segment}x{cfg.memory}"
    engine = EngineConfig(workdir, resume=args.resume, devices=args.devices, nodes=args.nodes,
                          accelerator=args.accelerator)
    summary = train_uio(cfg, engine)
    summary.pop("log", None)
    return {"workdir": str(workdir), **summary}


def eval_uio(folder: Path, passkey_x: tuple[int, ...] = (4, 8, 16), ppl_x: tuple[int, ...] = (1, 8),
             passkey_docs: int = 40, ppl_docs: int = 4) -> dict[str, Any]:
    """``squeeze eval RUN`` for a finished UIO run: passkey retrieval and perplexity on held-out Shakespeare at
    multiples of the base context, with the long-context bench's documents (``PASSKEY_SEED``, ``PPL_SEED``)."""
    from tqdm import tqdm  # noqa: PLC0415

    from squeeze.memory.evaluate import PASSKEY_SEED, PPL_SEED, passkey_summary, perplexity  # noqa: PLC0415
    from squeeze.memory.task import load_uio  # noqa: PLC0415
    from squeeze.zoo.lm_shakespeare import split_tokens  # noqa: PLC0415

    model = load_uio(folder)
    ctx, val = model.lay.context, split_tokens("val")
    out: dict[str, Any] = {"run": str(folder), "config": model.cfg.to_dict(), "base_context": ctx}
    for x in tqdm(passkey_x, desc="passkey", leave=False):
        out[f"passkey_{x}x"] = passkey_summary("uio", model, val, x * ctx, passkey_docs, seed=PASSKEY_SEED,
                                                  hide_beyond=ctx)
    for x in tqdm(ppl_x, desc="perplexity", leave=False):
        out[f"ppl_{x}x"] = perplexity("uio", model, val, x * ctx, ppl_docs, seed=PPL_SEED)
    return out
