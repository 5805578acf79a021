import pytest
import torch

from aigc.errors import ConfigError
from aigc.generate import processors as P
from aigc.generate.text import GenerationConfig, generate_text, stream_text
from aigc.tokenizers import train_tokenizer

from ..conftest import make_text, tiny_gpt


@pytest.fixture(scope="module")
def lm():
    tok = train_tokenizer("char", make_text(10))
    return tiny_gpt(vocab=tok.vocab_size, block=32), tok


def test_greedy_is_deterministic_and_batched_equals_single(lm):
    model, tok = lm
    cfg = GenerationConfig(max_new_tokens=20, temperature=0.0)
    prompts = ["the cat", "a", "over the hill by"]
    batched = generate_text(model, tok, prompts, cfg)
    singles = [generate_text(model, tok, [p], cfg)[0] for p in prompts]
    assert batched == singles
    assert all(len(t) > 0 for t in batched)


def test_same_seed_same_text_other_seed_other_text(lm):
    model, tok = lm
    a = generate_text(model, tok, ["the"], GenerationConfig(max_new_tokens=40, seed=1))
    b = generate_text(model, tok, ["the"], GenerationConfig(max_new_tokens=40, seed=1))
    c = generate_text(model, tok, ["the"], GenerationConfig(max_new_tokens=40, seed=2))
    assert a == b and a != c


def test_stream_pieces_join_to_the_text(lm):
    model, tok = lm
    cfg = GenerationConfig(max_new_tokens=30, seed=3)
    pieces = [p for _, p in stream_text(model, tok, ["fox"], cfg)]
    assert len(pieces) > 1
    assert "".join(pieces) == generate_text(model, tok, ["fox"], cfg)[0]


def test_callback_can_cancel(lm):
    model, tok = lm
    seen = []
    out = generate_text(model, tok, ["x"], GenerationConfig(max_new_tokens=50, seed=0),
                        on_text=lambda row, piece: seen.append(piece) or len(seen) < 3)
    assert len(seen) == 3 and out[0] == "".join(seen)


def test_stop_string_cuts_output(lm):
    model, tok = lm
    free = generate_text(model, tok, ["the"], GenerationConfig(max_new_tokens=40, temperature=0.0))[0]
    stop = free[5:7]
    cut = generate_text(model, tok, ["the"], GenerationConfig(max_new_tokens=40, temperature=0.0, stop=[stop]))[0]
    assert cut == free[:free.index(stop)]
    streamed = "".join(p for _, p in stream_text(model, tok, ["the"],
                                                   GenerationConfig(max_new_tokens=40, temperature=0.0, stop=[stop])))
    assert streamed == cut


def test_long_prompt_is_truncated_with_a_warning(lm):
    model, tok = lm
    with pytest.warns(UserWarning, match="exceeds the model's context"):
        out = generate_text(model, tok, ["the cat sat " * 20], GenerationConfig(max_new_tokens=5, temperature=0))
    assert len(out[0]) > 0


def test_generation_runs_past_the_context_window(lm):
    model, tok = lm
    out = generate_text(model, tok, ["a"], GenerationConfig(max_new_tokens=100, seed=0, stop_at_eos=False))
    assert len(out[0]) >= 90


def test_processors():
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.0]])
    seen = torch.zeros(1, 4, dtype=torch.bool)
    assert torch.isinf(P.top_k(2)(logits, seen)).tolist() == [[True, False, False, True]]
    probs = logits.softmax(-1)[0]  # 0.087 0.644 0.237 0.032
    kept = ~torch.isinf(P.top_p(0.7)(logits, seen))
    assert kept.tolist() == [[False, True, True, False]]
    assert probs[1] < 0.7
    seen[0, 1] = seen[0, 3] = True
    pen = P.repetition_penalty(2.0)(torch.tensor([[1.0, 3.0, 2.0, -1.0]]), seen)
    assert pen.tolist() == [[1.0, 1.5, 2.0, -2.0]]
    assert P.temperature(2.0)(logits, seen).tolist() == [[0.5, 1.5, 1.0, 0.0]]


@pytest.mark.parametrize("bad", [dict(temperature=-1), dict(top_p=0.0), dict(top_p=1.5), dict(top_k=0),
                                 dict(max_new_tokens=-1), dict(repetition_penalty=0), dict(stop=[""])])
def test_bad_generation_options(bad):
    with pytest.raises(ConfigError):
        GenerationConfig(**bad).validate()
