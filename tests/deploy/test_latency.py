"""Interleaved timing, CPU flag parsing and the ORT session helper."""
from __future__ import annotations

import time

import pytest

from squeeze.deploy.latency import cpu_info, has_vnni, interleaved, summarize
from squeeze.errors import SqueezeError


def test_round_robin_order_and_counts() -> None:
    calls: list[str] = []
    variants = {name: (lambda n=name: calls.append(n)) for name in ("a", "b", "c")}
    result = interleaved(variants, runs=4, warmup=2)
    assert len(calls) == 3 * 6
    rounds = [calls[i:i + 3] for i in range(0, len(calls), 3)]
    assert all(sorted(r) == ["a", "b", "c"] for r in rounds)  # every variant once per round
    assert rounds[0] != rounds[1]  # the order rotates
    assert {r["runs"] for r in result.values()} == {4}


def test_min_and_median_reflect_slow_variant() -> None:
    result = interleaved({"fast": lambda: None, "slow": lambda: time.sleep(0.002)}, runs=5, warmup=1)
    assert result["slow"]["min_ms"] >= 2.0 > result["fast"]["min_ms"]
    assert result["slow"]["median_ms"] >= result["slow"]["min_ms"]


def test_summarize() -> None:
    assert summarize([3.0, 1.0, 2.0]) == {"min_ms": 1.0, "median_ms": 2.0, "runs": 3}


def test_bad_arguments_refused() -> None:
    with pytest.raises(SqueezeError):
        interleaved({}, runs=3)
    with pytest.raises(SqueezeError):
        interleaved({"a": lambda: None}, runs=0)


def test_cpu_flags_parsed(tmp_path) -> None:
    fake = tmp_path / "cpuinfo"
    fake.write_text("processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: fpu sse avx2 avx512f avx512_vnni\n")
    info = cpu_info(fake)
    assert info["cpu"] == "Test CPU"
    assert info["flags"]["avx2"] and info["flags"]["avx512_vnni"] and not info["flags"]["amx_tile"]
    assert has_vnni(fake)
    fake.write_text("model name\t: Old CPU\nflags\t\t: fpu sse avx2\n")
    assert not has_vnni(fake)
