"""Twin uniform quantization (Yuan et al., "PTQ4ViT: Post-Training Quantization for Vision
Transformers with Twin Uniform Quantization", ECCV 2022, Sec. 4.1).

A ``k``-bit twin uniform quantizer has two ranges ``R1`` and ``R2``, each an unsigned ``(k-1)``-bit
uniform grid (``n = 2^(k-1)`` levels) with its own step; one flag bit says which range a value uses.
The steps are tied by a power of two, ``delta2 = 2^m * delta1``, so both ranges share one
accumulator after a bit shift (the paper's hardware argument).

* post-softmax (``softmax``): ``R1 = [0, n*delta1)`` is a fine grid for the many small
  probabilities, ``R2`` a coarse grid with fixed ``delta2 = 1/n`` for the few large ones; a value
  uses ``R1`` when it lies below ``n*delta1`` (= ``2^-m``), so only ``m`` is searched.
* post-GELU (``gelu``): ``R1`` holds the negative values (magnitudes on steps of ``delta1``),
  ``R2`` the positive ones (steps of ``delta2``); the sign selects the range. ``delta2`` is
  searched and ``delta1 = delta2 / 2^m`` with the largest ``m`` whose ``R1`` still covers the most
  negative calibration value (GELU's minimum is about -0.17).

The math is in small pure functions; :class:`TwinUniformQuantizer` is the stateful module.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from squeeze.errors import SqueezeError
from squeeze.quant import primitives as P
from squeeze.quant.quantizer import Quantizer, QuantSpec

TwinKind = Literal["softmax", "gelu"]


def twin_softmax_quantize(x: torch.Tensor, delta1: torch.Tensor | float, bits: int) -> torch.Tensor:
    """Twin uniform fake-quantization of probabilities in ``[0, 1]``.

    ``x < n*delta1`` -> ``delta1 * clamp(round(x/delta1), 0, n-1)``; otherwise the same on
    ``delta2 = 1/n``, with ``n = 2^(bits-1)``. Straight-through gradient inside the ranges (the
    clamp comes before the rounding: ``torch.clamp`` passes no gradient at its bounds).
    """
    n = 2 ** (bits - 1)
    delta1 = torch.as_tensor(delta1, dtype=x.dtype, device=x.device)
    step = torch.where(x < n * delta1, delta1, torch.full_like(delta1, 1.0 / n))  # per-element range
    return P.round_ste(torch.clamp(x / step, 0, n - 1)) * step


def twin_gelu_quantize(x: torch.Tensor, delta1: torch.Tensor | float, delta2: torch.Tensor | float,
                       bits: int) -> torch.Tensor:
    """Twin uniform fake-quantization of post-GELU values: negatives on ``delta1``, the rest on ``delta2``.

    Each side has ``n = 2^(bits-1)`` magnitudes ``0 .. n-1`` (sign-magnitude code, 0 shared);
    ``torch.round`` is symmetric, so rounding ``x/step`` equals rounding the magnitude.
    """
    n = 2 ** (bits - 1)
    delta1 = torch.as_tensor(delta1, dtype=x.dtype, device=x.device)
    delta2 = torch.as_tensor(delta2, dtype=x.dtype, device=x.device)
    step = torch.where(x < 0, delta1, delta2)
    return P.round_ste(torch.clamp(x / step, -(n - 1), n - 1)) * step


def softmax_delta1(m: int, bits: int) -> float:
    """Fine step of the post-softmax twin quantizer for split ``2^-m``: ``delta1 = 2^-m / n``."""
    return 2.0 ** (-m) / 2 ** (bits - 1)


def gelu_delta1(delta2: torch.Tensor, neg_max: torch.Tensor, bits: int) -> torch.Tensor:
    """``delta2 / 2^m`` with the largest integer ``m >= 0`` such that ``(n-1)*delta1 >= neg_max``."""
    n = 2 ** (bits - 1)
    ratio = delta2 * (n - 1) / neg_max.clamp_min(1e-12)
    m = torch.floor(torch.log2(ratio.clamp_min(1.0)))
    return delta2 / torch.exp2(m)


@torch.no_grad()
def twin_init(x: torch.Tensor, kind: TwinKind, bits: int, max_m: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    """Initial ``(delta1, delta2)`` by the lowest squared error on ``x`` itself (before the output search).

    ``softmax``: best split ``2^-m`` for ``m`` in ``0..max_m-1``. ``gelu``: ``delta2`` from the
    positive maximum (min-max), ``delta1`` tied to it by :func:`gelu_delta1`.
    """
    x = x.float()
    n = 2 ** (bits - 1)
    if kind == "softmax":
        errs = [(twin_softmax_quantize(x, softmax_delta1(m, bits), bits) - x).pow(2).mean() for m in range(max_m)]
        best = int(torch.stack(errs).argmin())
        d1 = torch.tensor(softmax_delta1(best, bits), device=x.device)
        return d1, torch.tensor(1.0 / n, device=x.device)
    d2 = (x.max().clamp_min(1e-8) / (n - 1)).reshape(())
    return gelu_delta1(d2, (-x.min()).clamp_min(0), bits), d2


@dataclass(frozen=True)
class TwinSpec(QuantSpec):
    """A :class:`QuantSpec` for a twin uniform quantizer (per tensor). ``twin``: ``softmax`` or ``gelu``.

    The squeeze file format (version 1) stores only the core quantizer kinds, so :meth:`to_dict`
    refuses: ``squeeze.save`` of a ``ptq4vit`` model fails with a clear error instead of writing a
    file that would load as something else.
    """

    twin: str = "softmax"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.twin not in ("softmax", "gelu"):
            raise ValueError(f"unknown twin quantizer {self.twin!r}; use softmax or gelu")
        if self.granularity.kind != "tensor":
            raise ValueError("twin uniform quantizers are per-tensor")

    def to_dict(self) -> dict:
        raise SqueezeError("ptq4vit's twin uniform quantizers cannot be stored in the squeeze file format; "
                           "evaluate the model in memory, or quantize with twin_softmax=False, twin_gelu=False "
                           "to save it")


class TwinUniformQuantizer(Quantizer):
    """PTQ4ViT twin uniform fake-quantizer (see module docstring); buffers ``delta1``, ``delta2`` (0-d).

    Works in the core's ``off`` / ``observe`` / ``quant`` modes; ``finalize()`` sets the
    input-error initialisation (:func:`twin_init`), :meth:`set_deltas` installs searched steps.
    """

    def __init__(self, bits: int, twin: TwinKind) -> None:
        # estimator "mse" makes the core observer keep a bounded sample (not just min/max) for twin_init
        super().__init__(TwinSpec(bits, estimator="mse", twin=twin))
        self.register_buffer("delta1", torch.empty(0))
        self.register_buffer("delta2", torch.empty(0))

    @property
    def twin(self) -> TwinKind:
        return self.spec.twin  # type: ignore[attr-defined,return-value]

    @property
    def calibrated(self) -> bool:
        return self.delta1.numel() > 0

    def extra_repr(self) -> str:
        return f"twin-{self.twin}{self.spec.bits}, mode={self.mode}"

    @torch.no_grad()
    def calibrate(self, x: torch.Tensor, is_view: bool = False) -> None:
        """Initialise the steps from a tensor (or gathered sample) by input squared error."""
        self.set_deltas(*twin_init(x.detach().reshape(-1), self.twin, self.spec.bits))

    def set_deltas(self, delta1: torch.Tensor | float, delta2: torch.Tensor | float) -> None:
        """Install the two steps (``delta2`` is ignored for ``softmax``: it is fixed to ``1/n``)."""
        n = 2 ** (self.spec.bits - 1)
        d2 = 1.0 / n if self.twin == "softmax" else delta2
        device = next((t.device for t in (delta1, d2) if isinstance(t, torch.Tensor)), self.delta1.device)
        self.delta1, self.delta2 = (torch.as_tensor(t, dtype=torch.float32, device=device).detach()
                                    .clone().reshape(()) for t in (delta1, d2))

    def fake_quant(self, x: torch.Tensor) -> torch.Tensor:
        if self.twin == "softmax":
            return twin_softmax_quantize(x, self.delta1, self.spec.bits)
        return twin_gelu_quantize(x, self.delta1, self.delta2, self.spec.bits)

    def int_codes(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - defensive
        raise SqueezeError("integer export is not defined for twin uniform quantizers")
