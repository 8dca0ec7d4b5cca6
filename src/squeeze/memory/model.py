"""The memory-enhanced transformer of UIO-LLMs (Li et al., arXiv 2406.18173), on a frozen Llama-layout LM.

One frozen base network plays two roles (weights shared; only small LoRA adapters differ):

* **encoder** (base + LoRA on q, v): input = one segment of L tokens followed by m learned memory
  tokens (one shared embedding). Segment tokens attend causally; memory token i attends to segment
  tokens ``[0, (i+1) L/m)`` and itself, at rotary position ``(i+1) L/m``. At every layer the
  *normalised attention input* at the m memory positions is kept: memory = (layers, B, m, D).
* **decoder** (base weights for ordinary tokens, LoRA on k, v applied only to memory states -- the
  "transfer head" into key/value space; with ``memory_read="kvqo"`` also LoRA on the query that scores
  memories and on the output projection of what is read from them, a deviation): every layer attends
  over ``[memories of all earlier segments, current segment causally]``. Memories enter as **prefix
  key/values** per layer, at compact rotary positions just before the segment (newest memory at -1), as
  in the paper; positions are clamped at the base's trained context, so the oldest memories share one
  position instead of being dropped (the paper stops at its rotary table's length).
  ``memory_positions="none"`` scores memories without positions instead. With ``raw_window`` W >= 1 (a
  deviation, like Activation Beacon's raw window) the decoder also reads the last W segments as raw tokens
  and compresses a segment only when it leaves that window.

On short inputs (one segment, no memories) the decoder equals the base model exactly. Inference is
streaming: each token is decoded once and encoded once; the decoder's attention grows only by m
memory keys per L tokens (m/L = 1/8 of full attention's growth at L=64, m=8).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from squeeze.errors import SqueezeError
from squeeze.memory.config import UIOConfig
from squeeze.zoo.lm_shakespeare import apply_rope, rms_norm, rope_tables


@dataclass
class Layout:
    """Where a Llama-layout model keeps its parts (our ``TinyLlama`` or HF ``LlamaForCausalLM``)."""

    embed: nn.Embedding
    layers: Sequence[nn.Module]
    norm: nn.Module
    lm_head: nn.Linear
    heads: int
    kv_heads: int
    head_dim: int
    rope_theta: float
    dim: int
    context: int  # positions the base was trained on (caps the compact memory positions)


_ATTN = ("q_proj", "k_proj", "v_proj", "o_proj")


def base_layout(base: nn.Module) -> Layout:
    """Find the Llama parts of ``base`` or fail with one line naming what is missing."""
    inner = getattr(base, "model", base)  # HF: LlamaForCausalLM.model holds embed/layers/norm
    parts = [getattr(inner, n, None) for n in ("embed_tokens", "layers", "norm")] + [getattr(base, "lm_head", None)]
    if any(p is None for p in parts) or not len(parts[1]):
        raise SqueezeError(f"{type(base).__name__} lacks the Llama layout (embed_tokens, layers, norm, lm_head); "
                           "use lm-shakespeare or a Hugging Face Llama-family model")
    for i, layer in enumerate(parts[1]):
        attn = getattr(layer, "self_attn", None)
        if attn is None or any(not isinstance(getattr(attn, n, None), nn.Linear) for n in _ATTN) or \
                not hasattr(layer, "input_layernorm") or not hasattr(layer, "mlp"):
            raise SqueezeError(f"layer {i} of {type(base).__name__} lacks self_attn.{{q,k,v,o}}_proj / input_layernorm"
                               " / mlp (the expected Llama attention layout)")
    arch = getattr(base, "arch", None)
    if arch is not None:  # our TinyLlama
        heads, kv, theta, context = arch.heads, arch.kv_heads, arch.rope_theta, arch.context
    else:  # HF config
        c = base.config
        heads, kv = c.num_attention_heads, getattr(c, "num_key_value_heads", None) or c.num_attention_heads
        rope = getattr(c, "rope_parameters", None) or {}
        theta = float(rope.get("rope_theta", getattr(c, "rope_theta", 10000.0)))
        context = int(getattr(c, "max_position_embeddings", 2048))
    dim = parts[0].weight.shape[1]
    head_dim = parts[1][0].self_attn.q_proj.weight.shape[0] // heads
    return Layout(parts[0], parts[1], parts[2], parts[3], heads, kv, head_dim, theta, dim, context)


# ----------------------------------------------------------------------------- math (pure functions)
def lora_delta(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, scale: float) -> torch.Tensor:
    """The LoRA update ``scale * x A^T B^T`` (Hu et al. 2021); A (r, in), B (out, r)."""
    return scale * F.linear(F.linear(x, a), b)


def lora_linear(x: torch.Tensor, weight: torch.Tensor, a: torch.Tensor, b: torch.Tensor, scale: float) -> torch.Tensor:
    """``x W^T`` plus its LoRA update (:func:`lora_delta`)."""
    return F.linear(x, weight) + lora_delta(x, a, b, scale)


def encoder_mask(segment: int, memory: int) -> torch.Tensor:
    """Bool (L+m, L+m) attention mask of the UIO encoder: causal segment; memory token i sees segment
    tokens ``[0, (i+1) L/m)`` and itself only."""
    n = segment + memory
    mask = torch.zeros(n, n, dtype=torch.bool)
    mask[:segment, :segment] = torch.ones(segment, segment).tril().bool()
    span = segment // memory
    for i in range(memory):
        mask[segment + i, : (i + 1) * span] = True
        mask[segment + i, segment + i] = True
    return mask


def encoder_positions(segment: int, memory: int, anchored: bool = False) -> torch.Tensor:
    """Rotary positions of the encoder input: segment ``0..L-1``, memory token i at ``(i+1) L/m`` (the
    paper), or at ``(i+1) L/m - 1``, its anchor token's own position, when ``anchored``."""
    span = segment // memory
    return torch.cat([torch.arange(segment), (torch.arange(memory) + 1) * span - int(anchored)])


