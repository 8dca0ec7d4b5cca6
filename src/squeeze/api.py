"""The one-call Python API: ``squeeze.quantize(model, config, calib_data)``."""
from __future__ import annotations

import copy
import math

import torch
from torch import nn

from squeeze.config import QuantConfig, get_method
from squeeze.devices import model_device
from squeeze.errors import SqueezeError


def check_finite_model(model: nn.Module) -> None:
    """Refuse weights containing NaN or inf (one line naming the first bad tensor)."""
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise SqueezeError(f"model tensor {name!r} contains NaN or inf; fix or retrain the model")


def calibration_batches(model: nn.Module, data: torch.Tensor, config: QuantConfig) -> list[torch.Tensor]:
    """Validate calibration data and split the first ``config.calib`` samples into batches."""
    if not isinstance(data, torch.Tensor):
        raise SqueezeError(f"calibration data must be a tensor, got {type(data).__name__}")
    if data.ndim == 0 or len(data) == 0:
        raise SqueezeError("calibration data is empty; pass at least one sample (--calib N with N > 0)")
    if len(data) < config.calib:
        raise SqueezeError(f"calibration data has {len(data)} samples but calib={config.calib}; "
                           "pass more data or lower calib")
    if data.is_floating_point() and not torch.isfinite(data).all():
        raise SqueezeError("calibration data contains NaN or inf; clean the inputs")
    data = data[: config.calib].to(model_device(model))
    try:
        with torch.no_grad():
            model(data[:1])
    except (RuntimeError, ValueError, IndexError, AssertionError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SqueezeError(f"a calibration sample of shape {tuple(data.shape[1:])} does not fit the model "
                           f"({first}); pass inputs shaped like the model's training data") from exc
    n = math.ceil(len(data) / config.batch_size)
    return list(data.chunk(n))


def quantize(model: nn.Module, config: QuantConfig, calib_data: torch.Tensor, name: str | None = None) -> nn.Module:
    """Return a quantized copy of ``model`` (fake-quant modules; ``model`` is left untouched).

    Args:
        model: float PyTorch model (eval mode is set on the copy).
        config: a method config, e.g. ``squeeze.make_config("gptq", wbits=4, abits=8)``.
        calib_data: calibration inputs, batch first (at least ``config.calib`` samples).
        name: zoo name of the model, stored so :func:`squeeze.load` can rebuild it alone.
    """
    from squeeze.quant.prepare import prepare_model  # noqa: PLC0415

    entry = get_method(config.method)
    check_finite_model(model)
    qmodel = copy.deepcopy(model).eval()
    batches = calibration_batches(qmodel, calib_data, config)
    prepare_model(qmodel)
    torch.manual_seed(config.seed)
    entry.apply(qmodel, config, batches)
    qmodel.squeeze_meta = {"model": name, "config": config.to_dict()}
    return qmodel
