"""Stage 1: the pseudo-shadow generators, as engine tasks (resumable, progress bar).

* :class:`HQSSGenTask` - HQSS (arXiv 2212.04108): shadow-feature encoder F and generator G trained from
  region identities S (shadow) and NS (non-shadow) of the same image with
  - self-reconstruction: ``G(F(S), S) ~ S`` and ``G(F(NS), NS) ~ NS`` (L1 + focal frequency loss);
  - inter-reconstruction: pseudo shadow ``P_s = G(F(S), NS)`` and pseudo lit ``P_ns = G(F(NS), S)``
    must look like real shadow / lit regions to the LSGAN discriminators D_S, D_NS (replay buffers),
    and keep the chroma (a, b) of the region they were made from;
  - cycle-reconstruction through frozen G', F' (gradients reach only the first pass):
    ``G'(F(NS), P_s) ~ NS``, ``G'(F(S), P_ns) ~ S`` (L1 + FFL), ``F'(P_s) ~ F(S)``, ``F'(P_ns) ~ F(NS)``.
* :class:`MaskShadowGANTask` - the baseline after Mask-ShadowGAN (Hu et al., ICCV 2019): a cycle GAN
  between shadow images and *unpaired* shadow-free images, whose shadow-adding generator
  ``G_fs(free, mask)`` is conditioned on a shadow mask. Losses (paper weights): LSGAN both ways,
  cycle L1 x10 (``G_sf(G_fs(B, m)) ~ B``, ``G_fs(G_sf(A), m_A) ~ A``) and identity L1 x5
  (``G_sf(B) ~ B``, ``G_fs(A, empty mask) ~ A``). Mask-ShadowGAN derives its masks from the
  generator's own output; here the shadow images' given masks are used (HQSS gets them too).

Both run on one process (several generator and discriminator passes per step do not fit DDP's
one-forward-per-backward model); the removal network (stage 2) can use more.
"""
from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from squeeze.errors import SqueezeError
from squeeze.methods.hqss.config import HQSSConfig
from squeeze.methods.hqss.decouple import dihedral, lab_norm, pairing_candidates, pick_nonshadow_mask
from squeeze.methods.hqss.losses import chroma_l1, focal_frequency_loss, frozen, lsgan_loss
from squeeze.methods.hqss.nets import PatchDiscriminator, ReplayBuffer, ShadowEncoder, ShadowGenerator
from squeeze.train.engine import StepContext, derived_seed

MAX_EPOCH_STEPS = 100


def epoch_steps(steps: int) -> int:
    """The largest divisor of ``steps`` up to :data:`MAX_EPOCH_STEPS` (steps between checkpoints)."""
    return max(d for d in range(1, min(steps, MAX_EPOCH_STEPS) + 1) if steps % d == 0)


def linear_decay_lr(step: int, total: int, lr: float, decay_from: float) -> float:
    """Constant ``lr`` for the first ``decay_from`` of the steps, then linear to 0 (the paper's schedule)."""
    start = decay_from * total
    if step < start:
        return lr
    return lr * max(0.0, 1.0 - (step - start) / max(1.0, total - start))


class _GenTaskBase:
    """What both generator tasks share: schedule, seeding, identity."""

    find_unused_parameters = False

    def __init__(self, name: str, cfg: HQSSConfig, source: str) -> None:
        self.name, self.cfg, self.source = name, cfg, source
        self.seed = cfg.seed
        self.epochs = cfg.gen_steps // epoch_steps(cfg.gen_steps)

    def identity(self) -> dict[str, Any]:
        return {"config": self.cfg.identity(), "data": self.source}

    def steps_per_epoch(self, world: int) -> int:
        if world > 1:
            raise SqueezeError("the shadow generators train on one process; drop --devices/--nodes for this stage")
        return epoch_steps(self.cfg.gen_steps)

    def batch_at(self, step: int) -> tuple[torch.Tensor, ...]:
        raise NotImplementedError

    def batches(self, epoch: int, rank: int, world: int) -> Iterator[tuple[torch.Tensor, ...]]:
        steps = self.steps_per_epoch(world)
        for i in range(steps):
            yield self.batch_at(epoch * steps + i)

    def _rng(self, step: int) -> np.random.Generator:
        return np.random.default_rng(derived_seed(self.cfg.seed, step, 31))

    def _set_lr(self, ctx: StepContext) -> None:
        lr = linear_decay_lr(ctx.step, ctx.total_steps, self.cfg.gen_lr, self.cfg.decay_from)
        for opt in ctx.optimizers:
            for group in opt.param_groups:
                group["lr"] = lr

    def evaluate(self, module: nn.Module) -> dict[str, float]:
        return {}


