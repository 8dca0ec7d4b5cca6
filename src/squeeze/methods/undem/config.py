"""UnDeM run configuration (one validated, versioned, JSON-serializable dataclass) and its named variants.

Paper: Zhang et al., "Learning Image Demoireing from Unpaired Real Data", AAAI 2024.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from squeeze.config import build_fields, read_document
from squeeze.errors import SqueezeError
from squeeze.restore.train import RestoreTrainConfig

UNDEM_VERSION = 1
# variant name -> (generator kind, complexity groups, filter on) ; "paired" and "overlay" train no generator
VARIANTS: dict[str, tuple[str, bool, bool]] = {
    "undem": ("undem", True, True),
    "undem-no-group": ("undem", False, True),
    "undem-no-filter": ("undem", True, False),
    "cyclegan": ("cyclegan", False, False),
    "overlay": ("none", False, False),
    "paired": ("none", False, False),
}
PAPER_KEEP = (0.5, 0.6, 0.7, 0.8)  # fraction of pseudo pairs kept per class 1..4 (drop 50/40/30/20 %)


@dataclass(frozen=True)
class UnDeMConfig:
    """Everything that decides one UnDeM (or baseline) run's result.

    Attributes:
        variant: one of :data:`VARIANTS` (``undem``, ``undem-no-group``, ``undem-no-filter``, ``cyclegan``,
            ``overlay``, ``paired``).
        groups: moire-complexity classes (paper: 4); ``undem-no-group`` and ``cyclegan`` use 1.
        keep: fraction of pseudo pairs kept per class (paper: 0.5, 0.6, 0.7, 0.8); without grouping
            the mean of ``keep`` is used; ``undem-no-filter`` keeps all.
        tile: moire-patch / generator-patch side (px; paper 192..768, here 64).
        enc_ch, gen_width, gen_blocks, disc_width: generator network sizes (paper 16, 128, 6, 64).
        gen_steps: generator steps per complexity class (a single-generator variant gets
            ``gen_steps * groups`` so every variant spends the same generator budget).
        gen_batch, gen_lr: generator/discriminator batch and Adam learning rate (betas 0.5, 0.999).
        feat_weight: weight of each feature-reconstruction L1 (paper: 1); cycle_weight: CycleGAN's
            cycle-consistency weight (Zhu et al.: 10).
        pseudo_pairs: pseudo (or overlay / real) training pairs generated once for the demoire net.
        restore_*: the demoireing RestoreNet's schedule and shape (see RestoreTrainConfig).
        seed: every random draw (data, initialisation, sampling).
    """

    variant: str = "undem"
    groups: int = 4
    keep: tuple[float, ...] = PAPER_KEEP
    tile: int = 64
    enc_ch: int = 8
    gen_width: int = 24
    gen_blocks: int = 2
    disc_width: int = 16
    gen_steps: int = 300
    gen_batch: int = 4
    gen_lr: float = 2e-4
    feat_weight: float = 1.0
    cycle_weight: float = 10.0
    pseudo_pairs: int = 768
    restore_steps: int = 1200
    restore_batch: int = 8
    restore_patch: int = 48
    restore_lr: float = 1e-3
    restore_width: int = 16
    restore_levels: int = 3
    restore_blocks: int = 2
    seed: int = 0
    version: int = UNDEM_VERSION

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise SqueezeError(f"UnDeM variant {self.variant!r} is unknown; use one of {', '.join(VARIANTS)}")
        object.__setattr__(self, "keep", tuple(float(k) for k in self.keep))
        if self.groups < 1 or len(self.keep) != self.groups or not all(0 < k <= 1 for k in self.keep):
            raise SqueezeError(f"UnDeM: keep {self.keep} must hold one fraction in (0, 1] per group "
                               f"(groups={self.groups})")
        if self.tile < 16 or self.tile % 16:
            raise SqueezeError(f"UnDeM tile {self.tile} must be a multiple of 16 (>= 16; the D halves it 4 times)")
        if min(self.enc_ch, self.gen_width, self.gen_blocks, self.disc_width, self.gen_steps, self.gen_batch) < 1:
            raise SqueezeError("UnDeM generator sizes and steps must be positive")
        if self.gen_width % 2 or not self.gen_lr > 0 or self.feat_weight < 0 or self.cycle_weight < 0:
            raise SqueezeError("UnDeM gen_width must be even, gen_lr > 0, feature/cycle weights >= 0")
        if self.pseudo_pairs < self.restore_batch:
            raise SqueezeError(f"UnDeM pseudo_pairs {self.pseudo_pairs} must be >= restore_batch {self.restore_batch}")
        if self.restore_patch > self.tile:
            raise SqueezeError(f"UnDeM restore_patch {self.restore_patch} must not exceed tile {self.tile}")
        if self.version != UNDEM_VERSION:
            raise SqueezeError(f"UnDeM config version {self.version} is not supported (this is {UNDEM_VERSION})")
        self.restore_config()  # validates the restore schedule

    @property
    def generator(self) -> str:
        """``undem``, ``cyclegan`` or ``none``."""
        return VARIANTS[self.variant][0]

    @property
    def grouped(self) -> bool:
        return VARIANTS[self.variant][1] and self.groups > 1

    @property
    def filtered(self) -> bool:
        return VARIANTS[self.variant][2]

    def n_generators(self) -> int:
        """Generators trained: one per group for grouped UnDeM, else one (zero for overlay/paired)."""
        return 0 if self.generator == "none" else (self.groups if self.grouped else 1)

    def steps_per_generator(self) -> int:
        return self.gen_steps * self.groups // self.n_generators() if self.n_generators() else 0

    def effective_keep(self) -> tuple[float, ...]:
        """Keep fractions per trained generator's group (all 1 without filtering)."""
        if not self.filtered:
            return (1.0,) * max(1, self.n_generators())
        return self.keep if self.grouped else (sum(self.keep) / len(self.keep),)

    def generator_identity(self) -> dict[str, Any]:
        """The fields a generator checkpoint depends on (shared by undem and undem-no-filter)."""
        keys = ("groups", "tile", "enc_ch", "gen_width", "gen_blocks", "disc_width", "gen_steps", "gen_batch",
                "gen_lr", "feat_weight", "cycle_weight", "seed", "version")
        return {"generator": self.generator, "grouped": self.grouped, **{k: getattr(self, k) for k in keys}}

    def restore_config(self) -> RestoreTrainConfig:
        return RestoreTrainConfig(steps=self.restore_steps, batch=self.restore_batch, patch=self.restore_patch,
                                  lr=self.restore_lr, seed=self.seed, width=self.restore_width,
                                  levels=self.restore_levels, blocks=self.restore_blocks)

    def to_dict(self) -> dict[str, Any]:
        return {"method": "undem", "version": self.version, "config": asdict(self)}

    @classmethod
    def from_fields(cls, d: dict[str, Any]) -> "UnDeMConfig":
        return build_fields(cls, d, "UnDeM")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "UnDeMConfig":
        method, config = read_document(d, "UnDeM", UNDEM_VERSION)
        if method != "undem":
            raise SqueezeError(f"a {method!r} config is not an UnDeM config; re-create it with `squeeze train undem`")
        return cls.from_fields(config)


def make_undem_config(variant: str, **overrides: Any) -> UnDeMConfig:
    """The config of a named variant (:data:`VARIANTS`) with field overrides, validated."""
    base = UnDeMConfig.from_fields({"variant": variant, **overrides})
    return replace(base)
