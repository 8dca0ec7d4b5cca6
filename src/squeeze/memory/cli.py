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
    parser.add_argument("--grad-mode", default="uio", help="uio: uio, uio-biased, uio-unweighted, full-bptt or detached")
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
    engine = EngineConfig.from_args(args, workdir)
    summary = train_uio(cfg, engine)
    summary.pop("log", None)
    return {"workdir": str(workdir), **summary}


def eval_uio(folder: Path, passkey_x: tuple[int, ...] = (4, 8, 16), ppl_x: tuple[int, ...] = (1, 8),
             passkey_docs: int = 40, ppl_docs: int = 4) -> dict[str, Any]:
    """``squeeze eval RUN`` for a finished UIO run: passkey retrieval and perplexity on held-out Shakespeare at
    multiples of the base context, with the long-context bench's documents (``PASSKEY_SEED``, ``PPL_SEED``)."""
    from tqdm import tqdm  # noqa: PLC0415

    from squeeze.memory.evaluate import PASSKEY_SEED, PPL_SEED, passkey_summary, perplexity  # noqa: PLC0415
    from squeeze.data.tokenizers import load_tokenizer  # noqa: PLC0415
    from squeeze.memory.task import load_uio, text_tokens  # noqa: PLC0415

    model = load_uio(folder)
    tok = load_tokenizer(model.cfg.base)
    ctx, val = model.lay.context, text_tokens(tok, "val")
    out: dict[str, Any] = {"run": str(folder), "config": model.cfg.to_dict(), "base_context": ctx}
    for x in tqdm(passkey_x, desc="passkey", leave=False):
        out[f"passkey_{x}x"] = passkey_summary("uio", model, val, x * ctx, passkey_docs, seed=PASSKEY_SEED,
                                                  hide_beyond=ctx, tok=tok)
    for x in tqdm(ppl_x, desc="perplexity", leave=False):
        out[f"ppl_{x}x"] = perplexity("uio", model, val, x * ctx, ppl_docs, seed=PPL_SEED)
    return out


def add_generate_parser(sub: Any) -> None:
    """Add the ``generate`` sub-command to the top-level sub-parsers ``sub``."""
    g = sub.add_parser("generate", help="continue a long text prompt with a UIO run (memories) or lm-shakespeare")
    g.add_argument("model", help="a finished `squeeze train uio` run folder, or lm-shakespeare (the plain base: "
                   "reads only its last 256 tokens)")
    source = g.add_mutually_exclusive_group(required=True)
    source.add_argument("--prompt", help="prompt text")
    source.add_argument("--prompt-file", help="UTF-8 text file holding the prompt")
    g.add_argument("--max-new-tokens", type=int, default=200)
    g.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    g.add_argument("--top-k", type=int, default=40, help="sample among the k most likely tokens (0 = all)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--json", action="store_true", help="print the text and the context report as one JSON object")
    g.set_defaults(fn=cmd_generate)


def read_prompt(text: str | None, file: str | None) -> str:
    """The prompt from ``--prompt`` or ``--prompt-file``, with one clear error when it cannot be read."""
    from squeeze.errors import SqueezeError  # noqa: PLC0415

    if file is None:
        return text or ""
    try:
        return Path(file).read_bytes().decode("utf-8")
    except OSError as exc:
        raise SqueezeError(f"cannot read prompt file {file}: {exc.strerror or exc}; pass a UTF-8 text file") from exc
    except UnicodeDecodeError as exc:
        raise SqueezeError(f"prompt file {file} is not UTF-8 text (byte {exc.start}); pass a UTF-8 text file") from exc


def cmd_generate(args: argparse.Namespace) -> None:
    """Generate from a UIO run or the lm-shakespeare base; the context report goes to stderr (or into --json)."""
    import json  # noqa: PLC0415
    import sys  # noqa: PLC0415
    from dataclasses import asdict  # noqa: PLC0415

    from squeeze.data.tokenizers import BYTES, load_tokenizer  # noqa: PLC0415
    from squeeze.errors import SqueezeError  # noqa: PLC0415
    from squeeze.memory.generate import generate_base, generate_memory  # noqa: PLC0415
    from squeeze.memory.task import META, load_uio  # noqa: PLC0415
    from squeeze.zoo.lm_shakespeare import NAME  # noqa: PLC0415

    text = read_prompt(args.prompt, args.prompt_file)
    options = {"temperature": args.temperature, "top_k": args.top_k, "seed": args.seed}
    if (Path(args.model) / META).is_file():
        model = load_uio(Path(args.model))
        tok = load_tokenizer(model.cfg.base)
        new, report = generate_memory(model, tok.encode(text), args.max_new_tokens, **options)
    elif args.model == NAME:
        from squeeze.zoo.registry import load_model  # noqa: PLC0415

        net, tok = load_model(NAME).model, BYTES
        new, report = generate_base(net, net.arch.context, tok.encode(text), args.max_new_tokens, name=NAME,
                                    **options)
    else:
        raise SqueezeError(f"{args.model} is neither a finished `squeeze train uio` run folder ({META} missing) nor "
                           f"{NAME}; pass one of them")
    continuation = tok.decode(new)
    if args.json:
        print(json.dumps({"text": continuation, "context": {**asdict(report), "summary": report.line()}}, indent=2))
        return
    print(f"context: {report.line()}", file=sys.stderr)
    print(continuation)