def anchor_tokens(ids: torch.Tensor, memory: int) -> torch.Tensor:
    """(B, m) the last token of each memory token's span of a segment ``ids`` (B, L): offsets
    ``L/m - 1, 2 L/m - 1, ...`` (``memory_init = anchor``)."""
    span = ids.shape[1] // memory
    return ids[:, span - 1::span]


def memory_positions(n_memories: int, raw: int, context: int) -> torch.Tensor:
    """Compact rotary positions of ``n_memories`` memories (oldest first) in front of at most ``raw`` raw
    tokens at ``0..raw-1``: the newest at -1, the one before at -2, ...; clamped at ``-(context - raw)`` so no
    query-key offset exceeds the ``context`` positions the base was trained on (older memories then share
    that position)."""
    return (torch.arange(n_memories) - n_memories).clamp(min=-(context - raw))


def memory_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                     mem_k: torch.Tensor | None, mem_v: torch.Tensor | None,
                     mem_rope: tuple[torch.Tensor, torch.Tensor] | None = None,
                     mem_q: torch.Tensor | None = None,
                     mem_mask: torch.Tensor | None = None,
                     mem_rotated: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Decoder attention over [memory prefix, causal segment] (all (B, H, *, hd)), one softmax over both.

    Segment scores use rotary queries and keys. Memory keys are rotated by ``mem_rope`` = (cos, sin) tables
    of their positions (:func:`memory_positions`); without it memory scores use the un-rotated query and key
    (no position); ``mem_rotated`` says ``mem_k`` is already rotated (a streaming cache). ``mem_q`` (default
    ``q``) is the query that scores memories. ``mem_mask`` (bool, broadcast to (B, H, T, M); True = read)
    hides padding memories of a batch whose rows read different numbers of memories (every row must keep
    its raw segment). Returns the attention output (B, H, T, hd) and, with memories, the part of it read
    from them (else None)."""
    qr, kr = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    if mem_k is None:
        return F.scaled_dot_product_attention(qr, kr, v, is_causal=True), None
    t, n = q.shape[-2], mem_k.shape[-2]
    scale = 1.0 / math.sqrt(q.shape[-1])
    raw = (qr * scale) @ kr.transpose(-1, -2)  # scaling the T queries, not the T x (M + T) scores
    raw = raw.masked_fill(~torch.ones(t, t, dtype=torch.bool, device=q.device).tril(), float("-inf"))
    if mem_rope is None and not mem_rotated:
        mem = ((q if mem_q is None else mem_q) * scale) @ mem_k.transpose(-1, -2)
    else:
        mqr = qr if mem_q is None else apply_rope(mem_q, cos, sin)
        keys = mem_k if mem_rotated else apply_rope(mem_k, *mem_rope)
        mem = (mqr * scale) @ keys.transpose(-1, -2)
    if mem_mask is not None:
        mem = mem.masked_fill(~mem_mask, float("-inf"))
    probs = torch.cat([mem, raw], dim=-1).softmax(dim=-1)
    from_memory = probs[..., :n] @ mem_v
    return from_memory + probs[..., n:] @ v, from_memory


class ScaleGrad(torch.autograd.Function):
    """Identity forward; multiplies the incoming gradient by ``scale`` (importance weight of UIO)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, scale: float) -> torch.Tensor:  # noqa: D102
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # noqa: D102
        return grad * ctx.scale, None


