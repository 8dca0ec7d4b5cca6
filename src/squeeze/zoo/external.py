"""Models that are not in the registry: ``timm:NAME[@weights.safetensors]`` and local Hugging Face folders.

:func:`try_load` is called by :func:`squeeze.zoo.registry.load_model` for names the registry does
not know. Nothing is ever downloaded:

* ``timm:NAME`` builds a timm architecture (Wightman, "PyTorch Image Models") and loads ImageNet
  weights only if they are already in the local Hugging Face cache; otherwise it refuses and asks
  for ``timm:NAME@/path/to/weights.safetensors`` (a safetensors state dict for that architecture).
* a local folder with ``config.json`` (saved with ``save_pretrained``) loads with transformers,
  offline: image classifiers via ``AutoModelForImageClassification``, other vision backbones and
  text encoders via ``AutoModel``.

Metrics compare the loaded model with its own float copy, since no labelled data ships offline:
``agreement`` (top-1 agreement in %, on fixed ``test``-split photo crops) for classifiers and
``cosine`` (mean cosine similarity in %, 100 = identical) for feature extractors. Calibration
inputs come from the ``train`` split. The helpers here are shared by the zoo's own entries.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from squeeze.data.photos import photo_crops
from squeeze.devices import model_device
from squeeze.errors import SqueezeError
from squeeze.zoo.registry import ZooModel

EVAL_CROPS = 96
EVAL_SEED = 0
INSTALL_HINT = "install it with `pip install 'squeeze[models]'` or run `make setup`"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def missing_package(what: str, exc: ImportError) -> SqueezeError:
    """A one-line error for a missing optional dependency."""
    return SqueezeError(f"{what} needs an optional package ({exc}); {INSTALL_HINT}")


def offline_hf() -> None:
    """Forbid Hugging Face network access for this process (unless the user set the variables)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@torch.no_grad()