class HQSSGenTask(_GenTaskBase):
    """HQSS stage 1 (see the module docstring); batches are (S, NS, mask, M_ns) in scaled Lab."""

    def __init__(self, cfg: HQSSConfig, images: torch.Tensor, masks: torch.Tensor, source: str) -> None:
        super().__init__("hqss-generator", cfg, source)
        self.images, self.masks = images, masks
        self.candidates = pairing_candidates(masks, cfg.min_ratio, cfg.max_ratio)

    def build(self) -> tuple[nn.Module, list[torch.optim.Optimizer]]:
        c, shape = self.cfg, (3, self.cfg.size, self.cfg.size)
        net = nn.ModuleDict({"F": ShadowEncoder(c.feat), "G": ShadowGenerator(c.feat, c.gen_width, c.gen_blocks),
                             "D_S": PatchDiscriminator(3, c.disc_width), "D_NS": PatchDiscriminator(3, c.disc_width),
                             "pool_S": ReplayBuffer(c.pool, shape), "pool_NS": ReplayBuffer(c.pool, shape)})
        gen = torch.optim.Adam([*net["F"].parameters(), *net["G"].parameters()], lr=c.gen_lr, betas=(0.5, 0.999))
        disc = torch.optim.Adam([*net["D_S"].parameters(), *net["D_NS"].parameters()], lr=c.gen_lr,
                                betas=(0.5, 0.999))
        return net, [gen, disc]

    def batch_at(self, step: int) -> tuple[torch.Tensor, ...]:
        """The step's batch: S, NS (B, 3, H, W) scaled Lab, shadow masks and M_ns (B, 1, H, W)."""
        gen = self._rng(step)
        idx = gen.integers(len(self.images), size=self.cfg.gen_batch)
        ms_ns = torch.stack([pick_nonshadow_mask(int(i), self.masks, self.candidates, gen) for i in idx])
        imgs, ms = self.images[idx], self.masks[idx]
        flips = torch.from_numpy(gen.integers(2, size=len(idx)).astype(bool))
        imgs, ms, ms_ns = (torch.where(flips.view(-1, 1, 1, 1), t.flip(-1), t) for t in (imgs, ms, ms_ns))
        return lab_norm(imgs * ms), lab_norm(imgs * ms_ns), ms, ms_ns

    def train_step(self, ctx: StepContext, batch: tuple[torch.Tensor, ...]) -> dict[str, float]:
        self._set_lr(ctx)
        S, NS, m, m_ns = (t.to(ctx.device) for t in batch)
        net, c = ctx.module, self.cfg
        Fe, G = net["F"], net["G"]
        fS, fNS = Fe(S), Fe(NS)
        rec = lambda p, t: F.l1_loss(p, t) + c.w_ffl * focal_frequency_loss(p, t)  # noqa: E731
        self_loss = rec(G(fS, S), S) + rec(G(fNS, NS), NS)
        P_s, P_ns = G(fS, NS), G(fNS, S)  # pseudo shadow in NS's region, pseudo lit in S's region
        adv = lsgan_loss(frozen(net["D_S"], P_s), True) + lsgan_loss(frozen(net["D_NS"], P_ns), True)
        chroma = chroma_l1(P_s, NS, m_ns) + chroma_l1(P_ns, S, m)
        cyc = rec(frozen(G, fNS, P_s), NS) + rec(frozen(G, fS, P_ns), S)
        feat = F.l1_loss(frozen(Fe, P_s), fS) + F.l1_loss(frozen(Fe, P_ns), fNS)
        g_loss = (c.w_self * self_loss + c.w_adv * adv + c.w_chroma * chroma + c.w_cycle * cyc + c.w_feat * feat)
        ctx.backward(g_loss)
        fake_s, fake_ns = net["pool_S"].push_and_pop(P_s), net["pool_NS"].push_and_pop(P_ns)
        d_loss = 0.5 * (lsgan_loss(net["D_S"](S), True) + lsgan_loss(net["D_S"](fake_s), False)
                        + lsgan_loss(net["D_NS"](NS), True) + lsgan_loss(net["D_NS"](fake_ns), False))
        ctx.backward(d_loss)
        return {k: float(v.detach()) for k, v in (("self", self_loss), ("adv", adv), ("cycle", cyc), ("d", d_loss))}


