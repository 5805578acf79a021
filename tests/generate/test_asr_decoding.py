import dataclasses

import pytest
import torch
import torch.nn.functional as F

from aigc.data.batching import IGNORE
from aigc.errors import ConfigError
from aigc.generate.asr import (
    TranscribeConfig,
    ctc_align,
    ctc_greedy,
    ctc_scores,
    decode_batch,
    joint_rescore,
    transcribe,
    windows,
)
from aigc.generate.seq2seq import DecodeConfig, beam_search, greedy_decode
from aigc.models.asr import ASRConfig, ASRModel
from aigc.objectives.ctc import JointCTCAttentionLoss
from aigc.eval.wer import edit_distance

BLANK, BOS = 0, 1
EOS = BOS
V, M = 10, 16
TOKEN_FRAMES, GAP = 12, 4
UTTERANCES = [[2, 3, 4], [5, 5, 6, 7], [8, 9, 2, 3, 4], [6, 9]]


def render(tokens: list[int], noise: torch.Generator) -> torch.Tensor:
    """Toy speech: token k lights mel bins 2(k-2) and 2(k-2)+1 for TOKEN_FRAMES frames, silence between."""
    frames = GAP + len(tokens) * (TOKEN_FRAMES + GAP)
    x = torch.full((M, frames), -5.0)
    for i, k in enumerate(tokens):
        start = GAP + i * (TOKEN_FRAMES + GAP)
        x[2 * (k - 2):2 * (k - 2) + 2, start:start + TOKEN_FRAMES] = 0.0
    return x + 0.1 * torch.randn(x.shape, generator=noise)


def batch_of(utts, seed=0):
    g = torch.Generator().manual_seed(seed)
    feats = [render(u, g) for u in utts]
    T = max(f.size(1) for f in feats)
    x = torch.full((len(utts), M, T), -5.0)
    for i, f in enumerate(feats):
        x[i, :, :f.size(1)] = f
    lengths = torch.tensor([f.size(1) for f in feats])
    U = max(len(u) for u in utts) + 1
    tgt_in = torch.full((len(utts), U), BLANK)
    tgt_out = torch.full((len(utts), U), IGNORE)
    for i, u in enumerate(utts):
        tgt_in[i, :len(u) + 1] = torch.tensor([BOS] + u)
        tgt_out[i, :len(u) + 1] = torch.tensor(u + [EOS])
    return x, lengths, tgt_in, tgt_out


def tiny(seed=0) -> ASRModel:
    torch.manual_seed(seed)
    return ASRModel(ASRConfig(vocab_size=V, n_mels=M, conv_channels=8, d_model=32, n_head=4, n_encoder_layers=2,
                              n_decoder_layers=1, d_ff=64, dropout=0.0, max_frames=1200, max_target_len=40))


