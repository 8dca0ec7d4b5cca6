"""Orchestration behind ``squeeze quantize`` / ``squeeze eval``: zoo model -> quantize -> report."""
from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as save_bytes

from squeeze.api import quantize
from squeeze.config import QuantConfig
from squeeze.dfq.store import calibration_record, save_synthetic
from squeeze.errors import SqueezeError
from squeeze.export.format import FILENAME, load, read_file, save
from squeeze.report import Report, peak_rss_mb
from squeeze.train.checkpoint import umask_mode, write_json
from squeeze.zoo.registry import ZooModel, load_model


def fp32_bytes(model: torch.nn.Module) -> int:
    """Size of the float32 safetensors checkpoint of ``model`` (the size baseline)."""
    return len(save_bytes({k: v.float().contiguous() for k, v in model.state_dict().items()}))


def calibration_inputs(zm: ZooModel, config: QuantConfig) -> torch.Tensor:
    """The calibration batch ``config`` asks of a zoo model (seeded, so a run can be quantized again alike)."""
    # a data-free method (spdfq) synthesizes its own images: it gets placeholders of the right shape, no data
    if getattr(config, "data_free", False):
        return torch.zeros(config.calib, *zm.input_shape)
    return zm.calib_inputs(config.calib, config.seed)


def quantize_zoo_model(zm: ZooModel, config: QuantConfig, fp: float | None = None) -> tuple[torch.nn.Module, Report]:
    """Quantize a zoo model with ``config`` and measure it; ``fp`` skips re-measuring the float model."""
    calib = calibration_inputs(zm, config)
    start = time.perf_counter()
    qmodel = quantize(zm.model, config, calib, name=zm.name)
    seconds = time.perf_counter() - start
    fp = zm.evaluate(zm.model) if fp is None else fp  # after quantizing, so bad input fails before this pass
    quant = zm.evaluate(qmodel)
    extra: dict[str, Any] = {"config": config.to_dict()}
    summary = getattr(qmodel, "method_summary", None)
    if summary:  # what the method found and changed (e.g. cle: pairs equalized, biases corrected)
        extra["method_summary"] = summary
    sset = getattr(qmodel, "squeeze_synthetic", None)
    if sset is not None:  # data-free: say what the calibration images were and what they cost
        extra["calibration"] = {**calibration_record(sset), "reused": getattr(config, "synthetic", "") or None}
    report = Report(zm.name, config.method, config.wbits, config.abits, config.calib, config.seed, zm.metric,
                    fp, quant, seconds, peak_rss_mb(), simulated=True, extra=extra)
    return qmodel, report


def run_quantize(model_name: str, config: QuantConfig, out: Path, force: bool = False) -> dict[str, Any]:
    """Quantize, save ``out/model.safetensors`` + ``out/report.json`` atomically; returns the report.

    A data-free run also leaves its synthetic calibration set there (``synthetic.safetensors``, ``.json``
    and the contact sheet ``synthetic.png``), reusable with ``--set synthetic=out``.
    """
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not force:
        raise SqueezeError(f"output folder {out} already exists; choose another --out or pass --force")
    zm = load_model(model_name)
    qmodel, report = quantize_zoo_model(zm, config)
    row = report.to_dict()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        tmp.chmod(umask_mode(folder=True))
        file = save(qmodel, tmp)
        row.update(bytes=file.stat().st_size, fp32_bytes=fp32_bytes(zm.model))
        row["size_ratio"] = row["bytes"] / row["fp32_bytes"]
        write_json(tmp / "report.json", row)
        if getattr(qmodel, "squeeze_synthetic", None) is not None:
            save_synthetic(qmodel.squeeze_synthetic, tmp)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return row


def run_eval(folder: Path) -> dict[str, Any]:
    """Reload a saved run, re-measure its metric and compare with the saved report."""
    folder = Path(folder)
    header, _ = read_file(folder / FILENAME if folder.is_dir() else folder)
    if not header.get("model"):
        raise SqueezeError("the saved model names no zoo model; evaluate it from Python with squeeze.load(path, model)")
    zm = load_model(header["model"])
    start = time.perf_counter()
    value = zm.evaluate(load(folder))
    result = {"model": header["model"], "metric": zm.metric, "quant": value,
              "seconds": time.perf_counter() - start}
    report_path = folder / "report.json"
    if report_path.is_file():
        saved = json.loads(report_path.read_text())
        result["saved_quant"] = saved.get("quant")
        result["difference"] = value - float(saved.get("quant", value))
    return result
