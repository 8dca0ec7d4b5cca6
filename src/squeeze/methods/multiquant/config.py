"""MultiQuant configuration and the branch-selection tables (MBQuant, Zhong et al., arXiv 2305.08117)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from squeeze.errors import SqueezeError

VARIANTS = ("multiquant", "any-precision", "multiquant-no-amortization", "multiquant-no-distill",
            "any-precision-dorefa")
PARTIAL_INITS = ("leading", "importance")
PARTIAL_SOURCES = ("own", "next")
WEIGHT_INITS = ("std", "mse")
BRANCHES = 4  # G: the body is duplicated into 4 independent branches (8 bits = 4 x 2-bit branches)
MIN_BITS, MAX_BITS = 2, 8
# Amortized selection (paper table): first branch of the contiguous run used at each activation bit width.
# Branch B0 sits out 4/5/6 bits, so quantization error of frequent bit switching spreads over branches.
AMORTIZED_START = {2: 0, 3: 0, 4: 1, 5: 1, 6: 1, 7: 0, 8: 0}


@dataclass(frozen=True)
class BranchPlan:
    """Which branches run at one bit width: full branches ``start .. start + full - 1``, plus the
    narrower partial branch when ``partial`` (odd bit widths)."""

    start: int
    full: int
    partial: bool


def switched_weights(variant: str) -> bool:
    """The Any-Precision baselines switch their one network's weight bit width with the activations';
    MultiQuant and its ablations keep 2-bit weights in branches."""
    return variant.startswith("any-precision")


def branch_plan(bits: int, amortize: bool) -> BranchPlan:
    """MultiQuant branches for activation bit width ``bits`` (2-bit weights: ``bits // 2`` full branches)."""
    start = AMORTIZED_START[bits] if amortize else 0
    return BranchPlan(start, bits // 2, bits % 2 == 1)


def _int_list(value: str | list[int] | tuple[int, ...], name: str, example: str) -> list[int]:
    """``"2,3,4"`` (or a sequence) -> the integers in order; one clear error naming ``name`` for bad input."""
    items = value.split(",") if isinstance(value, str) else list(value)
    try:
        return [int(v) for v in items if str(v).strip()]
    except (TypeError, ValueError) as exc:
        raise SqueezeError(f"{name} {value!r} is not a comma list of integers, e.g. {example}") from exc


def parse_bits(text: str | list[int] | tuple[int, ...]) -> tuple[int, ...]:
    """``"2,3,4"`` (or a sequence) -> sorted unique bit widths; one clear error for bad input."""
    bits = sorted(set(_int_list(text, "--bits", "2,3,4,5,6,7,8")))
    if not bits:
        raise SqueezeError("--bits is empty; give bit widths such as 2,3,4,5,6,7,8")
    return tuple(bits)


def parse_widths(value: str | list[int] | tuple[int, ...]) -> tuple[int, ...]:
    """``"16,24,48"`` (or a sequence) -> per-stage partial branch widths; empty stays empty."""
    widths = tuple(_int_list(value, "partial_widths", "16,24,48"))
    if any(w < 1 for w in widths):
        raise SqueezeError(f"partial_widths {value!r} must be positive channel counts, e.g. 16,24,48")
    return widths


@dataclass
class MultiQuantConfig:
    """One arbitrary-bit-width training run (MultiQuant, its ablations, or the Any-Precision baseline).

    Example: ``MultiQuantConfig(bits=(2, 4, 6, 8), epochs=3, subset=12800)``.

    Attributes:
        model: zoo model whose float checkpoint initialises the network (``resnet-fmnist``).
        variant: ``multiquant`` | ``multiquant-no-amortization`` (branches always start at B0) |
            ``multiquant-no-distill`` (labels only) | ``any-precision`` (one shared-weight network,
            weights and activations both at the switched bit width, switchable BN, this module's learnable-range
            quantizers) | ``any-precision-dorefa`` (the same network with Any-Precision DNN's own quantizers:
            DoReFa weights, activations clamped to [0, 1]; no learnable ranges).
        bits: activation bit widths the network is trained for and can run at (each in 2..8).
        teacher_bits: the in-place distillation teacher; must be the widest width in ``bits``.
        train_bits: bit widths trained at each step; 0 = all of ``bits`` (the paper). ``k >= 2``: the
            teacher, the smallest width and ``k - 2`` others drawn at random each step (cheaper).
        partial_ratio: width of the odd-bit partial branch relative to a full branch.
        partial_widths: the partial branch's width per stage, overriding ``partial_ratio`` (the authors'
            CIFAR ResNet-20 uses 16,24,48 for stages of 16/32/64); empty = ``partial_ratio`` of every stage.
        branch_noise: at the float start, add independent Gaussian noise of this std (relative to each
            layer's float weight std) to the weights of branches B1..B3 (B0, which runs alone at 2 bits, stays
            the float copy). Without it B1 and B2, which the amortized table always uses together, get
            identical gradients and stay identical (docs/methods/multiquant.md). 0 = plain tiling.
        partial_loss: at odd bit widths, add this weight times the same loss on the classifier applied to the
            partial branch's features alone, so the partial branch also learns to work as a network of its
            own (a deviation; the paper trains only the average). 0 = off.
        partial_init: which float channels the partial branch starts from: ``leading`` (the first ones of
            every layer) or ``importance`` (the float network's channels are first reordered, exactly, so
            that the leading ones carry the most signal on one training batch; ``reorder.py``).
        partial_source: where the partial branch's weights live: ``own`` (its own tensor, trained only at
            odd widths) or ``next`` (the authors' code: the leading channels of the branch after the last
            full one, B1 at 3 bits and B3 at 5 and 7, so those weights are trained at every width that uses
            either); the partial branch keeps its own quantizer ranges in both.
        weight_init: initial weight quantizer ranges: ``std`` (+-3 std, the paper) or ``mse`` (per layer,
            branch and weight bit width, the symmetric range that minimises the weights' quantization error;
            both MultiQuant and Any-Precision). The ranges are learnable either way.
        epochs, batch_size, subset: schedule; ``subset`` training images per epoch (0 = all), a fresh
            random subset every epoch.
        lr, momentum, weight_decay: SGD for weights and batch norms (cosine to 0, per step).
        quant_lr: Adam for the quantizer ranges (cosine to 0).
        eval_subset: test images for the per-epoch evaluation (0 = all); the final one uses all.
        seed: seed of data order, augmentation and bit sampling.
    """

    model: str = "resnet-fmnist"
    variant: str = "multiquant"
    bits: tuple[int, ...] = (2, 3, 4, 5, 6, 7, 8)
    teacher_bits: int = 8
    train_bits: int = 0
    partial_ratio: float = 0.75
    partial_widths: tuple[int, ...] = ()
    branch_noise: float = 0.0
    partial_loss: float = 0.0
    partial_init: str = "leading"
    partial_source: str = "own"
    weight_init: str = "std"
    epochs: int = 3
    batch_size: int = 128
    subset: int = 0
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    quant_lr: float = 1e-4
    eval_subset: int = 2000
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes, not part of the identity

    def __post_init__(self) -> None:
        self.bits = parse_bits(self.bits)
        if self.variant not in VARIANTS:
            raise SqueezeError(f"variant {self.variant!r} is unknown; use one of {', '.join(VARIANTS)}")
        bad = [b for b in self.bits if not MIN_BITS <= b <= MAX_BITS]
        if bad:
            raise SqueezeError(f"bit widths {bad} are outside {MIN_BITS}..{MAX_BITS}; "
                               f"MultiQuant runs 2-bit-weight branches at 2..8-bit activations")
        if self.teacher_bits not in self.bits:
            raise SqueezeError(f"the bit list {','.join(map(str, self.bits))} lacks the distillation teacher's "
                               f"width {self.teacher_bits}; add it to --bits")
        if self.teacher_bits != max(self.bits):
            raise SqueezeError(f"teacher_bits={self.teacher_bits} must be the widest bit width "
                               f"({max(self.bits)}); set teacher_bits={max(self.bits)}")
        if self.train_bits and not 2 <= self.train_bits <= len(self.bits):
            raise SqueezeError(f"train_bits={self.train_bits} must be 0 (all) or 2..{len(self.bits)}")
        if not 0.0 < self.partial_ratio <= 1.0:
            raise SqueezeError("partial_ratio must be in (0, 1]")
        self.partial_widths = parse_widths(self.partial_widths)
        if self.branch_noise < 0:
            raise SqueezeError(f"branch_noise {self.branch_noise} must be >= 0 (std relative to the weights')")
        if self.partial_loss < 0:
            raise SqueezeError(f"partial_loss {self.partial_loss} must be >= 0 "
                               "(weight of the partial branch's own loss)")
        if self.partial_init not in PARTIAL_INITS:
            raise SqueezeError(f"partial_init {self.partial_init!r} is unknown; use one of {', '.join(PARTIAL_INITS)}")
        if self.partial_source not in PARTIAL_SOURCES:
            raise SqueezeError(f"partial_source {self.partial_source!r} is unknown; "
                               f"use one of {', '.join(PARTIAL_SOURCES)}")
        if self.weight_init not in WEIGHT_INITS:
            raise SqueezeError(f"weight_init {self.weight_init!r} is unknown; use one of {', '.join(WEIGHT_INITS)}")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0 or self.quant_lr <= 0:
            raise SqueezeError("epochs, batch_size, lr and quant_lr must be positive")
        if self.subset < 0 or self.eval_subset < 0:
            raise SqueezeError("subset and eval_subset must be >= 0 (0 = the whole split)")

    @property
    def amortize(self) -> bool:
        return self.variant in ("multiquant", "multiquant-no-distill")

    @property
    def distill(self) -> bool:
        return self.variant != "multiquant-no-distill"

    @property
    def multi_branch(self) -> bool:
        return not switched_weights(self.variant)

    @property
    def dorefa(self) -> bool:
        return self.variant == "any-precision-dorefa"

    def identity(self) -> dict[str, Any]:
        """Every field that decides the result (checkpoints resume only under the same identity)."""
        d = asdict(self)
        d.pop("extra")
        d["bits"] = list(self.bits)
        d["partial_widths"] = list(self.partial_widths)
        for key, default in (("partial_source", "own"), ("weight_init", "std")):
            if d[key] == default:
                d.pop(key)  # added later: runs made before them keep their identity (and bench tags)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "MultiQuantConfig":
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise SqueezeError(f"unknown MultiQuant option(s) {unknown}; valid: {sorted(cls.__dataclass_fields__)}")
        return cls(**known)
