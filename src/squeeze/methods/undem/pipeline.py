"""UnDeM end to end: generators -> adaptively filtered pseudo pairs -> demoireing RestoreNet (and baselines).

Paper: Zhang et al., "Learning Image Demoireing from Unpaired Real Data", AAAI 2024. Training pairs per variant:

* ``undem`` / ``undem-no-group`` / ``undem-no-filter`` / ``cyclegan``: clean patches from the clean pool turned
  into pseudo moire by the trained generator(s) (UnDeM: with a random moire reference tile of the
  generator's complexity class). With filtering, each class generates ``ceil(n / keep)`` candidates and
  keeps the ``n`` with the smallest Laplacian gap (the paper's per-class percentile threshold).
* ``overlay``: clean patches with a sinusoidal interference overlay.
* ``paired``: crops of the simulated moire photos with their withheld clean targets (upper bound).
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from squeeze.errors import SqueezeError
from squeeze.methods.undem.config import UnDeMConfig
from squeeze.methods.undem.data import UnpairedData
from squeeze.methods.undem.math import keep_mask, laplacian_gap, overlay_moire
from squeeze.methods.undem.task import train_generators
from squeeze.restore.data import paired_patches, unpaired_patches
from squeeze.restore.io import load_restorer, save_restorer
from squeeze.restore.nets import RestoreNet
from squeeze.restore.train import train_restorer
from squeeze.train.engine import EngineConfig, derived_seed
from squeeze.train.state import CHECKPOINT

GEN_CHUNK = 32  # pseudo pairs generated per forward pass


def _to_u8(x: torch.Tensor) -> torch.Tensor:
    return x.clamp(0, 1).mul(255).round().to(torch.uint8)


@torch.no_grad()
def pseudo_pairs(net: nn.Module, refs: torch.Tensor, clean: list[np.ndarray], n: int, keep: float, tile: int,
                 seed: int) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    """``n`` filtered pseudo pairs from one generator: uint8 inputs and targets (n, 3, tile, tile) and stats.

    ``refs``: uint8 moire reference tiles of the generator's class. ``ceil(n / keep)`` candidates are
    made; those with the largest Laplacian gap are dropped (``keep`` = 1: no filtering).
    """
    total = int(math.ceil(n / keep))
    gen = np.random.default_rng(seed)
    fakes, cleans = [], []
    for start in range(0, total, GEN_CHUNK):
        b = min(GEN_CHUNK, total - start)
        c = unpaired_patches(clean, b, tile, gen)
        ref = refs[torch.from_numpy(gen.integers(len(refs), size=b))].float() / 255.0
        fakes.append(net.synthesize(ref, c).clamp(0, 1))
        cleans.append(c)
    fake, cl = torch.cat(fakes), torch.cat(cleans)
    scores = laplacian_gap(cl, fake)
    order = torch.argsort(scores, stable=True)[:n]  # the n smallest gaps = the per-class percentile filter
    mask, thr = keep_mask(scores, torch.zeros_like(scores, dtype=torch.long), (n / total,))
    stats = {"candidates": total, "kept": n, "threshold": thr[0], "dropped_frac": 1 - n / total,
             "gap_kept": float(scores[order].mean()), "gap_all": float(scores.mean())}
    assert int(mask.sum()) >= n  # ties at the threshold may keep a few more; we take exactly n
    return _to_u8(fake[order]), _to_u8(cl[order]), stats


def training_pairs(cfg: UnDeMConfig, data: UnpairedData, gen_dir: Path, progress: bool = True
                   ) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """The variant's training pairs: uint8 inputs and clean targets (N, 3, tile, tile), and statistics."""
    n, t = cfg.pseudo_pairs, cfg.tile
    gen = np.random.default_rng(derived_seed(cfg.seed, 23))
    if cfg.variant == "paired":
        if not data.paired:
            raise SqueezeError("the paired upper bound needs paired data (simulated moire with targets)")
        x, y = paired_patches(data.paired, n, t, gen, augment=False)
        return _to_u8(x), _to_u8(y), {}
    if cfg.variant == "overlay":
        clean = unpaired_patches(data.clean, n, t, gen)
        tg = torch.Generator().manual_seed(derived_seed(cfg.seed, 29))
        return _to_u8(overlay_moire(clean, tg)), _to_u8(clean), {}
    nets, pools, stats = train_generators(cfg, data, gen_dir, progress)
    keeps = cfg.effective_keep()
    xs, ys, per_group = [], [], []
    counts = [n // len(nets) + (1 if g < n % len(nets) else 0) for g in range(len(nets))]
    for g, (net, pool) in enumerate(tqdm(list(zip(nets, pools)), desc="pseudo pairs", leave=False,
                                          disable=not progress)):
        x, y, st = pseudo_pairs(net, pool, data.clean, counts[g], keeps[g], t, derived_seed(cfg.seed, 31, g))
        xs.append(x)
        ys.append(y)
        per_group.append(st)
    return torch.cat(xs), torch.cat(ys), {**stats, "filter": per_group}


def patch_batches(x: torch.Tensor, y: torch.Tensor, batch: int, patch: int, seed: int
                  ) -> Callable[[int], tuple[torch.Tensor, torch.Tensor]]:
    """``make_batch(step)`` for the restore harness: random aligned crops of the uint8 pairs (pure in step)."""
    def make_batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        gen = np.random.default_rng(derived_seed(seed, 37, step))
        idx = gen.integers(len(x), size=batch)
        oy, ox = gen.integers(x.shape[-2] - patch + 1, size=batch), gen.integers(x.shape[-1] - patch + 1, size=batch)
        turns, flips = gen.integers(4, size=batch), gen.integers(2, size=batch)
        xs, ys = [], []
        for i in range(batch):
            a, b = (t[idx[i], :, oy[i]:oy[i] + patch, ox[i]:ox[i] + patch] for t in (x, y))
            if flips[i]:
                a, b = a.flip(-1), b.flip(-1)
            xs.append(torch.rot90(a, int(turns[i]), (-2, -1)))
            ys.append(torch.rot90(b, int(turns[i]), (-2, -1)))
        return torch.stack(xs).float() / 255.0, torch.stack(ys).float() / 255.0

    return make_batch


def _digest(*tensors: torch.Tensor) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def train_undem(cfg: UnDeMConfig, data: UnpairedData, workdir: Path, gen_dir: Path | None = None,
                progress: bool = True, evaluate: Callable[[nn.Module], dict[str, float]] | None = None
                ) -> tuple[RestoreNet, dict[str, Any]]:
    """Train one variant into ``workdir`` (resumable); returns the demoireing net and a summary.

    ``gen_dir``: where generators live (default ``workdir/generators``); variants with the same
    generator identity (``undem`` and ``undem-no-filter``) can share it. The finished model is
    ``workdir/model.safetensors``; when it exists (same config and data) it is loaded, not retrained.
    """
    workdir = Path(workdir)
    final = workdir / "model.safetensors"
    meta_want = json.loads(json.dumps({"method": "undem", "config": cfg.to_dict(), "data": data.identity}))
    if final.is_file():
        model, meta = load_restorer(final, expect=meta_want)
        return model, meta.get("summary", {})
    gdir = Path(gen_dir) if gen_dir is not None else workdir / "generators"
    x, y, stats = training_pairs(cfg, data, gdir / _generator_key(cfg, data), progress)
    rdir = workdir / "restore"
    engine = EngineConfig(rdir, resume=(rdir / CHECKPOINT).is_file(), progress=progress)
    model = train_restorer(f"undem-{cfg.variant}", patch_batches(x, y, cfg.restore_batch, cfg.restore_patch,
                                                                  cfg.seed),
                           cfg.restore_config(), engine, evaluate, identity=f"{data.identity}/{_digest(x, y)}")
    summary = {"variant": cfg.variant, "pairs": int(len(x)), **stats}
    save_restorer(final, model, {**meta_want, "summary": summary})  # type: ignore[arg-type]
    return model, summary  # type: ignore[return-value]


def _generator_key(cfg: UnDeMConfig, data: UnpairedData) -> str:
    ident = repr(sorted(cfg.generator_identity().items())) + data.identity
    return f"{cfg.generator}-{'grouped' if cfg.grouped else 'single'}-" + hashlib.sha256(ident.encode()).hexdigest()[:10]
