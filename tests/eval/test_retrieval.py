"""Retrieval accuracy: exact on hand-made embeddings (ties, repeats, chance), bad inputs, training and the cache."""
import pytest
import torch
import torch.nn.functional as F

from aigc.data.captioned import CaptionedImages
from aigc.errors import CheckpointError, ConfigError, DataError
from aigc.eval import retrieval as R
from aigc.eval.retrieval import (ContrastiveTrainConfig, build_tokenizer, cached_contrastive, embed_images,
                                 embed_texts, has_cjk, load_contrastive, retrieval_accuracy,
                                 retrieval_from_embeddings, save_contrastive, shift_images, topk_credit,
                                 train_contrastive, training_captions)
from aigc.models.contrastive import ContrastiveConfig

EYE = torch.eye(6)
CFG = ContrastiveConfig(channels=(8, 16), embed_dim=16, text_tower="own", text_d_model=16, text_layers=1,
                        text_heads=2, text_max_len=32, text_hidden=0)
STEPS = ContrastiveTrainConfig(steps=3, batch_size=8, warmup_steps=1)


def toy_data(n: int = 8) -> CaptionedImages:
    """Solid colour squares on white, one per colour, with two captions each."""
    colours = {"red": (220, 20, 20), "green": (20, 160, 40), "blue": (30, 60, 220), "yellow": (240, 210, 0),
               "purple": (150, 40, 200), "cyan": (0, 190, 220), "orange": (250, 125, 0), "black": (0, 0, 0)}
    names = list(colours)[:n]
    images = torch.full((n, 3, 32, 32), 255, dtype=torch.uint8)
    for i, name in enumerate(names):
        images[i, :, 8:24, 8:24] = torch.tensor(colours[name], dtype=torch.uint8)[:, None, None]
    return CaptionedImages(images, [[f"a {c} square", c] for c in names], names, "toy")


@pytest.fixture(scope="module")
def tiny_model():
    return train_contrastive(toy_data(), CFG, seed=0, train_cfg=STEPS)


# ---- the metric on hand-made embeddings -----------------------------------------------------------


def test_perfect_embeddings_score_one_and_shuffled_ones_zero():
    perfect = retrieval_from_embeddings(EYE, EYE, torch.arange(6), k=(1, 5))
    assert perfect["image_to_text@1"] == perfect["text_to_image@1"] == 1.0 == perfect["image_to_text@5"]
    assert perfect["n_images"] == perfect["n_candidates"] == 6
    assert perfect["chance_image_to_text@1"] == pytest.approx(1 / 6)
    assert perfect["chance_image_to_text@5"] == perfect["chance_text_to_image@5"] == pytest.approx(5 / 6)
    shuffled = retrieval_from_embeddings(EYE, EYE, torch.tensor([1, 2, 3, 4, 5, 0]), k=(1, 5))
    assert shuffled["image_to_text@1"] == shuffled["text_to_image@1"] == 0.0
    # one text beats the true one, four tie with it at 0: top-5 credit (5 - 1) / (4 + 1)
    assert shuffled["image_to_text@5"] == pytest.approx(0.8)


def test_ties_get_fractional_credit_and_constant_models_sit_at_chance():
    same = torch.ones(6, 4)
    res = retrieval_from_embeddings(same, same, torch.arange(6), k=(1, 2, 6, 10))
    for k in (1, 2, 6):
        assert res[f"image_to_text@{k}"] == pytest.approx(k / 6) == pytest.approx(res[f"chance_image_to_text@{k}"])
        assert res[f"text_to_image@{k}"] == pytest.approx(k / 6)
    assert res["image_to_text@10"] == 1.0 == res["chance_image_to_text@10"]  # k beyond the candidates
    # true text tied with one other, one strictly better: top-1 0, top-2 1/2, top-3 1
    scores = torch.tensor([[0.5, 0.9, 0.5, 0.1]])
    valid = torch.ones_like(scores, dtype=torch.bool)
    got = [topk_credit(scores, torch.tensor([0]), valid, k).item() for k in (1, 2, 3)]
    assert got == [0.0, 0.5, 1.0]


