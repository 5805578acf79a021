import pytest
import torch
import torch.nn.functional as F

from aigc.data.batching import IGNORE
from aigc.errors import ConfigError
from aigc.models.asr import ASRConfig, ASRModel
from aigc.objectives.ctc import (
    JointCTCAttentionLoss,
    ctc_log_likelihood,
    ctc_loss,
    ctc_targets,
)


def _case(seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    T, B, V = 12, 6, 6
    logits = torch.randn(T, B, V, dtype=dtype, requires_grad=True)
    targets = torch.tensor([[1, 1, 2, 3, 3],    # repeats: need blanks between them
                            [2, 2, 2, 0, 0],    # padding past the length (any value)
                            [1, 2, 3, 4, 5],
                            [0, 0, 0, 0, 0],    # empty target
                            [5, 5, 5, 5, 5],    # 5 repeats = 9 states at least: fits 10 frames exactly-ish
                            [4, 1, 4, 1, 4]])
    input_lengths = torch.tensor([12, 7, 12, 5, 10, 1])
    target_lengths = torch.tensor([5, 3, 5, 0, 5, 1])
    return logits, targets, input_lengths, target_lengths


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_values_and_gradients_match_torch(reduction, dtype):
    for seed in range(3):
        logits, targets, il, tl = _case(seed, dtype)
        ours = ctc_loss(logits.log_softmax(-1), targets, il, tl, reduction=reduction)
        ref = F.ctc_loss(logits.log_softmax(-1), targets, il, tl, reduction=reduction)
        tol = 1e-9 if dtype == torch.float64 else 1e-4
        assert torch.allclose(ours, ref, atol=tol, rtol=tol), (ours, ref)
        weights = torch.rand_like(ours)  # a non-uniform upstream gradient
        g_ours, = torch.autograd.grad((ours * weights).sum(), logits)
        g_ref, = torch.autograd.grad((ref * weights).sum(), logits)
        assert torch.allclose(g_ours, g_ref, atol=tol, rtol=tol), (g_ours - g_ref).abs().max()


def test_frames_past_the_input_length_get_no_gradient():
    logits, targets, il, tl = _case()
    loss = ctc_loss(logits.log_softmax(-1), targets, il, tl)
    g, = torch.autograd.grad(loss, logits)
    assert g[7:, 1].abs().max() == 0 and g[1:, 5].abs().max() == 0
    assert torch.isfinite(g).all()


def test_impossible_alignments_are_infinite_or_zeroed():
    torch.manual_seed(1)
    logits = torch.randn(4, 2, 5, dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([[1, 1, 1], [1, 2, 3]])
    il, tl = torch.tensor([4, 2]), torch.tensor([3, 3])  # 1,_,1,_,1 needs 5 frames; 1,2,3 needs 3
    ours = ctc_loss(logits.log_softmax(-1), targets, il, tl, reduction="none")
    ref = F.ctc_loss(logits.log_softmax(-1), targets, il, tl, reduction="none")
    assert torch.isinf(ours).all() and torch.isinf(ref).all()
    ours = ctc_loss(logits.log_softmax(-1), targets, il, tl, reduction="sum", zero_infinity=True)
    ref = F.ctc_loss(logits.log_softmax(-1), targets, il, tl, reduction="sum", zero_infinity=True)
    assert ours.item() == ref.item() == 0.0
    g, = torch.autograd.grad(ours, logits)
    assert torch.isfinite(g).all() and g.abs().max() == 0


def test_empty_targets_everywhere_and_single_frames():
    torch.manual_seed(2)
    logits = torch.randn(3, 3, 4, dtype=torch.float64, requires_grad=True)
    targets = torch.zeros(3, 0, dtype=torch.long)
    il, tl = torch.tensor([3, 1, 2]), torch.tensor([0, 0, 0])
    ours = ctc_loss(logits.log_softmax(-1), targets, il, tl, reduction="none")
    ref = F.ctc_loss(logits.log_softmax(-1), torch.zeros(3, 1, dtype=torch.long), il, tl, reduction="none")
    assert torch.allclose(ours, ref)
    # the empty target's probability is that of blanks all along
    lp = logits.log_softmax(-1)
    assert torch.allclose(ours[0], -lp[:3, 0, 0].sum())


def test_likelihood_is_batch_first_and_ignores_target_padding():
    logits, targets, il, tl = _case()
    lp = logits.log_softmax(-1)
    ll = ctc_log_likelihood(lp.transpose(0, 1), targets, il, tl)
    padded = targets.clone()
    padded[1, 3:] = IGNORE  # whatever sits past a length is never read
    assert torch.allclose(ctc_log_likelihood(lp.transpose(0, 1), padded, il, tl), ll)
    assert torch.allclose(-ll, F.ctc_loss(lp, targets, il, tl, reduction="none"))


def test_bad_arguments_are_refused():
    logits, targets, il, tl = _case()
    with pytest.raises(ConfigError, match="reduction"):
        ctc_loss(logits.log_softmax(-1), targets, il, tl, reduction="avg")
    with pytest.raises(ConfigError, match="exceed"):
        ctc_loss(logits.log_softmax(-1), targets, il + 20, tl)
    with pytest.raises(ConfigError, match="frames, batch, vocab"):
        ctc_loss(logits[0], targets, il, tl)


# ---- the joint objective -----------------------------------------------------------------------------

def _tiny_asr(seed=0):
    torch.manual_seed(seed)
    cfg = ASRConfig(vocab_size=12, n_mels=16, conv_channels=4, d_model=16, n_head=2, n_encoder_layers=1,
                    n_decoder_layers=1, d_ff=32, dropout=0.0, max_frames=200, max_target_len=16)
    return ASRModel(cfg)


def _batch():
    torch.manual_seed(3)
    feats = torch.randn(2, 16, 60)
    lengths = torch.tensor([60, 41])
    tgt_in = torch.tensor([[1, 3, 4, 4, 5], [1, 6, 7, 0, 0]])
    tgt_out = torch.tensor([[3, 4, 4, 5, 1], [6, 7, 1, IGNORE, IGNORE]])
    return feats, lengths, tgt_in, tgt_out


def test_ctc_targets_drop_the_end_token():
    _, _, _, tgt_out = _batch()
    targets, lengths = ctc_targets(tgt_out)
    assert lengths.tolist() == [4, 2]
    assert targets[0].tolist() == [3, 4, 4, 5] and targets[1, :2].tolist() == [6, 7]


def test_joint_loss_is_the_weighted_sum_of_its_parts():
    model, batch = _tiny_asr(), _batch()
    objective = JointCTCAttentionLoss(ctc_weight=0.3, smoothing=0.1)
    loss = objective(model, batch)
    terms = objective.last
    assert torch.allclose(loss.detach(), 0.3 * terms.ctc + 0.7 * terms.att)
    # the parts are what they say: torch's CTC (per target token) and label-smoothed CE
    att_logits, ctc_logits, mem_lengths = model(batch[0], batch[1], batch[2])
    ref_ctc = F.ctc_loss(ctc_logits.log_softmax(-1).transpose(0, 1), torch.tensor([[3, 4, 4, 5], [6, 7, 0, 0]]),
                         mem_lengths, torch.tensor([4, 2]), zero_infinity=True)
    ref_att = F.cross_entropy(att_logits.reshape(-1, 12), batch[3].reshape(-1), ignore_index=IGNORE,
                              label_smoothing=0.1)
    assert torch.allclose(terms.ctc, ref_ctc, atol=1e-5) and torch.allclose(terms.att, ref_att, atol=1e-6)
    loss.backward()
    assert model.ctc_head.weight.grad.abs().sum() > 0 and model.decoder.out.weight.grad.abs().sum() > 0
    # torch's CTC plugs in with the same signature
    alt = JointCTCAttentionLoss(ctc_weight=0.3, smoothing=0.1, ctc=F.ctc_loss)(model, batch)
    assert torch.allclose(alt, loss, atol=1e-5)


def test_joint_weight_extremes_and_validation():
    model, batch = _tiny_asr(), _batch()
    only_att = JointCTCAttentionLoss(ctc_weight=0.0)
    only_att(model, batch)
    assert only_att.last.ctc.item() == 0.0 and only_att.last.loss.item() == only_att.last.att.item()
    only_ctc = JointCTCAttentionLoss(ctc_weight=1.0)
    only_ctc(model, batch)
    assert only_ctc.last.loss.item() == only_ctc.last.ctc.item()
    for bad in (dict(ctc_weight=1.5), dict(ctc_weight=-0.1), dict(smoothing=1.0)):
        with pytest.raises(ConfigError):
            JointCTCAttentionLoss(**bad)
