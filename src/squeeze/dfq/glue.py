"""Quantize with synthetic calibration data: synthesize, then run any registered PTQ method on it."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from squeeze.dfq.config import Normalization, SynthConfig, normalization_for
from squeeze.dfq.store import calibration_record, load_synthetic, save_synthetic
from squeeze.dfq.synth import SyntheticSet, synthesize
from squeeze.errors import SqueezeError


def _resolve(model: Any, input_shape: tuple[int, ...] | None, name: str | None) -> tuple[nn.Module, tuple, str | None]:
    """``(network, input_shape, zoo name)`` from a ZooModel or a plain module plus its input shape."""
    if isinstance(model, nn.Module):
        if input_shape is None:
            raise SqueezeError("pass input_shape=(C, H, W) with a plain nn.Module (a zoo model knows its own)")
        return model, tuple(input_shape), name
    net = getattr(model, "model", None)
    if not isinstance(net, nn.Module):
        raise SqueezeError(f"expected a ZooModel or an nn.Module, got {type(model).__name__}")
    return net, tuple(input_shape or model.input_shape), name or model.name


def synthetic_calibration(model: Any, synth: SynthConfig | str = "spdfq", input_shape: tuple[int, ...] | None = None,
                          normalization: Normalization | None = None, save_to: Path | None = None,
                          load_from: Path | None = None, name: str | None = None) -> SyntheticSet:
    """Synthesize (or load) a calibration set for ``model`` (a ZooModel or an nn.Module).

    ``synth`` is a :class:`SynthConfig` or just a generator name with default options.
    """
    net, shape, zoo = _resolve(model, input_shape, name)
    if load_from is not None:
        return load_synthetic(load_from, shape)
    cfg = SynthConfig(generator=synth) if isinstance(synth, str) else synth
    sset = synthesize(net, shape, cfg, normalization or normalization_for(zoo, shape[0]))
    if save_to is not None:
        save_synthetic(sset, save_to)
    return sset


def quantize_data_free(model: Any, synth: SynthConfig | str = "spdfq", method: str = "isvit", wbits: int = 4,
                       abits: int = 4, input_shape: tuple[int, ...] | None = None,
                       normalization: Normalization | None = None, save_to: Path | None = None,
                       name: str | None = None, **method_options: Any) -> tuple[nn.Module, SyntheticSet]:
    """Synthesize calibration images, then quantize with PTQ ``method`` on them (no real data used).

    Example: ``qmodel, sset = quantize_data_free(load_model("vit-fmnist"), "spdfq", "isvit", 4, 4)``.
    Returns the quantized copy (``model`` is untouched) and the synthetic set (``save_to`` also
    writes it to disk with its contact sheet).
    """
    from squeeze.api import quantize  # noqa: PLC0415
    from squeeze.config import make_config  # noqa: PLC0415

    net, shape, zoo = _resolve(model, input_shape, name)
    sset = synthetic_calibration(net, synth, shape, normalization, save_to, name=zoo)
    config = make_config(method, wbits=wbits, abits=abits, calib=len(sset.images), seed=sset.config.seed,
                         **method_options)
    qmodel = quantize(net, config, sset.images, name=zoo)
    qmodel.squeeze_meta["calibration"] = {**calibration_record(sset), "synthesis": sset.config.to_dict()}
    return qmodel, sset