def test_repeated_prompts_leave_same_prompt_images_out_of_text_to_image():
    # 2 images per prompt; each image matches its prompt, but image 1 is the better match of prompt 0
    images = torch.tensor([[1.0, 0.2], [1.0, 0.0], [0.0, 1.0], [0.1, 1.0]])
    texts = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    res = retrieval_from_embeddings(images, texts, torch.tensor([0, 0, 1, 1]), k=1)
    assert res["image_to_text@1"] == 1.0 and res["n_candidates"] == 2
    assert res["text_to_image@1"] == 1.0                     # image 0 competes with images 2, 3 only
    assert res["chance_text_to_image@1"] == pytest.approx(1 / 3)


@pytest.mark.parametrize("args, match", [
    ((EYE, EYE[:, :3], torch.arange(6)), "same D"), ((EYE, EYE, torch.arange(5)), "one target per image"),
    ((EYE[:0], EYE, torch.arange(0)), "at least one image"), ((EYE, EYE, torch.arange(6) + 1), "must index")])
def test_embedding_inputs_are_checked(args, match):
    with pytest.raises(DataError, match=match):
        retrieval_from_embeddings(*args)
    with pytest.raises(ConfigError, match="positive integers"):
        retrieval_from_embeddings(EYE, EYE, torch.arange(6), k=(0,))


# ---- the metric through a model ------------------------------------------------------------------


def test_retrieval_accuracy_equals_the_embedding_metric(tiny_model):
    data = toy_data()
    prompts = data.primary_captions
    got = retrieval_accuracy(tiny_model, data.images, prompts, k=(1, 3))
    want = retrieval_from_embeddings(embed_images(tiny_model, data.images), embed_texts(tiny_model, prompts),
                                     torch.arange(8), k=(1, 3))
    assert got == pytest.approx(want)
    # extra distractor candidates can only make image->text harder, and count in n_candidates
    more = retrieval_accuracy(tiny_model, data.images, prompts, candidates=prompts + ["a white square", prompts[0]])
    assert more["n_candidates"] == 9 and more["image_to_text@1"] <= got["image_to_text@1"]
    assert more["text_to_image@1"] == got["text_to_image@1"]
    # the same prompt for several images: candidates are the distinct prompts
    rep = retrieval_accuracy(tiny_model, data.images[[0, 0, 1]], [prompts[0], prompts[0], prompts[1]])
    assert rep["n_candidates"] == 2 and rep["n_images"] == 3


def test_retrieval_accuracy_rejects_bad_inputs(tiny_model):
    images, prompts = toy_data().images, toy_data().primary_captions
    cases = [((images[:3], prompts), "one prompt per image"), ((images[:0], []), "at least one image"),
             ((images.float(), prompts), "uint8"), ((images[:, :1], prompts), r"\(N, 3, H, W\)"),
             ((F.interpolate(images.float(), 16).to(torch.uint8), prompts), "resize the images to 32x32"),
             ((images[:1], "a red square"), "list of strings")]
    for args, match in cases:
        with pytest.raises(DataError, match=match):
            retrieval_accuracy(tiny_model, *args)
    with pytest.raises(DataError, match="not among the candidates"):
        retrieval_accuracy(tiny_model, images, prompts, candidates=prompts[1:])


# ---- training ------------------------------------------------------------------------------------


def test_shift_images_translates_with_white_fill_and_zero_is_identity():
    x = torch.full((2, 3, 8, 8), -1.0)
    assert shift_images(x, 0, torch.Generator()) is x
    g = torch.Generator().manual_seed(0)
    y = shift_images(x, 2, g)
    assert y.shape == x.shape and set(y.unique().tolist()) <= {-1.0, 1.0}
    black = (y == -1).all(1).sum(dim=(1, 2))                   # (2,) pixels still from the image
    assert ((black >= 36) & (black <= 64)).all()               # at most 2 rows and 2 columns shifted out
    assert torch.equal(y, shift_images(x, 2, torch.Generator().manual_seed(0)))


def test_cjk_captions_are_left_out_unless_asked_for_or_alone():
    images = torch.zeros(3, 3, 32, 32, dtype=torch.uint8)
    data = CaptionedImages(images, [["red heart", "红心"], ["CL button", "CL按钮", "squared cl"], ["キツネ"]],
                           ["a", "b", "c"])
    assert has_cjk("CL按钮") and has_cjk("キツネ") and has_cjk("한국")
    assert not has_cjk("naïve café, flag of Côte d’Ivoire")
    kept = training_captions(data, ContrastiveTrainConfig())
    assert kept == [["red heart"], ["CL button", "squared cl"], ["キツネ"]]  # an all-CJK image keeps its own
    assert training_captions(data, ContrastiveTrainConfig(cjk_captions=True)) == data.captions