# ----------------------------------------------------------------------------- the model
class MemoryLM(nn.Module):
    """Frozen base + encoder/decoder LoRA + memory token. ``encode``/``decode`` one segment; ``stream``."""

    def __init__(self, base: nn.Module, cfg: UIOConfig) -> None:
        super().__init__()
        self.lay = base_layout(base)
        self.base = base.requires_grad_(False)
        self.cfg, self.segment, self.memory, self.window = cfg, cfg.segment, cfg.memory, cfg.raw_window
        lay, r = self.lay, cfg.lora_rank
        self.raw_span = cfg.raw_span
        if self.raw_span > lay.context:
            raise SqueezeError(f"raw_window {cfg.raw_window} + 1 segments of {cfg.segment} tokens exceed the base's "
                               f"context of {lay.context}; use a smaller raw_window or --segment")
        self.scale = cfg.lora_alpha / r
        emb = lay.embed.weight.detach()
        self.anchored = cfg.memory_init == "anchor"
        # learned: one memory embedding near the mean token embedding; anchor: an offset added to each memory
        # token's anchor embedding, starting at 0 so that a memory starts as a copy of its anchor's states
        start = torch.zeros_like(emb[0]) if self.anchored else emb.mean(0).clone()
        self.mem_token = nn.Parameter(start + 0.02 * torch.randn(lay.dim, device=emb.device))
        kv_out = lay.kv_heads * lay.head_dim
        outs = {"enc_q": lay.heads * lay.head_dim, "enc_v": kv_out, "dec_k": kv_out, "dec_v": kv_out}
        if cfg.memory_read == "kvqo":  # the decoder's memory query and memory read-out (see UIOConfig)
            outs |= {"dec_q": lay.heads * lay.head_dim, "dec_o": lay.dim}
        # LoRA: A (r, in) small random, B (out, r) zero, so training starts from the plain base model.
        ins = {n: lay.heads * lay.head_dim if n == "dec_o" else lay.dim for n in outs}
        self.lora_a = nn.ParameterDict({n: nn.Parameter(torch.randn(len(lay.layers), r, ins[n], device=emb.device)
                                                     / math.sqrt(ins[n]))
                                        for n in outs})
        self.lora_b = nn.ParameterDict({n: nn.Parameter(torch.zeros(len(lay.layers), o, r, device=emb.device))
                                        for n, o in outs.items()})

    def extra_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def _lora(self, name: str, layer: int, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return lora_linear(x, weight, self.lora_a[name][layer], self.lora_b[name][layer], self.scale)

    def _heads(self, x: torch.Tensor, n: int) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, n, self.lay.head_dim).transpose(1, 2)

    def encode(self, ids: torch.Tensor) -> torch.Tensor:
        """Memory (layers, B, m, D) of one full segment ``ids`` (B, L)."""
        lay, n_layers = self.lay, len(self.lay.layers)
        if ids.shape[1] != self.segment:
            raise SqueezeError(f"the encoder compresses whole segments of {self.segment} tokens, got {ids.shape[1]}")
        b, L, m = ids.shape[0], self.segment, self.memory
        if self.anchored:  # (B, m, D) each memory token's anchor embedding plus the learned offset
            mem_in = lay.embed(anchor_tokens(ids, m)) + self.mem_token
        else:
            mem_in = self.mem_token.expand(b, m, -1)
        h = torch.cat([lay.embed(ids), mem_in], dim=1)
        cos, sin = rope_tables(encoder_positions(L, m, self.anchored).to(ids.device), lay.head_dim, lay.rope_theta)
        mask = encoder_mask(L, m).to(ids.device)
        rep = lay.heads // lay.kv_heads
        out = []
        for i, layer in enumerate(lay.layers):
            x = layer.input_layernorm(h)
            out.append(x[:, L:])
            if i == n_layers - 1:  # the last block's output is never read: skip it
                break
            attn = layer.self_attn
            q = self._heads(self._lora("enc_q", i, x, attn.q_proj.weight), lay.heads)
            k = self._heads(attn.k_proj(x), lay.kv_heads)
            v = self._heads(self._lora("enc_v", i, x, attn.v_proj.weight), lay.kv_heads)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
            k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            h = h + attn.o_proj(a.transpose(1, 2).reshape(b, L + m, -1))
            h = h + layer.mlp(layer.post_attention_layernorm(h))
        return torch.stack(out)

    def memory_kv(self, mem: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per layer, the decoder's prefix keys/values (B, H, M, hd) of memories ``mem`` (layers, B, M, D).

        Memory states were normalised by the encoder: no second norm here. LoRA-adapted k/v weights.
        """
        lay, rep = self.lay, self.lay.heads // self.lay.kv_heads
        out = []
        for i, layer in enumerate(lay.layers):
            attn = layer.self_attn
            k = self._heads(self._lora("dec_k", i, mem[i], attn.k_proj.weight), lay.kv_heads)
            v = self._heads(self._lora("dec_v", i, mem[i], attn.v_proj.weight), lay.kv_heads)
            out.append((k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)))
        return out

    def decode(self, ids: torch.Tensor, memories: Sequence[torch.Tensor] = (),
               kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
               window: torch.Tensor | None = None, mem_mask: torch.Tensor | None = None,
               kv_rotated: bool = False) -> torch.Tensor:
        """Logits (B, T, V) of a segment ``ids`` (B, T <= L) reading earlier ``memories`` (each
        (layers, B, m, D)) or their already projected prefix ``kv`` (see :meth:`memory_kv`), and the raw
        tokens ``window`` (B, P) of the segments just before it that are not compressed yet (``raw_window``).
        ``mem_mask`` (B, M) bool marks the memory slots each row reads (default: all). ``kv_rotated``: the
        keys of ``kv`` already carry their compact positions (:class:`SegmentContext`)."""
        lay, t = self.lay, ids.shape[1]
        if window is not None:  # the raw window is decoded with the segment; only the segment's logits return
            ids = torch.cat([window, ids], dim=1)
        b, n = ids.shape
        if kv is None and len(memories):
            kv = self.memory_kv(torch.cat(list(memories), dim=2))
        cos, sin = rope_tables(torch.arange(n, device=ids.device), lay.head_dim, lay.rope_theta)
        mem_rope = None
        if kv is not None and self.cfg.memory_positions == "compact" and not kv_rotated:
            pos = memory_positions(kv[0][0].shape[-2], self.raw_span, lay.context).to(ids.device)
            mem_rope = rope_tables(pos, lay.head_dim, lay.rope_theta)
        rep = lay.heads // lay.kv_heads
        mask = None if mem_mask is None else mem_mask[:, None, None, :]  # (B, 1, 1, M)
        h = lay.embed(ids)
        read = kv is not None and self.cfg.memory_read == "kvqo"
        for i, layer in enumerate(lay.layers):
            attn = layer.self_attn
            x = layer.input_layernorm(h)
            q = self._heads(attn.q_proj(x), lay.heads)
            k = self._heads(attn.k_proj(x), lay.kv_heads).repeat_interleave(rep, 1)
            v = self._heads(attn.v_proj(x), lay.kv_heads).repeat_interleave(rep, 1)
            mk, mv = kv[i] if kv is not None else (None, None)
            mq = self._heads(self._lora("dec_q", i, x, attn.q_proj.weight), lay.heads) if read else None
            a, from_memory = memory_attention(q, k, v, cos, sin, mk, mv, mem_rope, mq, mask, kv_rotated)
            h = h + attn.o_proj(a.transpose(1, 2).reshape(b, n, -1))
            if read:  # LoRA on o_proj for the memory part only: o(a) + s B A a_mem
                a_mem = from_memory.transpose(1, 2).reshape(b, n, -1)
                h = h + lora_delta(a_mem, self.lora_a["dec_o"][i], self.lora_b["dec_o"][i], self.scale)
            h = h + layer.mlp(layer.post_attention_layernorm(h))
        return lay.lm_head(lay.norm(h[:, n - t:]))

    @torch.no_grad()
    def stream(self, ids: torch.Tensor) -> torch.Tensor:
        """Logits (B, N, V) of a long input, segment by segment (each token decoded once, encoded once).

        A trailing partial segment is decoded (never dropped); it is not encoded since nothing reads it.
        With ``raw_window`` W a segment is encoded when it leaves the raw window of the last W segments
        (the window's tokens are decoded again with each segment: its keys are recomputed, not cached).
        """
        if ids.shape[1] == 0:
            raise SqueezeError("empty input: nothing to decode")
        context = SegmentContext(self)
        logits = []
        for start in range(0, ids.shape[1], self.segment):
            seg = ids[:, start:start + self.segment]
            logits.append(context.decode(seg))
            if seg.shape[1] < self.segment or start + self.segment >= ids.shape[1]:
                break  # nothing reads a later memory
            context.push(seg)
        return torch.cat(logits, dim=1)


class SegmentContext:
    """What a :class:`MemoryLM` decoder reads besides its current segment: the projected memories of the
    compressed segments and the raw window of the last ``raw_window`` segments (streaming inference).

    Memory keys and values live in buffers that double when full (appending does not copy the whole
    prefix every segment). With compact positions the keys are also kept rotated at their current
    positions: a push moves only the memories whose position changes (the newest ``context - raw`` ones
    and those reaching the clamp); older ones share the clamped position and are never rotated again.
    """

    def __init__(self, model: MemoryLM) -> None:
        self.model = model
        self.buffers: list[list[torch.Tensor]] = []  # per layer [keys, values(, rotated keys)], (B, H, capacity, hd)
        self.raw: list[torch.Tensor] = []  # the raw window: the last W full segments (B, L), not compressed yet
        self.compressed = 0  # segments encoded into memories

    @property
    def raw_tokens(self) -> int:
        return sum(seg.shape[1] for seg in self.raw)

    @property
    def n(self) -> int:
        """Memories so far (``memory`` per compressed segment)."""
        return self.compressed * self.model.memory

    @property
    def rotated(self) -> bool:
        return self.model.cfg.memory_positions == "compact"

    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        """Logits (B, T, V) of the current segment ``ids`` (B, T <= L) reading this context."""
        window = torch.cat(self.raw, dim=1) if self.raw else None
        if not self.n:
            return self.model.decode(ids, window=window)
        key = 2 if self.rotated else 0
        kv = [(bufs[key][:, :, :self.n], bufs[1][:, :, :self.n]) for bufs in self.buffers]
        return self.model.decode(ids, kv=kv, window=window, kv_rotated=self.rotated)

    def push(self, seg: torch.Tensor) -> None:
        """A full segment (B, L) enters the raw window; the oldest one leaving it is encoded (projected once)."""
        self.raw.append(seg)
        if len(self.raw) > self.model.window:
            new = self.model.memory_kv(self.model.encode(self.raw.pop(0)))
            self.compressed += 1
            self._append(new)

    def _append(self, new: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Store the newest segment's memories' k/v (each (B, H, m, hd), already counted in :attr:`n`) and
        re-rotate the keys whose position moved."""
        m = new[0][0].shape[2]
        start = self.n - m
        if not self.buffers:
            self.buffers = [[torch.empty(0)] * (3 if self.rotated else 2) for _ in new]
        for bufs, (k, v) in zip(self.buffers, new):
            for i in range(len(bufs)):
                bufs[i] = _with_room(bufs[i], k, self.n)
            bufs[0][:, :, start:self.n] = k
            bufs[1][:, :, start:self.n] = v
        if not self.rotated:
            return
        lay = self.model.lay
        clamp = lay.context - self.model.raw_span  # the oldest position (memory_positions)
        moved = min(self.n, clamp + m)  # memories at positions -clamp..-1 now, or that just reached -clamp
        pos = memory_positions(self.n, self.model.raw_span, lay.context)[-moved:]
        cos, sin = rope_tables(pos.to(new[0][0].device), lay.head_dim, lay.rope_theta)
        for bufs in self.buffers:
            bufs[2][:, :, self.n - moved:self.n] = apply_rope(bufs[0][:, :, self.n - moved:self.n], cos, sin)


def _with_room(buf: torch.Tensor, like: torch.Tensor, need: int) -> torch.Tensor:
    """``buf`` (B, H, capacity, hd) or a larger copy of it (capacity doubled) holding at least ``need`` entries."""
    if buf.dim() == 4 and buf.shape[2] >= need:
        return buf
    grown = like.new_empty(*like.shape[:2], max(need, 2 * (buf.shape[2] if buf.dim() == 4 else 0)), like.shape[3])
    if buf.dim() == 4:
        grown[:, :, :buf.shape[2]] = buf
    return grown
