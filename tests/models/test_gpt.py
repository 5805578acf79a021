import pytest
import torch
import torch.nn.functional as F

from aigc.errors import ConfigError
from aigc.models.gpt import GPT, GPTConfig
from aigc.nn.attention import padded_causal_mask

from ..conftest import tiny_gpt


@pytest.mark.parametrize("pos", ["learned", "rotary"])
def test_future_tokens_never_change_past_logits(pos):
    model = tiny_gpt(pos)
    x = torch.randint(0, 50, (2, 20))
    y = x.clone()
    y[:, 12:] = torch.randint(0, 50, (2, 8))
    with torch.no_grad():
        a, b = model(x), model(y)
    assert torch.allclose(a[:, :12], b[:, :12], atol=1e-6)
    assert not torch.allclose(a[:, 12:], b[:, 12:])


@pytest.mark.parametrize("pos", ["learned", "rotary"])
def test_kv_cache_matches_full_recompute(pos):
    model = tiny_gpt(pos)
    x = torch.randint(0, 50, (3, 24))
    with torch.no_grad():
        full = model(x)
        cache = model.new_cache(3)
        parts = [model(x[:, :9], cache=cache), model(x[:, 9:13], cache=cache)]
        parts += [model(x[:, t:t + 1], cache=cache) for t in range(13, 24)]
    assert cache.length == 24
    assert (torch.cat(parts, 1) - full).abs().max() < 1e-5


@pytest.mark.parametrize("pos", ["learned", "rotary"])
def test_left_padded_batch_matches_each_row_alone(pos):
    model = tiny_gpt(pos)
    rows = [torch.randint(0, 50, (n,)) for n in (5, 11)]
    width = 11
    idx = torch.zeros(2, width, dtype=torch.long)
    valid = torch.zeros(2, width, dtype=torch.bool)
    for i, r in enumerate(rows):
        idx[i, width - len(r):] = r
        valid[i, width - len(r):] = True
    positions = (valid.long().cumsum(1) - 1).clamp(min=0)
    with torch.no_grad():
        cache = model.new_cache(2)
        batched = model(idx, cache=cache, positions=positions, mask=padded_causal_mask(valid))
        nxt = torch.tensor([[3], [7]])
        valid2 = torch.cat([valid, valid.new_ones(2, 1)], 1)
        step = model(nxt, cache=cache, positions=positions[:, -1:] + 1, mask=valid2[:, None, None, :])
        for i, r in enumerate(rows):
            alone = model(torch.cat([r, nxt[i]])[None])
            assert (batched[i, -1] - alone[0, len(r) - 1]).abs().max() < 1e-5
            assert (step[i, 0] - alone[0, -1]).abs().max() < 1e-5


def test_tied_embeddings_and_shapes():
    model = tiny_gpt()
    assert model.lm_head.weight is model.wte.weight
    out = model(torch.randint(0, 50, (4, 7)))
    assert out.shape == (4, 7, 50)
    assert model(torch.randint(0, 50, (4, 7)), last_only=True).shape == (4, 1, 50)


def test_overfits_one_small_batch():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=20, block_size=16, n_layer=2, n_head=2, n_embd=32)).train()
    x = torch.randint(0, 20, (4, 16))
    y = torch.roll(x, -1, 1)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(200):
        loss = F.cross_entropy(model(x).view(-1, 20), y.view(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05


def test_context_overflow_is_an_error():
    model = tiny_gpt(block=8)
    with pytest.raises(ValueError, match="exceeds the context"):
        model(torch.zeros(1, 9, dtype=torch.long))


@pytest.mark.parametrize("bad", [dict(n_embd=30, n_head=4), dict(pos="alibi"), dict(dropout=1.5),
                                 dict(n_layer=0)])
def test_bad_config_is_a_config_error(bad):
    with pytest.raises(ConfigError):
        GPT(GPTConfig(**{"vocab_size": 10, **bad}))
