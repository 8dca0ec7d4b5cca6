"""Stateful fake-quantizer modules built from a :class:`QuantSpec`.

A quantizer is ``bits x kind (uniform / log2 / log-sqrt2) x granularity x range estimator``. It has
three modes: ``off`` (identity), ``observe`` (identity; records statistics) and ``quant``
(fake-quantize with a straight-through gradient). ``finalize()`` turns observed statistics into
parameters, which live in buffers so they are saved with the model.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

import torch
from torch import nn

from squeeze.quant import primitives as P

Kind = Literal["uniform", "log2", "logsqrt2"]
Estimator = Literal["minmax", "percentile", "mse", "omse"]
Mode = Literal["off", "observe", "quant"]
_MAX_SAMPLE = 1 << 21  # elements kept per quantizer while observing (bounds calibration memory)


@dataclass(frozen=True)
class QuantSpec:
    """How one tensor is quantized.

    Attributes:
        bits: bit width, 2..16.
        kind: ``uniform`` affine grid, or ``log2`` / ``logsqrt2`` grids for non-negative inputs
            (post-softmax probabilities).
        symmetric: signed symmetric grid (zero point 0) instead of unsigned asymmetric.
        granularity: which elements share parameters (see :class:`Granularity`).
        estimator: ``minmax``, ``percentile`` (clip at ``percentile``), ``mse`` (best of
            ``percentiles`` by squared error, as in RepQ-ViT) or ``omse`` (shrink factor search).
    """

    bits: int
    kind: Kind = "uniform"
    symmetric: bool = False
    granularity: P.Granularity = field(default_factory=P.Granularity)
    estimator: Estimator = "minmax"
    percentile: float = 0.999
    percentiles: tuple[float, ...] = (0.999, 0.9999, 0.99999)

    def __post_init__(self) -> None:
        if not 2 <= self.bits <= 16:
            raise ValueError(f"bit width {self.bits} is outside 2..16")
        if self.kind not in ("uniform", "log2", "logsqrt2"):
            raise ValueError(f"unknown quantizer kind {self.kind!r}")
        if self.estimator not in ("minmax", "percentile", "mse", "omse"):
            raise ValueError(f"unknown range estimator {self.estimator!r}")
        if not 0.5 < self.percentile <= 1.0:
            raise ValueError("percentile must be in (0.5, 1]")

    def to_dict(self) -> dict:
        """JSON-able dict (granularity flattened)."""
        d = asdict(self)
        d["percentiles"] = list(self.percentiles)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "QuantSpec":
        d = dict(d)
        d["granularity"] = P.Granularity(**d["granularity"])
        d["percentiles"] = tuple(d["percentiles"])
        return cls(**d)


class Quantizer(nn.Module):
    """Fake-quantizer for one tensor, configured by a :class:`QuantSpec`.

    Buffers: ``scale`` and ``zero_point`` (uniform) or ``delta`` (log grids), shaped to broadcast
    against the 2-D stat view of the tensor (see :meth:`Granularity.view`).
    """

    def __init__(self, spec: QuantSpec) -> None:
        super().__init__()
        self.spec = spec
        self.mode: Mode = "off"
        self.register_buffer("scale", torch.empty(0))
        self.register_buffer("zero_point", torch.empty(0))
        self._lo: torch.Tensor | None = None
        self._hi: torch.Tensor | None = None
        self._sample: list[torch.Tensor] = []
        self._reduce_dim = 1

    @property
    def calibrated(self) -> bool:
        return self.scale.numel() > 0

    def extra_repr(self) -> str:
        s = self.spec
        return f"{s.kind}{s.bits}, {s.granularity.kind}, {s.estimator}, mode={self.mode}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "off":
            return x
        if self.mode == "observe":
            self.observe(x)
            return x
        if not self.calibrated:
            raise RuntimeError("quantizer used before calibration; call finalize() after observing")
        return self.fake_quant(x)

    @torch.no_grad()
    def observe(self, x: torch.Tensor) -> None:
        """Record statistics of ``x`` (running min/max, or a bounded sample for search estimators)."""
        v, self._reduce_dim = self.spec.granularity.view(x.detach().float())
        if self.spec.estimator == "minmax" and self.spec.kind == "uniform":
            lo, hi = P.minmax_range(v, self._reduce_dim)
            self._lo = lo if self._lo is None else torch.minimum(self._lo, lo)
            self._hi = hi if self._hi is None else torch.maximum(self._hi, hi)
            return
        kept = sum(t.numel() for t in self._sample)
        if kept >= _MAX_SAMPLE:
            return
        if self._reduce_dim == 1 and v.shape[0] == 1 and v.numel() > _MAX_SAMPLE - kept:
            # one row (per-tensor): keep an evenly strided subset of elements
            v = v[:, :: max(1, v.numel() // (_MAX_SAMPLE - kept))]
        self._sample.append(v.clone())

    @torch.no_grad()
    def finalize(self) -> None:
        """Compute parameters from what was observed, then drop the statistics."""
        if self._lo is not None:
            lo, hi = self._lo, self._hi
            self._set_uniform(lo, hi)
        elif self._sample:
            self.calibrate(torch.cat(self._sample, dim=self._reduce_dim), is_view=True)
        self._lo = self._hi = None
        self._sample = []

    @torch.no_grad()
    def calibrate(self, x: torch.Tensor, is_view: bool = False) -> None:
        """Compute parameters directly from tensor ``x`` (weights, or a gathered activation sample)."""
        if is_view:
            v, dim = x, self._reduce_dim
        else:
            v, dim = self.spec.granularity.view(x.detach().float())
            self._reduce_dim = dim
        s = self.spec
        if s.kind != "uniform":
            delta = P.log2_delta_search(v.clamp_min(0), s.bits, s.kind == "logsqrt2")
            self.scale = delta.reshape(1, 1)
            self.zero_point = torch.zeros(1, 1)
            return
        if s.estimator == "minmax":
            lo, hi = P.minmax_range(v, dim)
        elif s.estimator == "percentile":
            lo, hi = P.percentile_range(v, dim, s.percentile)
        elif s.estimator == "mse":
            lo, hi = P.percentile_mse_range(v, dim, s.bits, s.symmetric, s.percentiles)
        else:
            lo, hi = P.omse_range(v, dim, s.bits, s.symmetric)
        self._set_uniform(lo, hi)

    def _set_uniform(self, lo: torch.Tensor, hi: torch.Tensor) -> None:
        self.scale, self.zero_point = P.params_from_range(lo, hi, self.spec.bits, self.spec.symmetric)

    def set_params(self, scale: torch.Tensor, zero_point: torch.Tensor) -> None:
        """Install parameters computed elsewhere (e.g. by a reparameterization)."""
        self.scale, self.zero_point = scale.detach().clone(), zero_point.detach().clone()

    def fake_quant(self, x: torch.Tensor) -> torch.Tensor:
        v, _ = self.spec.granularity.view(x)
        if self.spec.kind == "uniform":
            qmin, qmax = P.int_range(self.spec.bits, self.spec.symmetric)
            out = P.fake_quantize(v, self.scale, self.zero_point, qmin, qmax)
        else:
            out = P.log2_quantize(v, self.scale, self.spec.bits, self.spec.kind == "logsqrt2")
        return out.reshape(x.shape)

    @torch.no_grad()
    def int_codes(self, x: torch.Tensor) -> torch.Tensor:
        """Integer codes of ``x`` on this uniform grid (int32, shape of the 2-D stat view)."""
        assert self.spec.kind == "uniform", "integer export is defined for uniform quantizers"
        v, _ = self.spec.granularity.view(x.detach().float())
        qmin, qmax = P.int_range(self.spec.bits, self.spec.symmetric)
        return P.quantize(v, self.scale, self.zero_point, qmin, qmax).to(torch.int32)
