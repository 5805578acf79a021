import pytest
import torch

from aigc.errors import ConfigError
from aigc.families.translate.model import translate_ids
from aigc.generate.seq2seq import DecodeConfig
from aigc.models.seq2seq import Seq2Seq, Seq2SeqConfig


def _model() -> Seq2Seq:
    torch.manual_seed(0)
    return Seq2Seq(Seq2SeqConfig(vocab_size=50, max_len=40, n_encoder_layers=1, n_decoder_layers=2, d_model=32,
                                 n_head=4, d_ff=64, dropout=0.0)).eval()


@pytest.mark.parametrize("beam", [1, 3])
def test_workers_decode_the_same_as_one(beam):
    model = _model()
    g = torch.Generator().manual_seed(1)
    sources = [torch.randint(1, 50, (int(n),), generator=g).tolist() for n in torch.randint(2, 12, (13,), generator=g)]
    cfg = DecodeConfig(beam=beam, max_len_a=1.0, max_len_b=3)
    threads = torch.get_num_threads()
    one = translate_ids(model, sources, bos_id=0, eos_id=0, cfg=cfg, batch_size=3)
    done = []
    many = translate_ids(model, sources, bos_id=0, eos_id=0, cfg=cfg, batch_size=3, workers=3, on_batch=done.append)
    assert [h.tokens for h in many] == [h.tokens for h in one]
    assert [h.score for h in many] == pytest.approx([h.score for h in one], abs=1e-5)
    assert sorted(done) == [1, 3, 3, 3, 3] and torch.get_num_threads() == threads


def test_workers_must_be_positive():
    with pytest.raises(ConfigError):
        translate_ids(_model(), [[1, 2]], bos_id=0, eos_id=0, cfg=DecodeConfig(), workers=0)
