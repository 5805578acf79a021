import pytest
import torch
import torch.nn.functional as F

from aigc.errors import ConfigError
from aigc.generate.seq2seq import DecodeConfig, beam_search, greedy_decode
from aigc.models.seq2seq import Seq2Seq, Seq2SeqConfig

PAD = BOS = EOS = 0


def tiny(norm: str = "pre", seed: int = 0, vocab: int = 40) -> Seq2Seq:
    torch.manual_seed(seed)
    cfg = Seq2SeqConfig(vocab_size=vocab, max_len=48, n_encoder_layers=2, n_decoder_layers=2, d_model=32,
                        n_head=4, d_ff=64, dropout=0.0, norm=norm, pad_id=PAD)
    return Seq2Seq(cfg).eval()


def _src():
    src = torch.randint(1, 40, (4, 10))
    src[0, 6:] = PAD
    src[2, 3:] = PAD
    return src


@pytest.mark.parametrize("norm", ["pre", "post"])
def test_padding_never_changes_real_outputs(norm):
    model = tiny(norm)
    src, tgt = _src(), torch.randint(1, 40, (4, 7))
    with torch.no_grad():
        memory, _ = model.encode(src)
        logits = model(src, tgt)
        for row, n in ((0, 6), (2, 3)):
            alone_mem, _ = model.encode(src[row:row + 1, :n])
            assert (alone_mem[0] - memory[row, :n]).abs().max() < 1e-5
            assert (model(src[row:row + 1, :n], tgt[row:row + 1]) - logits[row]).abs().max() < 1e-5
            more_pad = torch.cat([src[row:row + 1], torch.zeros(1, 5, dtype=torch.long)], 1)
            assert (model(more_pad, tgt[row:row + 1]) - logits[row]).abs().max() < 1e-5


def test_decoder_is_causal():
    model = tiny()
    src, tgt = _src(), torch.randint(1, 40, (4, 9))
    changed = tgt.clone()
    changed[:, 5:] = torch.randint(1, 40, (4, 4))
    with torch.no_grad():
        a, b = model(src, tgt), model(src, changed)
    assert torch.allclose(a[:, :5], b[:, :5], atol=1e-6)
    assert not torch.allclose(a[:, 5:], b[:, 5:])


@pytest.mark.parametrize("norm", ["pre", "post"])
def test_cached_decoding_equals_full_recompute(norm):
    model = tiny(norm)
    src, tgt = _src(), torch.randint(1, 40, (4, 9))
    with torch.no_grad():
        full = model(src, tgt)
        memory, mask = model.encode(src)
        kv, cache = model.memory_kv(memory), model.new_cache(4)
        steps = [model.decode(tgt[:, :4], kv, mask, cache)] + [model.decode(tgt[:, t:t + 1], kv, mask, cache)
                                                                for t in range(4, 9)]
    assert (torch.cat(steps, 1) - full).abs().max() < 1e-5


def test_beam_search_cache_beam_one_and_batching():
    model = tiny(seed=1)
    src = _src()
    greedy = greedy_decode(model, src, bos_id=BOS, eos_id=EOS)
    beam1 = beam_search(model, src, bos_id=BOS, eos_id=EOS, cfg=DecodeConfig(beam=1))
    for g, b in zip(greedy, beam1):
        assert g.tokens == b.tokens and g.score == pytest.approx(b.score, abs=1e-4)
    cached = beam_search(model, src, bos_id=BOS, eos_id=EOS, cfg=DecodeConfig(beam=4))
    full = beam_search(model, src, bos_id=BOS, eos_id=EOS, cfg=DecodeConfig(beam=4), use_cache=False)
    for c, f in zip(cached, full):
        assert c.tokens == f.tokens and c.score == pytest.approx(f.score, abs=1e-4)
    for row in range(4):
        n = int((src[row] != PAD).sum())
        alone = beam_search(model, src[row:row + 1, :n], bos_id=BOS, eos_id=EOS, cfg=DecodeConfig(beam=4))[0]
        assert alone.tokens == cached[row].tokens
    for hyp, greedy_hyp in zip(cached, greedy):  # a wider beam never finds a worse length-normalised score
        assert hyp.normalized >= greedy_hyp.normalized - 1e-4


