"""``squeeze train hqss`` glue, called directly (the shared CLI wires it the same way)."""
from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from squeeze.errors import SqueezeError
from squeeze.methods.hqss.cli import add_train_hqss_args, cmd_train_hqss

TINY = {"size": 32, "train_images": 4, "test_images": 2, "clean_images": 4, "remove_steps": 2, "remove_batch": 2,
        "variants_per_image": 1, "width": 4, "levels": 2, "blocks": 1}


def _args(tmp_path: Path, argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--method", default="")
    parser.add_argument("--workdir", default=str(tmp_path))
    parser.add_argument("--resume", action="store_true")
    for name, default in (("--devices", 1), ("--nodes", 1)):
        parser.add_argument(name, type=int, default=default)
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--precision", default="32-true")
    add_train_hqss_args(parser)
    return parser.parse_args(argv)


def test_train_darken_on_simulated_shadows(tmp_path: Path) -> None:
    pytest.importorskip("skimage")
    out = cmd_train_hqss(_args(tmp_path, ["--method", "darken"]), dict(TINY))
    assert out["workdir"].endswith("hqss-darken") and (Path(out["workdir"]) / "model.safetensors").is_file()
    assert out["test"]["rmse_shadow"] > 0


def test_bad_variant_and_option(tmp_path: Path) -> None:
    with pytest.raises(SqueezeError, match="unknown"):
        cmd_train_hqss(_args(tmp_path, ["--method", "hqs"]), {})
    with pytest.raises(SqueezeError, match="unknown HQSS option"):
        cmd_train_hqss(_args(tmp_path, []), {"steps": 3})
    with pytest.raises(SqueezeError, match="neither 'sim' nor a folder"):
        cmd_train_hqss(_args(tmp_path, ["--shadow-data", str(tmp_path / "missing")]), dict(TINY))
