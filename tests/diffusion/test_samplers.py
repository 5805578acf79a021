"""Samplers against an analytically optimal denoiser for Gaussian data."""
from __future__ import annotations

import pytest
import torch

from aigc.diffusion import (SAMPLERS, GaussianDiffusion, default_spacing, make_betas, sample_ddim, sample_ddpm,
                            sample_dpmpp_2m)
from aigc.diffusion.samplers import ODE_TRAILING_FROM
from aigc.errors import ConfigError

from .toy import gaussian_denoiser

MU, S = 0.3, 0.2


def _proc(mean_type="epsilon", var_type="fixed_small", schedule="linear", T=1000):
    return GaussianDiffusion(make_betas(schedule, T), mean_type=mean_type, var_type=var_type)


def _noise(n=2000, seed=0):
    return torch.randn(n, 1, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("mean_type", ["epsilon", "x0", "v"])
def test_ddpm_with_the_exact_learned_variance_is_exact_at_few_steps(schedule, mean_type):
    # For Gaussian data the true reverse step is Gaussian, so ancestral sampling with the right Σ (here:
    # the learned-range v that gives it on the respaced schedule) reproduces the data at any step count.
    p = _proc(mean_type, "learned_range", schedule)
    x = sample_ddpm(gaussian_denoiser(p, MU, S, reverse=p.respaced(5)), _noise(), p, 5,
                    generator=torch.Generator().manual_seed(1))
    assert float(x.mean()) == pytest.approx(MU, abs=0.01)
    assert float(x.std()) == pytest.approx(S, rel=0.02)


def test_fixed_variances_bracket_the_true_reverse_variance():
    # β̃ and β are the lower and upper bounds of the reverse variance (DDPM §3.2): at few steps ancestral
    # sampling with them under- and over-disperses, and the learned range sits in between.
    stds = {}
    for var in ("fixed_small", "fixed_large"):
        p = _proc(var_type=var, schedule="cosine")
        stds[var] = float(sample_ddpm(gaussian_denoiser(p, MU, S), _noise(), p, 20,
                                      generator=torch.Generator().manual_seed(1)).std())
    assert stds["fixed_small"] < 0.9 * S and stds["fixed_large"] > 1.1 * S


@pytest.mark.parametrize("name,steps,kind,tol_std", [
    ("ddpm", 50, ("epsilon", "fixed_large", "cosine"), 0.08),
    ("ddpm", 50, ("x0", "learned_range", "linear"), 0.1),
    ("ddim", 50, ("v", "fixed_small", "cosine"), 0.08),
    ("dpm++", 10, ("epsilon", "fixed_small", "cosine"), 0.04),
    ("dpm++", 20, ("v", "learned_range", "linear"), 0.03),
    ("dpm++", 20, ("x0", "fixed_large", "cosine"), 0.03),
    ("dpm++sde", 20, ("epsilon", "learned_range", "cosine"), 0.05),
    ("dpm++sde", 50, ("v", "fixed_small", "linear"), 0.04),
])
def test_samplers_recover_gaussian_data(name, steps, kind, tol_std):
    mean_type, var_type, schedule = kind
    p = _proc(mean_type, var_type, schedule)
    model = gaussian_denoiser(p, MU, S, learned_v=0.0 if var_type == "learned_range" else None)
    x = SAMPLERS[name](model, _noise(), p, steps, generator=torch.Generator().manual_seed(1))
    assert x.shape == (2000, 1, 2, 2)
    assert float(x.mean()) == pytest.approx(MU, abs=0.01)
    assert float(x.std()) == pytest.approx(S, rel=tol_std)


@pytest.mark.parametrize("name", ["ddpm", "ddim"])
def test_first_order_samplers_converge_with_more_steps(name):
    p = _proc(schedule="cosine")
    model = gaussian_denoiser(p, MU, S)
    errs = [abs(float(SAMPLERS[name](model, _noise(), p, n, generator=torch.Generator().manual_seed(1)).std()) - S)
            for n in (10, 50, 250)]
    assert errs[0] > errs[1] > errs[2] and errs[2] < 0.01


def test_dpmpp_eta_zero_is_the_ode_and_eta_one_draws_noise():
    p = _proc(schedule="cosine")
    model = gaussian_denoiser(p, MU, S)
    noise = _noise(64)
    ode = sample_dpmpp_2m(model, noise, p, 10)
    assert torch.equal(sample_dpmpp_2m(model, noise, p, 10, eta=0.0, generator=torch.Generator().manual_seed(0)), ode)
    sde = [SAMPLERS["dpm++sde"](model, noise, p, 10, generator=torch.Generator().manual_seed(s)) for s in (0, 1)]
    assert not torch.equal(sde[0], ode) and not torch.equal(sde[0], sde[1])
    with pytest.raises(ValueError, match="eta"):
        sample_dpmpp_2m(model, noise, p, 10, eta=-1.0)


def test_dpmpp_is_more_accurate_than_ddim_at_few_steps():
    p = _proc(schedule="cosine")
    model = gaussian_denoiser(p, MU, S)
    noise = _noise()
    exact = sample_ddim(model, noise, p, 1000)  # the probability-flow ODE solved finely
    err = {f.__name__: float((f(model, noise, p, 8) - exact).abs().mean()) for f in (sample_ddim, sample_dpmpp_2m)}
    assert err["sample_dpmpp_2m"] < 0.5 * err["sample_ddim"]


def test_ddim_eta0_is_deterministic_and_draws_no_random_numbers():
    p = _proc()
    model = gaussian_denoiser(p, MU, S)
    noise = _noise(50)
    state = torch.get_rng_state()
    a = sample_ddim(model, noise, p, 20)
    b = sample_ddim(model, noise.clone(), p, 20)
    assert torch.equal(a, b)
    assert torch.equal(torch.get_rng_state(), state)
    c = sample_ddim(model, noise, p, 20, eta=1.0, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(a, c)


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_seeded_samplers_are_reproducible(name):
    p = _proc(var_type="learned_range")
    model = gaussian_denoiser(p, MU, S, learned_v=0.5)
    runs = [SAMPLERS[name](model, _noise(8), p, 5, generator=torch.Generator().manual_seed(3)) for _ in range(2)]
    assert torch.equal(*runs)


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_callback_start_step_and_project(name):
    p = _proc()
    model = gaussian_denoiser(p, MU, S)
    infos, projected = [], []
    calls = []

    def counting(x, t):
        calls.append(t[0].item())
        return model(x, t)

    def project(x, t_next):
        projected.append(t_next)
        return x

    SAMPLERS[name](counting, _noise(4), p, 10, generator=torch.Generator().manual_seed(0),
                   callback=infos.append, start_step=3, project=project)
    assert len(calls) == 7 and calls == sorted(calls, reverse=True)
    assert [i["step"] for i in infos] == list(range(3, 10)) and all(i["steps"] == 10 for i in infos)
    assert [i["t"] for i in infos] == calls and set(infos[0]) == {"step", "steps", "t", "x", "pred_x0"}
    assert projected[-1] == -1 and projected[:-1] == calls[1:]

    def cancel(info):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        SAMPLERS[name](model, _noise(4), p, 10, callback=cancel, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_bad_step_counts(name):
    p = _proc(T=100)
    model = gaussian_denoiser(p, MU, S)
    with pytest.raises(ConfigError, match="at least 1"):
        SAMPLERS[name](model, _noise(2), p, 0)
    with pytest.raises(ConfigError, match="only 100 timesteps"):
        SAMPLERS[name](model, _noise(2), p, 101)
    with pytest.raises(ConfigError, match="start_step"):
        SAMPLERS[name](model, _noise(2), p, 10, start_step=10)


def test_one_step_sampling_returns_the_denoised_estimate():
    p = _proc()
    model = gaussian_denoiser(p, MU, S)
    x = sample_ddim(model, _noise(500), p, 1)
    assert float(x.mean()) == pytest.approx(MU, abs=0.02)  # E[x0 | x_T] ≈ mu


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_float32_learned_sigma_network(name):
    # A real (tiny) network in float32 with 2C output channels: shapes, dtype and finiteness.
    torch.manual_seed(0)
    net = torch.nn.Conv2d(3, 6, 3, padding=1)
    p = _proc(var_type="learned_range", schedule="cosine")
    noise = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    x = SAMPLERS[name](lambda x, t: net(x), noise, p, 4, generator=torch.Generator().manual_seed(0))
    assert x.dtype == torch.float32 and x.shape == noise.shape and torch.isfinite(x).all()
    assert x.abs().max() <= 1.0 + 1e-6  # the last step returns the clipped x̂_0 (or its posterior mean)


def test_default_spacing_of_the_ode_switches_to_even_t_at_many_steps():
    p = _proc(schedule="cosine")
    model = gaussian_denoiser(p, MU, S)
    for steps, spacing in ((20, "logsnr"), (ODE_TRAILING_FROM, "trailing")):
        calls = []

        def counting(x, t):
            calls.append(t[0].item())
            return model(x, t)

        sample_dpmpp_2m(counting, _noise(4), p, steps)
        assert default_spacing("dpm++", steps) == spacing
        assert sorted(calls) == p.sampling_timesteps(steps, spacing)
    assert default_spacing("dpm++sde", 50) == "logsnr" and default_spacing("ddim", 50) == "linspace"
