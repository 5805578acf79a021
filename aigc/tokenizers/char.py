"""Character-level tokenizer with a byte fallback.

Vocabulary: id 0 is ``<|endoftext|>``, then the sorted distinct characters of
the training text, then 256 tokens for raw bytes. A character never seen in
training is encoded as its UTF-8 bytes, so every string round-trips.
Encoding is vectorised with numpy (a code-point lookup table).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from aigc.errors import CheckpointError, DataError
from aigc.tokenizers.base import EOT_TOKEN, FORMAT_VERSION, Tokenizer

_N_CODEPOINTS = 0x110000
# UTF-8 lead-byte prefix by sequence length (index 1..4).
_LEAD = np.array([0, 0x00, 0xC0, 0xE0, 0xF0], dtype=np.int64)


class CharTokenizer(Tokenizer):
    kind = "char"

    def __init__(self, chars: str) -> None:
        if len(set(chars)) != len(chars):
            raise CheckpointError("The char tokenizer's character list has duplicates; the file is corrupt.")
        self.chars = "".join(sorted(chars))
        self._byte_offset = 1 + len(self.chars)  # id of raw byte 0x00
        self._token_bytes = (
            [EOT_TOKEN.encode()]
            + [c.encode("utf-8", "surrogatepass") for c in self.chars]
            + [bytes([b]) for b in range(256)]
        )
        # Code point -> id, -1 for characters that need the byte fallback.
        self._lut = np.full(_N_CODEPOINTS, -1, dtype=np.int32)
        self._lut[_codepoints(self.chars)] = np.arange(1, self._byte_offset, dtype=np.int32)

    @classmethod
    def train(cls, text: str) -> CharTokenizer:
        """Vocabulary = the distinct characters of ``text`` (plus specials and bytes)."""
        if not text:
            raise DataError("Cannot train a tokenizer on empty text; give it a non-empty corpus.")
        return cls("".join(set(text)))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CharTokenizer:
        chars = d.get("chars")
        if not isinstance(chars, str):
            raise CheckpointError("The char tokenizer data has no 'chars' string; the file is corrupt.")
        return cls(chars)

    @property
    def eos_id(self) -> int:
        return 0

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "version": FORMAT_VERSION, "chars": self.chars}

    def encode(self, text: str) -> list[int]:
        return self.encode_to_array(text).tolist()

    def encode_to_array(self, text: str) -> np.ndarray:
        cps = _codepoints(text)
        ids = self._lut[cps]
        unseen = ids < 0
        if not unseen.any():
            return ids
        # Expand each unseen character into its 1-4 UTF-8 bytes.
        cp = cps[unseen].astype(np.int64)
        nbytes = 1 + (cp >= 0x80) + (cp >= 0x800) + (cp >= 0x10000)
        width = np.ones(len(ids), dtype=np.int64)
        width[unseen] = nbytes
        start = np.cumsum(width) - width  # output position of each input character
        out = np.empty(int(width.sum()), dtype=np.int32)
        out[start[~unseen]] = ids[~unseen]
        pos = start[unseen]
        for j in range(4):
            has = nbytes > j
            n, c = nbytes[has], cp[has]
            shift = 6 * (n - 1 - j)
            byte = _LEAD[n] | (c >> shift) if j == 0 else 0x80 | ((c >> shift) & 0x3F)
            out[pos[has] + j] = self._byte_offset + byte
        return out


def _codepoints(text: str) -> np.ndarray:
    """Code points of ``text`` as uint32 (lone surrogates kept as-is)."""
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")
