"""BERT's WordPiece tokenizer (uncased), read from a ``tokenizer.json`` by the HF ``tokenizers`` library.

For pre-trained BERT-family encoders (all-MiniLM-L6-v2). The file carries the
whole pipeline: BERT normaliser (clean text, split CJK characters, lower-case),
whitespace/punctuation pre-tokeniser, WordPiece with ``##`` continuations.
``encode`` gives the plain pieces; ``encode_batch`` adds ``[CLS] ... [SEP]``,
truncates to ``max_len`` (reporting which prompts were cut) and right-pads
with ``[PAD]``.

Unlike our char/BPE tokenizers (``base.Tokenizer``) this one is lossy (it
lower-cases and drops spacing), so it follows that interface in names
(``kind``, ``vocab_size``, ``eos_id``, ``encode``, ``decode``, ``to_dict``)
but does not promise ``decode(encode(s)) == s``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer as HFTokenizer

from aigc.errors import CheckpointError, ConfigError, DataError
from aigc.tokenizers.base import FORMAT_VERSION
from aigc.tokenizers.batch import TokenBatch, pad_batch

SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]")
DEFAULT_MAX_LEN = 256  # sentence-transformers' max_seq_length for all-MiniLM-L6-v2


class WordPieceTokenizer:
    kind = "wordpiece"

    def __init__(self, hf: HFTokenizer, max_len: int = DEFAULT_MAX_LEN) -> None:
        ids = {name: hf.token_to_id(name) for name in SPECIALS}
        missing = [name for name, i in ids.items() if i is None]
        if missing:
            raise DataError(f"the WordPiece tokenizer has no {', '.join(missing)} token; "
                            "the tokenizer.json is not a BERT tokenizer")
        if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 2:
            raise ConfigError(f"WordPiece max_len must be an integer of at least 2 ([CLS] and [SEP]), got {max_len!r}")
        # we truncate and pad ourselves (the shipped file fixes both at 128)
        hf.no_truncation()
        hf.no_padding()
        self._hf, self.max_len = hf, max_len
        self.pad_id, self.unk_id, self.cls_id, self.sep_id = (ids[name] for name in SPECIALS)

    @classmethod
    def from_file(cls, path: str | Path, max_len: int = DEFAULT_MAX_LEN) -> WordPieceTokenizer:
        path = Path(path)
        if not path.is_file():
            raise DataError(f"WordPiece tokenizer file {path} does not exist")
        try:
            hf = HFTokenizer.from_file(str(path))
        except Exception as e:  # the Rust side raises plain Exception
            raise DataError(f"WordPiece tokenizer file {path} cannot be read ({e}); reinstall it") from e
        return cls(hf, max_len)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> WordPieceTokenizer:
        hf_json, max_len = d.get("hf_json"), d.get("max_len", DEFAULT_MAX_LEN)
        if d.get("kind") != cls.kind or not isinstance(hf_json, str):
            raise CheckpointError("the WordPiece tokenizer data has no 'hf_json' string; the file is corrupt")
        try:
            hf = HFTokenizer.from_str(hf_json)
        except Exception as e:
            raise CheckpointError(f"the WordPiece tokenizer JSON cannot be read ({e}); the file is corrupt") from e
        return cls(hf, max_len)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "version": FORMAT_VERSION, "max_len": self.max_len, "hf_json": self._hf.to_str()}

    @property
    def vocab_size(self) -> int:
        return self._hf.get_vocab_size()

    @property
    def eos_id(self) -> int:
        """``[SEP]`` ends every encoded prompt."""
        return self.sep_id

    def encode(self, text: str) -> list[int]:
        """WordPiece ids of ``text``, without [CLS]/[SEP] and without truncation."""
        return self._hf.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int]) -> str:
        """Lower-cased text of ``ids``, special tokens dropped, ``##`` pieces joined."""
        tolist = getattr(ids, "tolist", None)
        ids = tolist() if tolist is not None else list(ids)
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ConfigError(f"token id {bad[0]} is outside this tokenizer's vocabulary (0..{self.vocab_size - 1})")
        return self._hf.decode(ids, skip_special_tokens=True)

    def encode_batch(self, texts: Sequence[str], max_len: int | None = None) -> TokenBatch:
        """``[CLS] pieces [SEP]`` per prompt, cut to ``max_len`` (default: this tokenizer's), right-padded."""
        if isinstance(texts, str):
            raise ConfigError("encode_batch takes a list of prompts, not one string; wrap it in a list")
        max_len = self.max_len if max_len is None else max_len
        if max_len < 2:
            raise ConfigError(f"max_len must be at least 2 ([CLS] and [SEP]), got {max_len}")
        pieces = [e.ids for e in self._hf.encode_batch(list(texts), add_special_tokens=False)]
        keep = max_len - 2
        rows = [[self.cls_id, *p[:keep], self.sep_id] for p in pieces]
        return pad_batch(rows, self.pad_id, [len(p) + 2 for p in pieces], [len(p) > keep for p in pieces])

    def __repr__(self) -> str:
        return f"WordPieceTokenizer(vocab_size={self.vocab_size}, max_len={self.max_len})"