def test_one_row_first_step_then_widen_equals_k_rows_throughout():
    """Beam search's first step runs on one row per source and then widens to K rows;
    the next steps must see what K identical rows from the start would have seen."""
    model, src, K = tiny(seed=4), _src(), 3
    first = torch.full((4,), BOS)
    later = [torch.randint(1, 40, (4 * K,)) for _ in range(3)]
    with torch.no_grad():
        wide = model.start_decoding(src, K, 5)
        expected = [model.step(first.repeat_interleave(K), wide)[::K]] + [model.step(t, wide) for t in later]
        narrow = model.start_decoding(src, 1, 5)
        got = [model.step(first, narrow)]
        narrow.widen(K)
        got += [model.step(t, narrow) for t in later]
    for e, g in zip(expected, got):
        assert (e - g).abs().max() < 1e-5
    with pytest.raises(ValueError, match="one row per source"):
        narrow.widen(2)


def test_reserved_widening_and_dropping_sources_match_fresh_states():
    """widen() into reserved columns (no copy) and dropping a non-contiguous set of sources
    (compacted in place) give the logits of states built for those rows from the start."""
    model, src, K = tiny(seed=5), _src(), 2
    first, later = torch.full((4,), BOS), [torch.randint(1, 40, (4 * K,)) for _ in range(2)]
    keep = [1, 3]
    rows = torch.tensor([r * K + k for r in keep for k in range(K)])
    with torch.no_grad():
        state = model.start_decoding(src, 1, 5, widen_to=K)
        columns = state.k.size(3)
        model.step(first, state)
        state.widen(K)
        assert state.k.size(3) == columns                      # reserved: no new cache
        model.step(later[0], state)
        state.reorder(rows, keep)
        got = model.step(later[1][rows], state)
        alone = model.start_decoding(src[keep], K, 5)
        model.step(first[keep].repeat_interleave(K), alone)
        model.step(later[0][rows], alone)
        expected = model.step(later[1][rows], alone)
    assert (got - expected).abs().max() < 1e-5


def test_cache_memory_is_reused_by_the_next_call_but_never_shared():
    import threading

    from aigc.models.seq2seq import CacheWorkspace

    model, src = tiny(seed=6), _src()
    cfg = DecodeConfig(beam=3, min_len=6, max_len_a=0.0, max_len_b=8)
    first = beam_search(model, src, bos_id=BOS, eos_id=EOS, cfg=cfg)

    def ptr(state):
        return state.k.untyped_storage().data_ptr()

    with torch.no_grad():
        a = model.start_decoding(src, 1, 9, widen_to=3)
        b = model.start_decoding(src, 1, 9, widen_to=3)   # a is alive: b gets memory of its own
        assert ptr(a) != ptr(b)
        held = {ptr(a), ptr(b)}
        del a, b                                            # both buffers go back to the model's pool
        assert len(CacheWorkspace.of(model).free) == 2
        c = model.start_decoding(src, 1, 9, widen_to=3)
        assert ptr(c) in held
        seen = []                                           # another thread takes the other free one
        worker = threading.Thread(target=lambda: seen.append(ptr(model.start_decoding(src, 1, 9, widen_to=3))))
        worker.start(), worker.join()
        assert seen[0] in held and seen[0] != ptr(c)
        del c
        big = model.start_decoding(src, 1, 40, widen_to=3)  # larger than both: they are released
        assert ptr(big) not in held and len(CacheWorkspace.of(model).free) == 0
        del big
    again = beam_search(model, src, bos_id=BOS, eos_id=EOS, cfg=cfg)  # reused memory, same result
    assert [(h.tokens, h.score) for h in again] == [(h.tokens, h.score) for h in first]


def test_beam_respects_max_length():
    model = tiny(seed=2)
    src = _src()
    cfg = DecodeConfig(beam=3, max_len_a=0.0, max_len_b=4)
    for hyp in beam_search(model, src, bos_id=BOS, eos_id=EOS, cfg=cfg):
        assert len(hyp.tokens) <= 4


