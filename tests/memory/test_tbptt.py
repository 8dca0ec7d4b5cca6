"""The UIO gradient estimators against full back-propagation through all segments (tiny model)."""
from __future__ import annotations

import itertools
import random

import pytest
import torch

from squeeze.errors import SqueezeError
from squeeze.memory.config import GRAD_MODES, UIOConfig
from squeeze.memory.model import MemoryLM
from squeeze.memory.tbptt import (
    batched_backward, inclusion_probability, read_coefficients, reservoir_slot, tbptt_backward, unbiased_weight,
)
from squeeze.zoo.lm_shakespeare import LMArch, TinyLlama

SEG, MEM, N_SEG, KEEP = 4, 2, 6, 2


def _tiny(raw_window: int = 0) -> tuple[MemoryLM, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    base = TinyLlama(LMArch(vocab=16, dim=16, layers=2, heads=2, kv_heads=1, hidden=32, context=64))
    model = MemoryLM(base, UIOConfig(segment=SEG, memory=MEM, lora_rank=2, keep=KEEP, doc_segments=N_SEG,
                                     raw_window=raw_window))
    with torch.no_grad():  # B starts at zero in training; make every path carry gradient here
        for p in model.lora_b.values():
            p.normal_(0, 0.3)
    ids = torch.randint(0, 16, (2, N_SEG * SEG + 1), generator=torch.Generator().manual_seed(1))
    return model, ids, torch.ones_like(ids, dtype=torch.float32)


def _encoder_grad(model: MemoryLM, ids: torch.Tensor, w: torch.Tensor, mode: str, rng: random.Random,
                  keep: int = KEEP, per_document: bool = False) -> torch.Tensor:
    """Gradient of the encoder-side parameters (the part the modes change) as one vector."""
    model.zero_grad(set_to_none=True)
    tbptt_backward(model, ids, w, mode, keep, rng, per_document=per_document)
    params = [model.mem_token, model.lora_a["enc_q"], model.lora_b["enc_q"], model.lora_a["enc_v"],
              model.lora_b["enc_v"]]
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in params])


class _Scripted(random.Random):
    """A 'random' source replaying fixed reservoir draws (to enumerate every trajectory)."""

    def __init__(self, draws: tuple[int, ...]) -> None:
        super().__init__(0)
        self.draws = list(draws)

    def randint(self, a: int, b: int) -> int:
        return self.draws.pop(0)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_reservoir_weights() -> None:
    assert [inclusion_probability(t, 2) for t in (1, 2, 4, 8)] == [1.0, 1.0, 0.5, 0.25]
    assert unbiased_weight(8, 2) == 4.0
    # empirical inclusion of algorithm R after t offers matches min(1, K/t) for every item
    rng, t, counts = random.Random(3), 6, [0] * 6
    for _ in range(6000):
        slots: list[int] = []
        for u in range(t):
            s = reservoir_slot(u, 2, rng)
            if s is not None and s < len(slots):
                slots[s] = u
            elif s is not None:
                slots.append(u)
        for u in slots:
            counts[u] += 1
    assert all(abs(c / 6000 - 2 / 6) < 0.03 for c in counts)


def test_keep_all_equals_full_bptt() -> None:
    model, ids, w = _tiny()
    full = _encoder_grad(model, ids, w, "full-bptt", random.Random(0))
    for mode in ("uio", "uio-biased"):  # K >= T keeps every graph: exactly full BPTT
        got = _encoder_grad(model, ids, w, mode, random.Random(0), keep=N_SEG)
        assert _rel(got, full) < 1e-5
    decoder = [p for n, p in model.named_parameters() if "dec_" in n]
    model.zero_grad(set_to_none=True)
    tbptt_backward(model, ids, w, "full-bptt", KEEP, random.Random(0))
    ref = [p.grad.clone() for p in decoder]
    model.zero_grad(set_to_none=True)
    tbptt_backward(model, ids, w, "uio-biased", KEEP, random.Random(0))
    assert all(torch.allclose(p.grad, r, rtol=1e-4, atol=1e-7) for p, r in zip(decoder, ref))  # decoder exact
    assert full.norm() > 0
    assert _encoder_grad(model, ids, w, "detached", random.Random(0)).abs().max() == 0