class MaskShadowGANTask(_GenTaskBase):
    """Mask-ShadowGAN-style stage 1 (see the module docstring); RGB scaled to [-1, 1]."""

    W_CYCLE, W_IDENTITY = 10.0, 5.0  # Mask-ShadowGAN's weights

    def __init__(self, cfg: HQSSConfig, images: torch.Tensor, masks: torch.Tensor, clean: torch.Tensor,
                 source: str) -> None:
        super().__init__("mask-shadowgan-generator", cfg, source)
        self.images, self.masks, self.clean = images, masks, clean

    def build(self) -> tuple[nn.Module, list[torch.optim.Optimizer]]:
        c, shape = self.cfg, (3, self.cfg.size, self.cfg.size)
        net = nn.ModuleDict({"G_fs": ShadowGenerator(1, c.gen_width, c.gen_blocks),
                             "G_sf": ShadowGenerator(0, c.gen_width, c.gen_blocks),
                             "D_A": PatchDiscriminator(3, c.disc_width), "D_B": PatchDiscriminator(3, c.disc_width),
                             "pool_A": ReplayBuffer(c.pool, shape), "pool_B": ReplayBuffer(c.pool, shape)})
        gen = torch.optim.Adam([*net["G_fs"].parameters(), *net["G_sf"].parameters()], lr=c.gen_lr,
                               betas=(0.5, 0.999))
        disc = torch.optim.Adam([*net["D_A"].parameters(), *net["D_B"].parameters()], lr=c.gen_lr, betas=(0.5, 0.999))
        return net, [gen, disc]

    def batch_at(self, step: int) -> tuple[torch.Tensor, ...]:
        """Shadow images A and their masks, unpaired free images B and random (turned) masks for them."""
        gen = self._rng(step)
        b = self.cfg.gen_batch
        ia, ib, im = (gen.integers(n, size=b) for n in (len(self.images), len(self.clean), len(self.masks)))
        m_r = torch.stack([dihedral(self.masks[int(j)], int(gen.integers(8))) for j in im])
        return self.images[ia] * 2 - 1, self.masks[ia], self.clean[ib] * 2 - 1, m_r

    def train_step(self, ctx: StepContext, batch: tuple[torch.Tensor, ...]) -> dict[str, float]:
        self._set_lr(ctx)
        A, m_a, B, m_r = (t.to(ctx.device) for t in batch)
        net = ctx.module
        G_fs, G_sf = net["G_fs"], net["G_sf"]
        fake_a, fake_b = G_fs(m_r, B), G_sf(None, A)  # B + shadow in m_r; A without its shadow
        adv = lsgan_loss(frozen(net["D_A"], fake_a), True) + lsgan_loss(frozen(net["D_B"], fake_b), True)
        cyc = F.l1_loss(G_sf(None, fake_a), B) + F.l1_loss(G_fs(m_a, fake_b), A)
        idt = F.l1_loss(G_sf(None, B), B) + F.l1_loss(G_fs(torch.zeros_like(m_a), A), A)
        ctx.backward(adv + self.W_CYCLE * cyc + self.W_IDENTITY * idt)
        pa, pb = net["pool_A"].push_and_pop(fake_a), net["pool_B"].push_and_pop(fake_b)
        d_loss = 0.5 * (lsgan_loss(net["D_A"](A), True) + lsgan_loss(net["D_A"](pa), False)
                        + lsgan_loss(net["D_B"](B), True) + lsgan_loss(net["D_B"](pb), False))
        ctx.backward(d_loss)
        return {k: float(v.detach()) for k, v in (("adv", adv), ("cycle", cyc), ("identity", idt), ("d", d_loss))}
