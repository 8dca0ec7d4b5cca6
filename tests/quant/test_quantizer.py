"""Quantizer module: modes, observation across batches, spec validation."""
import pytest
import torch

from squeeze.quant.primitives import Granularity
from squeeze.quant.quantizer import Quantizer, QuantSpec


def test_modes_and_running_minmax() -> None:
    q = Quantizer(QuantSpec(8))
    x1, x2 = torch.tensor([0.0, 1.0]), torch.tensor([-2.0, 0.5])
    assert torch.equal(q(x1), x1)  # off
    q.mode = "observe"
    q(x1), q(x2)
    q.finalize()
    q.mode = "quant"
    assert q.calibrated
    assert torch.allclose(q.scale, torch.tensor([[3.0 / 255]]))
    out = q(torch.tensor([-2.0, 1.0, 5.0]))
    assert torch.allclose(out, torch.tensor([-2.0, 1.0, 1.0]), atol=3.0 / 255)


def test_channel_last_observation_concatenates_rows() -> None:
    q = Quantizer(QuantSpec(4, granularity=Granularity("channel", -1), estimator="mse"))
    q.mode = "observe"
    q(torch.randn(2, 5, 3))
    q(torch.randn(4, 5, 3) * 10)
    q.finalize()
    assert q.scale.shape == (1, 3)


def test_spec_validation_and_roundtrip() -> None:
    with pytest.raises(ValueError):
        QuantSpec(1)
    with pytest.raises(ValueError):
        QuantSpec(4, estimator="magic")  # type: ignore[arg-type]
    spec = QuantSpec(3, kind="logsqrt2", granularity=Granularity("group", group_size=8))
    assert QuantSpec.from_dict(spec.to_dict()) == spec


def test_quant_before_calibration_is_an_error() -> None:
    q = Quantizer(QuantSpec(4))
    q.mode = "quant"
    with pytest.raises(RuntimeError):
        q(torch.ones(3))