def batched_forward(model: nn.Module, x: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    """``model`` applied to ``x`` in batches, outputs concatenated (float32)."""
    device = model_device(model)
    return torch.cat([model(chunk.to(device)).float().cpu() for chunk in x.split(batch_size)])


def agreement_percent(out: torch.Tensor, ref_labels: torch.Tensor) -> float:
    """Top-1 agreement (%) of ``out`` logits with reference labels."""
    return 100.0 * (out.argmax(-1) == ref_labels).float().mean().item()


def cosine_percent(out: torch.Tensor, ref: torch.Tensor) -> float:
    """Mean cosine similarity (%) of the rows of ``out`` with the rows of ``ref``."""
    return 100.0 * F.cosine_similarity(out.flatten(1), ref.flatten(1), dim=-1).mean().item()


def reference_evaluator(model: nn.Module, inputs: torch.Tensor, metric: str) -> Callable[[nn.Module], float]:
    """Run the float ``model`` once on ``inputs`` and return ``candidate -> metric vs that reference``."""
    ref = batched_forward(model.eval(), inputs)
    if metric == "agreement":
        ref_labels = ref.argmax(-1)
        return lambda m: agreement_percent(batched_forward(m, inputs), ref_labels)
    if metric == "cosine":
        return lambda m: cosine_percent(batched_forward(m, inputs), ref)
    raise ValueError(f"unknown reference metric {metric!r}")


def normalized_crops(split: str, n: int, size: int, seed: int, mean: Sequence[float],
                     std: Sequence[float]) -> torch.Tensor:
    """Photo crops of ``split`` normalized as ``(x - mean) / std`` per channel."""
    x = photo_crops(split, n, size, seed=seed)
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def image_zoo_model(name: str, model: nn.Module, size: int, mean: Sequence[float], std: Sequence[float],
                    metric: str = "agreement", info: dict[str, str] | None = None,
                    n_eval: int | None = None) -> ZooModel:
    """Wrap an image model taking normalized (N, 3, size, size) inputs as a :class:`ZooModel`.

    The evaluation set is ``n_eval`` fixed crops of the ``test`` photos; the float reference is
    computed here, once (``n_eval`` defaults to :data:`EVAL_CROPS`). Calibration crops come from
    the ``train`` photos.
    """
    n_eval = n_eval or EVAL_CROPS
    model.eval()
    mean, std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
    eval_x = normalized_crops("test", n_eval, size, EVAL_SEED, mean, std)
    evaluate = reference_evaluator(model, eval_x, metric)

    def calib(n: int, seed: int) -> torch.Tensor:
        return normalized_crops("train", n, size, seed, mean, std)

    facts = {"eval_set": f"{n_eval} crops of {size}px from the test-split photos",
             "normalize": f"mean={mean} std={std}"}
    return ZooModel(name, model, metric, calib, evaluate, (3, size, size), {**facts, **(info or {})})


# ---------------------------------------------------------------- timm


def parse_timm_spec(spec: str) -> tuple[str, Path | None]:
    """``'NAME'`` or ``'NAME@/path/w.safetensors'`` -> (name, path or None)."""
    arch, _, weights = spec.partition("@")
    if not arch.strip():
        raise SqueezeError("empty timm model name; use timm:NAME or timm:NAME@/path/to/weights.safetensors")
    return arch.strip(), Path(weights).expanduser() if weights else None


def _check_timm_name(timm_mod, arch: str) -> None:
    if not timm_mod.is_model(arch):
        import difflib  # noqa: PLC0415

        close = difflib.get_close_matches(arch, timm_mod.list_models(), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see timm.list_models()"
        raise SqueezeError(f"timm has no architecture {arch!r}{hint}")
    try:
        timm_mod.models.get_pretrained_cfg(arch)
    except RuntimeError as exc:  # e.g. an unknown pretrained tag
        raise SqueezeError(f"timm model {arch!r}: {exc}") from exc


def cached_timm_weights(timm_mod, arch: str) -> str | None:
    """Path of the model's ``model.safetensors`` in the local Hugging Face cache, if present (no network)."""
    from huggingface_hub import try_to_load_from_cache  # noqa: PLC0415 (installed with timm)

    cfg = timm_mod.models.get_pretrained_cfg(arch)
    repo = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not repo:
        return None
    found = try_to_load_from_cache(repo_id=repo, filename="model.safetensors")
    return found if isinstance(found, str) else None


def _head_classes(state: dict[str, torch.Tensor], model: nn.Module) -> int | None:
    """Number of classes of the checkpoint's classifier, when it differs from the model's."""
    head = model.pretrained_cfg.get("classifier") if hasattr(model, "pretrained_cfg") else None
    weight = state.get(f"{head}.weight") if isinstance(head, str) else None
    if weight is None or weight.ndim != 2 or weight.shape[0] == getattr(model, "num_classes", weight.shape[0]):
        return None
    return int(weight.shape[0])


def load_safetensors_into(model: nn.Module, path: Path, build: Callable[[int], nn.Module]) -> nn.Module:
    """Load a safetensors state dict strictly into ``model`` (rebuilt with ``build(n)`` for an n-class head)."""
    from squeeze.train.checkpoint import load_tensors  # noqa: PLC0415

    if path.suffix != ".safetensors":
        raise SqueezeError(f"{path}: only .safetensors weights are accepted (squeeze never unpickles "
                           ".pth/.bin files); convert with safetensors.torch.save_file(state_dict, ...)")
    state = load_tensors(path)
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    classes = _head_classes(state, model)
    if classes is not None:
        model = build(classes)
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        detail = next((ln.strip() for ln in str(exc).splitlines() if "size mismatch" in ln), "shape mismatch")
        raise SqueezeError(f"{path} does not match the architecture ({detail}); "
                           "pass weights saved from this architecture") from exc
    if result.missing_keys or result.unexpected_keys:
        raise SqueezeError(f"{path} does not match the architecture: {len(result.missing_keys)} missing keys "
                           f"(e.g. {result.missing_keys[:2]}), {len(result.unexpected_keys)} unexpected "
                           f"(e.g. {result.unexpected_keys[:2]}); pass weights saved from this architecture")
    return model


def build_timm(timm_mod, arch: str, weights: Path | None) -> tuple[nn.Module, str]:
    """(model with weights, where they came from) for a timm architecture, never downloading."""
    if weights is not None:
        if not weights.is_file():
            raise SqueezeError(f"weights file {weights} does not exist; "
                               f"pass timm:{arch}@/path/to/weights.safetensors")
        model = load_safetensors_into(timm_mod.create_model(arch, pretrained=False), weights,
                                      lambda n: timm_mod.create_model(arch, pretrained=False, num_classes=n))
        return model, str(weights)
    cached = cached_timm_weights(timm_mod, arch)
    if cached is None:
        raise SqueezeError(f"no local weights for timm model {arch!r} (none in the Hugging Face cache, and "
                           f"squeeze never downloads); pass timm:{arch}@/path/to/weights.safetensors")
    try:
        model = timm_mod.create_model(arch, pretrained=True, pretrained_cfg_overlay={"file": cached})
    except (RuntimeError, ValueError, OSError) as exc:
        raise SqueezeError(f"cached weights {cached} do not load into {arch!r} ({str(exc).splitlines()[0]}); "
                           f"pass timm:{arch}@/path/to/weights.safetensors") from exc
    return model, f"Hugging Face cache {cached}"


def load_timm(spec: str, n_eval: int | None = None) -> ZooModel:
    """``timm:NAME[@weights.safetensors]`` as a :class:`ZooModel` with the ``agreement`` metric."""
    try:
        import timm  # noqa: PLC0415
        import timm.data  # noqa: PLC0415
    except ImportError as exc:
        raise missing_package("timm:NAME models", exc) from exc
    offline_hf()
    arch, weights = parse_timm_spec(spec)
    _check_timm_name(timm, arch)
    model, source = build_timm(timm, arch, weights)
    cfg = timm.data.resolve_data_config({}, model=model)
    channels, height, width = cfg["input_size"]
    if channels != 3 or height != width:
        raise SqueezeError(f"timm model {arch!r} takes {cfg['input_size']} inputs; "
                           "only square RGB models are supported")
    return image_zoo_model(f"timm:{spec}", model, height, cfg["mean"], cfg["std"], "agreement",
                           {"source": "timm " + arch, "weights": source}, n_eval)


# ---------------------------------------------------------------- local Hugging Face folders


class OutputSelect(nn.Module):
    """Call a Hugging Face vision model on pixels and return one tensor: logits, else pooled features."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        out = self.model(pixel_values=pixel_values)
        for key in ("logits", "pooler_output"):
            value = getattr(out, key, None)
            if value is not None:
                return value
        return out.last_hidden_state.mean(dim=1)


def _image_preprocessing(folder: Path, config) -> tuple[int, tuple[float, ...], tuple[float, ...]]:
    """(size, mean, std) from ``preprocessor_config.json`` when present, else the model config / ImageNet."""
    pre_path = folder / "preprocessor_config.json"
    pre = json.loads(pre_path.read_text()) if pre_path.is_file() else {}
    size = pre.get("crop_size") or pre.get("size") or getattr(config, "image_size", 224)
    if isinstance(size, dict):
        size = size.get("height") or size.get("shortest_edge") or next(iter(size.values()))
    if isinstance(size, (list, tuple)):
        size = size[0]
    return int(size), tuple(pre.get("image_mean", IMAGENET_MEAN)), tuple(pre.get("image_std", IMAGENET_STD))


def load_hf_folder(folder: Path, n_eval: int | None = None) -> ZooModel:
    """A local ``save_pretrained`` folder as a :class:`ZooModel` (loaded offline)."""
    offline_hf()
    try:
        import transformers  # noqa: PLC0415
    except ImportError as exc:
        raise missing_package("Hugging Face model folders", exc) from exc
    try:
        config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise SqueezeError(f"{folder}/config.json is not a usable transformers config ({exc}); "
                           "pass a folder written by save_pretrained") from exc
    is_image = getattr(config, "num_channels", None) is not None and hasattr(config, "image_size")
    if not is_image:
        from squeeze.zoo.minilm import text_encoder_zoo  # noqa: PLC0415 (avoids an import cycle)

        return text_encoder_zoo(str(folder), folder, {"source": f"local folder {folder}"}, n_eval=n_eval)
    classify = any(a.endswith("ForImageClassification") for a in (config.architectures or []))
    auto = transformers.AutoModelForImageClassification if classify else transformers.AutoModel
    try:
        net = auto.from_pretrained(folder, local_files_only=True, use_safetensors=True)
    except (OSError, ValueError) as exc:
        raise SqueezeError(f"cannot load the model in {folder} ({str(exc).splitlines()[0]}); it needs "
                           "safetensors weights written by save_pretrained") from exc
    size, mean, std = _image_preprocessing(folder, config)
    return image_zoo_model(str(folder), OutputSelect(net), size, mean, std, "agreement" if classify else "cosine",
                           {"source": f"local folder {folder}", "class": type(net).__name__}, n_eval)


def try_load(name: str) -> ZooModel | None:
    """Load ``timm:...`` names and local Hugging Face folders; None for anything else."""
    if name.startswith("timm:"):
        return load_timm(name[len("timm:"):])
    path = Path(name).expanduser()
    if not path.is_dir():
        return None
    if not (path / "config.json").is_file():
        raise SqueezeError(f"folder {path} has no config.json; pass a Hugging Face model folder written by "
                           "save_pretrained, or a zoo name (`squeeze zoo list`)")
    return load_hf_folder(path)
