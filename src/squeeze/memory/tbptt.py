"""Truncated back-propagation through segments with bounded encoder graphs (UIO-LLMs, arXiv 2406.18173).

A document is split into T segments. For segment t the decoder predicts its tokens from the memories
of segments 0..t-1 (with a raw window of W segments, a deviation: the memories of 0..t-W-1 and the raw
tokens of the last W); the loss is back-propagated at once (decoder parameters get their exact
gradient). Memories enter the decoder as *detached leaves*: the gradient a loss sends to memory s
piles up in that leaf's ``.grad``. The encoder graph that produced memory s is back-propagated
("flushed") with whatever its leaf has gathered once no later loss reaches it (it left the kept set),
so each encoder and decoder graph is run and back-propagated once (time linear in T) and at most K
encoder graphs are alive at once with one kept set per batch (with one per document, the union of the
documents' kept sets: at most B*K), so memory stays bounded. Which loss reaches which memory, and with
what factor, is a (T, T) table per document (:func:`read_coefficients`), drawn as a kept set updated after
every segment would be; each document of a batch draws its own (``UIOConfig.reservoir = document``) or
the batch shares one (``batch``, config versions <= 6). The gradient modes differ only in that table:

* ``full-bptt``: every graph until the last loss (the exact gradient; memory grows with T).
* ``detached``: none (memories are constants; the encoder never learns).
* ``uio-biased``: the K newest (FIFO). Loss t reaches memory s only if ``t - s <= K``: biased.
* ``uio``: a reservoir of K (Vitter's algorithm R, as the paper's code), *reweighted*. Derivation:
  let the encoder gradient be ``sum_{s<t} c_{s,t}`` with ``c_{s,t} = J_s^T dl_t/dm_s``. Loss t is
  computed after t memories were offered to the reservoir; algorithm R keeps each of them with
  probability ``p_t = min(1, K/t)`` (item s enters with ``min(1, K/(s+1))`` and survives each later
  offer u >= K with ``u/(u+1)``; the product telescopes to ``K/t``). Scaling the gradient that loss
  t sends into the memory leaves by ``1/p_t = max(1, t/K)`` gives
  ``E[sum 1{s kept at t} c_{s,t} / p_t] = sum c_{s,t}``: unbiased, with the same weight for every
  memory at step t.
* ``uio-unweighted``: the same reservoir without the weights, as the paper's code does (biased: loss t
  finds each earlier memory kept with probability ``K/t`` and is not scaled up for it, so late losses
  reach the encoder with ``K/t`` of their full-BPTT weight in expectation).

:func:`batched_backward` computes the same gradient with every segment of a document in one encoder and one
decoder call (``UIOConfig.batched``): fewer, larger kernels, all encoder graphs alive at once.
"""
from __future__ import annotations

import random
from typing import Callable

import torch
import torch.nn.functional as F

from squeeze.errors import SqueezeError
from squeeze.memory.config import GRAD_MODES
from squeeze.memory.model import MemoryLM, ScaleGrad


def inclusion_probability(t: int, keep: int) -> float:
    """P(a given memory among the first t is in an algorithm-R reservoir of size ``keep``) = min(1, K/t)."""
    return 1.0 if t <= keep else keep / t


def unbiased_weight(t: int, keep: int) -> float:
    """Importance weight ``1/p_t = max(1, t/K)`` for the gradient loss t sends into the memories (UIO)."""
    return 1.0 / inclusion_probability(t, keep)


def reservoir_slot(t: int, keep: int, rng: random.Random) -> int | None:
    """Algorithm R for item t (0-based): ``None`` = drop it, else the slot it takes (evicting its holder)."""
    if t < keep:
        return t
    j = rng.randint(0, t)
    return j if j < keep else None


def _segments(model: MemoryLM, ids: torch.Tensor, mode: str, prefix: int = 0) -> int:
    """Number of segments T of documents ``ids`` (B, (P + T)*L + 1) after a prefix of P, or one error line."""
    if mode not in GRAD_MODES:
        raise SqueezeError(f"grad mode {mode!r} is unknown; use one of {', '.join(GRAD_MODES)}")
    L = model.segment
    n_seg = (ids.shape[1] - 1) // L - prefix
    if prefix < 0 or n_seg < 2 or ids.shape[1] != (prefix + n_seg) * L + 1:
        after = f" after a prefix of P = {prefix} >= 0" if prefix else ""
        raise SqueezeError(f"documents must hold {'(P+T)' if prefix else 'T'}*{L}+1 tokens with T >= 2 segments"
                           f"{after}, got {ids.shape[1]}")
    return n_seg


