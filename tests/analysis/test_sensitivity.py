"""Per-layer sensitivity: the switch restores modes, each measurement equals an independently built model,
the ranking and overrides, and ``squeeze sensitivity`` end to end on a tiny stand-in zoo model."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from torch import nn

import squeeze
from squeeze.analysis.run import run_sensitivity, search_overrides
from squeeze.analysis.sensitivity import layer_quantizers, per_layer, ranked, suggest_overrides, switched
from squeeze.cli import main
from squeeze.errors import SqueezeError
from squeeze.zoo.registry import ZooModel


def _scorer(reference: nn.Module, images: torch.Tensor):
    """Higher is better: minus the mean squared error against the float model's logits."""
    with torch.no_grad():
        target = reference(images)

    def evaluate(model: nn.Module) -> float:
        with torch.no_grad():
            return -float(((model(images) - target) ** 2).mean())
    return evaluate


def _quantized(tiny_vit: nn.Module, tiny_images: torch.Tensor) -> nn.Module:
    cfg = squeeze.make_config("rtn", wbits=2, abits=4, calib=16, batch_size=8)
    return squeeze.quantize(tiny_vit, cfg, tiny_images)


def test_switched_restores_every_mode_even_when_the_block_fails(tiny_vit, tiny_images) -> None:
    q = _quantized(tiny_vit, tiny_images)
    qs = [x for group in layer_quantizers(q).values() for x in group]
    with pytest.raises(RuntimeError, match="boom"), switched(qs, "off"):
        assert all(x.mode == "off" for x in qs)
        raise RuntimeError("boom")
    assert all(x.mode == "quant" for x in qs)


def test_each_measurement_equals_a_model_built_without_that_layers_quantizers(tiny_vit, tiny_images) -> None:
    q = _quantized(tiny_vit, tiny_images)
    evaluate = _scorer(tiny_vit, tiny_images)
    result = per_layer(q, evaluate, alone=True, progress=False)
    groups = layer_quantizers(q)
    assert [r["layer"] for r in result["layers"]] == list(groups)
    assert result["quant"] == pytest.approx(evaluate(q)) and result["quant"] < 0
    assert result["float"] == pytest.approx(0.0, abs=1e-9)  # rtn keeps float weights: all off is the float model
    for row in result["layers"][:: max(1, len(groups) // 4)]:
        without = copy.deepcopy(q)  # reference: that layer's quantizer slots emptied outright
        layer = without.get_submodule(row["layer"])
        for slot in ("input_quantizer", "weight_quantizer", "a_quantizer", "b_quantizer"):
            if hasattr(layer, slot):
                setattr(layer, slot, None)
        assert row["without"] == pytest.approx(evaluate(without), rel=1e-6)
        assert row["recovered"] == pytest.approx(row["without"] - result["quant"])
        assert row["cost"] == pytest.approx(result["float"] - row["alone"])
    assert all(x.mode == "quant" for group in groups.values() for x in group)


def test_ranking_and_overrides_name_only_layers_that_help() -> None:
    rows = [{"layer": "a", "recovered": 0.1}, {"layer": "b", "recovered": 2.0}, {"layer": "c", "recovered": -0.2}]
    assert [r["layer"] for r in ranked(rows)] == ["b", "a", "c"]
    wide = {"wbits": 8, "abits": 6}
    assert suggest_overrides(rows, 5, wbits=8, abits=6) == {"b": wide, "a": wide}
    assert suggest_overrides(rows, 1) == {"b": {"wbits": 8, "abits": 8}}
    with pytest.raises(SqueezeError, match="--top"):
        suggest_overrides(rows, -1)


def test_a_float_model_is_refused(tiny_vit, tiny_images) -> None:
    with pytest.raises(SqueezeError, match="no active quantizers"):
        per_layer(tiny_vit, _scorer(tiny_vit, tiny_images), progress=False)


def test_command_requantizes_the_run_and_writes_its_files(tiny_vit, tiny_images, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    zm = _tiny_zoo(tiny_vit, tiny_images)
    monkeypatch.setattr("squeeze.zoo.registry.load_model", lambda name: zm)
    config = squeeze.make_config("rtn", wbits=2, abits=4, calib=16, batch_size=8)
    run = tmp_path / "run"
    run.mkdir()
    (run / "report.json").write_text(json.dumps({"model": "tiny", "config": config.to_dict(), "quant": -1.0}))
    result = run_sensitivity(run, top=2, target=-1e9, max_layers=2)
    assert result["quant"] == pytest.approx(zm.evaluate(_quantized(tiny_vit, tiny_images)))  # the same model again
    assert len(result["suggested_overrides"]) <= 2
    assert set(result["suggested_overrides"]) <= {r["layer"] for r in result["layers"]}
    saved = json.loads((run / "sensitivity.json").read_text())
    assert saved["saved_quant"] == -1.0 and saved["config"]["method"] == "rtn"
    assert saved["search"]["reached"] and len(saved["search"]["tries"]) == 1  # any run reaches -1e9
    assert (run / "sensitivity.png").stat().st_size > 0
    assert "squeeze quantize ... --set 'overrides=" in (run / "sensitivity.md").read_text()


def _one_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    return capsys.readouterr().err.strip()


def test_cli_refuses_a_folder_without_a_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sensitivity", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "report.json" in err and "\n" not in err
    assert "--max-layers 0 >= 1" in _one_error(capsys, ["sensitivity", str(tmp_path), "--target", "1",
                                                        "--max-layers", "0"])
    (tmp_path / "report.json").write_text("{not json")
    assert main(["sensitivity", str(tmp_path)]) == 2
    assert "not a `squeeze quantize` report" in capsys.readouterr().err
    assert not (tmp_path / "sensitivity.json").exists()


def _tiny_zoo(tiny_vit, tiny_images) -> ZooModel:
    return ZooModel("tiny", tiny_vit, "neg_mse", lambda n, seed: tiny_images[:n], _scorer(tiny_vit, tiny_images),
                    (1, 16, 16))


def test_search_stops_at_the_first_run_that_reaches_the_target(tiny_vit, tiny_images) -> None:
    zm = _tiny_zoo(tiny_vit, tiny_images)
    config = squeeze.make_config("rtn", wbits=2, abits=4, calib=16, batch_size=8, overrides={"*": {"abits": 6}})
    q = squeeze.quantize(tiny_vit, config, tiny_images)
    rows = per_layer(q, zm.evaluate, progress=False)["layers"]
    best = ranked(rows)[0]["layer"]
    # reference: the run with that one layer at 8 bits, built by hand; the search's own pattern must come first
    one = squeeze.make_config("rtn", wbits=2, abits=4, calib=16, batch_size=8,
                              overrides={best: {"wbits": 8, "abits": 8}, "*": {"abits": 6}})
    reached = zm.evaluate(squeeze.quantize(tiny_vit, one, tiny_images))
    search = search_overrides(zm, config, rows, reached, 4, wbits=8, abits=8)
    assert search["reached"] and len(search["tries"]) == 1
    assert search["tries"][0]["overrides"] == {best: {"wbits": 8, "abits": 8}}
    assert search["tries"][0]["quant"] == pytest.approx(reached)
    never = search_overrides(zm, config, rows, 1.0, 3, wbits=8, abits=8)  # above float (0): out of reach
    assert not never["reached"] and [t["layers"] for t in never["tries"]] == [1, 2, 3]
    with pytest.raises(SqueezeError, match="--max-layers"):
        search_overrides(zm, config, rows, 0.0, 0, wbits=8, abits=8)
