"""SMI's sparse inversion: patch dropping, key masking against a masked softmax, frozen pixels."""
from __future__ import annotations

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from squeeze.dfq import Normalization, SynthConfig, synthesize
from squeeze.dfq.attention import attention_blocks
from squeeze.dfq.sparse import SparseInversion, mask_keys, masked_keys, pixel_mask, prune_patches
from squeeze.errors import SqueezeError


def test_prune_drops_the_lowest_scored_share_of_the_kept_patches() -> None:
    scores = torch.tensor([[0.5, 0.1, 0.9, 0.3, 0.7, 0.2], [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]])
    keep = torch.tensor([[True] * 6, [False, True, True, True, True, True]])
    out = prune_patches(scores, keep, 0.4)  # floor(0.4 * 6) = 2 and floor(0.4 * 5) = 2 dropped
    assert out.tolist() == [[True, False, True, True, True, False], [False, False, False, True, True, True]]
    assert not (out & ~keep).any()  # a dropped patch never comes back
    assert torch.equal(prune_patches(scores, keep, 0.0), keep)


def test_masked_keys_equal_a_softmax_with_dropped_logits_at_minus_infinity() -> None:
    logits = torch.randn(2, 3, 5, 5)
    keep = torch.tensor([[True, True, False, True, False], [True, False, True, True, True]])
    reference = logits.masked_fill(~keep[:, None, None, :], float("-inf")).softmax(dim=-1)
    torch.testing.assert_close(mask_keys(logits.softmax(dim=-1), keep), reference)


def test_a_dropped_patch_no_longer_changes_the_class_output_and_keeps_its_pixels() -> None:
    torch.manual_seed(0)
    net = VisionTransformer(img_size=16, patch_size=4, in_chans=1, num_classes=5, embed_dim=32, depth=2,
                            num_heads=2, mlp_ratio=2.0).eval()
    blocks = attention_blocks(net)
    keep = torch.ones(2, 16, dtype=torch.bool)
    keep[:, 5] = False  # patch (1, 1): pixels 4..7 x 4..7
    sparse = SparseInversion(keep, prefix=1, grid=(4, 4))
    sparse.set_view((0, 0), False, (16, 16))
    x = torch.randn(2, 1, 16, 16)
    changed = x.clone()
    changed[:, :, 4:8, 4:8] += 3.0
    with torch.no_grad(), masked_keys(blocks, sparse):
        torch.testing.assert_close(net(changed), net(x))  # nothing reads the dropped token
    assert not any(m._forward_pre_hooks for m in net.modules())
    with torch.no_grad():
        assert not torch.allclose(net(changed), net(x))  # hooks gone: it is read again
    sparse.set_view((4, -4), True, (16, 16))  # one patch down, one left, then mirrored
    moved = keep.view(2, 4, 4).roll(shifts=(1, -1), dims=(1, 2)).flip(2).reshape(2, 16)
    assert torch.equal(sparse.view_tokens, torch.cat([torch.ones(2, 1, dtype=torch.bool), moved], dim=1))
    sparse.frozen = x.clone()
    sparse.restore(changed)
    torch.testing.assert_close(changed, x)
    assert pixel_mask(keep, (4, 4), (16, 16)).sum() == 2 * (256 - 16)


def test_smi_synthesis_runs_and_options_are_checked() -> None:
    torch.manual_seed(0)
    net = VisionTransformer(img_size=16, patch_size=4, in_chans=1, num_classes=5, embed_dim=32, depth=2,
                            num_heads=2, mlp_ratio=2.0).eval()
    cfg = SynthConfig(generator="smi", n_images=3, iters=8, seed=2)
    sset = synthesize(net, (1, 16, 16), cfg, Normalization((0.5,), (0.25,)), progress=False)
    assert sset.images.shape == (3, 1, 16, 16) and torch.isfinite(sset.images).all()
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in net.modules())
    for bad in ({"smi_ratio": 1.0}, {"smi_drops": -1}):
        with pytest.raises(SqueezeError):
            SynthConfig(generator="smi", **bad)