def _flush(graph: torch.Tensor, leaf: torch.Tensor, backward: Callable[[torch.Tensor], None]) -> None:
    """Back-propagate an encoder graph with the gradient its memory leaf has gathered."""
    if leaf.grad is not None:
        backward((graph * leaf.grad).sum())


# ----------------------------------------------------------------------------- which loss reaches which memory
def read_coefficients(mode: str, n_seg: int, window: int, keep: int, rng: random.Random) -> torch.Tensor:
    """(T, T) factor ``c[t, s]`` on the gradient loss t sends into memory s under ``mode``.

    Loss t reads memories ``0..t-W-1`` and finds kept what the mode's kept set holds after the offers of
    memories ``0..t-1``; a kept memory gets the factor 1 (``uio``: the importance weight ``max(1, t/K)``),
    any other 0. ``rng`` is drawn as a reservoir updated after each segment draws it: one
    ``randint(0, t)`` per offer t >= K, in order.
    """
    coef = torch.zeros(n_seg, n_seg)
    if mode == "detached":
        return coef
    kept: list[int] = []  # segments whose encoder graphs are kept (uio: by reservoir slot)
    offered = 0
    for t in range(window + 1, n_seg):
        read = t - window  # loss t reads memories 0..read-1
        if mode == "full-bptt":
            coef[t, :read] = 1.0
            continue
        while offered < t:  # the offers made before loss t: memories 0..t-1
            slot = len(kept) if mode == "uio-biased" else reservoir_slot(offered, keep, rng)
            if slot is not None and slot < len(kept):
                kept[slot] = offered
            elif slot is not None:
                kept = (kept + [offered])[-keep:]  # FIFO drops the oldest; a reservoir never overflows here
            offered += 1
        factor = unbiased_weight(t, keep) if mode == "uio" else 1.0
        for s in kept:
            if s < read:
                coef[t, s] = factor
    return coef


def coefficient_tables(mode: str, n_seg: int, window: int, keep: int, rng: random.Random, docs: int,
                       per_document: bool) -> torch.Tensor:
    """(B, T, T) :func:`read_coefficients` tables of a batch of ``docs`` documents: one reservoir per document
    (drawn in document order) or, with ``per_document`` false, one reservoir shared by the whole batch."""
    if not per_document:
        return read_coefficients(mode, n_seg, window, keep, rng).expand(docs, n_seg, n_seg)
    return torch.stack([read_coefficients(mode, n_seg, window, keep, rng) for _ in range(docs)])


# ----------------------------------------------------------------------------- segment by segment
def _prefix_memories(model: MemoryLM, ids: torch.Tensor, prefix: int) -> list[torch.Tensor]:
    """Memories of the first ``prefix`` segments of ``ids``, encoded without a graph (distractors)."""
    L = model.segment
    with torch.no_grad():
        return [model.encode(ids[:, p * L:(p + 1) * L]) for p in range(prefix)]


