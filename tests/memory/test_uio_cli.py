"""``squeeze train uio`` options: they fit the shared ``train`` sub-parser and become a valid config."""
from __future__ import annotations

import argparse

import pytest

from squeeze.cli import build_parser
from squeeze.errors import SqueezeError
from squeeze.memory.cli import add_train_uio_args, uio_fields
from squeeze.memory.config import UIOConfig


def _train_parser() -> argparse.ArgumentParser:
    root = build_parser()
    sub = next(a for a in root._actions if isinstance(a, argparse._SubParsersAction))  # noqa: SLF001
    train = sub.choices["train"]
    if not any("--segment" in a.option_strings for a in train._actions):  # noqa: SLF001 (not wired yet)
        add_train_uio_args(train)
    return root


def test_train_uio_command_line() -> None:
    args = _train_parser().parse_args(["train", "uio", "--base", "lm-shakespeare", "--segment", "64", "--memory", "8",
                                       "--grad-mode", "uio-biased", "--keep", "3"])
    cfg = UIOConfig.from_dict(uio_fields(args, {"steps": 80}))
    assert (cfg.base, cfg.segment, cfg.memory, cfg.grad_mode, cfg.keep, cfg.steps) == \
        ("lm-shakespeare", 64, 8, "uio-biased", 3, 80)
    args = _train_parser().parse_args(["train", "uio", "--segment", "60", "--memory", "8"])
    with pytest.raises(SqueezeError, match="divisible"):
        UIOConfig.from_dict(uio_fields(args, {}))
