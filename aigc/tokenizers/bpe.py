"""Byte-level BPE (GPT-2 style), trained and run by the HF ``tokenizers`` library.

Text is split by the GPT-2 regex, each piece is mapped byte-by-byte to 256
printable characters, and learned merges join them; so every string
round-trips. Big texts are cut into chunks at safe places (just before a
newline that follows a non-space character, which the regex always treats as
a boundary), so chunked training and batch encoding give exactly the same
tokens as processing the whole text at once.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from aigc.errors import CheckpointError, ConfigError, DataError
from aigc.tokenizers.base import EOT_TOKEN, FORMAT_VERSION, Tokenizer

SPECIAL_TOKENS = [EOT_TOKEN]
MIN_VOCAB = 256 + len(SPECIAL_TOKENS)
MAX_VOCAB = 1_000_000
DEFAULT_VOCAB = 8192
CHUNK_CHARS = 1 << 14
_BOUNDARY = re.compile(r"(?<=\S)\n")


class BPETokenizer(Tokenizer):
    kind = "bpe"

    def __init__(self, hf: HFTokenizer) -> None:
        hf.encode_special_tokens = True  # the text "<|endoftext|>" is plain text
        self._hf = hf
        eos = hf.token_to_id(EOT_TOKEN)
        if eos is None:
            raise CheckpointError(f"The BPE tokenizer has no {EOT_TOKEN} token; the file is corrupt or foreign.")
        self._eos_id = eos
        self._token_bytes = _token_bytes_table(hf)

    @classmethod
    def train(cls, text: str, vocab_size: int = DEFAULT_VOCAB, *, progress: bool = False) -> BPETokenizer:
        """Learn up to ``vocab_size`` tokens (fewer if the text has too few repeats)."""
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or not MIN_VOCAB <= vocab_size <= MAX_VOCAB:
            raise ConfigError(
                f"BPE vocab_size must be an integer from {MIN_VOCAB} to {MAX_VOCAB}, got {vocab_size!r}."
            )
        if not text:
            raise DataError("Cannot train a tokenizer on empty text; give it a non-empty corpus.")
        hf = HFTokenizer(models.BPE())
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        hf.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=2,
            special_tokens=SPECIAL_TOKENS,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=progress,
        )
        chunks = split_chunks(text)
        hf.train_from_iterator(chunks, trainer, length=len(chunks))
        return cls(hf)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BPETokenizer:
        hf_json = d.get("hf_json")
        if not isinstance(hf_json, str):
            raise CheckpointError("The BPE tokenizer data has no 'hf_json' string; the file is corrupt.")
        try:
            hf = HFTokenizer.from_str(hf_json)
        except Exception as e:  # the Rust side raises plain Exception
            raise CheckpointError(f"The BPE tokenizer JSON cannot be read ({e}); the file is corrupt.") from e
        return cls(hf)

    @property
    def eos_id(self) -> int:
        return self._eos_id

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "version": FORMAT_VERSION, "hf_json": self._hf.to_str()}

    def encode(self, text: str) -> list[int]:
        if len(text) <= CHUNK_CHARS:
            return self._hf.encode(text, add_special_tokens=False).ids
        return [i for enc in self._encode_chunks(text) for i in enc.ids]

    def encode_to_array(self, text: str) -> np.ndarray:
        if len(text) <= CHUNK_CHARS:
            return np.asarray(self.encode(text), dtype=np.int32)
        parts = [np.asarray(enc.ids, dtype=np.int32) for enc in self._encode_chunks(text)]
        return np.concatenate(parts)

    def _encode_chunks(self, text: str) -> list[Any]:
        # Rust threads encode the chunks in parallel; offsets are skipped.
        return self._hf.encode_batch_fast(split_chunks(text), add_special_tokens=False)


def split_chunks(text: str, size: int = CHUNK_CHARS) -> list[str]:
    """Cut ``text`` into pieces of about ``size`` chars at pre-tokenizer boundaries."""
    chunks: list[str] = []
    pos = 0
    while len(text) - pos > size:
        m = _BOUNDARY.search(text, pos + size)
        if m is None:
            break
        chunks.append(text[pos : m.start()])
        pos = m.start()
    chunks.append(text[pos:])
    return chunks


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from the 256 byte values to printable characters."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


_BYTE_OF_CHAR = {c: b for b, c in _bytes_to_unicode().items()}


def _token_bytes_table(hf: HFTokenizer) -> list[bytes]:
    """The byte string of every id, for decoding and streaming."""
    specials = {t.content for t in hf.get_added_tokens_decoder().values()}
    table: list[bytes] = []
    for i in range(hf.get_vocab_size(with_added_tokens=True)):
        token = hf.id_to_token(i)
        if token is None:
            raise CheckpointError(f"The BPE tokenizer has no token with id {i}; the file is corrupt.")
        if token in specials:
            table.append(token.encode())
            continue
        try:
            table.append(bytes(_BYTE_OF_CHAR[c] for c in token))
        except KeyError:
            raise CheckpointError("The BPE tokenizer is not byte-level; the file is corrupt or foreign.") from None
    return table

