"""Training a RestoreNet through the engine (learns, resumes only the same run), restorer files and
``restore_file`` (round trip, refusals, atomic output)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from squeeze.data.sr import to_tensor
from squeeze.errors import SqueezeError
from squeeze.restore.data import load_image_folder, paired_patches, unpaired_patches
from squeeze.restore.io import load_restorer, restore_file, save_restorer
from squeeze.restore.nets import RestoreNet
from squeeze.restore.train import RestoreTrainConfig, cosine_lr, train_restorer
from squeeze.train.engine import EngineConfig


def _darken_batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A toy degradation the net must undo: the image times 0.6 (pure function of the step)."""
    gen = torch.Generator().manual_seed(1000 + step)
    clean = torch.rand(4, 3, 16, 16, generator=gen)
    return clean * 0.6, clean


def test_training_learns_and_resume_checks_identity(tmp_path) -> None:
    cfg = RestoreTrainConfig(steps=40, batch=4, patch=16, lr=3e-3, seed=0, width=8, levels=2, blocks=1,
                             steps_per_epoch=20)
    x, y = _darken_batch(10_000)
    before = float((x - y).abs().mean())
    net = train_restorer("toy", _darken_batch, cfg, EngineConfig(tmp_path / "a", progress=False),
                         evaluate=lambda m: {"val": 1.0}, identity="darken")
    with torch.no_grad():
        after = float((net(x) - y).abs().mean())
    assert after < 0.5 * before
    log = (tmp_path / "a" / "log.json").read_text()
    assert '"val": 1.0' in log
    with pytest.raises(SqueezeError, match="another model or config"):
        train_restorer("toy", _darken_batch, cfg, EngineConfig(tmp_path / "a", resume=True, progress=False),
                       identity="brighten")


def test_config_validation_and_schedule() -> None:
    with pytest.raises(SqueezeError, match="multiple of steps_per_epoch"):
        RestoreTrainConfig(steps=10, batch=2, patch=16, lr=1e-3, seed=0, steps_per_epoch=3)
    with pytest.raises(SqueezeError, match="smaller than"):
        RestoreTrainConfig(steps=10, batch=2, patch=4, lr=1e-3, seed=0)
    assert RestoreTrainConfig(steps=600, batch=2, patch=16, lr=1e-3, seed=0).epoch_steps == 200
    assert cosine_lr(0, 100, 1.0, 0.1) == 1.0 and abs(cosine_lr(100, 100, 1.0, 0.1) - 0.1) < 1e-12


def test_bad_batches_fail_at_once(tmp_path) -> None:
    cfg = RestoreTrainConfig(steps=2, batch=4, patch=16, lr=1e-3, seed=0, width=8, levels=2, blocks=1)
    with pytest.raises(SqueezeError, match="make_batch returned"):
        train_restorer("toy", lambda s: (torch.rand(4, 4, 16, 16), torch.rand(4, 3, 16, 16)), cfg,
                       EngineConfig(tmp_path, progress=False))


def test_patches_are_aligned_and_seeded() -> None:
    rng = np.random.default_rng(0)
    clean = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    pairs = [(255 - clean, clean)]
    x, y = paired_patches(pairs, 5, 8, np.random.default_rng(3))
    assert torch.allclose(x, 1 - y)  # the same crop and augmentation on both sides
    x2, _ = paired_patches(pairs, 5, 8, np.random.default_rng(3))
    assert torch.equal(x, x2)
    assert unpaired_patches([clean], 3, 8, np.random.default_rng(0)).shape == (3, 3, 8, 8)
    with pytest.raises(SqueezeError, match="smaller than the 32 px patch"):
        unpaired_patches([clean], 1, 32, np.random.default_rng(0))


