"""The WordPiece tokenizer shipped with all-MiniLM-L6-v2: same ids as transformers' BertTokenizerFast."""
import json

import pytest
import torch
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import models

from aigc.errors import CheckpointError, ConfigError, DataError
from aigc.models.minilm import load_minilm_tokenizer, minilm_folder
from aigc.tokenizers.wordpiece import WordPieceTokenizer

PROMPTS = ["A small RED circle, above a large blue square.", "", "naïve café x" * 3, "床前明月光",
           "unbelievably-long-hyphenated words 123 !!", "word " * 300]


@pytest.fixture(scope="module")
def tok():
    return load_minilm_tokenizer()


def test_ids_and_mask_match_transformers(tok):
    from transformers import AutoTokenizer
    ref = AutoTokenizer.from_pretrained(str(minilm_folder()))
    want = ref(PROMPTS, padding=True, truncation=True, max_length=256, return_tensors="pt")
    batch = tok.encode_batch(PROMPTS)
    assert tok.max_len == 256 and tok.vocab_size == 30522
    assert torch.equal(batch.ids, want["input_ids"])
    assert torch.equal(batch.mask, want["attention_mask"].bool())
    assert batch.truncated == [False] * 5 + [True] and batch.lengths[-1] == 302
    assert batch.ids[1, :2].tolist() == [tok.cls_id, tok.sep_id]  # the empty prompt: [CLS] [SEP]


def test_encode_decode_and_shorter_max_len(tok):
    ids = tok.encode("A Red Circle")
    assert tok.cls_id not in ids and tok.decode(ids) == "a red circle"
    batch = tok.encode_batch(["one two three four", "one"], max_len=4)
    assert batch.ids.shape == (2, 4) and batch.truncated == [True, False]
    assert tok.decode(batch.ids[0]) == "one two" and batch.ids[1, 3] == tok.pad_id and not batch.mask[1, 3]
    with pytest.raises(ConfigError, match="outside"):
        tok.decode([tok.vocab_size])


def test_round_trips_through_its_dict(tok):
    d = json.loads(json.dumps(tok.to_dict()))
    again = WordPieceTokenizer.from_dict(d)
    assert again.max_len == tok.max_len
    assert torch.equal(again.encode_batch(PROMPTS).ids, tok.encode_batch(PROMPTS).ids)
    with pytest.raises(CheckpointError):
        WordPieceTokenizer.from_dict({"kind": "wordpiece", "hf_json": "{"})


def test_bad_files_and_arguments(tmp_path, tok):
    with pytest.raises(DataError, match="does not exist"):
        WordPieceTokenizer.from_file(tmp_path / "tokenizer.json")
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(DataError, match="cannot be read"):
        WordPieceTokenizer.from_file(tmp_path / "tokenizer.json")
    with pytest.raises(DataError, match=r"\[PAD\]"):
        WordPieceTokenizer(HFTokenizer(models.WordPiece({"[UNK]": 0, "a": 1}, unk_token="[UNK]")))
    with pytest.raises(ConfigError, match="list of prompts"):
        tok.encode_batch("a red circle")
    with pytest.raises(ConfigError, match="at least 2"):
        tok.encode_batch(["a"], max_len=1)
    with pytest.raises(ConfigError, match="empty list"):
        tok.encode_batch([])