def tbptt_backward(model: MemoryLM, ids: torch.Tensor, weights: torch.Tensor, mode: str, keep: int,
                   rng: random.Random, backward: Callable[[torch.Tensor], None] = torch.Tensor.backward,
                   per_document: bool = False, prefix: int = 0) -> float:
    """Forward a batch of documents segment by segment and accumulate gradients as ``mode`` says.

    ``ids`` (B, (P+T)*L + 1) tokens, ``weights`` the same shape, per-target loss weights (position 0
    unused). The first ``prefix`` (P) segments are distractors (``UIOConfig.prefix_segments``): their
    memories are encoded without a graph and read, before the document's own, by every segment; they are
    not decoded, and the gradient modes see only the T segments after them. The loss is the weighted mean
    cross-entropy over segments W+1..T-1 (with a raw window of W segments, segments 0..W read no memory
    of their own). Returns that loss. ``backward`` is the engine's backward (``loss.backward``). Which loss
    reaches which memory, with what factor, is :func:`coefficient_tables`' (B, T, T) table, drawn before
    the first segment (the draws are the ones a reservoir updated after each segment would make). A memory
    that no loss reaches is encoded without a graph; any other keeps its encoder graph until the last loss
    that reaches it, then is flushed.
    """
    L, n_seg = model.segment, _segments(model, ids, mode, prefix)
    pre = _prefix_memories(model, ids, prefix)
    ids, weights = ids[:, prefix * L:], weights[:, prefix * L:]
    w_raw = model.window
    coef = coefficient_tables(mode, n_seg, w_raw, keep, rng, ids.shape[0], per_document)  # (B, T, T)
    reads = coef.ne(0).any(0)  # (T, T): loss t reaches memory s in some document
    last = torch.where(reads.any(0), (reads * torch.arange(n_seg)[:, None]).amax(0), -1).tolist()  # per memory
    total_w = weights[:, model.raw_span + 1:].sum().clamp_min(1e-8)
    bank: list[torch.Tensor] = []  # what the decoder reads: leaves, or constants for unread memories
    alive: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # segment -> (encoder graph, leaf)
    seen = 0.0
    for t in range(n_seg):
        seg = ids[:, t * L:(t + 1) * L]
        if t > w_raw:  # reads the memories of segments 0..t-W-1 and the raw segments t-W..t-1
            # gradient into memory s (layers, B, m, D) scaled per document by coef[b, t, s]
            mems = pre + [ScaleGrad.apply(m, coef[:, t, s].to(m)[None, :, None, None]) if m.requires_grad else m
                          for s, m in enumerate(bank[:t - w_raw])]
            logits = model.decode(seg, mems, window=ids[:, (t - w_raw) * L:t * L] if w_raw else None)
            tgt, w = ids[:, t * L + 1:(t + 1) * L + 1], weights[:, t * L + 1:(t + 1) * L + 1]
            ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1), reduction="none")
            loss = (ce * w.reshape(-1)).sum() / total_w
            seen += loss.item()
            backward(loss)
            for s in [s for s in alive if last[s] == t]:  # no later loss reaches these memories
                _flush(*alive.pop(s), backward)
        if t == n_seg - 1:
            break  # the last segment's memory would never be read
        if last[t] < 0:
            with torch.no_grad():
                bank.append(model.encode(seg))
            continue
        mem = model.encode(seg)
        leaf = mem.detach().requires_grad_(True)
        alive[t] = (mem, leaf)
        bank.append(leaf)
    return seen


