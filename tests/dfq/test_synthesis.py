"""The synthesis engine end to end on a tiny timm ViT: MSR locality, files, bad input."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from squeeze.dfq import (Normalization, SynthConfig, load_synthetic, quantize_data_free, save_synthetic,
                         synthesize)
from squeeze.dfq.attention import cls_attention, patch_grid, record_attention
from squeeze.dfq.losses import kl_divergence
from squeeze.dfq.msr import box_mask, crop_resize, draw_boxes
from squeeze.dfq.student import minmax_student
from squeeze.errors import SqueezeError

NORM = Normalization((0.5,), (0.25,))  # valid normalized range [-2, 2]


def tiny_vit() -> nn.Module:
    torch.manual_seed(0)
    return VisionTransformer(img_size=16, patch_size=4, in_chans=1, num_classes=5, embed_dim=32, depth=2,
                             num_heads=2, mlp_ratio=2.0).eval()


class TinyCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).mean((2, 3)))


def test_msr_box_gradient_stays_inside_its_region() -> None:
    net = tiny_vit()
    gen = torch.Generator().manual_seed(0)
    boxes = draw_boxes(3, (16, 16), 4, 5, gen)
    mask = box_mask(boxes, (3, 1, 16, 16))
    for box in boxes:  # each box alone: gradient only inside that box
        x = torch.randn(3, 1, 16, 16, requires_grad=True)
        net(crop_resize(x, [box], (16, 16))).logsumexp(-1).sum().backward()
        own = box_mask([box], (3, 1, 16, 16))
        assert x.grad[~own].abs().max() == 0 and x.grad[own].abs().max() > 0
    assert box_mask(boxes, (3, 1, 16, 16)).sum() == sum(b.h * b.w for b in boxes)  # boxes do not overlap
    assert mask.any()


def test_attention_recorder_reads_cls_rows_and_removes_hooks() -> None:
    net = tiny_vit()
    with record_attention(net, "APA") as rec:
        net(torch.randn(2, 1, 16, 16))
    assert len(rec.probs) == 2 and rec.probs[0].shape == (2, 2, 17, 17)
    assert patch_grid(17) == (1, (4, 4)) and patch_grid(16) == (0, (4, 4))
    torch.testing.assert_close(cls_attention(rec.probs[1]).sum(-1), torch.ones(2, 2))
    assert not any(m._forward_hooks for m in net.modules())


@pytest.mark.parametrize("generator,options", [("psaq-vit", {}), ("psaq-vit-v2", {}), ("spdfq", {}),
                                               ("spdfq", {"soft_labels": False})])
def test_generators_run_in_range_and_leave_the_model_alone(generator: str, options: dict) -> None:
    net = tiny_vit()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    cfg = SynthConfig(generator=generator, n_images=6, batch_size=4, iters=4, seed=1, **options)
    sset = synthesize(net, (1, 16, 16), cfg, NORM, progress=False)
    assert sset.images.shape == (6, 1, 16, 16) and sset.labels.shape == (6,)
    assert sset.images.min() >= -2 - 1e-6 and sset.images.max() <= 2 + 1e-6
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert type(net.blocks[0].attn).__name__ == "Attention"  # synthesis worked on a prepared copy
    again = synthesize(net, (1, 16, 16), cfg, NORM, progress=False)
    torch.testing.assert_close(again.images, sset.images)  # the seed fixes everything


def test_optimization_raises_target_confidence() -> None:
    net = tiny_vit()
    with torch.no_grad():  # a random-init ViT's logits barely depend on the input; make them sensitive
        net.head.weight.mul_(50)
    short = synthesize(net, (1, 16, 16), SynthConfig(n_images=4, iters=1, msr=False, lr=0.1), NORM, progress=False)
    long = synthesize(net, (1, 16, 16), SynthConfig(n_images=4, iters=40, msr=False, lr=0.1), NORM, progress=False)
    with torch.no_grad():
        def conf(s):  # mean probability of the chosen labels
            return net(s.images).softmax(-1)[torch.arange(4), s.labels].mean()
        assert conf(long) > conf(short) + 0.05


def test_psaq_v2_student_learns_to_agree_and_images_seek_disagreement() -> None:
    net = tiny_vit()
    with torch.no_grad():  # make the random-init ViT's logits depend on the input
        net.head.weight.mul_(20)
    x = torch.randn(8, 1, 16, 16).clamp(-2, 2)
    student = minmax_student(net, x, 4, 4, lr=3e-4)
    assert not any(m._forward_hooks for m in student.net.modules())
    with torch.no_grad():
        teacher = net(x)

    def kl() -> float:
        with torch.no_grad():
            return float(kl_divergence(teacher, student.net(x)))
    start, seen = kl(), []
    assert start > 0
    before = {k: v.clone() for k, v in net.state_dict().items()}
    for _ in range(40):  # distillation steps on fixed images: the student closes the KL (rounding jitters it)
        student.accumulate(kl_divergence(teacher, student.net(x)))
        student.step()
        seen.append(kl())
    assert sum(seen[-10:]) / 10 < 0.75 * start
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # the teacher never moves
    # the images' own loss carries -KL: a pixel step along its gradient raises the disagreement
    pixels = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(-kl_divergence(net(pixels), student.net(pixels)), [pixels])
    with torch.no_grad():
        moved = float(kl_divergence(net(x - 0.05 * grad.sign()), student.net(x - 0.05 * grad.sign())))
    assert moved > kl()


def test_kl_divergence_matches_torch() -> None:
    t, s = torch.randn(5, 7), torch.randn(5, 7)
    reference = F.kl_div(s.log_softmax(-1), t.log_softmax(-1), reduction="batchmean", log_target=True)
    torch.testing.assert_close(kl_divergence(t, s), reference)
    assert float(kl_divergence(t, t)) == pytest.approx(0.0, abs=1e-6)


def test_non_vit_apa_error_and_apa_off_works() -> None:
    cnn = TinyCNN()
    with pytest.raises(SqueezeError, match="APA.*switch it off"):
        synthesize(cnn, (1, 16, 16), SynthConfig(iters=2, n_images=2), NORM, progress=False)
    with pytest.raises(SqueezeError, match="PSAQ-ViT"):
        synthesize(cnn, (1, 16, 16), SynthConfig(generator="psaq-vit", iters=2, n_images=2), NORM, progress=False)
    sset = synthesize(cnn, (1, 16, 16), SynthConfig(iters=2, n_images=2, apa=False), NORM, progress=False)
    assert sset.images.shape == (2, 1, 16, 16)


def test_save_load_round_trip_and_contact_sheet(tmp_path) -> None:
    sset = synthesize(tiny_vit(), (1, 16, 16), SynthConfig(generator="noise", n_images=5), NORM, progress=False)
    save_synthetic(sset, tmp_path / "set")
    meta = json.loads((tmp_path / "set" / "synthetic.json").read_text())
    assert meta["shape"] == [5, 1, 16, 16] and meta["generator"] == "noise" and meta["normalization"]["std"] == [0.25]
    back = load_synthetic(tmp_path / "set", (1, 16, 16))
    assert torch.equal(back.images, sset.images) and back.config == sset.config
    sheet = Image.open(tmp_path / "set" / "synthetic.png")
    assert sheet.size == (3 * 17 + 1, 2 * 17 + 1)
    # de-normalized: pixel values come from x * std + mean, clipped to [0, 1]
    expected = round(float(NORM.denormalize(sset.images[:1])[0, 0, 0, 0]) * 255)
    assert abs(sheet.getpixel((1, 1)) - expected) <= 1


def test_corrupt_or_mismatched_files_are_refused(tmp_path) -> None:
    sset = synthesize(tiny_vit(), (1, 16, 16), SynthConfig(generator="noise", n_images=3), NORM, progress=False)
    path = save_synthetic(sset, tmp_path / "ok")
    with pytest.raises(SqueezeError, match="synthetic images are"):
        load_synthetic(path, (3, 16, 16))
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}......")
    with pytest.raises(SqueezeError, match="not a valid"):
        load_synthetic(bad)
    truncated = tmp_path / "cut.safetensors"
    truncated.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(SqueezeError):
        load_synthetic(truncated)
    from safetensors.torch import save_file
    save_file({"images": torch.zeros(2, 1, 16, 16)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(SqueezeError, match="not written by squeeze.dfq"):
        load_synthetic(tmp_path / "foreign.safetensors")
    with pytest.raises(SqueezeError, match="synthetic set .*missing.safetensors does not exist"):
        load_synthetic(tmp_path / "missing.safetensors")


def test_bad_synthesis_options_fail_loudly() -> None:
    for bad in ({"generator": "gan"}, {"iters": 0}, {"msr_boxes": 5}, {"lr": 0}, {"jitter": -1},
                {"student_wbits": 1}, {"student_abits": 4.5}, {"adv_weight": -1}):
        with pytest.raises(SqueezeError):
            SynthConfig(**bad)
    with pytest.raises(SqueezeError, match="image inputs"):
        synthesize(tiny_vit(), (16, 16), SynthConfig(), NORM)


def test_quantize_data_free_end_to_end_on_tiny_vit(tmp_path) -> None:
    net = tiny_vit()
    cfg = SynthConfig(n_images=4, iters=3)
    qmodel, sset = quantize_data_free(net, cfg, "repq-vit", 4, 4, input_shape=(1, 16, 16), normalization=NORM,
                                      save_to=tmp_path / "s")
    assert (tmp_path / "s" / "synthetic.png").is_file()
    assert qmodel.squeeze_meta["calibration"]["source"] == "synthetic:spdfq"
    out = qmodel(torch.randn(2, 1, 16, 16))
    assert out.shape == (2, 5) and torch.isfinite(out).all()
    with pytest.raises(SqueezeError, match="input_shape"):
        quantize_data_free(net, cfg, "repq-vit")