def test_image_folder_refusals(tmp_path) -> None:
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "notes.txt").write_text("ignored")
    assert len(load_image_folder(tmp_path, min_side=32)) == 1
    (tmp_path / "b.png").write_bytes(b"not an image at all")
    with pytest.raises(SqueezeError, match="not a readable image"):
        load_image_folder(tmp_path, min_side=32)
    (tmp_path / "b.png").unlink()
    Image.fromarray(np.zeros((10, 40, 3), np.uint8)).save(tmp_path / "c.png")
    with pytest.raises(SqueezeError, match="smaller than 32 px"):
        load_image_folder(tmp_path, min_side=32)


def _net(in_channels: int = 3) -> RestoreNet:
    torch.manual_seed(0)
    net = RestoreNet(in_channels=in_channels, width=8, levels=2, blocks=1)
    torch.nn.init.normal_(net.tail.weight, std=0.05)
    return net.eval()


def test_restorer_file_round_trip_and_refusals(tmp_path) -> None:
    net = _net()
    path = save_restorer(tmp_path / "r.safetensors", net, {"method": "undem", "config": {"a": 1}})
    loaded, meta = load_restorer(path, expect={"method": "undem"})
    assert meta["config"] == {"a": 1}
    x = torch.rand(1, 3, 12, 12)
    with torch.no_grad():
        assert torch.equal(loaded(x), net(x))
    with pytest.raises(SqueezeError, match="another config"):
        load_restorer(path, expect={"config": {"a": 2}})
    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"), metadata={"format": "squeeze.model"})
    with pytest.raises(SqueezeError, match="not a squeeze restoration model"):
        load_restorer(tmp_path / "other.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"garbage")
    with pytest.raises(SqueezeError, match="corrupt"):
        load_restorer(tmp_path / "junk.safetensors")
    wrong = {k: v for k, v in net.state_dict().items() if not k.startswith("tail")}
    save_file(wrong, str(tmp_path / "w.safetensors"),
              metadata={"format": "squeeze.restorer", "format_version": "1", "meta": "{}",
                        "net": '{"in_channels": 3, "width": 8, "levels": 2, "blocks": 1}'})
    with pytest.raises(SqueezeError, match="do not fit"):
        load_restorer(tmp_path / "w.safetensors")


def test_restore_file_output_and_refusals(tmp_path) -> None:
    model = save_restorer(tmp_path / "m.safetensors", _net(), {})
    img = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    Image.fromarray(img).save(tmp_path / "in.png")
    restore_file(model, tmp_path / "in.png", tmp_path / "out.png", tile=16, overlap=8, progress=False)
    out = np.asarray(Image.open(tmp_path / "out.png"))
    with torch.no_grad():
        ref = _net()(to_tensor(img)[None])[0].clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy()
    assert out.shape == img.shape and np.abs(out.astype(int) - ref.astype(int)).max() <= 1
    (tmp_path / "fake.png").write_text("hello")
    with pytest.raises(SqueezeError, match="not a readable image"):
        restore_file(model, tmp_path / "fake.png", tmp_path / "o2.png")
    Image.fromarray(img[:8]).save(tmp_path / "tiny.png")
    with pytest.raises(SqueezeError, match="smaller than 16 px"):
        restore_file(model, tmp_path / "tiny.png", tmp_path / "o2.png")
    with pytest.raises(SqueezeError, match="drop --mask"):
        restore_file(model, tmp_path / "in.png", tmp_path / "o2.png", mask_png=tmp_path / "in.png")
    masked = save_restorer(tmp_path / "k.safetensors", _net(4), {})
    with pytest.raises(SqueezeError, match="needs a mask"):
        restore_file(masked, tmp_path / "in.png", tmp_path / "o2.png")
    Image.fromarray(np.zeros((40, 50), np.uint8)).save(tmp_path / "mask.png")
    restore_file(masked, tmp_path / "in.png", tmp_path / "o3.png", mask_png=tmp_path / "mask.png", progress=False)
    assert not (tmp_path / "o2.png").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary leftovers
