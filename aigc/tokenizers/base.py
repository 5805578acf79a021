"""The interface every tokenizer implements, and streaming decoding.

A tokenizer maps text to token ids and back. Every token stands for a fixed
byte string (``token_bytes``), so decoding is "join the bytes, read as UTF-8";
that one rule also gives exact streaming: :class:`StreamDecoder` keeps the
bytes of a character split across tokens until the character is complete.
"""

from __future__ import annotations

import codecs
import json
import os
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from aigc.errors import ConfigError

EOT_TOKEN = "<|endoftext|>"
FORMAT_VERSION = 1
_SMALL = 1024  # decode longer inputs with numpy


class Tokenizer(ABC):
    """Text <-> token ids. Subclasses fill ``_token_bytes`` (one entry per id).

    ``encode`` treats its input as plain text: it never emits the special
    end-of-text id, even if the text contains the string ``<|endoftext|>``;
    add ``eos_id`` yourself between documents. ``decode`` renders ``eos_id``
    as ``<|endoftext|>``. For any valid Unicode string ``s``,
    ``decode(encode(s)) == s``.
    """

    kind: ClassVar[str]
    eos_token: ClassVar[str] = EOT_TOKEN
    _token_bytes: list[bytes]

    @property
    def vocab_size(self) -> int:
        return len(self._token_bytes)

    @property
    @abstractmethod
    def eos_id(self) -> int:
        """Id of the end-of-text token."""

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``."""

    @abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict with everything needed to rebuild the tokenizer."""

    def encode_to_array(self, text: str) -> np.ndarray:
        """Token ids of ``text`` as a 1-D int32 array (fast path for corpora)."""
        return np.asarray(self.encode(text), dtype=np.int32)

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes one token stands for (may be part of a UTF-8 character)."""
        self._check_ids([token_id])
        return self._token_bytes[token_id]

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """Text of ``ids``; invalid UTF-8 (from a model's bad choices) becomes U+FFFD."""
        if not isinstance(ids, np.ndarray):
            tolist = getattr(ids, "tolist", None)  # e.g. a torch tensor
            ids = tolist() if tolist is not None else list(ids)
            if len(ids) <= _SMALL:
                self._check_ids(ids)
                return b"".join(map(self._token_bytes.__getitem__, ids)).decode("utf-8", "replace")
            ids = np.fromiter(ids, dtype=np.int64, count=len(ids))
        return self._gather_bytes(ids).decode("utf-8", "replace")

    def _gather_bytes(self, ids: np.ndarray) -> bytes:
        """Vectorised ``b"".join(token_bytes[i] for i in ids)`` for long inputs."""
        ids = np.asarray(ids, dtype=np.int64).ravel()
        if ids.size == 0:
            return b""
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= self.vocab_size:
            self._check_ids([lo if lo < 0 else hi])
        if not hasattr(self, "_flat"):
            self._lens = np.array([len(b) for b in self._token_bytes], dtype=np.int64)
            self._offsets = np.cumsum(self._lens) - self._lens
            self._flat = np.frombuffer(b"".join(self._token_bytes), dtype=np.uint8)
        lens, starts = self._lens[ids], self._offsets[ids]
        ends = np.cumsum(lens)
        # Position k of the output reads flat[start of its token + k - output start of its token].
        index = np.repeat(starts - (ends - lens), lens) + np.arange(int(ends[-1]))
        return self._flat[index].tobytes()

    def stream_decoder(self) -> StreamDecoder:
        """A fresh :class:`StreamDecoder` for this tokenizer."""
        return StreamDecoder(self)

    def decode_stream(self, ids: Iterable[int]) -> Iterator[str]:
        """Yield text pieces as ``ids`` arrive; the pieces join to ``decode(ids)``."""
        decoder = StreamDecoder(self)
        for token_id in ids:
            piece = decoder.push(token_id)
            if piece:
                yield piece
        tail = decoder.flush()
        if tail:
            yield tail

    def save(self, path: str | Path) -> None:
        """Write ``to_dict()`` as JSON, atomically (temp file + rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(self.to_dict(), f)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _check_ids(self, ids: Sequence[int]) -> None:
        if ids and (min(ids) < 0 or max(ids) >= self.vocab_size):
            bad = next(i for i in ids if not 0 <= i < self.vocab_size)
            raise ConfigError(
                f"Token id {bad} is outside this tokenizer's vocabulary (0..{self.vocab_size - 1})."
            )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size})"


class StreamDecoder:
    """Feed token ids one at a time; get back the text completed so far.

    Bytes of a multi-byte character split across tokens are held until the
    character is complete, so no U+FFFD appears for a character that finishes
    later. Call :meth:`flush` at the end to emit (as U+FFFD) any leftover bytes.
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tokenizer = tokenizer
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        """Add one token; return the newly completed text (possibly "")."""
        return self._utf8.decode(self._tokenizer.token_bytes(int(token_id)))

    def flush(self) -> str:
        """End of stream: return what is left (incomplete bytes become U+FFFD)."""
        return self._utf8.decode(b"", final=True)

