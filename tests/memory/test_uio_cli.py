"""``squeeze train uio`` options: they fit the shared ``train`` sub-parser and become a valid config."""
from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from squeeze.cli import build_parser, main
from squeeze.errors import SqueezeError
from squeeze.memory.cli import add_train_uio_args, eval_uio, uio_fields
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


def test_eval_reports_passkey_and_perplexity_of_a_uio_run(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from squeeze.memory.task import train_uio  # noqa: PLC0415
    from squeeze.train.engine import EngineConfig  # noqa: PLC0415

    cfg = UIOConfig(segment=32, memory=4, doc_segments=4, steps=1, steps_per_epoch=1, batch_size=1, passkey_frac=0)
    train_uio(cfg, EngineConfig(tmp_path / "run", progress=False))  # the real lm-shakespeare base
    got = eval_uio(tmp_path / "run", passkey_x=(2,), ppl_x=(1,), passkey_docs=2, ppl_docs=1)
    assert got["base_context"] == 256 and 1.0 < got["ppl_1x"] < 20.0
    keys = {"passkey_acc", "digit_acc", "digit_acc_span_end", "digit_acc_inside_span"}
    assert set(got["passkey_2x"]) == keys
    assert main(["eval", str(tmp_path / "run"), "--abits", "4"]) == 2
    assert "--abits applies" in capsys.readouterr().err
