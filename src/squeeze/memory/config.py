"""Configuration of a UIO-LLMs memory-enhanced transformer run (one validated, JSON-serializable dataclass)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from squeeze.config import build_fields
from squeeze.errors import SqueezeError

VERSION = 13  # 2: memory_positions; 3: recall_frac; 4: memory_read; 5: raw_window; 6: batched; 7: reservoir;
# 8: grad_clip; 9: curriculum_segments, curriculum_steps; 10: prefix_segments, prefix_start; 11: lora_b_lr;
# 12: memory_init; 13: restarts, restart_below
GRAD_MODES = ("full-bptt", "detached", "uio-biased", "uio", "uio-unweighted")
MEMORY_POSITIONS = ("compact", "none")
MEMORY_READS = ("kv", "kvqo")
MEMORY_INITS = ("learned", "anchor")
RESERVOIRS = ("document", "batch")


@dataclass(frozen=True)
class UIOConfig:
    """Everything that decides a UIO training run's result.

    Attributes:
        base: zoo name of the frozen base LM (``lm-shakespeare``) or a local HF Llama folder.
        segment: tokens per segment L (the encoder compresses L tokens into ``memory`` vectors per layer).
        memory: memory tokens m per segment; L must divide by m (memory token i summarises tokens
            ``[0, (i+1) L/m)`` of its segment).
        lora_rank / lora_alpha: LoRA shape (encoder: q, v; decoder: k, v on memory states only).
        lora_b_lr: the LoRA B matrices (zero at the start) train at this multiple of ``lr``, the A matrices
            and the memory token at ``lr`` (1: one learning rate, as in the paper and versions <= 10; > 1 is
            LoRA+, Hayou et al. 2024, a deviation: B moves faster, so the adapters leave their zero start
            sooner).
        grad_mode: ``full-bptt`` | ``detached`` | ``uio-biased`` (keep the K newest encoder graphs) |
            ``uio`` (reservoir of K graphs, gradients reweighted to be unbiased) | ``uio-unweighted`` (the
            same reservoir without the weights, as the paper's code; biased).
        memory_positions: ``compact`` (as in the paper: the decoder sees memories at rotary positions just
            before the segment, newest at -1; clamped to the base's trained context) or ``none`` (memory
            scores without rotary positions).
        memory_init: ``learned`` (as in the paper: every memory token's encoder input is one learned
            embedding) or ``anchor`` (a deviation: memory token i's input is the embedding of the last
            token of its span plus a learned offset that starts at zero, at that token's position, so an
            untrained memory is nearly a copy of its anchor token's states and the frozen decoder reads
            it like that token from the first step).
        memory_read: ``kv`` (as in the paper: the decoder reads memories through LoRA on its k/v projections
            only; queries and output projection stay the base's) or ``kvqo`` (also a LoRA on the query that
            scores memories and on the output projection of what is read from them; a deviation that lets
            the decoder learn how to read memories; ordinary tokens still use the base weights).
        raw_window: W, earlier segments the decoder keeps as raw tokens before they are compressed
            (0, as in the paper: only the current segment is raw; W >= 1 is a deviation that reads the last
            W segments' tokens directly, like Activation Beacon's raw window, and the memories of older ones).
        keep: K, the most encoder graphs alive at once (``uio``, ``uio-unweighted``, ``uio-biased``).
        reservoir: ``document`` (each training document draws its own kept set, as a run on one document at
            a time would) or ``batch`` (one draw shared by every document of a step; versions <= 6).
        batched: compute the same gradient with all segments of a document in one encoder and one decoder
            call (``tbptt.batched_backward``: far fewer kernels, but every encoder graph that some loss reads
            alive at once, so memory grows with ``doc_segments``) instead of segment by segment with at most K
            graphs alive.
        doc_segments: T, segments per training document (a document is ``T*L + 1`` tokens).
        curriculum_segments / curriculum_steps: the first ``curriculum_steps`` steps train on documents of
            ``curriculum_segments`` segments instead of T (0 / 0: off, as in the paper and versions <= 8; a
            deviation). With ``curriculum_segments <= keep + 1`` every memory a loss reads is
            kept, so ``uio`` gives full BPTT's exact gradient until the documents grow.
        restarts / restart_below: when the curriculum ends with a validation passkey accuracy (whole keys,
            ``val_passkey_acc``) below ``restart_below``, drop the run and train the curriculum again from a
            fresh start on another seed, at most ``restarts`` times; if no attempt reads ``restart_below``, the
            one that read most (the earliest of equals) runs to the end (0: never, as in the paper and versions
            <= 12; a deviation). Runs that cannot read keys when the
            cheap short documents end do not learn to later (``docs/methods/uio.md``), so only that phase is
            repeated. Attempt ``a`` trains in ``WORKDIR/attempt-a``; attempt 0 is the plain run of ``seed``.
        prefix_segments: P, the most distractor segments in front of a training document (0: none, as in the
            paper and versions <= 9; a deviation). Each step draws p uniformly from 0..P; every document
            of the step is preceded by p segments of unscored text whose memories its segments read before
            their own, encoded without a graph (no gradient reaches the encoder through them; the gradient
            modes act on the document's T segments only). It shows the decoder as many memories in front of a
            needle as a long evaluation input does, for the price of p encoder passes without backward.
            ``prefix_start``: the first step with a prefix (the steps before it have none; e.g. the
            curriculum's, so that reading the needle is learned before distractors stand in front of it).
        passkey_frac: fraction of training documents that are passkey-retrieval documents.
        recall_frac: fraction of recall documents (earlier segments repeated; the paper code's segment
            copy task); the rest is plain text.
        steps / batch_size / lr / warmup / weight_decay / seed: the optimiser schedule (AdamW,
            linear warm-up then cosine; one engine epoch = ``steps_per_epoch`` steps).
        grad_clip: the largest global gradient norm a step may take (larger gradients are scaled down to
            it; 0 = no clipping; versions <= 7: 1.0). Clipping a reweighted gradient shrinks exactly the
            steps the weights scale up, so ``uio``'s gradient is no longer unbiased once the clip is active.
    """

    base: str = "lm-shakespeare"
    segment: int = 64
    memory: int = 8
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_b_lr: float = 1.0
    grad_mode: str = "uio"
    memory_positions: str = "compact"
    memory_init: str = "learned"
    memory_read: str = "kv"
    raw_window: int = 0
    keep: int = 2
    reservoir: str = "batch"
    batched: bool = False
    doc_segments: int = 8
    curriculum_segments: int = 0
    curriculum_steps: int = 0
    restarts: int = 0
    restart_below: float = 0.5
    prefix_segments: int = 0
    prefix_start: int = 0
    passkey_frac: float = 0.5
    recall_frac: float = 0.0
    steps: int = 240
    steps_per_epoch: int = 40
    batch_size: int = 4
    lr: float = 2e-3
    warmup: int = 10
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    seed: int = 0
    version: int = VERSION

    def __post_init__(self) -> None:
        if self.grad_mode not in GRAD_MODES:
            raise SqueezeError(f"grad mode {self.grad_mode!r} is unknown; use one of {', '.join(GRAD_MODES)}")
        if self.memory_positions not in MEMORY_POSITIONS:
            raise SqueezeError(f"memory_positions {self.memory_positions!r} is unknown; use one of "
                               f"{', '.join(MEMORY_POSITIONS)}")
        if self.memory_init not in MEMORY_INITS:
            raise SqueezeError(f"memory_init {self.memory_init!r} is unknown; use one of {', '.join(MEMORY_INITS)}")
        if self.memory_read not in MEMORY_READS:
            raise SqueezeError(f"memory_read {self.memory_read!r} is unknown; use one of {', '.join(MEMORY_READS)}")
        if self.segment < 2 or self.memory < 1:
            raise SqueezeError(f"--segment {self.segment} / --memory {self.memory} must be >= 2 / >= 1")
        if self.segment % self.memory:
            raise SqueezeError(f"--segment {self.segment} must be divisible by --memory {self.memory} "
                               "(each memory token summarises segment/memory tokens); e.g. --segment 64 --memory 8")
        if self.lora_rank < 1 or self.lora_alpha <= 0:
            raise SqueezeError("--lora-rank must be >= 1 and lora_alpha > 0")
        if self.reservoir not in RESERVOIRS:
            raise SqueezeError(f"reservoir {self.reservoir!r} is unknown; use one of {', '.join(RESERVOIRS)}")
        if not isinstance(self.batched, bool):
            raise SqueezeError(f"batched must be true or false, got {self.batched!r}")
        if self.keep < 1:
            raise SqueezeError(f"--keep {self.keep} must be >= 1 (encoder graphs kept alive)")
        if self.raw_window < 0:
            raise SqueezeError(f"raw_window {self.raw_window} must be >= 0 (earlier segments kept as raw tokens)")
        if self.doc_segments < self.raw_window + 2:
            raise SqueezeError(f"doc_segments {self.doc_segments} must be >= raw_window + 2 = {self.raw_window + 2} "
                               "(a memory is read only by a segment beyond the raw window)")
        if min(self.curriculum_steps, self.curriculum_segments) < 0:
            raise SqueezeError("curriculum_segments and curriculum_steps must be >= 0 (both 0 turns the curriculum off)")
        if (self.curriculum_steps > 0) != (self.curriculum_segments > 0):
            raise SqueezeError("set curriculum_segments and curriculum_steps together (both 0 turns the curriculum off)")
        if self.curriculum_steps and not (self.raw_window + 2 <= self.curriculum_segments <= self.doc_segments
                                          and self.curriculum_steps <= self.steps):
            raise SqueezeError(f"curriculum_segments {self.curriculum_segments} must lie in raw_window + 2 = "
                               f"{self.raw_window + 2} .. doc_segments = {self.doc_segments}, and curriculum_steps "
                               f"{self.curriculum_steps} must be <= steps {self.steps}")
        if self.restarts < 0 or not 0.0 < self.restart_below <= 1.0:
            raise SqueezeError(f"restarts {self.restarts} must be >= 0 and restart_below {self.restart_below} in (0, 1]")
        if self.restarts and not (0 < self.curriculum_steps < self.steps
                                  and self.curriculum_steps % self.steps_per_epoch == 0):
            raise SqueezeError(f"restarts need a curriculum that ends at an epoch boundary before the last step "
                               f"(curriculum_steps {self.curriculum_steps}, a multiple of steps_per_epoch "
                               f"{self.steps_per_epoch}, below steps {self.steps})")
        if self.prefix_segments < 0:
            raise SqueezeError(f"prefix_segments {self.prefix_segments} must be >= 0 (0 turns the distractor prefix off)")
        if not 0 <= self.prefix_start <= self.steps:
            raise SqueezeError(f"prefix_start {self.prefix_start} must lie in 0 .. steps = {self.steps}")
        if min(self.passkey_frac, self.recall_frac) < 0.0 or self.passkey_frac + self.recall_frac > 1.0:
            raise SqueezeError(f"passkey_frac {self.passkey_frac} and recall_frac {self.recall_frac} must be >= 0 "
                               "with a sum <= 1")
        if min(self.steps, self.steps_per_epoch, self.batch_size) < 1 or self.lr <= 0 or self.lora_b_lr <= 0:
            raise SqueezeError("steps, steps_per_epoch, batch_size, lr and lora_b_lr must be positive")
        if self.grad_clip < 0:
            raise SqueezeError(f"grad_clip {self.grad_clip} must be >= 0 (0 turns clipping off)")
        if self.steps % self.steps_per_epoch:
            raise SqueezeError(f"steps {self.steps} must be a multiple of steps_per_epoch {self.steps_per_epoch}")
        if self.version != VERSION:
            raise SqueezeError(f"UIO config version {self.version} is not supported (this is {VERSION})")

    @property
    def raw_span(self) -> int:
        """The most raw tokens the decoder attends to: the raw window plus the current segment."""
        return (self.raw_window + 1) * self.segment

    def segments_at(self, step: int) -> int:
        """Segments per training document at optimizer step ``step`` (0-based; the curriculum, then T)."""
        return self.curriculum_segments if step < self.curriculum_steps else self.doc_segments

    def prefix_at(self, step: int) -> int:
        """The most distractor segments in front of the documents of optimizer step ``step`` (0-based)."""
        return self.prefix_segments if step >= self.prefix_start else 0

    def curriculum_twin(self) -> "UIOConfig | None":
        """The config whose curriculum computes this one's gradients bit for bit, or None.

        With ``curriculum_segments <= keep + 1`` a curriculum document offers at most K memories before its
        last loss, so every kept set holds all of them and ``uio``'s weight ``max(1, t/K)`` is 1: ``uio``,
        ``uio-biased``, ``uio-unweighted`` and ``full-bptt`` train identically until the documents grow.
        Their twin is the ``full-bptt`` config; runs with one twin can share one trained curriculum
        (:func:`squeeze.memory.task.train_curriculum`). None without a curriculum, for ``detached`` (which
        reads no memory with a gradient), when the curriculum documents are longer than that, and when the
        curriculum does not end at an epoch boundary (no checkpoint there to start from)."""
        if (not self.curriculum_steps or self.grad_mode == "detached" or self.curriculum_segments > self.keep + 1
                or self.curriculum_steps % self.steps_per_epoch):
            return None
        return replace(self, grad_mode="full-bptt")

    @property
    def epochs(self) -> int:
        return self.steps // self.steps_per_epoch

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "UIOConfig":
        if d.get("version") == 2 and "recall_frac" not in d:  # version 2 trained without recall documents
            d = {**d, "version": 3, "recall_frac": 0.0}
        if d.get("version") == 3 and "memory_read" not in d:  # version 3 read memories through k/v LoRA only
            d = {**d, "version": 4, "memory_read": "kv"}
        if d.get("version") == 4 and "raw_window" not in d:  # version 4 kept only the current segment raw
            d = {**d, "version": 5, "raw_window": 0}
        if d.get("version") == 5 and "batched" not in d:  # version 5 always ran segment by segment
            d = {**d, "version": 6, "batched": False}
        if d.get("version") == 6 and "reservoir" not in d:  # version 6 drew one reservoir per batch
            d = {**d, "version": 7, "reservoir": "batch"}
        if d.get("version") == 7 and "grad_clip" not in d:  # version 7 always clipped at norm 1
            d = {**d, "version": 8, "grad_clip": 1.0}
        if d.get("version") == 8 and "curriculum_steps" not in d:  # version 8 had no document-length curriculum
            d = {**d, "version": 9, "curriculum_segments": 0, "curriculum_steps": 0}
        if d.get("version") == 9 and "prefix_segments" not in d:  # version 9 had no distractor prefix
            d = {**d, "version": 10, "prefix_segments": 0, "prefix_start": 0}
        if d.get("version") == 10 and "lora_b_lr" not in d:  # version 10 trained every adapter at one lr
            d = {**d, "version": 11, "lora_b_lr": 1.0}
        if d.get("version") == 11 and "memory_init" not in d:  # version 11 had one learned memory embedding
            d = {**d, "version": 12, "memory_init": "learned"}
        if d.get("version") == 12 and "restarts" not in d:  # version 12 never restarted a run
            d = {**d, "version": VERSION, "restarts": 0, "restart_below": 0.5}
        return build_fields(cls, d, "UIO")
