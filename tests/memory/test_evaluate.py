"""Long-context evaluation: passkey exact and per-digit accuracy against a scripted oracle."""
from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from squeeze.errors import SqueezeError
from squeeze.memory.evaluate import cost_sweep, passkey_accuracy, passkey_digits, span_end
from squeeze.zoo.lm_shakespeare import decode, encode

TEXT = encode("Friends, Romans, countrymen, lend me your ears; I come to bury Caesar, not to praise him. " * 40)


class KeyReader(nn.Module):
    """Reads the key from the needle in its input and predicts the answer digits; ``wrong`` of them (the
    last ones) are replaced by the next digit, so per-digit accuracy must be (5 - wrong) / 5."""

    def __init__(self, wrong: int) -> None:
        super().__init__()
        self.arch, self.wrong, self.dummy = SimpleNamespace(context=64), wrong, nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(*x.shape, 256)
        for row, ids in enumerate(x):
            key = re.search(r"The pass key is (\d{5})\.", decode(ids)).group(1)
            for i, digit in enumerate(key):
                digit = str((int(digit) + 1) % 10) if i >= 5 - self.wrong else digit
                logits[row, x.shape[1] - 5 + i, ord(digit)] = 1.0
        return logits


@pytest.mark.parametrize("wrong", [0, 1, 5])
def test_passkey_exact_and_digit_accuracy(wrong: int) -> None:
    exact, digits = passkey_accuracy("full-attention", KeyReader(wrong), TEXT, 300, 6, seed=1, hide_beyond=64,
                                     batch=4)
    assert exact == (1.0 if wrong == 0 else 0.0)
    assert digits == pytest.approx((5 - wrong) / 5)


def test_passkey_needs_a_hidden_needle() -> None:
    with pytest.raises(SqueezeError, match="longer than hide_beyond"):
        passkey_accuracy("full-attention", KeyReader(0), TEXT, 64, 2, hide_beyond=64)


def test_span_end_marks_the_last_token_of_each_memory_span() -> None:
    # key digits at 5..9 with spans of 4: offsets 3, 7, 11 end spans -> digit 2 (position 7) only
    assert span_end(torch.tensor([5, 0]), 4).tolist() == [[False, False, True, False, False],
                                                           [False, False, False, True, False]]


def test_passkey_digits_reports_where_each_key_starts() -> None:
    right, starts = passkey_digits("full-attention", KeyReader(1), TEXT, 300, 4, seed=2, hide_beyond=64)
    assert right.shape == (4, 5) and right[:, :4].all() and not right[:, 4].any()
    assert all(0 <= s < 300 - 64 for s in starts.tolist())


def test_cost_sweep_takes_the_median_round_of_interleaved_runs() -> None:
    """A fake clock: the timed runs go round by round (a, 32), (a, 64), (b, 32), (b, 64); one stall per
    cell is ignored by the median; warm-up and memory runs are not timed."""
    model = nn.Linear(1, 256)  # any network with a context: it is called on (1, n) token ids
    model.arch = SimpleNamespace(context=64)
    model.forward = lambda x: torch.zeros(*x.shape, 256)
    durations = iter([2.0, 4.0, 6.0, 8.0,  # round 1
                      90.0, 90.0, 90.0, 90.0,  # round 2: a stalled spell hits every cell once
                      3.0, 5.0, 7.0, 9.0])  # round 3
    now = [0.0]

    def clock() -> float:  # start/stop pairs: advance by the next duration on every stop
        now.append(now[-1] + next(durations) if len(now) % 2 == 0 else now[-1])
        return now[-1]

    got = cost_sweep({"a": ("truncated", model), "b": ("sliding-window", model)}, (32, 64), repeats=3, clock=clock)
    assert list(got) == [("a", 32), ("a", 64), ("b", 32), ("b", 64)]
    for (name, n), want in zip(got, (3.0, 5.0, 7.0, 9.0)):
        assert got[(name, n)][0] == pytest.approx(want / n) and got[(name, n)][1] >= 0.0