def test_own_tower_tokenizers_are_trained_on_the_training_captions():
    data = toy_data()
    assert build_tokenizer(data.captions, ContrastiveConfig()) is None              # minilm brings its own
    char = build_tokenizer(data.captions, CFG)
    assert char.kind == "char" and set("".join(data.captions[0])) <= set(char.chars)
    bpe_cfg = ContrastiveConfig(**{**CFG.to_dict(), "text_tokenizer": "bpe", "text_bpe_vocab": 300})
    bpe = train_contrastive(data, bpe_cfg, train_cfg=ContrastiveTrainConfig(steps=1, batch_size=8))
    assert bpe.tokenizer.kind == "bpe" and bpe.config.text_vocab_size == bpe.tokenizer.vocab_size <= 300
    assert len(bpe.tokenizer.encode("a red square")) < len("a red square")          # merges were learned


def test_training_is_deterministic_and_checks_its_inputs(tiny_model):
    again = train_contrastive(toy_data(), CFG, seed=0, train_cfg=STEPS)
    for (k, a), b in zip(tiny_model.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), k
    with pytest.raises(DataError, match="image_size"):
        train_contrastive(toy_data(), ContrastiveConfig(**{**CFG.to_dict(), "image_size": 16}), train_cfg=STEPS)
    with pytest.raises(DataError, match="at least 2"):
        train_contrastive(toy_data().subset([0]), CFG, train_cfg=STEPS)
    with pytest.raises(ConfigError, match="steps"):
        train_contrastive(toy_data(), CFG, train_cfg=ContrastiveTrainConfig(steps=0))


# ---- saving and the cache ------------------------------------------------------------------------


def test_save_load_round_trip_keeps_tokenizer_and_outputs(tiny_model, tmp_path):
    save_contrastive(tiny_model, tmp_path / "m.safetensors", STEPS)
    back = load_contrastive(tmp_path / "m.safetensors")
    assert back.config == tiny_model.config and back.tokenizer.to_dict() == tiny_model.tokenizer.to_dict()
    images, prompts = toy_data().images, toy_data().primary_captions
    assert torch.equal(embed_images(back, images), embed_images(tiny_model, images))
    assert torch.equal(embed_texts(back, prompts), embed_texts(tiny_model, prompts))
    (tmp_path / "bad.safetensors").write_bytes(b"not a model")
    with pytest.raises(CheckpointError, match="not a readable contrastive model"):
        load_contrastive(tmp_path / "bad.safetensors")
    with pytest.raises(CheckpointError, match="no contrastive model"):
        load_contrastive(tmp_path / "missing.safetensors")


def test_cache_trains_once_per_data_config_and_seed(tmp_path, monkeypatch):
    data = toy_data(6)
    first = cached_contrastive(data, CFG, seed=1, train_cfg=STEPS, cache_dir=tmp_path)
    files = list(tmp_path.glob("toy-32px-n6-*.safetensors"))
    assert len(files) == 1 and not list(tmp_path.glob(".*tmp"))

    def no_training(*a, **k):
        raise AssertionError("a cached model was trained again")

    monkeypatch.setattr(R, "train_contrastive", no_training)
    hit = cached_contrastive(data, CFG, seed=1, train_cfg=STEPS, cache_dir=tmp_path)
    assert torch.equal(embed_images(hit, data.images), embed_images(first, data.images))
    monkeypatch.undo()
    cached_contrastive(data, CFG, seed=2, train_cfg=STEPS, cache_dir=tmp_path)        # another seed
    recaptioned = CaptionedImages(data.images, [c[::-1] for c in data.captions], data.ids, "toy")
    cached_contrastive(recaptioned, CFG, seed=1, train_cfg=STEPS, cache_dir=tmp_path)  # other captions
    assert len(list(tmp_path.glob("*.safetensors"))) == 3
    files[0].write_bytes(b"corrupt")                                                   # retrained, rewritten
    cached_contrastive(data, CFG, seed=1, train_cfg=STEPS, cache_dir=tmp_path)
    assert load_contrastive(files[0]).config == first.config
