"""Samplers against an analytically optimal denoiser for Gaussian data."""
from __future__ import annotations

import pytest
import torch

from aigc.diffusion import (SAMPLERS, GaussianDiffusion, SamplingConfig, default_spacing, make_betas, sample,
                            sample_dpmpp_2m, sampling_config, sampling_schedule)
from aigc.diffusion.samplers import ODE_TRAILING_FROM
from aigc.errors import ConfigError

from .toy import gaussian_denoiser

MU, S = 0.3, 0.2


def _proc(mean_type="epsilon", var_type="fixed_small", schedule="linear", T=1000):
    return GaussianDiffusion(make_betas(schedule, T), mean_type=mean_type, var_type=var_type)


def _run(sampler, model, noise, process, steps, **kwargs):
    """The sampler function itself, on its default schedule of ``steps`` (which validates them)."""
    return SAMPLERS[sampler](model, noise, sampling_schedule(process, steps, None, sampler), **kwargs)


def _noise(n=2000, seed=0):
    return torch.randn(n, 1, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("mean_type", ["epsilon", "x0", "v"])
def test_ddpm_with_the_exact_learned_variance_is_exact_at_few_steps(schedule, mean_type):
    # For Gaussian data the true reverse step is Gaussian, so ancestral sampling with the right Σ (here:
    # the learned-range v that gives it on the respaced schedule) reproduces the data at any step count.
    p = _proc(mean_type, "learned_range", schedule)
    x = _run("ddpm", gaussian_denoiser(p, MU, S, reverse=p.respaced(5)), _noise(), p, 5,
                    generator=torch.Generator().manual_seed(1))
    assert float(x.mean()) == pytest.approx(MU, abs=0.01)
    assert float(x.std()) == pytest.approx(S, rel=0.02)


def test_fixed_variances_bracket_the_true_reverse_variance():
    # β̃ and β are the lower and upper bounds of the reverse variance (DDPM §3.2): at few steps ancestral
    # sampling with them under- and over-disperses, and the learned range sits in between.
    stds = {}
    for var in ("fixed_small", "fixed_large"):
        p = _proc(var_type=var, schedule="cosine")
        stds[var] = float(_run("ddpm", gaussian_denoiser(p, MU, S), _noise(), p, 20,
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
    x = _run(name, model, _noise(), p, steps, generator=torch.Generator().manual_seed(1))
    assert x.shape == (2000, 1, 2, 2)
    assert float(x.mean()) == pytest.approx(MU, abs=0.01)
    assert float(x.std()) == pytest.approx(S, rel=tol_std)


@pytest.mark.parametrize("name", ["ddpm", "ddim"])
def test_first_order_samplers_converge_with_more_steps(name):
    p = _proc(schedule="cosine")
    model = gaussian_denoiser(p, MU, S)
    errs = [abs(float(_run(name, model, _noise(), p, n, generator=torch.Generator().manual_seed(1)).std()) - S)
            for n in (10, 50, 250)]
    assert errs[0] > errs[1] > errs[2] and errs[2] < 0.01


def test_dpmpp_eta_zero_is_the_ode_and_eta_one_draws_noise():
    p = _proc(schedule="cosine")
    model = gaussian_denoiser(p, MU, S)
    noise = _noise(64)
    ode = _run("dpm++", model, noise, p, 10)
    schedule = sampling_schedule(p, 10, None, "dpm++")
    assert torch.equal(sample_dpmpp_2m(model, noise, schedule, eta=0.0, generator=torch.Generator().manual_seed(0)),
                       ode)
    sde = [_run("dpm++sde", model, noise, p, 10, generator=torch.Generator().manual_seed(s)) for s in (0, 1)]
    assert not torch.equal(sde[0], ode) and not torch.equal(sde[0], sde[1])
    with pytest.raises(ConfigError, match="eta"):
        sample_dpmpp_2m(model, noise, schedule, eta=-1.0)


def test_dpmpp_is_more_accurate_than_ddim_at_few_steps():
    p = _proc(schedule="cosine")
    model = gaussian_denoiser(p, MU, S)
    noise = _noise()
    exact = _run("ddim", model, noise, p, 1000)  # the probability-flow ODE solved finely
    err = {name: float((_run(name, model, noise, p, 8) - exact).abs().mean()) for name in ("ddim", "dpm++")}
    assert err["dpm++"] < 0.5 * err["ddim"]


def test_ddim_eta0_is_deterministic_and_draws_no_random_numbers():
    p = _proc()
    model = gaussian_denoiser(p, MU, S)
    noise = _noise(50)
    state = torch.get_rng_state()
    a = _run("ddim", model, noise, p, 20)
    b = _run("ddim", model, noise.clone(), p, 20)
    assert torch.equal(a, b)
    assert torch.equal(torch.get_rng_state(), state)
    c = _run("ddim", model, noise, p, 20, eta=1.0, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(a, c)


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_seeded_samplers_are_reproducible(name):
    p = _proc(var_type="learned_range")
    model = gaussian_denoiser(p, MU, S, learned_v=0.5)
    runs = [_run(name, model, _noise(8), p, 5, generator=torch.Generator().manual_seed(3)) for _ in range(2)]
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

    _run(name, counting, _noise(4), p, 10, generator=torch.Generator().manual_seed(0),
                   callback=infos.append, start_step=3, project=project)
    assert len(calls) == 7 and calls == sorted(calls, reverse=True)
    assert [i["step"] for i in infos] == list(range(3, 10)) and all(i["steps"] == 10 for i in infos)
    assert [i["t"] for i in infos] == calls and set(infos[0]) == {"step", "steps", "t", "x", "pred_x0"}
    assert projected[-1] == -1 and projected[:-1] == calls[1:]

    def cancel(info):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _run(name, model, _noise(4), p, 10, callback=cancel, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_bad_step_counts(name):
    p = _proc(T=100)
    model = gaussian_denoiser(p, MU, S)
    with pytest.raises(ConfigError, match="at least 1"):
        _run(name, model, _noise(2), p, 0)
    with pytest.raises(ConfigError, match="only 100 timesteps"):
        _run(name, model, _noise(2), p, 101)
    with pytest.raises(ConfigError, match="start_step"):
        _run(name, model, _noise(2), p, 10, start_step=10)


def test_one_step_sampling_returns_the_denoised_estimate():
    p = _proc()
    model = gaussian_denoiser(p, MU, S)
    x = _run("ddim", model, _noise(500), p, 1)
    assert float(x.mean()) == pytest.approx(MU, abs=0.02)  # E[x0 | x_T] ≈ mu


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_float32_learned_sigma_network(name):
    # A real (tiny) network in float32 with 2C output channels: shapes, dtype and finiteness.
    torch.manual_seed(0)
    net = torch.nn.Conv2d(3, 6, 3, padding=1)
    p = _proc(var_type="learned_range", schedule="cosine")
    noise = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    x = _run(name, lambda x, t: net(x), noise, p, 4, generator=torch.Generator().manual_seed(0))
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

        _run("dpm++", counting, _noise(4), p, steps)
        assert default_spacing("dpm++", steps) == spacing
        assert sorted(calls) == p.sampling_timesteps(steps, spacing)
    assert default_spacing("dpm++sde", 50) == "logsnr" and default_spacing("ddim", 50) == "linspace"


# ---- SamplingConfig: one set of defaults, validated once, options a sampler cannot honour refused ------
def test_sample_runs_the_sampler_the_config_names_on_its_schedule():
    p = _proc(schedule="cosine")
    model = gaussian_denoiser(p, MU, S)
    noise = _noise(16)
    for name in SAMPLERS:
        cfg = SamplingConfig(sampler=name, steps=6)
        direct = _run(name, model, noise, p, 6, generator=torch.Generator().manual_seed(2))
        assert torch.equal(sample(model, noise, p, cfg, generator=torch.Generator().manual_seed(2)), direct)
    eta = sample(model, noise, p, SamplingConfig("ddim", 6, eta=1.0), generator=torch.Generator().manual_seed(2))
    assert not torch.equal(eta, _run("ddim", model, noise, p, 6))
    spaced = sample(model, noise, p, SamplingConfig("ddim", 6, spacing="trailing"))
    assert torch.equal(spaced, SAMPLERS["ddim"](model, noise, sampling_schedule(p, 6, "trailing", "ddim")))


@pytest.mark.parametrize("options,match", [
    ({"sampler": "heun"}, "unknown sampler"),
    ({"steps": 0}, "steps"),
    ({"steps": 2.5}, "steps"),
    ({"sampler": "ddpm", "eta": 0.5}, "takes no eta"),
    ({"sampler": "dpm++", "eta": 1.0}, "takes no eta"),
    ({"sampler": "ddim", "eta": float("nan")}, "eta"),
    ({"sampler": "dpm++sde", "eta": 0.0}, "eta"),
    ({"spacing": "cubic"}, "spacing"),
    ({"guidance": float("nan")}, "guidance"),
    ({"guidance": float("inf")}, "guidance"),
    ({"guidance": 0.0}, "guidance"),
    ({"seed": -1}, "seed"),
    ({"seed": 2 ** 64}, "seed"),
    ({"temperature": 1.0}, "unknown sampling option"),
])
def test_bad_sampling_options_are_refused_when_the_config_is_made(options, match):
    with pytest.raises(ConfigError, match=match):
        sampling_config(**options)


def test_steps_beyond_the_schedule_are_refused_by_the_schedule():
    with pytest.raises(ConfigError, match="1..100"):
        SamplingConfig(steps=101).schedule(_proc(T=100))