def test_long_beams_survive_cache_compaction(monkeypatch):
    """Beams of 20+ tokens: the cache drops unused key columns several times and still
    gives the same hypotheses and scores as recomputing every prefix."""
    from aigc.models import seq2seq as s2s

    compactions = []
    original = s2s.DecodeState._drop_unused_columns

    def counted(self):
        before = self.filled
        original(self)
        compactions.append(before - self.filled)

    monkeypatch.setattr(s2s.DecodeState, "_drop_unused_columns", counted)
    model = tiny(seed=3)
    src = _src()
    cfg = DecodeConfig(beam=4, min_len=20, max_len_a=0.0, max_len_b=24)
    cached = beam_search(model, src, bos_id=BOS, eos_id=EOS, cfg=cfg)
    assert any(dropped > 0 for dropped in compactions)
    monkeypatch.setattr(s2s.DecodeState, "_drop_unused_columns", original)
    full = beam_search(model, src, bos_id=BOS, eos_id=EOS, cfg=cfg, use_cache=False)
    for c, f in zip(cached, full):
        assert len(c.tokens) >= 20
        assert c.tokens == f.tokens and c.score == pytest.approx(f.score, abs=1e-4)


def test_blockwise_topk_equals_topk():
    from aigc.generate.seq2seq import _topk

    torch.manual_seed(0)
    for width in (8000, 32000, 50):
        x = torch.randn(6, width)
        x[0, :200] = 5.0  # ties and a crowded block
        for k in (1, 4, 8):
            expected, got = x.topk(k, dim=1), _topk(x, k)
            assert torch.equal(expected.values, got[0])
            assert torch.equal(x.gather(1, got[1]), expected.values)


def test_overfits_a_few_pairs_until_greedy_reproduces_them():
    torch.manual_seed(0)
    model = Seq2Seq(Seq2SeqConfig(vocab_size=30, max_len=32, n_encoder_layers=2, n_decoder_layers=2, d_model=64,
                                  n_head=4, d_ff=128, dropout=0.0, pad_id=PAD))
    pairs = [([5, 6, 7], [11, 12]), ([8, 9], [13, 14, 15, 16]), ([10, 5, 9, 7], [17]), ([6, 6], [18, 19, 18])]
    S, T = 4, 5
    src = torch.tensor([s + [PAD] * (S - len(s)) for s, _ in pairs])
    tgt_in = torch.tensor([[BOS] + t + [PAD] * (T - 1 - len(t)) for _, t in pairs])
    tgt_out = torch.tensor([t + [EOS] + [-100] * (T - 1 - len(t)) for _, t in pairs])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(300):
        loss = F.cross_entropy(model(src, tgt_in).view(-1, 30), tgt_out.view(-1), ignore_index=-100)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    out = greedy_decode(model, src, bos_id=BOS, eos_id=EOS)
    assert [h.tokens for h in out] == [t for _, t in pairs]
    assert [h.tokens for h in beam_search(model, src, bos_id=BOS, eos_id=EOS)] == [t for _, t in pairs]


@pytest.mark.parametrize("bad", [dict(d_model=30), dict(norm="sandwich"), dict(activation="swish"),
                                 dict(pad_id=99), dict(n_decoder_layers=0), dict(init="kaiming")])
def test_bad_config(bad):
    with pytest.raises(ConfigError):
        Seq2Seq(Seq2SeqConfig(**{"vocab_size": 40, **bad}))


@pytest.mark.parametrize("init, matrix_std, embed_std",
                         [("normal", 0.02, 0.02), ("xavier", (2 / 160) ** 0.5, 32 ** -0.5)])
def test_initialisation(init, matrix_std, embed_std):
    torch.manual_seed(0)
    model = Seq2Seq(Seq2SeqConfig(vocab_size=400, max_len=48, n_encoder_layers=1, n_decoder_layers=1, d_model=32,
                                  n_head=4, d_ff=128, init=init))
    fc = model.encoder[0].ff.fc
    assert fc.weight.std().item() == pytest.approx(matrix_std, rel=0.1)   # 32 -> 128: fan_in + fan_out = 160
    assert model.src_embed.weight.std().item() == pytest.approx(embed_std, rel=0.1)
    assert model.out.weight is model.src_embed.weight
    assert fc.bias.abs().max().item() == 0.0
