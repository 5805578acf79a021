"""Tokenizers: char-level (with byte fallback) and byte-level BPE.

>>> tok = train_tokenizer("bpe", text, vocab_size=4096)
>>> tok.save(path); tok = load_tokenizer(path)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aigc.errors import CheckpointError, ConfigError
from aigc.tokenizers.base import EOT_TOKEN, FORMAT_VERSION, StreamDecoder, Tokenizer
from aigc.tokenizers.bpe import BPETokenizer
from aigc.tokenizers.char import CharTokenizer

KINDS: dict[str, type[CharTokenizer] | type[BPETokenizer]] = {"char": CharTokenizer, "bpe": BPETokenizer}

__all__ = [
    "EOT_TOKEN",
    "KINDS",
    "BPETokenizer",
    "CharTokenizer",
    "StreamDecoder",
    "Tokenizer",
    "load_tokenizer",
    "tokenizer_from_dict",
    "train_tokenizer",
]


def train_tokenizer(kind: str, text: str, vocab_size: int | None = None, *, progress: bool = False) -> Tokenizer:
    """Train a ``'char'`` or ``'bpe'`` tokenizer on ``text``.

    ``vocab_size`` is for BPE only (default 8192); the char vocabulary is set
    by the characters of the text.
    """
    if kind == "char":
        if vocab_size is not None:
            raise ConfigError("vocab_size applies only to 'bpe' tokenizers; leave it unset for 'char'.")
        return CharTokenizer.train(text)
    if kind == "bpe":
        if vocab_size is None:
            return BPETokenizer.train(text, progress=progress)
        return BPETokenizer.train(text, vocab_size, progress=progress)
    raise ConfigError(f"Unknown tokenizer kind {kind!r}; choose one of {', '.join(map(repr, KINDS))}.")


def tokenizer_from_dict(d: dict[str, Any]) -> Tokenizer:
    """Rebuild a tokenizer from its ``to_dict()``."""
    if not isinstance(d, dict):
        raise CheckpointError("Tokenizer data must be a JSON object; the file is corrupt.")
    kind = d.get("kind")
    if kind not in KINDS:
        raise CheckpointError(
            f"Unknown tokenizer kind {kind!r} in saved data; expected one of {', '.join(map(repr, KINDS))}."
        )
    version = d.get("version", FORMAT_VERSION)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(f"Tokenizer data has format version {version!r}; this aigc reads up to {FORMAT_VERSION}.")
    return KINDS[kind].from_dict(d)


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Load a tokenizer written by ``Tokenizer.save``."""
    path = Path(path)
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"Tokenizer file {path} does not exist.") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"Tokenizer file {path} is not readable JSON ({e}).") from e
    try:
        return tokenizer_from_dict(d)
    except CheckpointError as e:
        raise CheckpointError(f"Tokenizer file {path}: {e}") from e