def test_uio_expectation_is_full_bptt_and_fifo_is_biased() -> None:
    model, ids, w = _tiny()
    full = _encoder_grad(model, ids, w, "full-bptt", random.Random(0))
    # exact expectation: every trajectory of algorithm R (draws for offers t = K .. T-2) is equally likely
    ranges = [range(t + 1) for t in range(KEEP, N_SEG - 1)]
    trajectories = list(itertools.product(*ranges))
    # averaged over many sampled runs. A run's gradient depends on its random stream only through the
    # reservoir draws (one randint(0, t) per offer t >= K, in order), so each distinct draw sequence is
    # computed once and reused: bit-identical to rerunning it (checked on real runs just below).
    cache = dict(zip(trajectories, (_encoder_grad(model, ids, w, "uio", _Scripted(d)) for d in trajectories)))
    rng = random.Random(12345)
    for _ in range(5):
        state = rng.getstate()
        draws = tuple(rng.randint(0, t) for t in range(KEEP, N_SEG - 1))
        rng.setstate(state)
        assert torch.equal(_encoder_grad(model, ids, w, "uio", rng), cache[draws])
    runs = [cache[tuple(rng.randint(0, t) for t in range(KEEP, N_SEG - 1))] for _ in range(4000)]
    sampled = torch.stack(runs).mean(0)
    assert _rel(sampled, full) < 0.05
    assert _rel(torch.stack(runs[:3]).mean(0), full) > 0.05  # a few runs alone are far off: the test can fail
    fifo = _encoder_grad(model, ids, w, "uio-biased", random.Random(0))
    assert _rel(fifo, full) > 0.2
    assert _rel(fifo, full) > 4 * _rel(sampled, full)
    exact = torch.stack(list(cache.values())).mean(0)  # the exact expectation over all trajectories
    assert _rel(exact, full) < 1e-4
    # the paper's code: the same reservoir without the weights is biased in expectation
    literal = torch.stack([_encoder_grad(model, ids, w, "uio-unweighted", _Scripted(d)) for d in trajectories])
    assert _rel(literal.mean(0), full) > 0.2


def test_uio_stays_unbiased_with_a_raw_window() -> None:
    model, ids, w = _tiny(raw_window=1)  # loss t reads memories 0..t-2; the reservoir still sees every offer
    full = _encoder_grad(model, ids, w, "full-bptt", random.Random(0))
    assert full.norm() > 0
    ranges = [range(t + 1) for t in range(KEEP, N_SEG - 1)]
    runs = [_encoder_grad(model, ids, w, "uio", _Scripted(d)) for d in itertools.product(*ranges)]
    assert _rel(torch.stack(runs).mean(0), full) < 1e-4
    assert _rel(_encoder_grad(model, ids, w, "uio-biased", random.Random(0)), full) > 0.2


def test_bad_documents() -> None:
    model, ids, w = _tiny()
    with pytest.raises(SqueezeError, match="T\\*4\\+1"):
        tbptt_backward(model, ids[:, :-1], w[:, :-1], "uio", KEEP, random.Random(0))
    with pytest.raises(SqueezeError, match="unknown"):
        tbptt_backward(model, ids, w, "bptt", KEEP, random.Random(0))


def _all_grads(model: MemoryLM) -> torch.Tensor:
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten()
                      for p in model.parameters() if p.requires_grad])


def test_a_reservoir_per_document_is_each_document_trained_alone() -> None:
    """With one reservoir per document, the batch's gradient is the weighted sum of each document's gradient
    computed alone with the same draws (so each document's part is unbiased as above)."""
    model, ids, w = _tiny()
    w = torch.rand(w.shape, generator=torch.Generator().manual_seed(3))
    total = w[:, SEG + 1:].sum()
    for seed in range(3):
        batch = _encoder_grad(model, ids, w, "uio", random.Random(seed), per_document=True)
        rng = random.Random(seed)  # the documents draw their kept sets in order from one stream
        alone = sum(_encoder_grad(model, ids[b:b + 1], w[b:b + 1], "uio", rng) * w[b, SEG + 1:].sum() / total
                    for b in range(ids.shape[0]))
        assert _rel(batch, alone) < 1e-5
    shared = [_encoder_grad(model, ids, w, "uio", random.Random(s)) for s in range(3)]
    assert any(_rel(a, _encoder_grad(model, ids, w, "uio", random.Random(s), per_document=True)) > 0.05
               for s, a in enumerate(shared))  # the two draws do differ


def test_a_reservoir_per_document_lowers_the_variance() -> None:
    """Independent kept sets per document average out sampling noise that one shared draw repeats. With two
    copies of one document the shared draw's error is the single document's, the independent draws' half."""
    model, ids, w = _tiny()
    ids, w = ids[:1].repeat(2, 1), w[:1].repeat(2, 1)
    full = _encoder_grad(model, ids, w, "full-bptt", random.Random(0))
    rng = random.Random(7)
    err = {p: sum(float((_encoder_grad(model, ids, w, "uio", rng, per_document=p) - full).square().sum())
                  for _ in range(100)) for p in (False, True)}
    assert 0.3 * err[False] < err[True] < 0.7 * err[False]


@pytest.mark.parametrize("per_document", [False, True])
@pytest.mark.parametrize("raw_window", [0, 1])
@pytest.mark.parametrize("mode", GRAD_MODES)
def test_batched_equals_segment_by_segment(mode: str, raw_window: int, per_document: bool) -> None:
    """Same seed, same kept sets: the batched gradient (every parameter) and loss equal the sequential ones."""
    model, ids, w = _tiny(raw_window)
    w = torch.rand(w.shape, generator=torch.Generator().manual_seed(2))  # unequal per-target weights
    w[1, :-SEG] = 0  # document 1 scored on its last segment only (as a passkey): its other rows are not decoded
    if mode == "uio":  # the seeds include a memory dropped before it is read (encoded without a graph)
        coefs = [read_coefficients(mode, N_SEG, raw_window, KEEP, random.Random(s)) for s in range(3)]
        assert any(not c[:, :N_SEG - raw_window - 1].ne(0).any(0).all() for c in coefs)
    for seed in range(3):
        grads, losses = [], []
        for run in (tbptt_backward, batched_backward):
            model.zero_grad(set_to_none=True)
            losses.append(run(model, ids, w, mode, KEEP, random.Random(seed), per_document=per_document))
            grads.append(_all_grads(model))
        assert losses[1] == pytest.approx(losses[0], rel=1e-5)
        assert _rel(grads[1], grads[0]) < 1e-5


