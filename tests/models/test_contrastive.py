"""ContrastiveModel: towers, InfoNCE with several positives, config checks, and a tiny overfit on emoji."""
import math

import pytest
import torch
import torch.nn.functional as F

from aigc.data.registry import EMOJI_FONT
from aigc.errors import ConfigError, DataError
from aigc.eval.retrieval import ContrastiveTrainConfig, real_image_retrieval, train_contrastive
from aigc.models.contrastive import (ContrastiveConfig, ContrastiveModel, contrastive_loss, positives)
from aigc.models.minilm import load_minilm
from aigc.tokenizers import CharTokenizer

TINY = dict(channels=(8, 16), embed_dim=16, text_hidden=0)


@pytest.fixture(scope="module")
def minilm():
    return load_minilm()


def own_model(**kw) -> ContrastiveModel:
    torch.manual_seed(0)
    cfg = ContrastiveConfig(**{**TINY, "text_tower": "own", "text_d_model": 16, "text_layers": 1,
                               "text_heads": 2, **kw})
    return ContrastiveModel(cfg, CharTokenizer.train("abc red blue square"))


def test_towers_give_unit_embeddings_of_the_shared_size(minilm):
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    for model in (own_model(), ContrastiveModel(ContrastiveConfig(**TINY), minilm=minilm)):
        model.eval()
        img, txt = model.encode_images(x), model.encode_texts(["red square", "blue", "红心"])
        assert img.shape == txt.shape == (3, 16)
        assert torch.allclose(img.norm(dim=-1), torch.ones(3), atol=1e-5)
        assert torch.allclose(txt.norm(dim=-1), torch.ones(3), atol=1e-5)
        assert math.isclose(model.scale().item(), 1 / 0.07, rel_tol=1e-5)   # CLIP's initial temperature


def test_default_sizes_and_frozen_minilm_is_not_saved(minilm):
    model = ContrastiveModel(ContrastiveConfig(), minilm=minilm)
    assert 200_000 < sum(p.numel() for p in model.image_tower.parameters()) < 2_000_000
    state = model.trainable_state_dict()
    assert state and not any(k.startswith("text_backbone.") for k in state)
    assert not any(p.requires_grad for p in model.text_backbone.parameters())
    assert model.num_params() == sum(p.numel() for n, p in model.named_parameters()
                                     if not n.startswith("text_backbone."))
    assert model.num_params(trainable_only=False) > model.num_params() + 20_000_000  # MiniLM: 22.7M frozen
    model.train()
    assert model.image_tower.training and not model.text_backbone.training  # MiniLM never drops out
    other = ContrastiveModel(ContrastiveConfig(), minilm=minilm)
    other.load_trainable_state_dict(state)
    assert torch.equal(other.text_proj[-1].weight, model.text_proj[-1].weight)
    with pytest.raises(DataError, match="missing"):
        other.load_trainable_state_dict({k: v for k, v in state.items() if "text_proj" not in k})


def test_clip_loss_is_symmetric_infonce_and_handles_shared_captions():
    emb = F.normalize(torch.randn(4, 8), dim=-1)
    scale = torch.tensor(10.0)
    logits = scale * emb @ emb.T
    target = torch.arange(4)
    want = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
    assert torch.allclose(contrastive_loss(emb, emb, scale), want)
    assert contrastive_loss(emb, emb, torch.tensor(100.0)) < contrastive_loss(emb, emb.roll(1, 0), torch.tensor(100.0))
    # images 0 and 1 both carry the caption "heart": text 1 is a positive of image 0 and vice versa
    caps = [["red heart", "heart"], ["heart", "love"], ["cat"], ["dog"]]
    texts = ["red heart", "heart", "cat", "dog"]
    pos = positives(caps, texts)
    assert pos.tolist() == [[True, True, False, False], [False, True, False, False],
                            [False, False, True, False], [False, False, False, True]]
    soft = pos.float() / pos.float().sum(1, keepdim=True)
    want_i2t = F.cross_entropy(logits, soft)
    want_t2i = F.cross_entropy(logits.T, pos.T.float() / pos.T.float().sum(1, keepdim=True))
    assert torch.allclose(contrastive_loss(emb, emb, scale, pos), 0.5 * (want_i2t + want_t2i))
    with pytest.raises(DataError, match="text embeddings"):
        contrastive_loss(emb, emb[:3], scale)


def test_logit_scale_is_clamped_like_clip():
    model = own_model(max_logit_scale=50.0, init_temperature=0.05)
    with torch.no_grad():
        model.logit_scale.fill_(10.0)
    assert math.isclose(model.scale().item(), 50.0, rel_tol=1e-5)


@pytest.mark.parametrize("change, match", [
    (dict(text_tower="clip"), "text_tower"), (dict(norm="layer"), "norm"), (dict(channels=()), "channels"),
    (dict(channels=(12, 16), norm="group"), "divisible by 8"), (dict(embed_dim=0), "embed_dim"),
    (dict(init_temperature=0.001), "init_temperature"), (dict(dropout=1.0), "dropout"),
    (dict(text_tokenizer="word"), "text_tokenizer"), (dict(text_hidden=-1), "text_hidden")])
def test_bad_configs_say_what_is_wrong(change, match):
    with pytest.raises(ConfigError, match=match):
        ContrastiveConfig(**{**TINY, **change}).validate()


def test_tokenizer_rules_and_bad_images(minilm):
    tok = CharTokenizer.train("abc")
    with pytest.raises(ConfigError, match="needs the tokenizer"):
        ContrastiveModel(ContrastiveConfig(**TINY, text_tower="own"))
    with pytest.raises(ConfigError, match="brings its own"):
        ContrastiveModel(ContrastiveConfig(**TINY), tok, minilm)
    with pytest.raises(ConfigError, match="'bpe'"):
        ContrastiveModel(ContrastiveConfig(**TINY, text_tower="own", text_tokenizer="bpe"), tok)
    cfg = ContrastiveConfig(**TINY, text_tower="own")
    model = ContrastiveModel(cfg, tok)
    assert model.config.text_vocab_size == tok.vocab_size and cfg.text_vocab_size == 0  # caller's config untouched
    with pytest.raises(DataError, match="float RGB"):
        model.encode_images(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(DataError, match="non-empty list"):
        model.encode_texts([])
    with pytest.raises(ConfigError, match="minilm"):
        model.frozen_text_features(["a"])


@pytest.mark.skipif(not EMOJI_FONT.is_file(), reason="needs the Debian package fonts-noto-color-emoji")
def test_overfits_32_emoji_loss_falls_and_train_retrieval_is_high(minilm):
    from aigc.data.emoji import load_emoji

    data = load_emoji("train", limit=32)
    losses = []
    steps = ContrastiveTrainConfig(steps=60, batch_size=32, lr=5e-3, warmup_steps=4, shift=0)
    model = train_contrastive(data, ContrastiveConfig(channels=(16, 32, 64), embed_dim=64), seed=0, minilm=minilm,
                              train_cfg=steps, callback=lambda step, loss, m: losses.append(loss))
    assert len(losses) == 60 and sum(losses[-5:]) / 5 < 0.25 * sum(losses[:5]) / 5
    scores = real_image_retrieval(model, data)
    assert scores["n_images"] == scores["n_candidates"] == 32
    assert scores["image_to_text@1"] >= 0.8 and scores["text_to_image@1"] >= 0.8   # chance 1/32
    assert scores["chance_image_to_text@1"] == 1 / 32
