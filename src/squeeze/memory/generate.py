"""Text generation from a long prompt with a UIO-LLMs memory model (Li et al., arXiv 2406.18173), or with
its plain base truncated to its context, saying exactly which part of the prompt the model reads.

The memory model keeps the whole prompt: its complete segments are compressed into memory tokens (the
last ``raw_window`` of them kept raw), the trailing partial segment is decoded directly, and every new
token joins that segment; when the segment is full it is compressed in turn, as in training (the last
token of a segment predicts the first token of the next). Nothing is dropped, but memories older than
the base's trained positions share one rotary position (see :func:`squeeze.memory.model.memory_positions`);
the report says how many. The base model reads at most its context: the report says how many prompt
tokens it never sees.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from tqdm import tqdm

from squeeze.errors import SqueezeError
from squeeze.memory.model import MemoryLM, SegmentContext


@dataclass(frozen=True)
class ContextReport:
    """Which part of a prompt of ``prompt_tokens`` tokens a model reads when it generates its first token."""

    model: str
    prompt_tokens: int
    raw_tokens: int  # read directly (current segment and raw window, or the base's context)
    compressed_segments: int = 0
    memory_tokens: int = 0
    shared_position: int = 0  # memories at the clamped oldest rotary position
    dropped_tokens: int = 0  # prompt tokens the model never reads
    dropped_later: int = 0  # tokens (prompt or generated) that leave the base's context while it generates
    context: int = 0  # the base's trained positions

    def line(self) -> str:
        """One human-readable sentence."""
        if self.dropped_tokens or self.dropped_later:
            return (f"{self.model} reads at most its last {self.context} tokens: {self.dropped_tokens} of the "
                    f"{self.prompt_tokens} prompt tokens are never seen and {self.dropped_later} more fall out while "
                    "it generates; a UIO run keeps them as memories")
        if self.compressed_segments == 0:
            return f"{self.model} reads all {self.prompt_tokens} prompt tokens directly"
        text = (f"{self.model} reads {self.prompt_tokens} prompt tokens as {self.memory_tokens} memory tokens of "
                f"{self.compressed_segments} compressed segments + {self.raw_tokens} raw tokens; nothing is dropped")
        if self.shared_position:
            text += (f"; the {self.shared_position} oldest memories share one rotary position (the base was trained "
                     f"on {self.context} positions), so their order is not visible to the decoder")
        return text


def sample_token(logits: torch.Tensor, temperature: float, top_k: int, gen: torch.Generator) -> int:
    """Next token from ``logits`` (V,): greedy at ``temperature`` 0, else softmax(logits / T) sampling,
    restricted to the ``top_k`` most likely tokens when ``top_k`` > 0."""
    if temperature == 0:
        return int(logits.argmax())
    logits = logits.float() / temperature
    if 0 < top_k < logits.numel():
        cut = logits.topk(top_k).values[-1]
        logits = logits.masked_fill(logits < cut, float("-inf"))
    return int(torch.multinomial(logits.softmax(-1).cpu(), 1, generator=gen))


def shared_positions(n_memories: int, raw: int, context: int) -> int:
    """How many of ``n_memories`` memories share the clamped oldest position (0 when all are distinct)."""
    room = context - raw  # distinct memory positions -1 .. -room
    return n_memories - room + 1 if n_memories > room else 0


def check_request(prompt: torch.Tensor, max_new: int, temperature: float, top_k: int) -> None:
    """One clear error for a generation request that cannot run."""
    if prompt.dim() != 1 or prompt.numel() == 0:
        raise SqueezeError("the prompt is empty; pass --prompt TEXT or --prompt-file FILE with some text")
    if max_new < 1:
        raise SqueezeError(f"--max-new-tokens {max_new} must be >= 1")
    if temperature < 0 or top_k < 0:
        raise SqueezeError(f"--temperature {temperature} and --top-k {top_k} must be >= 0 (0: greedy / no cut)")


@torch.no_grad()
def generate_memory(model: MemoryLM, prompt: torch.Tensor, max_new: int, temperature: float = 0.0,
                    top_k: int = 0, seed: int = 0, progress: bool = True) -> tuple[torch.Tensor, ContextReport]:
    """``max_new`` tokens after ``prompt`` (N,) from a memory model, and what it read of the prompt."""
    check_request(prompt, max_new, temperature, top_k)
    L, dev = model.segment, next(model.parameters()).device
    ids = prompt.to(dev)[None]  # (1, N)
    context = SegmentContext(model)
    cut = (ids.shape[1] - 1) // L * L  # the last 1..L prompt tokens stay the current segment
    for start in range(0, cut, L):
        context.push(ids[:, start:start + L])
    current = ids[:, cut:]
    n_mem = context.compressed * model.memory
    positions = model.cfg.memory_positions == "compact"
    window = f", raw window {model.window}" if model.window else ""
    report = ContextReport(f"UIO run ({model.cfg.grad_mode}, segment {L}, memory {model.memory}{window})", ids.shape[1],
                           context.raw_tokens + current.shape[1], context.compressed, n_mem,
                           shared_positions(n_mem, model.raw_span, model.lay.context) if positions else 0,
                           context=model.lay.context)
    gen, out = torch.Generator().manual_seed(seed), []
    for _ in tqdm(range(max_new), desc="generate", leave=False, disable=not progress):
        token = sample_token(context.decode(current)[0, -1], temperature, top_k, gen)
        out.append(token)
        step = torch.tensor([[token]], device=dev)
        if current.shape[1] == L:  # the segment is full: compress it, the new token starts the next one
            context.push(current)
            current = step
        else:
            current = torch.cat([current, step], dim=1)
    return torch.tensor(out, dtype=torch.long), report


@torch.no_grad()
def generate_base(base: nn.Module, context: int, prompt: torch.Tensor, max_new: int, temperature: float = 0.0,
                  top_k: int = 0, seed: int = 0, name: str = "base",
                  progress: bool = True) -> tuple[torch.Tensor, ContextReport]:
    """``max_new`` tokens after ``prompt`` (N,) from a plain LM reading its last ``context`` tokens."""
    check_request(prompt, max_new, temperature, top_k)
    dev = next(base.parameters()).device
    ids = prompt.to(dev)
    seen = min(ids.numel(), context)
    later = max(0, min(ids.numel(), context) + max_new - 1 - context)  # the last generated token is not read
    report = ContextReport(name, ids.numel(), seen, dropped_tokens=ids.numel() - seen, dropped_later=later,
                           context=context)
    gen, out = torch.Generator().manual_seed(seed), []
    for _ in tqdm(range(max_new), desc="generate", leave=False, disable=not progress):
        token = sample_token(base(ids[None, -context:])[0, -1], temperature, top_k, gen)
        out.append(token)
        ids = torch.cat([ids, torch.tensor([token], device=dev)])
    return torch.tensor(out, dtype=torch.long), report
