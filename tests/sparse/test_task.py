"""N:M fine-tuning on the engine: exact resume (masks, permutations, step counters), CLI glue."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch

from squeeze.data.fashion_mnist import load_fashion_mnist
from squeeze.errors import SqueezeError
from squeeze.sparse.cli import add_check_nm_parser, add_train_nm_args, cmd_train_nm, nm_fields
from squeeze.sparse.config import make_nm_config
from squeeze.sparse.run import RESULT, train_nm
from squeeze.train.engine import EngineConfig
from squeeze.zoo.resnet_fmnist import ResNetFmnistArch, build_resnet_fmnist

ARCH = ResNetFmnistArch(blocks=1)


def _splits() -> tuple:
    (x, y), (xt, yt) = load_fashion_mnist("train"), load_fashion_mnist("test")
    return (x[:128], y[:128]), (xt[:32], yt[:32])


def test_bimask_run_resumes_exactly(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = build_resnet_fmnist(ARCH).eval()
    cfg = make_nm_config("bimask", epochs=2, subset=64, batch_size=32, eval_subset=32, perm_every=1,
                         perm_candidates=2)
    splits = _splits()
    kw = {"float_net": net, "float_top1": 10.0, "arch": ARCH.to_dict(), "splits": splits}
    whole = train_nm(cfg, EngineConfig(tmp_path / "a", progress=False), **kw)
    half = train_nm(cfg, EngineConfig(tmp_path / "b", progress=False, max_epochs=1), **kw)
    assert half["finished"] is False
    resumed = train_nm(cfg, EngineConfig(tmp_path / "b", resume=True, progress=False), **kw)
    assert resumed["top1"] == whole["top1"] and resumed["check_nm"] == []
    a, b = (json.loads((tmp_path / d / RESULT).read_text()) for d in ("a", "b"))
    assert a["layers"] == b["layers"] and a["bwd_nm_coverage"] == 1.0
    assert [r["train_loss"] for r in a["log"]] == [r["train_loss"] for r in b["log"]]
    other = make_nm_config("bimask", epochs=2, subset=64, batch_size=32, eval_subset=32, n=1)
    with pytest.raises(SqueezeError, match="another model or config"):
        train_nm(other, EngineConfig(tmp_path / "b", resume=True, progress=False), **kw)


def test_cli_glue(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    train = sub.add_parser("train")
    train.add_argument("--model", dest="base", default="")
    add_train_nm_args(train)
    add_check_nm_parser(sub)
    args = parser.parse_args(["train", "--model", "resnet-fmnist", "--method", "spre", "--n", "1", "--m", "4"])
    assert nm_fields(args, {"dense": "conv1,fc"}) == {"model": "resnet-fmnist", "n": 1, "m": 4,
                                                      "dense": ["conv1", "fc"]}
    args.method = ""
    with pytest.raises(SqueezeError, match="needs --method"):
        cmd_train_nm(args, {})
    check = parser.parse_args(["check-nm", str(tmp_path / "none.safetensors")])
    with pytest.raises(SqueezeError, match="does not exist"):
        check.fn(check)
