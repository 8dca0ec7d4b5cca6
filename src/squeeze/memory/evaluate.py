"""Long-context evaluation: perplexity vs context length, passkey retrieval, time and memory per token.

Methods: a :class:`~squeeze.memory.model.MemoryLM` (any gradient mode; streamed segment by segment),
``truncated`` (the base model on independent chunks of its own context: nothing older is seen),
``sliding-window`` (the base model on windows of its context moved by half a context; every token
sees between half and all of one context) and, for timing only, ``full-attention`` (the base model
on the whole input at once; beyond its training context its predictions are meaningless).
"""
from __future__ import annotations

import math
import statistics
import threading
import time
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from squeeze.errors import SqueezeError
from squeeze.data.passkey import DIGITS, answer_digits, key_starts, passkey_document
from squeeze.data.tokenizers import BYTES, Tokenizer
from squeeze.memory.data import check_text
from squeeze.memory.model import MemoryLM

BASELINES = ("truncated", "sliding-window", "full-attention")
PPL_SEED, PASSKEY_SEED = 11, 12  # the evaluation documents of the long-context bench and `squeeze eval`


def base_context(model: nn.Module) -> int:
    """The base model's context length in tokens (its ``arch.context``)."""
    arch = getattr(model, "arch", None)
    if arch is None:
        raise SqueezeError(f"{type(model).__name__} has no .arch.context; the baselines need lm-shakespeare")
    return arch.context


