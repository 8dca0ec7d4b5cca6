"""Tests for squeeze.quant.prepare: attention matmuls exposed by module swap (timm and transformers)."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable

import pytest
import torch
from torch import nn

from squeeze.quant.modules import QuantLinear, QuantMatMul, finalize_observers
from squeeze.quant.prepare import PrepareReport, attention_modules, prepare_model
from squeeze.quant.quantizer import Quantizer, QuantSpec

SLOTS = ("matmul1.a_quantizer", "matmul1.b_quantizer", "matmul2.a_quantizer", "matmul2.b_quantizer")


@dataclass
class Case:
    """A model prepared in place, with the float output it gave before preparation."""

    model: nn.Module
    run: Callable[[nn.Module], torch.Tensor]
    before: torch.Tensor
    report: PrepareReport
    second: PrepareReport
    n_attn: int
    attn_type: str


def _timm(name: str, n_attn: int, attn_type: str, **kwargs: Any) -> Callable[[], tuple]:
    def build() -> tuple:
        import timm  # noqa: PLC0415

        torch.manual_seed(0)
        model = timm.create_model(name, pretrained=False, **kwargs)
        x = torch.randn(1, 3, 224, 224)
        return model, (lambda m: m(x)), n_attn, attn_type
    return build


def _hf_vision(kind: str) -> Callable[[], tuple]:
    def build() -> tuple:
        import transformers  # noqa: PLC0415

        torch.manual_seed(0)
        config = getattr(transformers, f"{kind}Config")(
            hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
            image_size=32, patch_size=8)
        model = getattr(transformers, f"{kind}Model")(config)
        x = torch.randn(2, 3, 32, 32)
        return model, (lambda m: m(pixel_values=x).last_hidden_state), 2, f"{kind}Attention"
    return build


def _bert_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(0, 100, (2, 10), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(2, 10, dtype=torch.long)
    mask[1, 6:] = 0  # padding in the second sequence
    return ids, mask


def _bert(**extra: Any) -> Callable[[], tuple]:
    def build() -> tuple:
        from transformers import BertConfig, BertModel  # noqa: PLC0415

        torch.manual_seed(0)
        config = BertConfig(vocab_size=100, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                            intermediate_size=128, **extra)
        model = BertModel(config)
        ids, mask = _bert_inputs()
        if not extra:
            return model, (lambda m: m(input_ids=ids, attention_mask=mask).last_hidden_state), 2, \
                "BertSelfAttention"
        enc = torch.randn(2, 7, 64, generator=torch.Generator().manual_seed(2))
        return model, (lambda m: m(input_ids=ids, attention_mask=mask, encoder_hidden_states=enc)
                       .last_hidden_state), 4, "BertCrossAttention"
    return build


BUILDERS = {
    "timm-deit-tiny": _timm("deit_tiny_patch16_224", 12, "Attention"),
    "timm-deit-tiny-distilled": _timm("deit_tiny_distilled_patch16_224", 12, "Attention"),
    "timm-swin-tiny": _timm("swin_tiny_patch4_window7_224", 12, "WindowAttention"),
    "hf-vit": _hf_vision("ViT"),
    "hf-deit": _hf_vision("DeiT"),
    "hf-dinov2": _hf_vision("Dinov2"),
    "hf-bert": _bert(),
    "hf-bert-decoder-cross": _bert(is_decoder=True, add_cross_attention=True),
}


@pytest.fixture(scope="module", params=list(BUILDERS))
def case(request: pytest.FixtureRequest) -> Case:
    model, run, n_attn, attn_type = BUILDERS[request.param]()
    model.eval()
    with torch.no_grad():
        before = run(model)
        report = prepare_model(model)
        second = prepare_model(model)
    return Case(model, run, before, report, second, n_attn, attn_type)


def _forward(case: Case) -> torch.Tensor:
    with torch.no_grad():
        return case.run(case.model)


def _quantized_output(case: Case, bits: int, slots: tuple[str, ...] = SLOTS) -> torch.Tensor:
    """Output with ``bits``-bit min-max quantizers on ``slots`` of every attention (then removed)."""
    targets = [(m.get_submodule(s.split(".")[0]), s.split(".")[1])
               for _, m in attention_modules(case.model) for s in slots]
    try:
        for mm, attr in targets:
            q = Quantizer(QuantSpec(bits=bits))
            q.mode = "observe"
            setattr(mm, attr, q)
        _forward(case)
        finalize_observers(case.model)
        return _forward(case)
    finally:
        for mm, attr in targets:
            setattr(mm, attr, None)


def test_float_output_unchanged(case: Case) -> None:
    assert (_forward(case) - case.before).abs().max().item() <= 1e-5


def test_report_counts_attention_modules(case: Case) -> None:
    assert case.report.attentions == case.n_attn
    assert case.attn_type in case.report.attention_types
    assert case.report.unsupported == []
    assert case.report.linears > 0
    found = attention_modules(case.model)
    assert len(found) == case.n_attn
    assert all(isinstance(m.matmul1, QuantMatMul) and isinstance(m.matmul2, QuantMatMul) for _, m in found)
    assert not any(type(m) is nn.Linear for m in case.model.modules())


def test_prepare_is_idempotent(case: Case) -> None:
    assert (case.second.linears, case.second.convs, case.second.attentions) == (0, 0, 0)
    before = [(n, type(m)) for n, m in case.model.named_modules()]
    prepare_model(case.model)
    assert [(n, type(m)) for n, m in case.model.named_modules()] == before
    assert len(attention_modules(case.model)) == case.n_attn
    assert (_forward(case) - case.before).abs().max().item() <= 1e-5


def test_attention_quantizers_are_on_the_path(case: Case) -> None:
    scale = case.before.abs().max().item()
    q4 = _quantized_output(case, bits=4)
    assert (q4 - case.before).abs().max().item() > 1e-3 * scale
    q8 = _quantized_output(case, bits=8)
    err8 = (q8 - case.before).norm() / case.before.norm()
    err4 = (q4 - case.before).norm() / case.before.norm()
    assert err8 < min(0.01, err4 / 4)  # measured: 8-bit ~0.0001-0.0035, about 10x below 4-bit
    assert (_forward(case) - case.before).abs().max().item() <= 1e-5  # quantizers removed again


@pytest.mark.parametrize("slot", SLOTS)
def test_each_matmul_operand_is_on_the_path(case: Case, slot: str) -> None:
    out = _quantized_output(case, bits=2, slots=(slot,))
    assert (out - case.before).abs().max().item() > 1e-6


def test_bert_padding_mask_reaches_the_matmuls() -> None:
    model, run, _, _ = _bert()()
    model.eval()
    ids, mask = _bert_inputs()
    prepare_model(model)
    with torch.no_grad():
        masked = run(model)
        unmasked = model(input_ids=ids).last_hidden_state
        short = model(input_ids=ids[1:, :6]).last_hidden_state
    assert torch.allclose(masked[0], unmasked[0], atol=1e-5)
    assert (masked[1] - unmasked[1]).abs().max() > 1e-3
    assert torch.allclose(masked[1, :6], short[0], atol=1e-5)  # padding ignored, as in the float model


def test_timm_attention_options() -> None:
    from timm.layers import Attention  # noqa: PLC0415

    torch.manual_seed(0)
    attn = Attention(32, num_heads=4, qkv_bias=True, qk_norm=True, scale_norm=True, gated=True,
                     norm_layer=nn.LayerNorm).eval()
    x = torch.randn(2, 5, 32)
    bool_mask = torch.rand(2, 1, 5, 5) > 0.3
    bool_mask[..., 0] = True
    with torch.no_grad():
        ref = [attn(x), attn(x, is_causal=True), attn(x, attn_mask=bool_mask)]
        report = prepare_model(attn)
        out = [attn(x), attn(x, is_causal=True), attn(x, attn_mask=bool_mask)]
    assert report.attentions == 1 and attention_modules(attn)[0][0] == ""
    for r, o in zip(ref, out):
        assert (r - o).abs().max().item() <= 1e-5


def test_unknown_attention_left_float_and_reported() -> None:
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = nn.MultiheadAttention(16, 2, batch_first=True)
            self.fc = nn.Linear(16, 16)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.attn(x, x, x, need_weights=False)[0])

    model = Block().eval()
    x = torch.randn(2, 4, 16)
    with torch.no_grad():
        ref = model(x)
        report = prepare_model(model)
        out = model(x)
    assert report.attentions == 0 and report.unsupported == ["attn (MultiheadAttention)"]
    assert isinstance(model.fc, QuantLinear) and type(model.attn) is nn.MultiheadAttention
    assert (ref - out).abs().max().item() <= 1e-6


def test_plain_cnn_has_no_attention() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3)).eval()
    report = prepare_model(model)
    assert (report.convs, report.linears, report.attentions) == (2, 0, 0)
    assert report.attention_types == [] and report.unsupported == []
    assert attention_modules(model) == []


def test_deepcopy_of_prepared_model() -> None:
    from timm.layers import Attention  # noqa: PLC0415

    attn = Attention(16, num_heads=2).eval()
    prepare_model(attn)
    clone = copy.deepcopy(attn)
    x = torch.randn(1, 3, 16)
    with torch.no_grad():
        assert torch.equal(attn(x), clone(x))
    assert len(attention_modules(clone)) == 1 and prepare_model(clone).attentions == 0


def test_probe_roles_pre_norm_vs_post_norm() -> None:
    """Pre-norm ViT LayerNorms feed only Linears (foldable); BERT's post-norm ones escape."""
    from transformers import BertConfig, BertModel
    from timm.models.vision_transformer import VisionTransformer

    from squeeze.quant.attach import probe_roles

    vit = VisionTransformer(img_size=16, patch_size=4, in_chans=1, num_classes=3, embed_dim=16, depth=2,
                            num_heads=2).eval()
    prepare_model(vit)
    roles = probe_roles(vit, torch.randn(1, 1, 16, 16))
    assert roles.post_ln == {f"blocks.{i}.norm{j}": [f"blocks.{i}.{'attn.qkv' if j == 1 else 'mlp.fc1'}"]
                             for i in range(2) for j in (1, 2)}
    assert roles.first == {"patch_embed.proj"}
    bert = BertModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=32)).eval()
    prepare_model(bert)

    class Wrap(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.bert(input_ids=ids).last_hidden_state

    assert probe_roles(Wrap(), torch.randint(0, 50, (1, 6))).post_ln == {}
