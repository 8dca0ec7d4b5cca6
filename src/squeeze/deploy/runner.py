"""``squeeze export DIR --format onnx`` and ``squeeze run DIR``: deploy a saved run, measure the artifact.

:func:`export_run` reads the run's quantizer table first (so a run without a deployable form is
refused before anything is loaded or written), exports ``DIR/model.onnx`` atomically and records a
``deploy`` section in ``DIR/report.json``. :func:`run_artifact` evaluates that file in ONNX Runtime
with the zoo model's own metric and records how closely it agrees with the fake-quant model.
"""
from __future__ import annotations

import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from squeeze.deploy.latency import ort_session
from squeeze.deploy.names import compact_file
from squeeze.deploy.onnx_export import export_float, export_quantized
from squeeze.deploy.plan import plan_export
from squeeze.errors import SqueezeError
from squeeze.train.checkpoint import write_json

ARTIFACT = "model.onnx"
AGREE_IMAGES = 256  # inputs (drawn from the calibration pool with AGREE_SEED) for output agreement
AGREE_SEED = 1234


class OrtModule(nn.Module):
    """An ONNX Runtime session called like a PyTorch model (one tensor in, one tensor out)."""

    def __init__(self, session: Any) -> None:
        super().__init__()
        self.session = session
        self.input_name = session.get_inputs()[0].name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feed = {self.input_name: x.detach().cpu().float().contiguous().numpy()}
        return torch.from_numpy(self.session.run(None, feed)[0])


def batched(model: nn.Module, x: torch.Tensor, batch: int = 64) -> torch.Tensor:
    """``model`` applied to ``x`` in chunks, without gradients, outputs as float on the CPU."""
    with torch.no_grad():
        return torch.cat([model(x[i:i + batch]).float().cpu() for i in range(0, len(x), batch)])


def agreement(reference: torch.Tensor, output: torch.Tensor) -> dict[str, float]:
    """How closely ``output`` follows ``reference`` (same shape, batch first).

    ``cosine``: mean per-sample cosine similarity of the flattened outputs; ``top1_agreement`` (%) for
    2-D logits; ``psnr_db`` for image outputs (peak = the reference's value range).
    """
    if reference.shape != output.shape:
        raise SqueezeError(f"output shape {tuple(output.shape)} differs from the reference {tuple(reference.shape)}")
    ref, out = reference.flatten(1).double(), output.flatten(1).double()
    found = {"cosine": torch.nn.functional.cosine_similarity(ref, out, dim=1).mean().item()}
    if reference.ndim == 2:
        found["top1_agreement"] = 100.0 * (reference.argmax(1) == output.argmax(1)).double().mean().item()
    else:
        mse = (ref - out).pow(2).mean().item()
        peak = (ref.max() - ref.min()).item() or 1.0
        found["psnr_db"] = 10.0 * math.log10(peak * peak / mse) if mse > 0 else float("inf")
    return found


def _read_report(folder: Path) -> dict[str, Any]:
    path = folder / "report.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _load_run(folder: Path) -> tuple[dict[str, Any], Any, nn.Module]:
    """Header, zoo model and fake-quant model of a saved run."""
    from squeeze.export.format import load, read_file  # noqa: PLC0415
    from squeeze.zoo.registry import load_model  # noqa: PLC0415

    header, _ = read_file(folder)
    if not header.get("model"):
        raise SqueezeError("the saved run names no zoo model; export it from Python with "
                           "squeeze.deploy.onnx_export.export_quantized")
    zm = load_model(header["model"])
    return header, zm, load(folder, zm.model)


def export_run(folder: str | Path, nearest: bool = False, int4_weight: bool = False,
               reduce_range: bool | None = None) -> dict[str, Any]:
    """Export the run in ``folder`` to ``folder/model.onnx``; returns the ``deploy`` section written.

    Raises:
        SqueezeError: no deployable form without ``nearest`` (the message names ``--nearest``), or a
            folder that is not a saved run. Nothing is written then.
    """
    from squeeze.export.format import read_file  # noqa: PLC0415

    folder = Path(folder)
    header, _ = read_file(folder)
    config = header.get("config", {}).get("config", {})
    what = " ".join(x for x in (header.get("model"), header.get("config", {}).get("method")) if x)
    label = f"the {what} run in {folder}" if what else f"the run in {folder}"
    plan = plan_export(header["quantizers"], nearest=nearest, int4_weight=int4_weight, label=label)
    _, zm, qmodel = _load_run(folder)
    calib = zm.calib_inputs(max(1, int(config.get("calib", 32))), int(config.get("seed", 0)))
    start = time.perf_counter()
    deploy = export_quantized(qmodel, calib, folder / ARTIFACT, plan, reduce_range=reduce_range)
    with tempfile.TemporaryDirectory(prefix="squeeze-fp32-") as work:
        fp32 = export_float(zm.model, calib[:1], Path(work) / "fp32.onnx")
        compact_file(fp32)  # as the artifact is, so the ratio compares weights and graphs, not names
        deploy["fp32_bytes"] = fp32.stat().st_size
    deploy.update(size_ratio=deploy["bytes"] / deploy["fp32_bytes"], export_seconds=time.perf_counter() - start)
    report = _read_report(folder)
    report["deploy"] = deploy
    write_json(folder / "report.json", report)
    return deploy


def run_artifact(folder: str | Path, threads: int = 0) -> dict[str, Any]:
    """Evaluate ``folder/model.onnx`` in ONNX Runtime and record metric and agreement in report.json.

    Args:
        folder: a run folder exported by :func:`export_run`.
        threads: ORT intra-op threads (0 = ORT's default).

    Returns the updated ``deploy`` section: the artifact's metric (``quant``), the fake-quant metric
    it is compared with, and :func:`agreement` of the outputs on held-aside calibration-pool inputs.
    """
    folder = Path(folder)
    report = _read_report(folder)
    deploy = report.get("deploy")
    if not deploy or not (folder / deploy.get("file", ARTIFACT)).is_file():
        raise SqueezeError(f"{folder} has no exported artifact; run `squeeze export {folder} --format onnx` first")
    _, zm, qmodel = _load_run(folder)
    runtime = OrtModule(ort_session(folder / deploy["file"], threads))
    start = time.perf_counter()
    value = zm.evaluate(runtime)
    inputs = zm.calib_inputs(AGREE_IMAGES, AGREE_SEED)
    agree = agreement(batched(qmodel, inputs), batched(runtime, inputs))
    fake = report.get("quant")
    deploy.update(metric=zm.metric, quant=value, fakequant=fake,
                  delta_vs_fakequant=None if fake is None else value - float(fake),
                  agreement_images=AGREE_IMAGES, eval_seconds=time.perf_counter() - start, **agree)
    report["deploy"] = deploy
    write_json(folder / "report.json", report)
    return deploy