@pytest.mark.parametrize("raw_window", [0, 1])
@pytest.mark.parametrize("mode", ["full-bptt", "uio", "detached"])
def test_a_distractor_prefix_is_read_without_gradient(mode: str, raw_window: int) -> None:
    """Two prefix segments: batched equals segment by segment (which encodes the prefix under no_grad), the
    prefix is read (the loss moves with it), and an all-zero-weight prefix leaves the modes' bookkeeping to
    the T segments after it (the same draws give the same kept sets)."""
    model, ids, w = _tiny(raw_window)
    w = torch.rand(w.shape, generator=torch.Generator().manual_seed(2))
    pre = torch.randint(0, 16, (2, 2 * SEG), generator=torch.Generator().manual_seed(4))
    ids_p, w_p = torch.cat([pre, ids], 1), torch.cat([torch.zeros(pre.shape), w], 1)
    for seed in range(2):
        grads, losses = [], []
        for run in (tbptt_backward, batched_backward):
            model.zero_grad(set_to_none=True)
            losses.append(run(model, ids_p, w_p, mode, KEEP, random.Random(seed), prefix=2))
            grads.append(_all_grads(model))
        assert losses[1] == pytest.approx(losses[0], rel=1e-5)
        assert _rel(grads[1], grads[0]) < 1e-5
        plain = tbptt_backward(model, ids, w, mode, KEEP, random.Random(seed))
        assert abs(plain - losses[0]) > 1e-4  # the decoder reads the distractors' memories
    with pytest.raises(SqueezeError, match="prefix of P = 7"):
        tbptt_backward(model, ids_p, w_p, mode, KEEP, random.Random(0), prefix=7)


def test_read_coefficients_match_the_modes() -> None:
    c = read_coefficients("uio-biased", 6, 0, 2, random.Random(0))
    assert c[5].tolist() == [0, 0, 0, 1, 1, 0] and c[1].tolist() == [1, 0, 0, 0, 0, 0]
    assert read_coefficients("full-bptt", 6, 1, 2, random.Random(0))[5].tolist() == [1, 1, 1, 1, 0, 0]
    assert read_coefficients("detached", 6, 0, 2, random.Random(0)).abs().sum() == 0
    uio = read_coefficients("uio", 6, 0, 2, random.Random(4))
    assert all((row > 0).sum() == min(t, 2) for t, row in enumerate(uio))  # K kept once K were offered
    assert uio[5].max() == 2.5  # the importance weight t/K
    literal = read_coefficients("uio-unweighted", 6, 0, 2, random.Random(4))
    assert torch.equal(literal, uio.gt(0).float())  # the same kept sets, factor 1


@pytest.mark.parametrize("window", [0, 1])
def test_every_reading_mode_equals_full_bptt_on_documents_of_at_most_keep_plus_one_segments(window: int) -> None:
    """Why runs of those modes can share one curriculum (UIOConfig.curriculum_twin)."""
    for keep in (1, 2, 3):
        short, longer = keep + 1, keep + 2
        if short < window + 2:
            continue
        for seed in range(20):
            full = read_coefficients("full-bptt", short, window, keep, random.Random(seed))
            for mode in ("uio", "uio-biased", "uio-unweighted"):
                assert torch.equal(read_coefficients(mode, short, window, keep, random.Random(seed)), full)
        # one segment more: some draw keeps fewer than every memory (and uio's weight exceeds 1)
        assert any(not torch.equal(read_coefficients("uio", longer, window, keep, random.Random(s)),
                                   read_coefficients("full-bptt", longer, window, keep, random.Random(s)))
                   for s in range(20))
    cfg = UIOConfig(segment=32, memory=4, doc_segments=5, curriculum_segments=3, curriculum_steps=2, steps=6,
                    steps_per_epoch=2, keep=2)
    assert cfg.curriculum_twin() == UIOConfig(**{**cfg.to_dict(), "grad_mode": "full-bptt"})
    assert UIOConfig(**{**cfg.to_dict(), "grad_mode": "uio-biased"}).curriculum_twin() == cfg.curriculum_twin()
    assert UIOConfig(**{**cfg.to_dict(), "grad_mode": "detached"}).curriculum_twin() is None
    assert UIOConfig(**{**cfg.to_dict(), "keep": 1}).curriculum_twin() is None  # 3 segments > keep + 1
    assert UIOConfig(segment=32, memory=4).curriculum_twin() is None  # no curriculum
    assert UIOConfig(**{**cfg.to_dict(), "curriculum_steps": 3}).curriculum_twin() is None  # ends inside an epoch
