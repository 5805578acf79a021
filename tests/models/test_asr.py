import pytest
import torch

from aigc.errors import ConfigError
from aigc.models.asr import ASRConfig, ASRModel, subsampled_lengths

V, M = 20, 16


def tiny(seed: int = 0, norm: str = "pre", **kw) -> ASRModel:
    torch.manual_seed(seed)
    cfg = ASRConfig(vocab_size=V, n_mels=M, conv_channels=4, d_model=32, n_head=4, n_encoder_layers=2,
                    n_decoder_layers=2, d_ff=64, dropout=0.0, max_frames=400, max_target_len=24, norm=norm, **kw)
    return ASRModel(cfg).eval()


def test_subsampled_lengths_are_exact():
    model = tiny()
    for T in range(7, 80):
        h = model.frontend.conv(torch.zeros(1, 1, T, M))
        assert h.size(2) == subsampled_lengths(T) == int(subsampled_lengths(torch.tensor([T]))[0])
    assert subsampled_lengths(7) == 1 and subsampled_lengths(6) == 0 and subsampled_lengths(100) == 24


@pytest.mark.parametrize("norm", ["pre", "post"])
def test_padding_never_changes_real_outputs(norm):
    model = tiny(norm=norm)
    torch.manual_seed(1)
    feats, lengths = torch.randn(3, M, 90), torch.tensor([90, 53, 20])
    tgt = torch.randint(1, V, (3, 6))
    with torch.no_grad():
        memory, mem_lengths = model.encode(feats, lengths)
        att, ctc, _ = model(feats, lengths, tgt)
        assert mem_lengths.tolist() == [subsampled_lengths(n) for n in (90, 53, 20)]
        for row in range(3):
            n, m = int(lengths[row]), int(mem_lengths[row])
            alone, _ = model.encode(feats[row:row + 1, :, :n])
            assert (alone[0] - memory[row, :m]).abs().max() < 1e-5
            a, c, _ = model(feats[row:row + 1, :, :n], None, tgt[row:row + 1])
            assert (a[0] - att[row]).abs().max() < 1e-5 and (c[0] - ctc[row, :m]).abs().max() < 1e-5


def test_decoder_is_causal_and_the_cache_matches_teacher_forcing():
    model = tiny()
    torch.manual_seed(2)
    feats = torch.randn(2, M, 60)
    tgt = torch.randint(1, V, (2, 8))
    with torch.no_grad():
        memory, mem_lengths = model.encode(feats)
        full = model.decode(tgt, memory, mem_lengths)
        changed = tgt.clone()
        changed[:, 5:] = (changed[:, 5:] + 1) % V
        other = model.decode(changed, memory, mem_lengths)
        assert (other[:, :5] - full[:, :5]).abs().max() == 0  # a future token never reaches earlier logits
        assert (other[:, 5:] - full[:, 5:]).abs().max() > 1e-4
        cache = model.decoder.new_cache(2)
        steps = [model.decode(tgt[:, :3], memory, mem_lengths, cache)]
        steps += [model.decode(tgt[:, t:t + 1], memory, mem_lengths, cache) for t in range(3, 8)]
        assert (torch.cat(steps, 1) - full).abs().max() < 1e-5


def test_parameter_counts_add_up_and_embeddings_are_tied():
    model = tiny()
    counts = model.param_counts()
    assert counts["total"] == model.num_params() == sum(v for k, v in counts.items() if k != "total")
    assert model.decoder.out.weight is model.decoder.tgt_embed.weight
    assert tiny(tie_embeddings=False).num_params() == model.num_params() + V * 32


def test_bad_inputs_are_refused_with_clear_messages():
    model = tiny()
    with pytest.raises(ConfigError, match="mel channels"):
        model.encode(torch.randn(1, M + 1, 50))
    with pytest.raises(ConfigError, match="batch, n_mels"):
        model.encode(torch.randn(M, 50))
    with pytest.raises(ConfigError, match="float tensor"):
        model.encode(torch.zeros(1, M, 50, dtype=torch.long))
    with pytest.raises(ConfigError, match="exceed"):
        model.encode(torch.randn(2, M, 50), torch.tensor([50, 51]))
    with pytest.raises(ConfigError, match="empty"):
        model.encode(torch.randn(1, M, 0))
    with pytest.raises(ConfigError, match="too short"):
        model.encode(torch.randn(2, M, 50), torch.tensor([50, 6]))
    with pytest.raises(ConfigError, match="max_frames"):
        model.encode(torch.randn(1, M, 401))
    with pytest.raises(ConfigError, match="one per utterance"):
        model.encode(torch.randn(2, M, 50), torch.tensor([50]))


def test_bad_configs_are_refused():
    for bad in (dict(vocab_size=0), dict(vocab_size=10, blank_id=10), dict(vocab_size=10, d_model=30, n_head=4),
                dict(vocab_size=10, norm="mid"), dict(vocab_size=10, feature_norm="global"),
                dict(vocab_size=10, dropout=1.0), dict(vocab_size=10, n_mels=5)):
        with pytest.raises(ConfigError):
            ASRModel(ASRConfig(**bad))
