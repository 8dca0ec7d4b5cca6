"""UnDeM training through the shared engine: per-group moire generators (or CycleGAN-lite), filtered pseudo
pairs, then the demoireing RestoreNet on them. Baselines ``overlay`` and ``paired`` skip the generators.

Paper: Zhang et al., "Learning Image Demoireing from Unpaired Real Data", AAAI 2024.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from squeeze.errors import SqueezeError
from squeeze.methods.undem.config import UnDeMConfig
from squeeze.methods.undem.data import UnpairedData, group_tiles, moire_tiles
from squeeze.methods.undem.models import CycleGANLite, UnDeMGenerator, lsgan
from squeeze.restore.data import unpaired_patches
from squeeze.train.checkpoint import atomic_save_tensors, read_format_file
from squeeze.train.engine import EngineConfig, StepContext, derived_seed, fit
from squeeze.train.state import CHECKPOINT

GEN_FORMAT = "squeeze.undem-generator"
GEN_FORMAT_VERSION = 1


def _augment(x: torch.Tensor, gen: np.random.Generator) -> torch.Tensor:
    """Random flip and 90-degree turn of a (B, C, H, W) batch (one draw for the batch)."""
    if gen.integers(2):
        x = x.flip(-1)
    return torch.rot90(x, int(gen.integers(4)), (-2, -1))


def linear_decay_lr(step: int, total: int, lr: float) -> float:
    """The paper's schedule: constant for the first half, then linear to 0."""
    half = total / 2
    return lr if step < half else lr * max(0.0, (total - step) / max(1.0, total - half))


