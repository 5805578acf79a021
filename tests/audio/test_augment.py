"""SpecAugment: deterministic by generator, shape-preserving, per-example, respecting padded lengths."""
from __future__ import annotations

import pytest
import torch

from aigc.audio import SpecAugment, SpecAugmentConfig, spec_augment, time_warp
from aigc.errors import ConfigError


def feats(b: int = 4, f: int = 80, t: int = 200) -> torch.Tensor:
    return torch.randn(b, f, t, generator=torch.Generator().manual_seed(1)) + 5.0  # no natural zeros


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_same_generator_same_masks_and_shape_kept():
    x, cfg = feats(), SpecAugmentConfig(time_warp=5)
    a = spec_augment(x, cfg, generator=gen(0))
    b = spec_augment(x, cfg, generator=gen(0))
    c = spec_augment(x, cfg, generator=gen(1))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(x, a) and torch.equal(x, feats())  # a new tensor; the input is untouched


def test_masks_differ_per_example_and_respect_their_widths():
    x = feats(8)
    cfg = SpecAugmentConfig(freq_masks=1, freq_width=10, time_masks=1, time_width=15)
    out = spec_augment(x, cfg, generator=gen(3))
    masked = out == 0.0                                                 # (B, F, T)
    freq_rows = masked.all(dim=2)                                       # mel channels masked over all time
    time_cols = masked.all(dim=1)                                       # frames masked over all channels
    assert all(int(r.sum()) <= 10 for r in freq_rows) and all(int(c.sum()) <= 15 for c in time_cols)
    # every masked cell lies in a masked band; different examples get different bands
    assert torch.equal(masked, freq_rows[:, :, None] | time_cols[:, None, :])
    assert len({tuple(c.nonzero().flatten().tolist()) for c in time_cols}) > 1


def test_padded_batches_keep_masks_inside_each_length():
    x = feats(3, 40, 100)
    lengths = torch.tensor([100, 60, 20])
    cfg = SpecAugmentConfig(freq_masks=2, freq_width=8, time_masks=3, time_width=30, time_ratio=0.2, time_warp=4)
    out = spec_augment(x, cfg, generator=gen(5), lengths=lengths)
    for b, n in enumerate(lengths.tolist()):
        assert torch.equal(out[b, :, n:], x[b, :, n:])                # padding untouched
        cols = (out[b, :, :n] == 0).all(dim=0)
        widest = 0
        run = 0
        for v in cols.tolist():
            run = run + 1 if v else 0
            widest = max(widest, run)
        assert widest <= 3 * int(0.2 * n)                               # at most 3 masks of p * length


def test_adaptive_time_mask_count():
    x = feats(2, 20, 400)
    cfg = SpecAugmentConfig(freq_masks=0, time_masks=0, time_width=5, time_mask_rate=0.05)
    out = spec_augment(x, cfg, generator=gen(0), lengths=torch.tensor([400, 100]))
    cols = (out == 0).all(dim=1)
    assert int(cols[0].sum()) > int(cols[1].sum()) > 0                 # 20 masks vs 5 masks of <= 5 frames
    assert int(cols[1, 100:].sum()) == 0


def test_time_warp_moves_frames_and_keeps_the_ends():
    x = torch.arange(100, dtype=torch.float32).repeat(2, 3, 1)          # (2, 3, 100): value = frame index
    out = time_warp(x, 10, generator=gen(2))
    assert out.shape == x.shape and not torch.equal(out, x)
    assert torch.equal(out[..., 0], x[..., 0]) and torch.allclose(out[..., -1], x[..., -1])
    assert bool((out.diff(dim=-1) >= 0).all())                          # monotone: a warp, not a shuffle
    short = torch.randn(1, 3, 10)
    assert torch.equal(time_warp(short, 10, generator=gen(0)), short)  # too short to warp


def test_unbatched_input_and_the_module_in_eval_mode():
    x = feats(1)[0]
    out = spec_augment(x, generator=gen(0))
    assert out.shape == x.shape and bool((out == 0).any())
    aug = SpecAugment(SpecAugmentConfig())
    assert not torch.equal(aug(feats(), generator=gen(0)), feats())
    assert aug.eval()(feats()) is not None and torch.equal(aug.eval()(feats()), feats())


def test_bad_configs_and_lengths():
    with pytest.raises(ConfigError, match="time_ratio"):
        SpecAugmentConfig(time_ratio=1.5)
    with pytest.raises(ConfigError, match="freq_masks"):
        SpecAugmentConfig(freq_masks=-1)
    with pytest.raises(ConfigError, match="lengths"):
        spec_augment(feats(2), lengths=torch.tensor([10, 500]))
    with pytest.raises(ConfigError, match=r"\(B, F, T\)"):
        spec_augment(torch.zeros(5))
