"""Training-timestep samplers: uniform, loss-second-moment importance sampling, logit-normal."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from aigc.diffusion import LogitNormalSampler, LossSecondMomentResampler, UniformSampler, make_timestep_sampler
from aigc.errors import ConfigError


def test_uniform_sampler():
    s = UniformSampler(50)
    t, w = s.sample(10000, generator=torch.Generator().manual_seed(0))
    assert t.dtype == torch.long and t.min() >= 0 and t.max() < 50 and len(t.unique()) == 50
    assert torch.equal(w, torch.ones(10000))


def _warm(T=20, seed=0):
    rng = np.random.default_rng(seed)
    table = rng.uniform(0.1, 5.0, size=T) ** 2  # a fixed per-t loss, spread over two orders of magnitude
    s = LossSecondMomentResampler(T)
    for _ in range(10):
        t = torch.arange(T)
        s.update(t, torch.from_numpy(table))
    return s, table


def test_resampler_is_uniform_until_every_t_has_a_full_history():
    s = LossSecondMomentResampler(5)
    s.update(torch.tensor([0, 1, 2, 3, 4] * 9), torch.ones(45))
    assert not s.warmed_up
    _, w = s.sample(100, generator=torch.Generator().manual_seed(0))
    assert torch.equal(w, torch.ones(100))
    s.update(torch.tensor([0, 1, 2, 3]), torch.ones(4))
    assert not s.warmed_up
    s.update(torch.tensor([4]), torch.ones(1))
    assert s.warmed_up


def test_importance_weights_keep_the_estimate_unbiased():
    s, table = _warm()
    p = s.probabilities()
    assert p.sum() == pytest.approx(1.0) and (p >= 0.001 / 20).all()
    # p ∝ √E[L²] = L for a constant table (mixed with 0.1 % uniform)
    np.testing.assert_allclose(p, 0.999 * table / table.sum() + 0.001 / 20, rtol=1e-12)
    # Exactly: Σ_t p_t · w_t · L_t = mean_t L_t, with w_t = 1/(T p_t)
    assert float(np.sum(p * (1 / (20 * p)) * table)) == pytest.approx(table.mean(), rel=1e-12)
    # And by Monte Carlo through sample()
    t, w = s.sample(200_000, generator=torch.Generator().manual_seed(0))
    est = float((w.double() * torch.from_numpy(table)[t]).mean())
    assert est == pytest.approx(table.mean(), rel=0.01)
    # The importance-sampled estimator has lower variance than uniform sampling here.
    var_is = float((w.double() * torch.from_numpy(table)[t]).var())
    assert var_is < table.var()


def test_history_keeps_the_last_losses():
    s = LossSecondMomentResampler(2, history=3)
    s.update(torch.tensor([0, 0, 0, 0, 1, 1, 1]), torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 5.0, 5.0]))
    np.testing.assert_allclose(s._losses[0], [2, 3, 4])


def test_state_round_trips_through_json():
    s, _ = _warm()
    state = json.loads(json.dumps(s.state_dict()))
    s2 = LossSecondMomentResampler(20)
    s2.load_state_dict(state)
    np.testing.assert_array_equal(s2.probabilities(), s.probabilities())
    a = s.sample(64, generator=torch.Generator().manual_seed(5))
    b = s2.sample(64, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    with pytest.raises(ConfigError):
        LossSecondMomentResampler(30).load_state_dict(state)
    u = UniformSampler(20)
    u.load_state_dict(json.loads(json.dumps(u.state_dict())))
    assert isinstance(make_timestep_sampler("loss-second-moment", 4), LossSecondMomentResampler)
    with pytest.raises(ConfigError, match="unknown timestep sampler"):
        make_timestep_sampler("nope", 4)


def test_logit_normal_sampler_matches_its_density_and_keeps_unit_weights():
    T = 100
    s = make_timestep_sampler("logit-normal", T)
    assert isinstance(s, LogitNormalSampler)
    p = s.probabilities()
    assert p.shape == (T,) and np.all(p > 0) and abs(p.sum() - 1) < 1e-12
    np.testing.assert_allclose(p, p[::-1], rtol=1e-9)  # logit-normal(0, 1) is symmetric about u = 1/2
    assert p[T // 2] > 5 * p[2] and p[T // 2] > 5 * p[-3]  # the middle dominates the ends
    # bin mass against a Monte-Carlo draw of u = sigmoid(z), z ~ N(0, 1)
    u = torch.sigmoid(torch.randn(400_000, generator=torch.Generator().manual_seed(1), dtype=torch.float64))
    empirical = np.bincount((u * T).long().clamp(max=T - 1).numpy(), minlength=T) / len(u)
    np.testing.assert_allclose(empirical, p, atol=1.5e-3)
    t, w = s.sample(50_000, generator=torch.Generator().manual_seed(0))
    assert t.dtype == torch.long and 0 <= t.min() and t.max() < T
    assert torch.equal(w, torch.ones(50_000))  # it reweights the objective on purpose: no importance weights
    np.testing.assert_allclose(np.bincount(t.numpy(), minlength=T) / len(t), p, atol=2.5e-3)
    s.load_state_dict(json.loads(json.dumps(s.state_dict())))
    with pytest.raises(ConfigError):
        UniformSampler(T).load_state_dict(s.state_dict())


def test_logit_normal_mean_moves_the_mass_towards_noise_and_bad_settings_fail():
    T = 1000
    centred, shifted = make_timestep_sampler("logit-normal", T), make_timestep_sampler("logit-normal", T, 0.5)
    assert isinstance(shifted, LogitNormalSampler) and shifted.mean == 0.5
    p0, p1 = centred.probabilities(), shifted.probabilities()
    assert abs(p1.sum() - 1) < 1e-12
    # P(t/T > 0.8) = P(z > logit(0.8) - m): 8.3 % centred, 18.8 % at m = 0.5
    assert abs(p0[800:].sum() - 0.0828) < 2e-3 and abs(p1[800:].sum() - 0.1877) < 2e-3
    wide = make_timestep_sampler("logit-normal", T, 0.0, 2.0).probabilities()
    assert wide[:50].sum() > 2 * p0[:50].sum()  # a wider spread reaches the ends more often
    for mean, std in ((0.0, 0.0), (0.0, -1.0), (float("nan"), 1.0)):
        with pytest.raises(ConfigError, match="logit-normal"):
            LogitNormalSampler(T, mean, std)
    from aigc.diffusion.config import DiffusionConfig
    with pytest.raises(ConfigError, match="logit-normal"):
        DiffusionConfig(timestep_sampler="logit-normal", logit_normal_std=0.0).validate()
    with pytest.raises(ConfigError, match="unknown timestep sampler"):
        DiffusionConfig(timestep_sampler="nope").validate()
    cfg = DiffusionConfig(timestep_sampler="logit-normal", logit_normal_mean=0.5)
    np.testing.assert_allclose(cfg.timestep_sampler_for(T).probabilities(), p1)


def test_logit_normal_mixture_adds_a_noise_side_component():
    T = 1000
    mixed = make_timestep_sampler("logit-normal", T, 0.0, 1.0, [[0.4, 2.5, 0.5]])
    p, centred = mixed.probabilities(), make_timestep_sampler("logit-normal", T).probabilities()
    layout = make_timestep_sampler("logit-normal", T, 2.5, 0.5).probabilities()
    np.testing.assert_allclose(p, 0.6 * centred + 0.4 * layout, atol=1e-12)
    assert abs(p[850:].sum() - 0.40) < 0.01 and abs(p.sum() - 1) < 1e-12
    assert mixed.components == [(0.6, 0.0, 1.0), (0.4, 2.5, 0.5)]
    for mix in ([[0.4, 2.5]], [[1.0, 2.5, 0.5]], [[0.6, 1, 1], [0.5, 2, 1]], [[0.4, 2.5, 0.0]]):
        with pytest.raises(ConfigError, match="logit-normal"):
            make_timestep_sampler("logit-normal", T, logit_mix=mix)
    from aigc.config import apply_overrides
    from aigc.diffusion.config import DiffusionConfig
    cfg = apply_overrides(DiffusionConfig(), {"timestep_sampler": "logit-normal",
                                              "logit_normal_mix": "[[0.4, 2.5, 0.5]]"})
    np.testing.assert_allclose(cfg.timestep_sampler_for(T).probabilities(), p)
