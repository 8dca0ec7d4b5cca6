"""A Hugging Face Llama base with its own tokenizer: passkey documents, training, evaluation and generation
read its ids, not bytes (a tiny model and tokenizer saved to a folder, as a user's would be)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from squeeze.cli import main
from squeeze.data.passkey import DIGITS, LEAD, key_starts, passkey_document
from squeeze.data.tokenizers import BYTES, HFTokenizer, load_tokenizer
from squeeze.errors import SqueezeError
from squeeze.memory.config import UIOConfig

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

TEXT = "Friends, Romans, countrymen, lend me your ears; I come to bury Caesar, not to praise him. The pass key is"


def _tokenizer(digits: bool = True) -> "transformers.PreTrainedTokenizerFast":
    """A word-level tokenizer: words, punctuation and (optionally) the ten digits, split on spaces."""
    from tokenizers import Tokenizer, models, pre_tokenizers  # noqa: PLC0415

    words = sorted(set(TEXT.replace(",", " ").replace(";", " ").replace(".", " ").split()) |
                   {"What", "is", "the", "pass", "key", "Remember", "it", "?", ".", ",", ";"})
    vocab = {w: i for i, w in enumerate(["[UNK]", *words, *("0123456789" if digits else "")])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Digits(True),
                                                 pre_tokenizers.Punctuation()])
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "hf-llama"
    tok = _tokenizer()
    cfg = transformers.LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                   num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64)
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def test_hf_tokenizer_digits_and_passkey_documents(tmp_path: Path) -> None:
    tok = load_tokenizer(str(_folder(tmp_path)))
    assert isinstance(tok, HFTokenizer) and load_tokenizer("lm-shakespeare") is BYTES
    assert tok.decode(tok.digits("40213")).replace(" ", "") == "40213"
    filler = tok.encode(TEXT * 20)
    gen = torch.Generator().manual_seed(0)
    docs = []
    for _ in range(4):
        doc, weights, key = passkey_document(filler, 120, gen, (0, 60), tok)
        assert doc.numel() == 120 and torch.equal(doc[-DIGITS:], tok.digits(key))
        assert weights[-DIGITS:].sum() == pytest.approx(1.0) and not weights[:-DIGITS].any()
        docs.append(doc)
    for doc, start in zip(docs, key_starts(torch.stack(docs), tok).tolist()):
        assert torch.equal(doc[start:start + DIGITS], doc[-DIGITS:])
        assert torch.equal(doc[start - tok.encode(LEAD).numel():start], tok.encode(LEAD))
    no_digits = tmp_path / "no-digits"
    _tokenizer(digits=False).save_pretrained(no_digits)
    with pytest.raises(SqueezeError, match="each digit its own token"):
        HFTokenizer(no_digits)


def test_train_eval_and_generate_on_an_hf_base(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from squeeze.memory.cli import eval_uio  # noqa: PLC0415
    from squeeze.memory.task import train_uio  # noqa: PLC0415
    from squeeze.train.engine import EngineConfig  # noqa: PLC0415

    folder = _folder(tmp_path)
    cfg = UIOConfig(base=str(folder), segment=16, memory=2, doc_segments=3, steps=1, steps_per_epoch=1,
                    batch_size=2, lora_rank=2)
    train_uio(cfg, EngineConfig(tmp_path / "run", progress=False))  # Shakespeare in the tiny tokenizer's ids
    got = eval_uio(tmp_path / "run", passkey_x=(2,), ppl_x=(1,), passkey_docs=2, ppl_docs=1)
    assert got["base_context"] == 64 and got["ppl_1x"] > 1.0 and 0.0 <= got["passkey_2x"]["digit_acc"] <= 1.0
    capsys.readouterr()  # the training log
    assert main(["generate", str(tmp_path / "run"), "--prompt", TEXT * 3, "--max-new-tokens", "4", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["context"]["compressed_segments"] >= 1 and isinstance(out["text"], str)
