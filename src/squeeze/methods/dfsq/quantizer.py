"""The DFSQ activation quantizer: dynamic channel normalization + a per-channel point set.

One :class:`ChannelNormQuantizer` sits as ``input_quantizer`` on each quantized conv. At inference it
normalizes its input per sample and per channel (statistics recomputed for every input, as in the
paper), rounds each value to the nearest of its channel's points, and de-normalizes. The points are
chosen at calibration: from the universal set by pinned-zero K-means (``kind="subset"``, DFSQ) or a
fixed uniform grid (``kind="uniform"``, the ``uniform-norm`` baseline).

Modes: ``off`` (identity), ``probe`` (identity; records the input minimum, which decides signed
[-1, 1] vs post-ReLU [0, 1] normalization), ``observe`` (identity; keeps a random subsample of the
normalized values per channel), ``quant``. Parameters live in buffers ``points`` (C, K) and
``signed`` (1,), so they are saved with the model's state dict.
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from squeeze.methods.dfsq import subset as S
from squeeze.quant.custom import register_custom_quantizer

Kind = Literal["subset", "uniform"]
Mode = Literal["off", "probe", "observe", "quant"]


@register_custom_quantizer
class ChannelNormQuantizer(nn.Module):
    """Dynamic per-(sample, channel) normalization followed by nearest-point quantization (DFSQ Sec. 3).

    Args:
        bits: 2^bits points per channel.
        kind: ``subset`` (points picked from the universal set by K-means) or ``uniform``.
        max_samples: normalized values kept per channel for K-means (random subsample).
        restarts, iters, tol: K-means settings (see :func:`squeeze.methods.dfsq.subset.select_points`).
        seed: seeds the subsampling and the K-means initialisation.
    """

    def __init__(self, bits: int, kind: Kind = "subset", max_samples: int = 20000, restarts: int = 5,
                 iters: int = 100, tol: float = 1e-3, seed: int = 0) -> None:
        super().__init__()
        self.bits, self.kind = bits, kind
        self.max_samples, self.restarts, self.iters, self.tol = max_samples, restarts, iters, tol
        self.mode: Mode = "off"
        self.register_buffer("points", torch.empty(0))
        self.register_buffer("signed", torch.empty(0, dtype=torch.bool))
        self._gen = torch.Generator().manual_seed(seed)
        self._min: float | None = None
        self._sample: list[torch.Tensor] = []

    @property
    def calibrated(self) -> bool:
        return self.points.numel() > 0

    def extra_repr(self) -> str:
        return f"{self.kind}{self.bits}, mode={self.mode}"

    def header(self) -> dict:
        """JSON-able settings that rebuild this quantizer (buffers travel in the state dict)."""
        return {"class": "channel-norm", "bits": self.bits, "kind": self.kind, "mode": self.mode}

    @classmethod
    def from_header(cls, info: dict) -> "ChannelNormQuantizer":
        """Inverse of :meth:`header` (uncalibrated until its buffers are loaded)."""
        q = cls(int(info["bits"]), info["kind"])
        q.mode = info["mode"]
        return q

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args, **kwargs) -> None:  # type: ignore[override]
        for name, buf in self._buffers.items():  # empty buffers adopt the saved shape
            key = prefix + name
            if buf is not None and buf.numel() == 0 and key in state_dict:
                self._buffers[name] = torch.empty_like(state_dict[key], device=buf.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "off":
            return x
        if x.ndim != 4:
            raise RuntimeError(f"ChannelNormQuantizer expects (N, C, H, W) conv inputs, got {tuple(x.shape)}")
        if self.mode == "probe":
            low = float(x.detach().min())
            self._min = low if self._min is None else min(self._min, low)
            return x
        if self.mode == "observe":
            self._observe(x.detach().float())
            return x
        if not self.calibrated:
            raise RuntimeError("DFSQ quantizer used before calibration; call finalize() after observing")
        return self.fake_quant(x)

    def _observe(self, x: torch.Tensor) -> None:
        """Keep up to ``max_samples`` random normalized values per channel of this batch (same positions)."""
        if self._min is None:
            raise RuntimeError("run a probe pass before observing (it decides signed vs post-ReLU)")
        u, _, _ = S.normalize_channels(x, self._min < 0)
        rows = u.transpose(0, 1).reshape(u.shape[1], -1)  # (C, N*H*W)
        if rows.shape[1] > self.max_samples:
            cols = torch.randperm(rows.shape[1], generator=self._gen)[: self.max_samples].to(rows.device)
            rows = rows[:, cols]
        self._sample.append(rows.clone())

    @torch.no_grad()
    def finalize(self) -> None:
        """Choose the per-channel points from the observed sample, then drop the sample."""
        if not self._sample:
            raise RuntimeError("nothing observed: the layer did not run on the calibration data")
        signed = bool(self._min is not None and self._min < 0)
        data = torch.cat(self._sample, dim=1)
        if data.shape[1] > self.max_samples:
            data = data[:, torch.randperm(data.shape[1], generator=self._gen)[: self.max_samples].to(data.device)]
        if self.kind == "uniform":
            grid = S.uniform_points(self.bits, signed).to(data.device)
            points = grid.expand(data.shape[0], -1).clone()
        else:
            universe = S.universal_set(signed=signed).to(data.device)
            gen = torch.Generator(device=data.device).manual_seed(int(torch.randint(2**31, (1,), generator=self._gen)))
            points = S.select_points(data, self.bits, universe, self.restarts, self.iters, self.tol, gen)
        self.points = points
        self.signed = torch.tensor([signed], device=data.device)
        self._sample, self._min = [], None

    def fake_quant(self, x: torch.Tensor) -> torch.Tensor:
        """Normalize, round to the channel's nearest point, de-normalize (straight-through gradient)."""
        u, mu, scale = S.normalize_channels(x, bool(self.signed[0]))
        q = S.quantize_to_points(u.detach(), self.points)
        if x.requires_grad:
            q = u + (q - u).detach()
        return q * scale + mu