def logits_of(method: str, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Next-token logits (B, n, V) for every position of ``x`` (B, n) under ``method``."""
    if isinstance(model, MemoryLM):
        return model.stream(x)
    ctx = base_context(model)
    n = x.shape[1]
    if method == "truncated":
        return torch.cat([model(x[:, s:s + ctx]) for s in range(0, n, ctx)], dim=1)
    if method == "sliding-window":
        stride, out = ctx // 2, []
        for begin in range(0, n, stride):
            end = min(begin + stride, n)
            out.append(model(x[:, max(0, end - ctx):end])[:, -(end - begin):])
        return torch.cat(out, dim=1)
    if method == "full-attention":
        return model(x)
    raise SqueezeError(f"unknown long-context method {method!r}; use a memory model or one of {', '.join(BASELINES)}")


def documents(tokens: torch.Tensor, length: int, n: int, seed: int) -> torch.Tensor:
    """``n`` fixed stretches (n, length + 1) of a token stream."""
    check_text(tokens, length, "evaluation text")
    gen = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, tokens.numel() - length - 1, (n,), generator=gen).tolist()
    return torch.stack([tokens[s:s + length + 1] for s in starts])


@torch.no_grad()
def perplexity(method: str, model: nn.Module, tokens: torch.Tensor, length: int, n_docs: int, seed: int = 0,
               batch: int = 4) -> float:
    """exp(mean next-token NLL) over every target of ``n_docs`` documents of ``length`` tokens."""
    docs = documents(tokens, length, n_docs, seed)
    dev = next(model.parameters()).device
    total, count = 0.0, 0
    for i in range(0, n_docs, batch):
        d = docs[i:i + batch].to(dev)
        logits = logits_of(method, model, d[:, :-1])
        total += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), d[:, 1:].reshape(-1), reduction="sum"))
        count += d[:, 1:].numel()
    return math.exp(total / count)


@torch.no_grad()
def passkey_digits(method: str, model: nn.Module, tokens: torch.Tensor, length: int, n_docs: int, seed: int = 0,
                   hide_beyond: int = 256, batch: int = 4, tok: Tokenizer = BYTES) -> tuple[torch.Tensor, torch.Tensor]:
    """Passkey retrieval on ``n_docs`` documents of ``length`` tokens: ``right`` (n_docs, 5) bool, each answer
    digit predicted (greedy, teacher-forced), and ``starts`` (n_docs,), where the key's first copy begins.
    The needle lies at a random depth in the first ``length - hide_beyond`` tokens, out of reach of a model
    seeing only the last ``hide_beyond`` tokens."""
    if length <= hide_beyond:
        raise SqueezeError(f"passkey documents of {length} tokens must be longer than hide_beyond={hide_beyond}")
    gen = torch.Generator().manual_seed(seed)
    docs = torch.stack([passkey_document(tokens, length, gen, (0, length - hide_beyond), tok)[0]
                        for _ in range(n_docs)])
    dev = next(model.parameters()).device
    right = torch.cat([answer_digits(logits_of(method, model, d[:, :-1]), d).cpu()
                       for d in docs.to(dev).split(batch)])
    return right, key_starts(docs, tok)


def passkey_accuracy(method: str, model: nn.Module, tokens: torch.Tensor, length: int, n_docs: int, seed: int = 0,
                     hide_beyond: int = 256, batch: int = 4, tok: Tokenizer = BYTES) -> tuple[float, float]:
    """(exact, digit) accuracy of :func:`passkey_digits`: the fraction of documents whose 5 digits are all
    right, and the fraction of single digits right (chance 0.1; it shows partial retrieval)."""
    right, _ = passkey_digits(method, model, tokens, length, n_docs, seed, hide_beyond, batch, tok)
    return float(right.all(1).float().mean()), float(right.float().mean())


def span_end(starts: torch.Tensor, span: int) -> torch.Tensor:
    """(B, 5) bool: key digit j (first copy at ``starts + j``) is the last token of a memory token's span of
    ``span`` tokens (segment offsets ``span-1, 2*span-1, ...``), the token the memory naturally keeps."""
    pos = starts[:, None] + torch.arange(DIGITS)
    return pos % span == span - 1


def passkey_summary(method: str, model: nn.Module, tokens: torch.Tensor, length: int, n_docs: int, seed: int,
                    hide_beyond: int, tok: Tokenizer = BYTES) -> dict[str, float | None]:
    """``passkey_acc`` (exact), ``digit_acc`` and, for a memory model, the digit accuracy split by where each
    key digit fell in its memory token's span: ``digit_acc_span_end`` (the span's last token) and
    ``digit_acc_inside_span`` (see docs/methods/uio.md: a memory token mostly keeps its span's last token)."""
    right, starts = passkey_digits(method, model, tokens, length, n_docs, seed, hide_beyond, tok=tok)
    out = {"passkey_acc": float(right.all(1).float().mean()), "digit_acc": float(right.float().mean())}
    if isinstance(model, MemoryLM):
        end = span_end(starts, model.segment // model.memory)
        # None where no digit fell there (with one token per memory every digit ends a span)
        out |= {"digit_acc_span_end": float(right[end].float().mean()) if end.any() else None,
                "digit_acc_inside_span": float(right[~end].float().mean()) if (~end).any() else None}
    return out


def _trim() -> None:
    try:
        import ctypes  # noqa: PLC0415

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class _PeakRSS:
    """Samples this process's resident memory every millisecond (Linux ``/proc/self/statm``)."""

    def __init__(self) -> None:
        self.page = 4096 / 2 ** 20
        _trim()  # hand freed heap back to the OS so the baseline is not inflated by earlier runs
        self.base = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _rss(self) -> float:
        statm = Path("/proc/self/statm")
        return int(statm.read_text().split()[1]) * self.page if statm.is_file() else 0.0

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(0.001)

    def __enter__(self) -> "_PeakRSS":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())


@torch.no_grad()
def cost_sweep(runs: dict[str, tuple[str, nn.Module]], lengths: Sequence[int], repeats: int = 1, vocab: int = 256,
               clock: Callable[[], float] = time.perf_counter) -> dict[tuple[str, int], tuple[float, float]]:
    """(seconds per token, peak extra resident MiB) of every ``runs`` entry (name -> (method, model)) on one
    random input of each length, keyed by (name, length).

    The time is the median over ``repeats`` rounds, and every round runs every entry and length once:
    a slow spell of a shared machine then touches each cell in one round at most, instead of every run of
    the cells measured during it. Memory is one more, untimed run per cell under the resident-memory
    sampler, whose polling thread would otherwise slow the timed runs."""
    from tqdm import tqdm  # noqa: PLC0415

    inputs = {n: torch.randint(0, vocab, (1, n), generator=torch.Generator().manual_seed(0)) for n in lengths}
    cells = [(name, n) for name in runs for n in lengths]

    def call(name: str, x: torch.Tensor) -> None:
        method, model = runs[name]
        logits_of(method, model, x.to(next(model.parameters()).device))

    for name in runs:  # warm-up (allocations, kernels)
        call(name, inputs[min(lengths)][:, :64])
    times: dict[tuple[str, int], list[float]] = {c: [] for c in cells}
    for _ in tqdm(range(repeats), desc="cost rounds", leave=False):
        for name, n in cells:
            start = clock()
            call(name, inputs[n])
            times[(name, n)].append(clock() - start)
    out = {}
    for name, n in cells:
        with _PeakRSS() as mem:
            call(name, inputs[n])
        out[(name, n)] = (statistics.median(times[(name, n)]) / n, mem.peak - mem.base)
    return out
