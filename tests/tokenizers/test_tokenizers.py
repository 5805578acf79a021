"""Round trips, save/load, streaming and errors for the char and BPE tokenizers."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from aigc.errors import CheckpointError, ConfigError, DataError
from aigc.tokenizers import (
    BPETokenizer,
    CharTokenizer,
    Tokenizer,
    load_tokenizer,
    tokenizer_from_dict,
    train_tokenizer,
)
from aigc.tokenizers.bpe import split_chunks

POEM = "床前明月光，疑是地上霜。\n举头望明月，低头思故乡。\n"
CORPUS = (
    "The quick brown fox jumps over the lazy dog.\n"
    "def f(x):\n    return x * 2  # double\n\n"
    "  Leading spaces,   multiple   spaces,\ttabs\tand\r\nCRLF.\n" + POEM
) * 40

SAMPLES = [
    "",
    "Hello, world!",
    " leading space",
    "   three leading spaces and trailing   ",
    "multiple     inner\t\ttabs\n\n\nnewlines\r\n",
    "\n",
    " ",
    "\t",
    POEM,
    "床前明月光，疑是地上霜。",
    "emoji 😀👍🏽🇨🇳 and ZWJ 👩‍👩‍👧",
    "unseen: Ωμέγα ñ ü ß Привет عربى हिन्दी 한국어 ｆｕｌｌ",
    "control \x00\x01\x1f\x7f\u2028\ufeff chars",
    "the literal <|endoftext|> is plain text",
    "combining e\u0301 and \U0010ffff",
]


@pytest.fixture(scope="module", params=["char", "bpe"])
def tok(request: pytest.FixtureRequest) -> Tokenizer:
    return train_tokenizer(request.param, CORPUS, 400 if request.param == "bpe" else None)


@pytest.fixture(scope="module")
def bpe() -> Tokenizer:
    return train_tokenizer("bpe", CORPUS, 400)


@pytest.mark.parametrize("text", SAMPLES)
def test_round_trip(tok: Tokenizer, text: str) -> None:
    ids = tok.encode(text)
    assert all(0 <= i < tok.vocab_size for i in ids)
    assert tok.eos_id not in ids
    assert tok.decode(ids) == text
    assert tok.encode_to_array(text).tolist() == ids


def test_random_unicode_round_trip(tok: Tokenizer) -> None:
    rng = random.Random(0)
    for _ in range(50):
        cps = [rng.randrange(0x110000) for _ in range(rng.randrange(1, 30))]
        text = "".join(chr(c) for c in cps if not 0xD800 <= c < 0xE000)
        assert tok.decode(tok.encode(text)) == text


def test_long_text_round_trip_and_fast_paths(tok: Tokenizer) -> None:
    text = CORPUS * 5 + "😀 unseen ünïcödé\n" * 300  # long enough for chunked encode and numpy decode
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert tok.decode(np.asarray(ids)) == text
    assert tok.encode_to_array(text).tolist() == ids


def test_eos_decodes_as_marker(tok: Tokenizer) -> None:
    assert isinstance(tok.eos_id, int)
    ids = tok.encode("a") + [tok.eos_id] + tok.encode("b")
    assert tok.decode(ids) == "a<|endoftext|>b"


def test_char_vocab_layout() -> None:
    tok = CharTokenizer.train("hello")
    assert tok.vocab_size == 1 + 4 + 256
    assert tok.encode("hello") == [2, 1, 3, 3, 4]
    assert len(tok.encode("月")) == 3  # unseen: three UTF-8 bytes


def test_bpe_learns_merges_and_compresses(bpe: Tokenizer) -> None:
    assert bpe.vocab_size > 300
    text = "The quick brown fox jumps over the lazy dog."
    assert len(bpe.encode(text)) < len(text.encode()) / 2


def test_bpe_matches_hf_decode(bpe: BPETokenizer) -> None:
    for text in SAMPLES:
        ids = bpe.encode(text)
        assert bpe._hf.decode(ids, skip_special_tokens=False) == bpe.decode(ids)


def test_chunked_encode_equals_whole_text(bpe: BPETokenizer) -> None:
    text = "x = 1  \n\n\n  y = 2\n\tz\n \n" * 50 + CORPUS
    chunks = split_chunks(text, size=7)
    assert len(chunks) > 10 and "".join(chunks) == text
    whole = bpe._hf.encode(text, add_special_tokens=False).ids
    pieces = [i for c in chunks for i in bpe._hf.encode(c, add_special_tokens=False).ids]
    assert pieces == whole


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_save_load_identical(kind: str, tmp_path: Path) -> None:
    tok = train_tokenizer(kind, CORPUS, 400 if kind == "bpe" else None)
    path = tmp_path / "sub" / "tok.json"
    tok.save(path)
    loaded = load_tokenizer(path)
    assert type(loaded) is type(tok) and loaded.kind == kind
    assert loaded.vocab_size == tok.vocab_size and loaded.eos_id == tok.eos_id
    for text in SAMPLES + [CORPUS]:
        assert loaded.encode(text) == tok.encode(text)
    assert tokenizer_from_dict(json.loads(json.dumps(tok.to_dict()))).encode(POEM) == tok.encode(POEM)
    assert list(tmp_path.rglob("*.tmp")) == []


def test_stream_decoder_bpe_chinese(bpe: Tokenizer) -> None:
    text = "床前明月光，疑是地上霜。举杯邀明月，对影成三人。😀 done"
    ids = bpe.encode(text)
    assert any(not _valid_utf8(bpe.token_bytes(i)) for i in ids)  # some tokens split a character
    decoder = bpe.stream_decoder()
    pieces = [decoder.push(i) for i in ids] + [decoder.flush()]
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)
    assert "".join(bpe.decode_stream(ids)) == text


def test_stream_matches_decode_on_random_ids(tok: Tokenizer) -> None:
    rng = random.Random(1)
    ids = [rng.randrange(tok.vocab_size) for _ in range(500)]
    assert "".join(tok.decode_stream(ids)) == tok.decode(ids)


def test_decode_rejects_out_of_range(tok: Tokenizer) -> None:
    with pytest.raises(ConfigError):
        tok.decode([tok.vocab_size])
    with pytest.raises(ConfigError):
        tok.decode([-1])
    with pytest.raises(ConfigError):
        tok.decode(np.full(5000, -1))


def test_unknown_kind() -> None:
    with pytest.raises(ConfigError, match="Unknown tokenizer kind"):
        train_tokenizer("wordpiece", CORPUS)
    with pytest.raises(CheckpointError, match="Unknown tokenizer kind"):
        tokenizer_from_dict({"kind": "wordpiece"})


@pytest.mark.parametrize("size", [0, 100, 256, 10**9, 1000.5, True])
def test_bad_vocab_size(size: object) -> None:
    with pytest.raises(ConfigError, match="vocab_size"):
        train_tokenizer("bpe", CORPUS, size)  # type: ignore[arg-type]


def test_vocab_size_not_for_char() -> None:
    with pytest.raises(ConfigError, match="vocab_size"):
        train_tokenizer("char", CORPUS, 500)


def test_empty_text() -> None:
    for kind in ("char", "bpe"):
        with pytest.raises(DataError):
            train_tokenizer(kind, "")


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        "[1, 2]",
        '{"kind": "mystery"}',
        '{"kind": "char"}',
        '{"kind": "char", "chars": "aa"}',
        '{"kind": "bpe", "hf_json": "{broken"}',
        '{"kind": "char", "chars": "ab", "version": 99}',
    ],
)
def test_corrupt_file(tmp_path: Path, content: str) -> None:
    path = tmp_path / "tok.json"
    path.write_text(content)
    with pytest.raises(CheckpointError, match="tok.json"):
        load_tokenizer(path)


def test_missing_and_binary_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_tokenizer(tmp_path / "nope.json")
    path = tmp_path / "bin.json"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(CheckpointError):
        load_tokenizer(path)


def _valid_utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