@pytest.fixture(scope="module")
def trained():
    """A tiny recogniser overfit on four toy utterances (a few hundred steps on a CPU)."""
    model = tiny()
    batch = batch_of(UTTERANCES)
    objective = JointCTCAttentionLoss(ctc_weight=0.5, smoothing=0.0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(400):
        model.train()
        opt.zero_grad()
        objective(model, batch).backward()
        opt.step()
        if step % 25 == 24:
            model.eval()
            ok = all([t.tokens for t in decode_batch(model, batch[0], batch[1], TranscribeConfig(method=m),
                                                     bos_id=BOS, eos_id=EOS)] == UTTERANCES
                     for m in ("greedy-ctc", "beam"))
            if ok:
                break
    return model.eval(), batch, step + 1


def render_varied(tokens: list[int], g: torch.Generator) -> torch.Tensor:
    """As ``render``, with token durations of 8-14 frames and silences of 2-6."""
    def silence():
        return torch.full((M, int(torch.randint(2, 7, (1,), generator=g))), -5.0)
    parts = [silence()]
    for k in tokens:
        x = torch.full((M, int(torch.randint(8, 15, (1,), generator=g))), -5.0)
        x[2 * (k - 2):2 * (k - 2) + 2] = 0.0
        parts += [x, silence()]
    x = torch.cat(parts, 1)
    return x + 0.1 * torch.randn(x.shape, generator=g)


@pytest.fixture(scope="module")
def general():
    """A tiny CTC recogniser trained on fresh random toy utterances every step: it reads any sequence."""
    model = tiny()
    g = torch.Generator().manual_seed(0)
    objective = JointCTCAttentionLoss(ctc_weight=0.9, smoothing=0.0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    held_out = batch_of(UTTERANCES)
    for step in range(600):
        utts = [torch.randint(2, V, (int(torch.randint(1, 7, (1,), generator=g)),), generator=g).tolist()
                for _ in range(8)]
        feats = [render_varied(u, g) for u in utts]
        x = torch.full((8, M, max(f.size(1) for f in feats)), -5.0)
        for i, f in enumerate(feats):
            x[i, :, :f.size(1)] = f
        _, _, tgt_in, tgt_out = batch_of(utts)
        model.train()
        opt.zero_grad()
        objective(model, (x, torch.tensor([f.size(1) for f in feats]), tgt_in, tgt_out)).backward()
        opt.step()
        if step % 50 == 49:
            model.eval()
            out = decode_batch(model, held_out[0], held_out[1], TranscribeConfig(method="greedy-ctc"),
                               bos_id=BOS, eos_id=EOS)
            if [t.tokens for t in out] == UTTERANCES:
                break
    return model.eval(), step + 1


def char_errors(hyp: list[int], ref: list[int]) -> int:
    d = list(range(len(ref) + 1))
    for i, h in enumerate(hyp, 1):
        prev, d[0] = d[0], i
        for j, r in enumerate(ref, 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (h != r))
    return d[-1]


@pytest.mark.parametrize("method", ["greedy-ctc", "beam", "joint"])
def test_overfit_toy_utterances_to_zero_error(trained, method):
    model, (feats, lengths, _, _), steps = trained
    out = decode_batch(model, feats, lengths, TranscribeConfig(method=method), bos_id=BOS, eos_id=EOS)
    errors = sum(char_errors(t.tokens, u) for t, u in zip(out, UTTERANCES))
    assert errors == 0, (steps, [t.tokens for t in out])
    for t, n in zip(out, lengths.tolist()):  # each token placed in time, in order, inside the audio
        assert len(t.frames) == len(t.tokens) and t.frames == sorted(t.frames) and all(0 <= f < n for f in t.frames)


def test_alignment_places_tokens_where_they_were_spoken(general):
    model, _ = general
    feats, lengths, _, _ = batch_of(UTTERANCES)
    with torch.no_grad():
        memory, mem_lengths = model.encode(feats, lengths)
        lp = model.ctc_logits(memory).log_softmax(-1)
    for b, u in enumerate(UTTERANCES):
        frames = ctc_align(lp[b, :int(mem_lengths[b])], u)
        spoken = [GAP + i * (TOKEN_FRAMES + GAP) for i in range(len(u))]
        assert all(abs(4 * f + 3 - s) <= TOKEN_FRAMES for f, s in zip(frames, spoken)), (frames, spoken)
    assert ctc_align(lp[0, :2], [2, 3, 4]) is None  # 3 tokens cannot fit 2 frames


def test_chunked_transcription_equals_the_whole_where_it_fits(trained):
    model, (feats, lengths, _, _), _ = trained
    for b in range(len(UTTERANCES)):
        x = feats[b, :, :int(lengths[b])]
        for method in ("greedy-ctc", "beam", "joint"):
            cfg = TranscribeConfig(method=method, chunk_s=x.size(1) / 100.0, overlap_s=0.1)
            whole = decode_batch(model, x[None], None, cfg, bos_id=BOS, eos_id=EOS)[0]
            chunked = transcribe(model, x, cfg, bos_id=BOS, eos_id=EOS)
            assert chunked == whole


def test_long_audio_in_overlapping_windows(general):
    model, steps = general
    g = torch.Generator().manual_seed(5)
    utts = UTTERANCES + UTTERANCES[::-1]
    x = torch.cat([render(u, g) for u in utts], 1)   # 8 utterances back to back: 500+ frames
    ref = [t for u in utts for t in u]
    # windows of 1.2 s overlapping by 0.4 s, each cut at the middle of its overlaps by CTC token times
    cfg = TranscribeConfig(method="greedy-ctc", chunk_s=1.2, overlap_s=0.4)
    out = transcribe(model, x, cfg, bos_id=BOS, eos_id=EOS, batch_size=3)
    assert len(windows(x.size(1), 120, 40)) >= 6
    assert char_errors(out.tokens, ref) <= 1, (steps, out.tokens, ref)
    assert out.frames == sorted(out.frames) and out.frames[-1] < x.size(1)


def test_windows_cover_the_audio_and_split_overlaps_in_the_middle():
    assert windows(100, 200, 20) == [(0, 100, 0, 100)]
    for n, chunk, ov in ((1000, 200, 20), (2001, 2000, 200), (450, 100, 0), (999, 300, 299)):
        ws = windows(n, chunk, ov)
        assert ws[0][0] == 0 and ws[-1][1] == n and ws[0][2] == 0 and ws[-1][3] == n
        assert all(e - s == chunk for s, e, _, _ in ws)
        for (s0, e0, _, hi), (s1, e1, lo, _) in zip(ws, ws[1:]):
            assert hi == lo and s1 <= hi <= e0 and s1 < e0 + 1


def test_beam_is_at_least_as_likely_as_greedy():
    for seed in range(4):
        model = tiny(seed).eval()
        torch.manual_seed(seed + 10)
        feats, lengths = torch.randn(3, M, 120), torch.tensor([120, 90, 60])
        with torch.no_grad():
            memory, mem_lengths = model.encode(feats, lengths)
        bound = model.bind(memory, mem_lengths)
        cfg = DecodeConfig(beam=4, length_penalty=0.0, max_len_a=0.0, max_len_b=12, early_stopping=False)
        limits = [12] * 3
        greedy = greedy_decode(bound, memory, bos_id=BOS, eos_id=EOS,
                               cfg=dataclasses.replace(cfg, beam=1), src_lengths=limits)
        beam = beam_search(bound, memory, bos_id=BOS, eos_id=EOS, cfg=cfg, src_lengths=limits)
        for g, b in zip(greedy, beam):
            assert b.score >= g.score - 1e-5, (seed, g, b)
        # the cached beam equals the one recomputing every prefix
        uncached = beam_search(bound, memory, bos_id=BOS, eos_id=EOS, cfg=cfg, src_lengths=limits, use_cache=False)
        assert [h.tokens for h in uncached] == [h.tokens for h in beam]


def test_joint_rescoring_ranks_by_the_combined_score():
    model = tiny(3).eval()
    torch.manual_seed(4)
    feats = torch.randn(1, M, 100)
    cfg = TranscribeConfig(method="joint", beam=5, ctc_weight=0.4, length_penalty=0.6, max_len=8)
    from aigc.generate.asr import attention_n_best
    with torch.no_grad():
        memory, mem_lengths = model.encode(feats)
        lp = model.ctc_logits(memory).log_softmax(-1)[0]
    n_best = attention_n_best(model, memory, mem_lengths, cfg, bos_id=BOS, eos_id=EOS)[0]
    assert len(n_best) >= 2
    hyps = [h.tokens for h in n_best]
    ctc = ctc_scores(lp, int(mem_lengths[0]), hyps)
    # the CTC score of each full hypothesis is -CTC loss (torch's, as a cross-check)
    for h, c in zip(hyps, ctc):
        ref = -F.ctc_loss(lp[:, None], torch.tensor([h or [0]]), mem_lengths, torch.tensor([len(h)]),
                          reduction="sum")
        assert abs(c - ref.item()) < 1e-3
    ranked = joint_rescore(hyps, [h.score for h in n_best], ctc, 0.4, 0.6)
    combined = [(0.4 * c + 0.6 * h.score) / ((5 + len(h.tokens) + 1) / 6) ** 0.6 for h, c in zip(n_best, ctc)]
    assert ranked[0].score == pytest.approx(max(combined))
    assert all(ranked[0].score >= r.score for r in ranked)
    best = decode_batch(model, feats, None, cfg, bos_id=BOS, eos_id=EOS)[0]
    assert best.tokens == ranked[0].tokens and best.score == pytest.approx(ranked[0].score)


def test_greedy_ctc_collapses_repeats_and_drops_blanks():
    ids = torch.tensor([[0, 3, 3, 0, 3, 4, 4, 0, 0, 5]])
    lp = F.one_hot(ids, 6).float().log()
    (tokens, frames, score), = ctc_greedy(lp, torch.tensor([10]))
    assert tokens == [3, 3, 4, 5] and frames == [1, 4, 5, 9] and score == 0.0
    (tokens, _, _), = ctc_greedy(lp, torch.tensor([4]))
    assert tokens == [3]


def test_bad_configs_and_inputs_are_refused():
    for bad in (dict(method="viterbi"), dict(beam=0), dict(ctc_weight=1.5), dict(chunk_s=0.0),
                dict(chunk_s=2.0, overlap_s=2.0), dict(overlap_s=-1.0), dict(max_len=0)):
        with pytest.raises(ConfigError):
            TranscribeConfig(**bad)
    with pytest.raises(ConfigError):
        dataclasses.replace(TranscribeConfig(), beam=-3)
    model = tiny().eval()
    with pytest.raises(ConfigError, match="mel channels"):
        transcribe(model, torch.randn(M + 2, 50), bos_id=BOS, eos_id=EOS)
    with pytest.raises(ConfigError, match="empty"):
        transcribe(model, torch.randn(M, 0), bos_id=BOS, eos_id=EOS)
    with pytest.raises(ConfigError, match="one recording"):
        transcribe(model, torch.randn(2, M, 50), bos_id=BOS, eos_id=EOS)
    with pytest.raises(ConfigError, match="exceed"):
        decode_batch(model, torch.randn(2, M, 50), torch.tensor([50, 70]), bos_id=BOS, eos_id=EOS)
    with pytest.raises(ConfigError, match="too short"):
        transcribe(model, torch.randn(M, 5), bos_id=BOS, eos_id=EOS)
    with pytest.raises(ConfigError, match="too wide"):
        decode_batch(model, torch.randn(1, M, 50), None, TranscribeConfig(beam=6), bos_id=BOS, eos_id=EOS)


def test_ctc_prefix_score_of_a_finished_hypothesis_is_its_ctc_likelihood(general):
    from aigc.generate.asr import CTCPrefixScorer
    model, _ = general
    feats, lengths, _, _ = batch_of(UTTERANCES)
    with torch.no_grad():
        memory, mem_lengths = model.encode(feats, lengths)
        lp_all = model.ctc_logits(memory).log_softmax(-1)
    for b, u in enumerate(UTTERANCES):
        n = int(mem_lengths[b])
        lp = lp_all[b, :n]
        scorer = CTCPrefixScorer(lp, BLANK, EOS)
        r, prefix, last = scorer.initial(), [], [None]
        cands = torch.tensor([[u[0], 7, EOS]])
        for i, tok in enumerate(u):
            cands = torch.tensor([[tok, EOS, 2 if tok != 2 else 3]])
            psi, new_r = scorer.score(r, last, i, cands)
            # a prefix is at least as likely as any transcript that starts with it
            assert psi[0, 0] >= ctc_scores(lp, n, [prefix + [tok]])[0] - 1e-4
            assert psi[0, 1] == pytest.approx(ctc_scores(lp, n, [prefix])[0], abs=1e-3)  # the end: full score
            r, prefix, last = new_r[:, 0], prefix + [tok], [tok]
        psi, _ = scorer.score(r, last, len(u), torch.tensor([[EOS]]))
        assert psi[0, 0] == pytest.approx(ctc_scores(lp, n, [u])[0], abs=1e-3)


def test_one_pass_joint_decoding(trained, general):
    model, (feats, lengths, _, _), _ = trained
    for lam in (0.3, 0.7):
        out = decode_batch(model, feats, lengths, TranscribeConfig(method="one-pass", ctc_weight=lam),
                           bos_id=BOS, eos_id=EOS)
        assert [t.tokens for t in out] == UTTERANCES
        assert all(t.ctc_score is not None and t.att_score is not None for t in out)
    # CTC alone (λ = 1) steers even the untrained attention decoder of the CTC-trained model
    model, _ = general
    out = decode_batch(model, feats, lengths, TranscribeConfig(method="one-pass", ctc_weight=1.0, beam=3),
                       bos_id=BOS, eos_id=EOS)
    # that model's CTC is trained briefly, on as many threads as the run has (its numbers, so a token may
    # differ between machines): at most one edit in all
    assert sum(edit_distance(u, t.tokens) for u, t in zip(UTTERANCES, out)) <= 1
