import torch
from torch import nn

from aigc.train.ema import EMA


def test_ema_decay_warms_up_so_short_runs_forget_the_initial_weights():
    model = nn.Linear(3, 2)
    with torch.no_grad():
        model.weight.zero_()
    ema = EMA(model, decay=0.999)
    assert ema.decay_at(0) == 0.1 and ema.decay_at(10**6) == 0.999
    with torch.no_grad():
        model.weight.fill_(1.0)
    for step in range(100):
        ema.update(model, step)
    # without the warm-up, 0.999**100 = 90 % of the shadow would still be the zero initial weights
    assert ema.state()["weight"].min() > 0.99
