"""The reconstruction engine: paired walk data, loss convention, MSE reduction, bad batch sizes."""
import pytest
import torch

from squeeze.config import QuantConfig
from squeeze.methods.steps import calibrate_activations, round_weights
from squeeze.quant.attach import attach_quantizers, probe_roles
from squeeze.quant.calibrate import walk
from squeeze.quant.prepare import prepare_model
from squeeze.quant.reconstruct import (ReconOptions, UnitData, block_data, drop_quant, float_copy, paired_walk,
                                       recon_loss, reconstruct, unit_forward)


def _quantized(model, images, bits=3):
    """Prepared tiny ViT with min-max quantizers calibrated (RTN) and its float copy."""
    prepare_model(model)
    fp = float_copy(model)
    attach_quantizers(model, QuantConfig(wbits=bits, abits=bits), probe_roles(model, images[:1]), "minmax")
    batches = list(images.chunk(2))
    walk(model, batches, lambda st: (calibrate_activations(st), round_weights(st)))
    return fp, batches


def _block_data(model, fp, batches, name="blocks.1"):
    found = {}

    def handler(stage, fp_stage):
        if stage.name == name:
            found["data"] = block_data(stage, fp_stage)
    paired_walk(model, fp, batches, handler, desc="test")
    return found["data"]


def test_recon_loss_sums_dim1_and_averages_the_rest() -> None:
    a, b = torch.randn(3, 5, 4), torch.randn(3, 5, 4)
    ref = sum(((a[i, :, j] - b[i, :, j]) ** 2).sum() for i in range(3) for j in range(4)) / 12
    assert torch.allclose(recon_loss(a, b), ref)


def test_paired_walk_gives_float_inputs_and_targets(tiny_vit, tiny_images) -> None:
    fp, batches = _quantized(tiny_vit, tiny_images)
    data = _block_data(tiny_vit, fp, batches)
    # independent reference: float model's input and output of blocks.1 via a hook
    seen = []
    h = fp.blocks[1].register_forward_hook(lambda _m, a, o: seen.append((a[0], o)))
    try:
        with torch.no_grad():
            fp(tiny_images)
    finally:
        h.remove()
    assert torch.allclose(data.fp_inputs, seen[0][0], atol=1e-6)
    assert torch.allclose(data.targets, seen[0][1], atol=1e-6)
    assert not torch.allclose(data.q_inputs, data.fp_inputs, atol=1e-3)  # upstream block is quantized
    assert len(data) == len(tiny_images)


def test_engine_reduces_block_output_mse(tiny_vit, tiny_images) -> None:
    fp, batches = _quantized(tiny_vit, tiny_images)
    data = _block_data(tiny_vit, fp, batches)
    block = tiny_vit.blocks[1]
    params = [p for n, p in block.named_parameters() if n.endswith("weight") and "norm" not in n]
    with torch.no_grad():
        manual = recon_loss(block(data.q_inputs), data.targets).item()
    norm_before = block.norm1.weight.detach().clone()
    result = reconstruct(unit_forward(block, data), data, [{"params": params, "lr": 1e-3}],
                         ReconOptions(iters=60, batch_size=8), [block])
    assert result.loss_before == pytest.approx(manual, rel=1e-5)
    assert result.loss_after < 0.8 * result.loss_before, result
    assert torch.equal(block.norm1.weight, norm_before)  # only the given tensors are trained


def test_batch_larger_than_cache_is_clamped_with_a_warning() -> None:
    torch.manual_seed(0)
    layer = torch.nn.Linear(4, 4)
    data = UnitData(torch.randn(8, 4), torch.randn(8, 4), torch.randn(8, 4))
    with pytest.warns(UserWarning, match="larger than the 8 cached calibration samples; using 8"):
        result = reconstruct(layer, data, [{"params": [layer.weight, layer.bias], "lr": 1e-2}],
                             ReconOptions(iters=20, batch_size=16), [layer])
    assert result.loss_after < result.loss_before


def test_drop_quant_keeps_float_with_given_probability() -> None:
    torch.manual_seed(0)
    x, xq = torch.zeros(100_000), torch.ones(100_000)
    frac_float = (drop_quant(x, xq, 0.3) == 0).float().mean().item()
    assert frac_float == pytest.approx(0.3, abs=0.01)
    assert torch.equal(drop_quant(x, xq, 0.0), xq)