# ----------------------------------------------------------------------------- batched execution
def _encode_read(model: MemoryLM, segs: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
    """Memories (layers, B*rows, m, D) of ``segs`` (B*rows, L), document-major; only the memories some loss
    sends gradient to (a non-zero column of their document's ``coef`` (B, rows, rows)) keep an encoder graph.

    ``uio`` drops about 3 of 7 memories from its reservoir before any loss reads them (``detached``: all),
    so their encoder passes need no backward: the batched step then keeps at most the graphs the sequential
    one ever holds, and skips the rest's backward.
    """
    need = coef.ne(0).any(1).flatten()  # (B*rows,)
    if not torch.is_grad_enabled() or not need.any():
        with torch.no_grad():
            return model.encode(segs)
    if need.all():
        return model.encode(segs)
    with torch.no_grad():
        rest = model.encode(segs[~need])
    order = torch.cat([need.nonzero()[:, 0], (~need).nonzero()[:, 0]])  # rows of the concatenation below
    return torch.cat([model.encode(segs[need]), rest], 1)[:, order.argsort()]


def _read_kv(model: MemoryLM, mem: torch.Tensor, coef: torch.Tensor,
             scored: torch.Tensor) -> tuple[list[tuple[torch.Tensor, ...]], torch.Tensor]:
    """Per layer, the memory k/v (S, H, n*m, hd) that each decoded row reads, for the S rows of ``scored``
    (B*rows bool), from the n memories per document of ``mem`` (layers, B*n, m, D; row r reads memories
    0..n-rows+r), with the gradient into memory s of row r of document b scaled by ``coef[b, r, s]``
    (``coef`` (B, rows, n)); and the (S, n*m) mask of the slots that hold a memory (the others are padding).

    Each memory is projected once, not once per row that reads it. Scaling the gradient of the memory
    (``const + c * (m - const)``) and projecting equals, since the k/v projection is linear in its input,
    ``P(const) + c * (P(m) - P(const))``: the first term carries the projection's own (LoRA) gradient, the
    second (value 0) the gradient into the encoder, scaled by ``c``.
    """
    m, (b, rows, n) = mem.shape[2], coef.shape
    # slot j of row r holds memory j - (rows-1-r); negative = padding. Right-aligned, so the newest memory
    # always sits at position -1 and every row's positions equal the sequential decoder's.
    src = torch.arange(n)[None, :] - (rows - 1 - torch.arange(rows))[:, None]  # (rows, n)
    slots = src.clamp(min=0).expand(b, rows, n)
    factor = torch.where(src >= 0, coef.gather(2, slots), 0.0)  # (B, rows, n): factor per slot
    idx = scored.nonzero()[:, 0].cpu()  # (S,) decoded rows, as document * rows + row
    doc, row = idx // rows, idx % rows
    factor = factor[doc, row].repeat_interleave(m, 1)[:, None, :, None].to(mem)  # (S, 1, n*m, 1)
    mask = (src >= 0)[row].repeat_interleave(m, 1).to(mem.device)  # (S, n*m)
    picks = (doc[:, None] * n + src.clamp(min=0)[row]).to(mem.device)  # (S, n) memory read per slot

    def gather(x: torch.Tensor) -> torch.Tensor:  # (B*n, H, m, hd) -> (S, H, n*m, hd)
        return x[picks].transpose(1, 2).flatten(2, 3)  # x[picks]: (S, n, H, m, hd)

    const = model.memory_kv(mem.detach())
    if not mem.requires_grad:  # detached: no gradient reaches the encoder
        return [tuple(gather(x) for x in pair) for pair in const], mask
    out = []
    for pair_c, pair_m in zip(const, model.memory_kv(mem)):
        out.append(tuple(gather(c) + gather(x - c) * factor for c, x in zip(pair_c, pair_m)))
    return out, mask


def batched_backward(model: MemoryLM, ids: torch.Tensor, weights: torch.Tensor, mode: str, keep: int,
                     rng: random.Random, backward: Callable[[torch.Tensor], None] = torch.Tensor.backward,
                     per_document: bool = False, prefix: int = 0) -> float:
    """:func:`tbptt_backward`'s gradient computed with every segment of a document in one batch.

    The encoder does not read earlier memories, so all segments are encoded in one call, and every scored
    segment is decoded in one call that reads its own earlier memories (right-aligned, padding masked; a
    segment with no scored target is not decoded). Which gradient reaches which memory is
    :func:`read_coefficients`' table (see :func:`_read_kv`). For the same ``rng`` the gradient equals
    :func:`tbptt_backward`'s up to float rounding. It runs far fewer, larger kernels, but keeps every
    encoder graph that some loss reads alive at once (:func:`_encode_read`): memory grows with T instead
    of staying bounded by K (the paper's reason for the incremental scheme), so it suits short training
    documents. A prefix of P distractor segments (see :func:`tbptt_backward`) adds P memories in front of
    every row's own, with the factor 0.
    """
    L, n_seg, W = model.segment, _segments(model, ids, mode, prefix), model.window
    P, b, rows = prefix, ids.shape[0], n_seg - W - 1  # decoded segments t = W+1..T-1; row r reads 0..P+r
    coef = coefficient_tables(mode, n_seg, W, keep, rng, b, per_document)[:, W + 1:, :rows]  # (B, rows, rows)
    coef = F.pad(coef, (P, 0))  # (B, rows, P+rows): the distractors' memories get no gradient
    segs = ids[:, :(P + n_seg) * L].view(b, P + n_seg, L)
    mem = _encode_read(model, segs[:, :P + rows].reshape(b * (P + rows), L), coef)  # (layers, B*(P+rows), m, D)
    # targets and weights of segments W+1..T-1, one row per decoded segment: (B*rows, L)
    first = (P + W + 1) * L + 1
    tgt, w = ids[:, first:].reshape(b * rows, L), weights[:, first:].reshape(b * rows, L)
    scored = w.ne(0).any(1)  # rows with a scored target; the others are not decoded
    kv, mask = _read_kv(model, mem, coef, scored)
    window = None
    if W:  # row r's raw window: segments r+1..r+W of the document
        window = torch.stack([segs[:, P + r + 1:P + r + 1 + W].reshape(b, W * L) for r in range(rows)], 1)
        window = window.flatten(0, 1)[scored]
    logits = model.decode(segs[:, P + W + 1:].reshape(b * rows, L)[scored], kv=kv, window=window, mem_mask=mask)
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt[scored].reshape(-1), reduction="none")
    loss = (ce * w[scored].reshape(-1)).sum() / w.sum().clamp_min(1e-8)
    backward(loss)
    return loss.item()
