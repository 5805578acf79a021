"""Schedules, the forward process, the posterior, p_mean_variance, losses and respacing."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from aigc.diffusion import (GaussianDiffusion, MeanType, VarType, cosine_betas,
                            discretized_gaussian_log_likelihood, linear_betas, logsnr_timesteps, make_betas, respace,
                            space_timesteps)
from aigc.errors import ConfigError


def _proc(T=100, schedule="linear", **kw):
    return GaussianDiffusion(make_betas(schedule, T), **kw)


# ------------------------------------------------------------------ schedules

@pytest.mark.parametrize("name", ["linear", "cosine"])
@pytest.mark.parametrize("T", [1, 10, 1000, 4000])
def test_schedules_are_valid(name, T):
    betas = make_betas(name, T)
    assert betas.dtype == np.float64 and betas.shape == (T,)
    assert np.all(betas > 0) and np.all(betas < 1)
    abar = np.cumprod(1 - betas)
    assert np.all(np.diff(abar) < 0)
    assert abar[-1] < 0.01 or T < 10


def test_linear_matches_ddpm_and_scales_with_T():
    b = linear_betas(1000)
    assert b[0] == pytest.approx(1e-4) and b[-1] == pytest.approx(0.02)
    b4 = linear_betas(4000)
    assert b4[0] == pytest.approx(0.25e-4) and b4[-1] == pytest.approx(0.005)


def test_cosine_alpha_bar_matches_closed_form():
    T, s = 1000, 0.008
    abar = np.cumprod(1 - cosine_betas(T))
    t = np.arange(1, T + 1)
    f = lambda u: np.cos((u / T + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    closed = f(t) / f(0)
    unclipped = cosine_betas(T) < 0.999
    np.testing.assert_allclose(abar[unclipped], closed[unclipped], rtol=1e-10, atol=1e-14)
    assert unclipped[: T - 5].all()  # only the very last steps hit max_beta


def test_schedule_errors():
    with pytest.raises(ConfigError, match="unknown noise schedule 'quadratic'"):
        make_betas("quadratic", 10)
    with pytest.raises(ConfigError, match=">= 1"):
        make_betas("linear", 0)


# ------------------------------------------------------------------ forward process and posterior

def test_posterior_matches_bayes_rule():
    p = _proc(50, "cosine")
    rng = np.random.default_rng(0)
    x0, xt = rng.normal(size=8), rng.normal(size=8)
    for i in range(1, 50):
        abar_prev, alpha, beta = p.alphas_cumprod[i - 1], 1 - p.betas[i], p.betas[i]
        # q(x_{t-1}|x0) = N(√ᾱ_{t-1} x0, 1−ᾱ_{t-1}) times the likelihood q(x_t|x_{t-1}) = N(√α x_{t-1}, β)
        prec = 1 / (1 - abar_prev) + alpha / beta
        var = 1 / prec
        mean = var * (math.sqrt(abar_prev) * x0 / (1 - abar_prev) + math.sqrt(alpha) * xt / beta)
        t = torch.full((8,), i)
        m, v, logv = p.q_posterior_mean_variance(torch.from_numpy(x0), torch.from_numpy(xt), t)
        np.testing.assert_allclose(m.numpy(), mean, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(v.flatten().numpy(), var, rtol=1e-9)
        np.testing.assert_allclose(logv.flatten().numpy(), math.log(var), rtol=1e-9)
    # t = 0: the posterior is a point mass at x0; its log variance is clipped to that of t = 1
    t0 = torch.zeros(8, dtype=torch.long)
    m, v, logv = p.q_posterior_mean_variance(torch.from_numpy(x0), torch.from_numpy(xt), t0)
    np.testing.assert_allclose(m.numpy(), x0, atol=1e-12)
    assert float(v[0]) == 0.0 and float(logv[0]) == pytest.approx(math.log(p.posterior_variance[1]))


def test_q_sample_statistics():
    p = _proc(100)
    x0 = torch.tensor([0.7, -0.3], dtype=torch.float64).repeat(20000, 1)
    g = torch.Generator().manual_seed(0)
    for i in (0, 30, 99):
        xt = p.q_sample(x0, i, generator=g)
        a = p.alphas_cumprod[i]
        np.testing.assert_allclose(xt.mean(0).numpy(), math.sqrt(a) * np.array([0.7, -0.3]), atol=0.03)
        np.testing.assert_allclose(xt.std(0).numpy(), [math.sqrt(1 - a)] * 2, rtol=0.03)


# ------------------------------------------------------------------ reverse process

def test_learned_range_variance_stays_between_bounds():
    p = _proc(100, "cosine", var_type=VarType.LEARNED_RANGE)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 2, 3, 3, dtype=torch.float64, generator=g)
    t = torch.randint(0, 100, (64,), generator=g)
    out = torch.randn(64, 4, 3, 3, dtype=torch.float64, generator=g) * 5  # far outside [-1, 1] too
    var = p.p_mean_variance(out, x, t)["variance"]
    lo = torch.from_numpy(np.exp(p.posterior_log_variance_clipped))[t].view(-1, 1, 1, 1)
    hi = torch.from_numpy(p.betas)[t].view(-1, 1, 1, 1)
    assert (var >= torch.minimum(lo, hi) * (1 - 1e-12)).all() and (var <= torch.maximum(lo, hi) * (1 + 1e-12)).all()
    # v = -1 gives β̃ exactly, v = +1 gives β exactly
    v_lo = p.p_mean_variance(torch.cat([out[:, :2], -torch.ones_like(x)], 1), x, t)["variance"]
    v_hi = p.p_mean_variance(torch.cat([out[:, :2], torch.ones_like(x)], 1), x, t)["variance"]
    torch.testing.assert_close(v_lo, lo.expand_as(x), rtol=1e-12, atol=0)
    torch.testing.assert_close(v_hi, hi.expand_as(x), rtol=1e-12, atol=0)


def test_fixed_variances():
    small = _proc(100, var_type="fixed_small")
    large = _proc(100, var_type="fixed_large")
    x = torch.zeros(3, 1, 2, 2, dtype=torch.float64)
    t = torch.tensor([0, 1, 50])
    vs = small.p_mean_variance(x, x, t)["variance"][:, 0, 0, 0].numpy()
    vl = large.p_mean_variance(x, x, t)["variance"][:, 0, 0, 0].numpy()
    np.testing.assert_allclose(vs, small.posterior_variance[[0, 1, 50]])
    np.testing.assert_allclose(vl, [small.posterior_variance[1], large.betas[1], large.betas[50]])


def test_mean_types_agree_given_consistent_outputs():
    g = torch.Generator().manual_seed(1)
    x0 = torch.rand(16, 3, 4, 4, dtype=torch.float64, generator=g) * 2 - 1
    eps = torch.randn(x0.shape, dtype=torch.float64, generator=g)
    t = torch.randint(0, 200, (16,), generator=g)
    procs = {m: _proc(200, "cosine", mean_type=m, var_type=VarType.FIXED_SMALL) for m in MeanType}
    p = procs[MeanType.EPSILON]
    xt = p.q_sample(x0, t, eps)
    a = torch.from_numpy(p.alphas_cumprod)[t].view(-1, 1, 1, 1)
    outputs = {MeanType.EPSILON: eps, MeanType.START_X: x0, MeanType.VELOCITY: a.sqrt() * eps - (1 - a).sqrt() * x0}
    res = {m: procs[m].p_mean_variance(outputs[m], xt, t, clip_denoised=False) for m in MeanType}
    for m in (MeanType.START_X, MeanType.VELOCITY):
        for key in ("mean", "variance", "pred_x0", "pred_eps"):
            torch.testing.assert_close(res[m][key], res[MeanType.EPSILON][key], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(res[MeanType.EPSILON]["pred_x0"], x0, rtol=1e-9, atol=1e-9)


# ------------------------------------------------------------------ losses and the bound

def test_discretized_decoder_is_a_distribution():
    levels = torch.linspace(-1, 1, 256, dtype=torch.float64)
    for mean, log_scale in [(0.0, -3.0), (0.9, -1.0), (-0.995, -5.0), (0.3, 0.5)]:
        ll = discretized_gaussian_log_likelihood(levels, torch.full_like(levels, mean),
                                                 torch.full_like(levels, log_scale))
        assert float(ll.exp().sum()) == pytest.approx(1.0, abs=1e-6)


def _bpd(model_value, T=40):
    p = _proc(T, mean_type=MeanType.START_X, var_type=VarType.FIXED_SMALL)
    c = -1 + 2 * 160 / 255  # a data point on the 8-bit grid
    x0 = torch.full((4, 1, 3, 3), c, dtype=torch.float64)
    model = lambda x, t: torch.full_like(x, model_value(c))  # noqa: E731
    return p, p.calc_bpd_loop(model, x0, generator=torch.Generator().manual_seed(0))


def test_vlb_of_a_perfect_denoiser_vs_a_bad_one():
    p, good = _bpd(lambda c: c)
    _, bad = _bpd(lambda c: c + 0.1)
    assert good["vb"].shape == (4, 40) and good["total_bpd"].shape == (4,)
    # Single-point data: the perfect x0 prediction makes every KL term L_{t-1}, t > 1, vanish.
    assert good["vb"][:, 1:].abs().max() < 1e-9
    torch.testing.assert_close(good["total_bpd"], good["prior_bpd"] + good["vb"][:, 0])
    assert (good["vb"][:, 0] > 0).all() and (good["prior_bpd"] > 0).all()
    assert (bad["vb"][:, 1:].sum(1) > 1.0).all()
    assert (bad["total_bpd"] > good["total_bpd"] + 1.0).all()


def test_training_losses_terms_and_stop_gradient():
    T = 100
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(6, 2, 4, 4, generator=g) * 2 - 1
    t = torch.randint(0, T, (6,), generator=g)
    t[0] = 0  # exercise the decoder term
    out = torch.randn(6, 4, 4, 4, generator=g).requires_grad_()
    model = lambda x, tt: out * 1.0  # noqa: E731
    hyb = _proc(T, "cosine", var_type="learned_range", loss_type="hybrid")
    terms = hyb.training_losses(model, x0, t, generator=torch.Generator().manual_seed(1))
    assert set(terms) == {"loss", "mse", "vb"} and all(v.shape == (6,) for v in terms.values())
    torch.testing.assert_close(terms["loss"], terms["mse"] + 0.001 * T * terms["vb"])
    (grad,) = torch.autograd.grad(terms["vb"].sum(), out)
    assert grad[:, :2].abs().max() == 0 and grad[:, 2:].abs().max() > 0  # L_vlb trains only Σ
    kl = _proc(T, "cosine", var_type="learned_range", loss_type="kl")
    terms = kl.training_losses(model, x0, t, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(terms["loss"], T * terms["vb"])
    (grad,) = torch.autograd.grad(terms["loss"].sum(), out)
    assert grad[:, :2].abs().max() > 0  # the pure bound trains the mean too
    mse = _proc(T, mean_type="x0")
    noise = torch.randn(x0.shape, generator=g)
    terms = mse.training_losses(lambda x, tt: torch.zeros_like(x), x0, t, noise=noise)
    torch.testing.assert_close(terms["loss"], (x0 ** 2).mean(dim=(1, 2, 3)))


@pytest.mark.parametrize("mean_type", ["epsilon", "x0", "v"])
def test_min_snr_weighting_is_the_same_x0_loss_for_every_target(mean_type):
    # min-SNR-γ: whatever the network predicts, the weighted mse is min(SNR_t, γ) · ‖x₀ − x̂₀‖²
    T, gamma = 200, 5.0
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(16, 2, 3, 3, generator=g, dtype=torch.float64) * 2 - 1
    t = torch.randint(0, T, (16,), generator=g)
    t[:2] = torch.tensor([0, T - 1])  # SNR far above and far below γ
    noise = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    out = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    p = _proc(T, "cosine", mean_type=mean_type, snr_gamma=gamma)
    terms = p.training_losses(lambda x, tt: out, x0, t, noise=noise)
    pred_x0, _ = p.predict_start(out, p.q_sample(x0, t, noise), t, clip_denoised=False)
    abar = torch.from_numpy(p.alphas_cumprod)[t]
    expected = (abar / (1 - abar)).clamp(max=gamma) * ((x0 - pred_x0) ** 2).mean(dim=(1, 2, 3))
    torch.testing.assert_close(terms["loss"], expected)
    plain = _proc(T, "cosine", mean_type=mean_type).training_losses(lambda x, tt: out, x0, t, noise=noise)
    torch.testing.assert_close(terms["mse"], plain["mse"])  # the reported mse stays unweighted
    assert respace(p, [0, 50, 199]).snr_gamma == gamma
    with pytest.raises(ConfigError, match="snr_gamma"):
        _proc(T, snr_gamma=-1.0)


def test_clamped_variance_output_still_gets_a_gradient_back_into_range():
    # v far below -1 means Σ = β̃_t; with any error in the mean the bound wants a larger Σ, so dL/dv < 0 even
    # though v is clamped (straight-through), and the output is not stuck outside the range.
    p = _proc(100, var_type="learned_range", loss_type="kl", mean_type="x0")
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(8, 1, 3, 3, generator=g, dtype=torch.float64) * 2 - 1
    out = torch.cat([torch.zeros_like(x0), torch.full_like(x0, -3.0)], 1).requires_grad_()
    t = torch.randint(1, 100, (8,), generator=g)
    loss = p.training_losses(lambda x, tt: out * 1.0, x0, t, generator=g)["loss"].sum()
    (grad,) = torch.autograd.grad(loss, out)
    assert (grad[:, 1:] <= 0).all() and (grad[:, 1:] < 0).float().mean() > 0.95


def test_model_kwargs_reach_the_model_and_betas_are_checked():
    p = _proc(10)
    seen = {}

    def model(x, t, y):
        seen["y"] = y
        return torch.zeros_like(x)

    p.training_losses(model, torch.zeros(2, 1, 2, 2), torch.tensor([1, 2]), model_kwargs={"y": torch.tensor([3, 4])})
    assert seen["y"].tolist() == [3, 4]
    with pytest.raises(ConfigError, match="between 0 and 1"):
        GaussianDiffusion([0.1, 1.0])


def test_model_sees_training_timesteps_after_respacing():
    p = _proc(100)
    r = p.respaced(10)
    seen = []
    x0 = torch.zeros(3, 1, 2, 2)
    r.training_losses(lambda x, t: seen.append(t.clone()) or torch.zeros_like(x), x0, torch.tensor([0, 5, 9]))
    assert seen[0].tolist() == [space_timesteps(100, 10)[i] for i in (0, 5, 9)]


# ------------------------------------------------------------------ respacing

def test_respacing_to_all_steps_reproduces_the_process():
    p = _proc(300, "cosine", var_type="learned_range")
    r = respace(p, range(300))
    np.testing.assert_allclose(r.betas, p.betas, rtol=1e-9, atol=1e-15)
    for name in ("alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
                 "posterior_mean_coef1", "posterior_mean_coef2"):
        np.testing.assert_allclose(getattr(r, name), getattr(p, name), rtol=1e-9, atol=1e-15)
    assert r.timestep_map.tolist() == list(range(300))
    assert p.respaced(300) is p


def test_respacing_keeps_alpha_bar_and_composes_maps():
    p = _proc(1000)
    kept = space_timesteps(1000, 50)
    r = p.respaced(50)
    assert r is p.respaced(50)  # cached
    np.testing.assert_allclose(r.alphas_cumprod, p.alphas_cumprod[kept], rtol=1e-12)
    r2 = r.respaced(5)
    assert r2.timestep_map.tolist() == [kept[i] for i in space_timesteps(50, 5)]
    np.testing.assert_allclose(r2.alphas_cumprod, p.alphas_cumprod[r2.timestep_map], rtol=1e-12)


@pytest.mark.parametrize("spacing", ["linspace", "trailing", "logsnr"])
@pytest.mark.parametrize("T,steps", [(1000, 1), (1000, 2), (1000, 10), (1000, 999), (4000, 37), (7, 7), (5, 4)])
def test_timestep_spacings(spacing, T, steps):
    p = _proc(T, "cosine")
    ts = p.sampling_timesteps(steps, spacing)
    assert len(ts) == steps == len(set(ts)) and ts == sorted(ts) and ts[0] >= 0 and ts[-1] == T - 1
    if spacing == "linspace":
        assert ts == space_timesteps(T, steps) and (steps == 1 or ts[0] == 0)
    if spacing in ("linspace", "trailing") and steps > 2:
        gaps = np.diff(ts)
        assert gaps.max() - gaps.min() <= 1
    if spacing == "trailing":
        assert ts[0] == round(T / steps) - 1


def test_logsnr_spacing_is_even_in_lambda():
    p = _proc(1000, "linear")
    ts = logsnr_timesteps(p.alphas_cumprod, 20)
    lam = 0.5 * np.log(p.alphas_cumprod[ts] / (1 - p.alphas_cumprod[ts]))
    steps = -np.diff(lam)[::-1][:-1]  # all but the step nearest the data, which the grid cannot resolve
    assert ts[0] == 0 and steps.max() / steps.min() < 1.3


def test_step_count_errors():
    with pytest.raises(ConfigError, match="at least 1"):
        space_timesteps(100, 0)
    with pytest.raises(ConfigError, match="only 100 timesteps"):
        space_timesteps(100, 101)
    with pytest.raises(ConfigError, match="only 100 timesteps"):
        _proc(100).respaced(500)
    with pytest.raises(ConfigError, match="unknown timestep spacing"):
        space_timesteps(100, 10, "quadratic")
    with pytest.raises(ConfigError, match="unknown VarType 'huge'"):
        _proc(10, var_type="huge")


# ------------------------------------------------------------------ data likelihood and range (shape-agnostic)

def test_gaussian_decoder_is_the_normal_density():
    from aigc.diffusion.losses import gaussian_log_likelihood
    x, mu, log_sigma = torch.tensor([0.3, -2.0]), torch.tensor([0.0, -1.0]), torch.tensor([math.log(0.5), 0.0])
    expected = torch.distributions.Normal(mu, log_sigma.exp()).log_prob(x)
    assert torch.allclose(gaussian_log_likelihood(x, mu, log_sigma), expected, atol=1e-6)
    # a known value: log N(0; 0, 1) = -½ log 2π
    assert gaussian_log_likelihood(torch.zeros(1), torch.zeros(1), torch.zeros(1)).item() == \
        pytest.approx(-0.5 * math.log(2 * math.pi))


def test_continuous_likelihood_enters_only_the_last_term():
    """Audio (B, C, L): L_0 is the Gaussian density in bits/dim, every t > 0 term the same KL."""
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(3, 2, 16, generator=g) * 2 - 1
    out = torch.randn(3, 4, 16, generator=g)
    image = _proc(T=10, var_type=VarType.LEARNED_RANGE)
    audio = _proc(T=10, var_type=VarType.LEARNED_RANGE, likelihood="gaussian")
    x_t = image.q_sample(x0, 0, generator=g)
    for t in (0, 5):
        tt = torch.full((3,), t)
        a, _ = image._vb_terms_bpd(out, x0, x_t, tt, clip_denoised=False)
        b, _ = audio._vb_terms_bpd(out, x0, x_t, tt, clip_denoised=False)
        if t:
            assert torch.equal(a, b)
        else:
            p = audio.p_mean_variance(out, x_t, tt, clip_denoised=False)
            nats = -torch.distributions.Normal(p["mean"], (0.5 * p["log_variance"]).exp()).log_prob(x0)
            assert torch.allclose(b, nats.mean(dim=(1, 2)) / math.log(2), atol=1e-5)
            assert not torch.allclose(a, b)
    with pytest.raises(ConfigError, match="unknown Likelihood"):
        _proc(likelihood="laplace")


def test_default_range_and_likelihood_are_bit_identical_to_before():
    """The defaults are the 8-bit image case: clip to [-1, 1], the discretised decoder."""
    from aigc.diffusion.config import DiffusionConfig
    proc = DiffusionConfig().process()
    assert proc.clip_range == (-1.0, 1.0) and proc.likelihood.value == "discretized8"
    g = torch.Generator().manual_seed(1)
    x0 = (torch.randint(0, 256, (2, 3, 4, 4), generator=g).float() / 127.5 - 1)
    out = torch.randn(2, 6, 4, 4, generator=g) * 3
    x_t = proc.q_sample(x0, 0, generator=g)
    t = torch.zeros(2, dtype=torch.long)
    pred, _ = proc.predict_start(out, x_t, t)
    raw, _ = proc.predict_start(out, x_t, t, clip_denoised=False)
    assert torch.equal(pred, raw.clamp(-1.0, 1.0)) and torch.equal(proc.clip(raw), raw.clamp(-1.0, 1.0))
    vb, _ = proc._vb_terms_bpd(out, x0, x_t, t, clip_denoised=False)
    p = proc.p_mean_variance(out, x_t, t, clip_denoised=False)
    nll = -discretized_gaussian_log_likelihood(x0, p["mean"], 0.5 * p["log_variance"])
    assert torch.equal(vb, nll.reshape(2, -1).mean(1) / math.log(2))
    # an old checkpoint's diffusion section (no new fields) makes the same process
    from aigc.config import from_dict
    old = from_dict(DiffusionConfig, {"timesteps": 1000, "schedule": "cosine", "learn_sigma": True}).process()
    assert old.clip_range == (-1.0, 1.0) and old.likelihood is proc.likelihood


def test_clip_range_is_a_choice_and_survives_respacing():
    wide = _proc(T=50, clip_range=(-3.0, 3.0), likelihood="gaussian")
    x = torch.linspace(-5, 5, 11)
    assert torch.equal(wide.clip(x), x.clamp(-3, 3))
    free = _proc(T=50, clip_range=None)
    assert torch.equal(free.clip(x), x)
    out, x_t, t = torch.randn(2, 1, 8) * 10, torch.randn(2, 1, 8), torch.tensor([3, 40])
    assert torch.equal(free.predict_start(out, x_t, t)[0], free.predict_start(out, x_t, t, clip_denoised=False)[0])
    for rp in (wide.respaced(10), respace(wide, [0, 10, 49]), wide.respaced(10).respaced(5)):
        assert rp.clip_range == (-3.0, 3.0) and rp.likelihood.value == "gaussian"
    assert free.respaced(7).clip_range is None
    with pytest.raises(ConfigError, match="clip_range"):
        _proc(clip_range=(1.0, -1.0))


def test_diffusion_config_carries_the_data_choices():
    from aigc.diffusion.config import DiffusionConfig
    proc = DiffusionConfig(data_likelihood="gaussian", clip_range=None).process()
    assert proc.likelihood.value == "gaussian" and proc.clip_range is None
    for bad in (dict(data_likelihood="laplace"), dict(clip_range=[1.0]), dict(clip_range=[2.0, 1.0])):
        with pytest.raises(ConfigError):
            DiffusionConfig(**bad).validate()
