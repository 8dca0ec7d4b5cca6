"""The command line: a real quantize + eval round trip, and one-line errors for bad input."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import squeeze
from squeeze import runner
from squeeze.cli import main
from squeeze.dfq import load_synthetic
from squeeze.zoo.registry import load_model


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


def test_cle_run_says_what_it_folded_and_equalized(tmp_path: Path, capsys) -> None:
    out = tmp_path / "dfq"
    assert main(["quantize", "resnet-fmnist", "--method", "cle", "--wbits", "8", "--abits", "8", "--calib", "8",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "method summary: relu6_swapped 0, folded 21, pairs 9, candidate_pairs 10" in printed
    assert json.loads((out / "report.json").read_text())["method_summary"]["corrected"] == 10
    capsys.readouterr()
    assert main(["eval", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["difference"] == 0.0  # folded and re-biased model reloads exactly


def test_data_free_quantize_saves_its_images_for_reuse(tmp_path: Path, capsys, monkeypatch, umask_022) -> None:
    out, again = tmp_path / "noise", tmp_path / "again"
    # what is checked here is the files, not accuracy: skip the 10,000-image evaluations
    monkeypatch.setattr(runner, "load_model", lambda name: replace(load_model(name), evaluate=lambda model: 0.0))
    code = main(["quantize", "vit-fmnist", "--data", "synthetic:noise", "--method", "rtn", "--wbits", "8",
                 "--abits", "8", "--set", "n_images=4", "--out", str(out)])
    if code == 2 and "checkpoint missing" in capsys.readouterr().err:
        pytest.skip("vit-fmnist checkpoint not available")
    assert code == 0 and "synthetic.png" in capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    assert report["calibration"]["source"] == "synthetic:noise" and report["calibration"]["images"] == 4
    assert (out / "synthetic.png").stat().st_size > 0
    assert out.stat().st_mode & 0o777 == 0o755  # the umask's, not mkdtemp's private 0700
    saved = load_synthetic(out, (1, 28, 28))
    # the same images calibrate another run, which records where they came from
    assert main(["quantize", "vit-fmnist", "--method", "spdfq", "--wbits", "8", "--abits", "8", "--set",
                 "backend=rtn", "--set", f"synthetic={out}", "--out", str(again)]) == 0
    assert json.loads((again / "report.json").read_text())["calibration"]["reused"] == str(out)
    assert torch.equal(load_synthetic(again).images, saved.images)


def test_version_names_squeeze_and_torch(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"squeeze {squeeze.__version__} ") and f"torch {torch.__version__}" in out


def test_methods_lists_post_training_and_trained_methods(capsys) -> None:
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    for name in ("erq", "isvit", "spdfq", "dfsq", "multiquant", "nm", "uio", "undem", "hqss"):
        assert f"  {name} " in out
    assert "spre" in out and "bimask" in out and "any-precision" in out


@pytest.mark.parametrize("argv, needle", [
    (["quantize", "nope-model", "--method", "rtn", "--wbits", "4", "--abits", "8"], "unknown model"),
    (["quantize", "vit-fmnist", "--method", "nope", "--wbits", "4", "--abits", "8"], "unknown method"),
    (["quantize", "vit-fmnist", "--method", "rtn", "--wbits", "1", "--abits", "8"], "outside 2..16"),
    (["quantize", "vit-fmnist", "--method", "rtn", "--wbits", "4", "--abits", "32"], "outside 2..16"),
    (["quantize", "vit-fmnist", "--method", "rtn", "--wbits", "4", "--abits", "8", "--calib", "0"], "calib"),
    (["quantize", "vit-fmnist", "--method", "gptq", "--wbits", "4", "--abits", "8", "--set", "act_scheme=x"],
     "act_scheme"),
    (["bench", "nope"], "unknown benchmark"),
    (["quantize", "vit-fmnist", "--method", "rtn", "--wbits", "4"], "needs --method, --wbits and --abits"),
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


def test_a_recipe_gives_the_fields_and_flags_go_on_top(tmp_path: Path, capsys, monkeypatch) -> None:
    seen = []

    def fake_run(model, config, out, force=False):  # the real run is test_quantize_then_eval_reproduces
        seen.append(config)
        return {"model": model, "quant": 1.0, "fp": 1.0}

    monkeypatch.setattr(runner, "run_quantize", fake_run)
    config = squeeze.make_config("gptq", wbits=3, abits=6, calib=8, seed=2, overrides={"head": {"wbits": 8}})
    report = tmp_path / "report.json"  # a run's report carries its config document
    report.write_text(json.dumps({"model": "vit-fmnist", "method": "gptq", "config": config.to_dict()}))
    assert main(["quantize", "vit-fmnist", "--recipe", str(report), "--out", str(tmp_path / "a")]) == 0
    assert seen[-1] == config
    document = tmp_path / "recipe.json"  # a bare config document, with a flag and --set over it
    document.write_text(json.dumps(config.to_dict()))
    assert main(["quantize", "vit-fmnist", "--recipe", str(document), "--wbits", "4", "--set", "calib=16",
                 "--out", str(tmp_path / "b")]) == 0
    assert seen[-1] == replace(config, wbits=4, calib=16)
    capsys.readouterr()
    for text, needle in (("{not json", "not readable JSON"), ("[1, 2]", "not a JSON object"),
                         ('{"method": "rtn", "version": 99, "config": {}}', "newer than this squeeze"),
                         ('{"method": "rtn", "version": 1, "config": {"wbitz": 4}}', "wbitz")):
        document.write_text(text)
        assert needle in _error(capsys, ["quantize", "vit-fmnist", "--recipe", str(document), "--out", "x"])
    assert "does not exist" in _error(capsys, ["quantize", "vit-fmnist", "--recipe", str(tmp_path / "no.json"),
                                               "--out", "x"])
    assert "drop --method" in _error(capsys, ["quantize", "vit-fmnist", "--recipe", str(report), "--method",
                                              "rtn", "--out", "x"])
    assert len(seen) == 2
