"""Stateful fake-quantizer modules built from a :class:`QuantSpec`.

A quantizer is ``bits x kind (uniform / log2 / log-sqrt2 / SULQ) x granularity x range estimator``. It has
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

Kind = Literal["uniform", "log2", "logsqrt2", "sulq"]
Estimator = Literal["minmax", "percentile", "mse", "omse"]
Mode = Literal["off", "observe", "quant"]
_MAX_SAMPLE = 1 << 21  # elements kept per quantizer while observing (bounds calibration memory)


@dataclass(frozen=True)
class QuantSpec:
    """How one tensor is quantized.

    Attributes:
        bits: bit width, 2..16.
        kind: ``uniform`` affine grid, or ``log2`` / ``logsqrt2`` grids for non-negative inputs
            (post-softmax probabilities), or ``sulq``: I&S-ViT's shift-uniform-log2 quantizer
            (per-tensor only; shift ``eta`` searched on the calibration data, 2^bits levels, see
            :func:`squeeze.quant.primitives.sulq_quantize`). The estimator is ignored by the log kinds.
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
        if self.kind == "sulq" and self.bits < 2:
            raise ValueError(f"SULQ at {self.bits} bit is undefined: it needs at least 2 exponent levels "
                             "(2^bits with bits >= 2); use bits >= 2")
        if not 2 <= self.bits <= 16:
            raise ValueError(f"bit width {self.bits} is outside 2..16")
        if self.kind not in ("uniform", "log2", "logsqrt2", "sulq"):
            raise ValueError(f"unknown quantizer kind {self.kind!r}")
        if self.kind == "sulq" and self.granularity.kind != "tensor":
            raise ValueError("SULQ is a per-tensor quantizer; use Granularity('tensor')")
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

    Buffers: ``scale`` and ``zero_point`` (uniform; log grids keep ``delta`` in ``scale``), shaped to
    broadcast against the 2-D stat view of the tensor (see :meth:`Granularity.view`). SULQ keeps
    ``eta``, ``lo`` and ``hi`` (each (1, 1)) instead and leaves ``scale``/``zero_point`` empty.
    Empty buffers take the shape of the incoming tensor in ``load_state_dict``.
    """

    def __init__(self, spec: QuantSpec) -> None:
        super().__init__()
        self.spec = spec
        self.mode: Mode = "off"
        self.register_buffer("scale", torch.empty(0))
        self.register_buffer("zero_point", torch.empty(0))
        if spec.kind == "sulq":
            for name in ("eta", "lo", "hi"):
                self.register_buffer(name, torch.empty(0))
        self._lo: torch.Tensor | None = None
        self._hi: torch.Tensor | None = None
        self._sample: list[torch.Tensor] = []
        self._xmin: torch.Tensor | None = None  # SULQ: running min/max of the observed input
        self._xmax: torch.Tensor | None = None
        self._reduce_dim = 1

    @property
    def calibrated(self) -> bool:
        if self.spec.kind == "sulq":
            return self.hi.numel() > 0
        return self.scale.numel() > 0

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args, **kwargs) -> None:  # type: ignore[override]
        # parameters are shaped at calibration time: an uncalibrated (empty) buffer adopts the saved shape
        for name, buf in self._buffers.items():
            key = prefix + name
            if buf is not None and buf.numel() == 0 and key in state_dict:
                self._buffers[name] = torch.empty_like(state_dict[key], device=buf.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

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
        if self.spec.kind == "sulq":  # exact extremes: SULQ's lo/hi are log2(min/max + eta)
            lo, hi = v.min().reshape(1, 1), v.max().reshape(1, 1)
            self._xmin = lo if self._xmin is None else torch.minimum(self._xmin, lo)
            self._xmax = hi if self._xmax is None else torch.maximum(self._xmax, hi)
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
        self._lo = self._hi = self._xmin = self._xmax = None
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
        if s.kind == "sulq":
            eta, lo, hi = P.sulq_search(v, s.bits, xmin=self._xmin, xmax=self._xmax)
            self.set_sulq_params(eta, lo, hi, device=v.device)
            return
        if s.kind != "uniform":
            delta = P.log2_delta_search(v.clamp_min(0), s.bits, s.kind == "logsqrt2")
            self.scale = delta.reshape(1, 1)
            self.zero_point = torch.zeros(1, 1, device=delta.device)
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

    def set_sulq_params(self, eta: torch.Tensor | float, lo: torch.Tensor | float, hi: torch.Tensor | float,
                        device: torch.device | None = None) -> None:
        """Install SULQ's shift and log2-domain range (scalars or 1-element tensors) on ``device``."""
        assert self.spec.kind == "sulq", "set_sulq_params needs a quantizer of kind 'sulq'"
        tensors = [t.device for t in (eta, lo, hi) if isinstance(t, torch.Tensor)]
        device = device or (tensors[0] if tensors else self.eta.device)
        self.eta, self.lo, self.hi = (torch.as_tensor(t, dtype=torch.float32, device=device).detach()
                                      .clone().reshape(1, 1) for t in (eta, lo, hi))

    def fake_quant(self, x: torch.Tensor) -> torch.Tensor:
        v, _ = self.spec.granularity.view(x)
        if self.spec.kind == "sulq":
            out = P.sulq_quantize(v, self.eta, self.lo, self.hi, self.spec.bits)
        elif self.spec.kind == "uniform":
            qmin, qmax = P.int_range(self.spec.bits, self.spec.symmetric)
            fq = P.fake_quantize if torch.is_grad_enabled() and x.requires_grad else P.fake_quantize_inplace
            out = fq(v, self.scale, self.zero_point, qmin, qmax)
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
