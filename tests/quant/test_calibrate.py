"""The block walk: stage order, cached inputs, whole-model fallback, hooks and stubs removed."""
import torch
from torch import nn

from squeeze.quant.calibrate import Stage, find_blocks, walk
from squeeze.quant.prepare import prepare_model


def test_walk_visits_prefix_blocks_suffix(tiny_vit, tiny_images) -> None:
    prepare_model(tiny_vit)
    name, blocks = find_blocks(tiny_vit)
    assert name == "blocks" and len(blocks) == 2
    seen: list[tuple[str, int, int]] = []

    def handler(stage: Stage) -> None:
        outs = stage.run()
        seen.append((stage.name, len(stage.members), len(outs)))

    batches = list(tiny_images.chunk(4))
    walk(tiny_vit, batches, handler)
    assert [s[0] for s in seen] == ["prefix", "blocks.0", "blocks.1", "suffix"]
    assert seen[0][1] == 1  # the patch-embedding conv
    assert seen[1][2] == 4 and seen[3][2] == 4  # one output per batch
    # suffix outputs are the real model outputs (blocks replayed from the cache)
    with torch.no_grad():
        ref = tiny_vit(batches[0])
    outs: list[torch.Tensor] = []
    walk(tiny_vit, batches, lambda st: outs.extend(st.run()) if st.name == "suffix" else None)
    assert torch.allclose(outs[0], ref, atol=1e-6)
    assert all("forward" not in b.__dict__ for b in blocks)  # stubs removed
    assert not any(b._forward_pre_hooks for b in blocks)  # capture hook removed


def test_model_without_blocks_is_one_stage() -> None:
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    prepare_model(model)
    names: list[str] = []
    walk(model, [torch.randn(2, 1, 8, 8)], lambda st: names.append(st.name))
    assert names == ["model"]
