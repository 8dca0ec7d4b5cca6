"""The command line: a real quantize + eval round trip, and one-line errors for bad input."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from squeeze.cli import main


def _error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    return err[0]


def test_quantize_then_eval_reproduces(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    code = main(["quantize", "vit-fmnist", "--method", "rtn", "--wbits", "4", "--abits", "8", "--calib", "8",
                 "--out", str(out)])
    if code == 2 and "checkpoint missing" in capsys.readouterr().err:
        pytest.skip("vit-fmnist checkpoint not available")
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    for key in ("model", "method", "wbits", "abits", "calib", "seed", "metric", "fp", "quant", "seconds",
                "peak_rss_mb", "simulated", "versions"):
        assert key in report
    assert report["simulated"] is True and report["size_ratio"] <= 0.3
    capsys.readouterr()
    assert main(["eval", str(out)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert abs(result["quant"] - report["quant"]) <= 0.1
    # an existing output folder is not overwritten without --force
    assert "already exists" in _error(capsys, ["quantize", "vit-fmnist", "--method", "rtn", "--wbits", "4",
                                               "--abits", "8", "--out", str(out)])


@pytest.mark.parametrize("argv, needle", [
    (["quantize", "nope-model", "--method", "rtn", "--wbits", "4", "--abits", "8"], "unknown model"),
    (["quantize", "vit-fmnist", "--method", "nope", "--wbits", "4", "--abits", "8"], "unknown method"),
    (["quantize", "vit-fmnist", "--method", "rtn", "--wbits", "1", "--abits", "8"], "outside 2..16"),
    (["quantize", "vit-fmnist", "--method", "rtn", "--wbits", "4", "--abits", "32"], "outside 2..16"),
    (["quantize", "vit-fmnist", "--method", "rtn", "--wbits", "4", "--abits", "8", "--calib", "0"], "calib"),
    (["quantize", "vit-fmnist", "--method", "gptq", "--wbits", "4", "--abits", "8", "--set", "act_scheme=x"],
     "act_scheme"),
    (["bench", "nope"], "unknown benchmark"),
])
def test_bad_input_one_line_and_no_output(tmp_path: Path, capsys, argv: list[str], needle: str) -> None:
    out = tmp_path / "out"
    if argv[0] == "quantize":
        argv = argv + ["--out", str(out)]
    assert needle in _error(capsys, argv)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no temp dir left behind


def test_eval_of_corrupt_file(tmp_path: Path, capsys) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"\x10\x00garbage")
    assert "corrupt" in _error(capsys, ["eval", str(tmp_path)])