class GeneratorTask:
    """Engine task training one moire generator (UnDeM: E_m, E_c, G, D) or CycleGAN-lite on unpaired batches."""

    find_unused_parameters = True

    def __init__(self, name: str, cfg: UnDeMConfig, tiles: torch.Tensor, clean: list[np.ndarray], data_id: str,
                 group: int) -> None:
        self.name, self.cfg, self.tiles, self.clean, self.data_id, self.group = name, cfg, tiles, clean, data_id, group
        self.seed = derived_seed(cfg.seed, 11, group)
        self.steps = cfg.steps_per_generator()
        self.epoch_len = max(d for d in range(1, min(self.steps, 100) + 1) if self.steps % d == 0)
        self.epochs = self.steps // self.epoch_len

    def identity(self) -> dict[str, Any]:
        return {"generator": self.cfg.generator_identity(), "data": self.data_id, "group": self.group}

    def build(self) -> tuple[nn.Module, list[torch.optim.Optimizer]]:
        c = self.cfg
        if c.generator == "cyclegan":
            net: nn.Module = CycleGANLite(c.gen_width, c.gen_blocks, c.disc_width)
            g_params = [*net.c2m.parameters(), *net.m2c.parameters()]
            d_params = [*net.disc_m.parameters(), *net.disc_c.parameters()]
        else:
            net = UnDeMGenerator(c.enc_ch, c.gen_width, c.gen_blocks, c.disc_width)
            g_params = [*net.enc_m.parameters(), *net.enc_c.parameters(), *net.gen.parameters()]
            d_params = list(net.disc.parameters())
        betas = (0.5, 0.999)
        return net, [torch.optim.Adam(g_params, c.gen_lr, betas=betas), torch.optim.Adam(d_params, c.gen_lr, betas=betas)]

    def steps_per_epoch(self, world: int) -> int:
        return self.epoch_len

    def batches(self, epoch: int, rank: int, world: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if world > 1:
            raise SqueezeError("UnDeM generator training runs on one process (two backward passes per step); "
                               "drop --devices/--nodes")
        b, t = self.cfg.gen_batch, self.cfg.tile
        for i in range(self.epoch_len):
            gen = np.random.default_rng(derived_seed(self.seed, epoch * self.epoch_len + i))
            idx = torch.from_numpy(gen.integers(len(self.tiles), size=b))
            moire = _augment(self.tiles[idx].float() / 255.0, gen)
            yield moire, unpaired_patches(self.clean, b, t, gen)

    def train_step(self, ctx: StepContext, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, float]:
        moire, clean = (x.to(ctx.device) for x in batch)
        for opt in ctx.optimizers:
            for group in opt.param_groups:
                group["lr"] = linear_decay_lr(ctx.step, ctx.total_steps, self.cfg.gen_lr)
        if self.cfg.generator == "cyclegan":
            return _cyclegan_step(ctx, moire, clean, self.cfg.cycle_weight)
        return _undem_step(ctx, moire, clean, self.cfg.feat_weight)

    def evaluate(self, module: nn.Module) -> dict[str, float]:
        return {}


def _undem_step(ctx: StepContext, moire: torch.Tensor, clean: torch.Tensor, fw: float) -> dict[str, float]:
    """One UnDeM generator step: G/encoders against D (LSGAN) plus moire- and content-feature L1; then D."""
    m: UnDeMGenerator = ctx.module  # type: ignore[assignment]
    feat_m = m.enc_m(moire)  # (B, enc_ch, T, T): the reference's moire features
    fake = m.gen(feat_m, clean)  # (B, 3, T, T): clean content + pseudo moire
    m.disc.requires_grad_(False)
    adv = lsgan(m.disc(fake), 1.0)
    feat = F.l1_loss(m.enc_m(fake), feat_m) + F.l1_loss(m.enc_c(fake), m.enc_c(clean))
    ctx.backward(adv + fw * feat)
    m.disc.requires_grad_(True)
    d_loss = 0.5 * (lsgan(m.disc(moire), 1.0) + lsgan(m.disc(fake.detach()), 0.0))
    ctx.backward(d_loss)
    return {"g_adv": adv.item(), "g_feat": feat.item(), "d": d_loss.item()}


def _cyclegan_step(ctx: StepContext, moire: torch.Tensor, clean: torch.Tensor, cw: float) -> dict[str, float]:
    """One CycleGAN-lite step: both translators against both discriminators plus cycle L1; then the Ds."""
    m: CycleGANLite = ctx.module  # type: ignore[assignment]
    fake_m, fake_c = m.c2m(None, clean), m.m2c(None, moire)
    for d in (m.disc_m, m.disc_c):
        d.requires_grad_(False)
    adv = lsgan(m.disc_m(fake_m), 1.0) + lsgan(m.disc_c(fake_c), 1.0)
    cyc = F.l1_loss(m.m2c(None, fake_m), clean) + F.l1_loss(m.c2m(None, fake_c), moire)
    ctx.backward(adv + cw * cyc)
    for d in (m.disc_m, m.disc_c):
        d.requires_grad_(True)
    d_loss = 0.5 * (lsgan(m.disc_m(moire), 1.0) + lsgan(m.disc_m(fake_m.detach()), 0.0)
                    + lsgan(m.disc_c(clean), 1.0) + lsgan(m.disc_c(fake_c.detach()), 0.0))
    ctx.backward(d_loss)
    return {"g_adv": adv.item(), "g_cyc": cyc.item(), "d": d_loss.item()}


# ---------------------------------------------------------------------------------------------------
# generator files


def save_generator(path: Path, net: nn.Module, cfg: UnDeMConfig, group: int) -> None:
    """Write a trained generator with its config identity (safetensors + JSON header)."""
    meta = {"format": GEN_FORMAT, "format_version": str(GEN_FORMAT_VERSION), "group": str(group),
            "identity": json.dumps(cfg.generator_identity(), sort_keys=True)}
    atomic_save_tensors(path, dict(net.state_dict()), metadata=meta)


def load_generator(path: str | Path, cfg: UnDeMConfig, group: int) -> nn.Module:
    """Load a generator written by :func:`save_generator`, refusing one made with another config or group."""
    target, meta, tensors = read_format_file(path, "generator.safetensors", GEN_FORMAT, GEN_FORMAT_VERSION,
                                             "UnDeM generator", "squeeze train undem")
    wanted = json.dumps(cfg.generator_identity(), sort_keys=True)
    if meta.get("identity") != wanted or meta.get("group") != str(group):
        raise SqueezeError(f"{target} is a generator of another config or group (group {meta.get('group')}); "
                           "delete it or use the config it was trained with")
    net = GeneratorTask("load", cfg, torch.zeros(1), [], "", group).build()[0]
    try:
        net.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise SqueezeError(f"{target}: weights do not fit the UnDeM generator; re-train it") from exc
    return net.eval()


def train_generators(cfg: UnDeMConfig, data: UnpairedData, gen_dir: Path, progress: bool = True
                     ) -> tuple[list[nn.Module], list[torch.Tensor], dict[str, Any]]:
    """Group the moire tiles and train (or reload) one generator per group; returns nets, tiles per group, stats."""
    tiles = moire_tiles(data.moire, cfg.tile)
    labels = group_tiles(tiles, cfg.groups) if cfg.grouped else torch.zeros(len(tiles), dtype=torch.long)
    nets, pools = [], []
    for g in range(cfg.n_generators()):
        pool = tiles[labels == g]
        final = gen_dir / f"g{g}" / "generator.safetensors"
        if final.is_file():
            net = load_generator(final, cfg, g)
        else:
            task = GeneratorTask(f"undem-gen{g}" if cfg.generator == "undem" else "cyclegan-gen", cfg, pool,
                                 data.clean, data.identity, g)
            engine = EngineConfig(final.parent, resume=(final.parent / CHECKPOINT).is_file(), progress=progress)
            net = fit(task, engine).module.eval()
            save_generator(final, net, cfg, g)
        nets.append(net)
        pools.append(pool)
    stats = {"tiles": len(tiles), "group_sizes": torch.bincount(labels, minlength=max(1, cfg.n_generators())).tolist()}
    return nets, pools, stats
