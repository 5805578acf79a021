"""Classifier-free guidance, label dropout, inpainting and img2img."""
from __future__ import annotations

import pytest
import torch

from aigc.diffusion import (GaussianDiffusion, SamplingConfig, classifier_free, drop_labels, img2img, inpaint,
                            make_betas, repaint_schedule)
from aigc.errors import ConfigError

from .toy import gaussian_denoiser

MU, S = 0.3, 0.2


def _toy_conditional(C=2, learned=True):
    """A class-conditional 'model' whose output depends on the label in a known way."""
    torch.manual_seed(0)
    emb = torch.randn(11, 2 * C if learned else C)

    def model(x, t, y):
        out = torch.cat([x, x], 1) if learned else x
        return torch.tanh(out * 0.5 + emb[y].view(len(y), -1, 1, 1) + t.view(-1, 1, 1, 1) / 1000)
    return model


def test_guidance_scale_one_is_the_conditional_model():
    model = _toy_conditional()
    x, t, y = torch.randn(4, 2, 3, 3), torch.tensor([5, 6, 7, 8]), torch.tensor([0, 3, 3, 9])
    assert torch.equal(classifier_free(model, y, 1.0, null_label=10)(x, t), model(x, t, y))


@pytest.mark.parametrize("learned", [True, False])
def test_guidance_combines_mean_channels_only(learned):
    model = _toy_conditional(learned=learned)
    x, t, y = torch.randn(4, 2, 3, 3), torch.tensor([5, 6, 7, 8]), torch.tensor([0, 3, 3, 9])
    cond, uncond = model(x, t, y), model(x, t, torch.full_like(y, 10))
    out = classifier_free(model, y, 3.0, null_label=10, learned_sigma=learned)(x, t)
    torch.testing.assert_close(out[:, :2], uncond[:, :2] + 3.0 * (cond[:, :2] - uncond[:, :2]))
    if learned:
        torch.testing.assert_close(out[:, 2:], cond[:, 2:])  # variance from the conditional half
    assert out.shape == cond.shape
    torch.testing.assert_close(classifier_free(model, y, 0.0, null_label=10)(x, t)[:, :2], uncond[:, :2])


def test_guidance_runs_one_batch():
    batches = []
    model = _toy_conditional()

    def spy(x, t, y):
        batches.append(x.shape[0])
        return model(x, t, y)

    classifier_free(spy, torch.tensor([1, 2]), 2.0, 10)(torch.randn(2, 2, 3, 3), torch.tensor([1, 1]))
    assert batches == [4]


def test_drop_labels():
    y = torch.arange(10).repeat(1000)
    assert torch.equal(drop_labels(y, 0.0, 10), y)
    assert (drop_labels(y, 1.0, 10) == 10).all()
    d = drop_labels(y, 0.2, 10, generator=torch.Generator().manual_seed(0))
    frac = (d == 10).float().mean().item()
    assert 0.18 < frac < 0.22 and torch.equal(d[d != 10], y[d != 10])
    with pytest.raises(ConfigError):
        drop_labels(y, 1.5, 10)


# ------------------------------------------------------------------ editing

def _setup(n=64, seed=0):
    p = GaussianDiffusion(make_betas("cosine", 1000), mean_type="epsilon", var_type="learned_range")
    model = gaussian_denoiser(p, MU, S, learned_v=0.0)
    g = torch.Generator().manual_seed(seed)
    image = (MU + S * torch.randn(n, 1, 8, 8, generator=g, dtype=torch.float64)).clamp(-1, 1)
    return p, model, image


@pytest.mark.parametrize("sampler,jumps", [("ddpm", 1), ("ddim", 1), ("dpm++", 1), ("ddpm", 3), ("ddim", 2)])
def test_inpaint_keeps_known_pixels_exactly(sampler, jumps):
    p, model, image = _setup()
    mask = torch.zeros(8, 8)
    mask[:, :4] = 1  # keep the left half
    calls = []

    def counting(x, t):
        calls.append(1)
        return model(x, t)

    out = inpaint(counting, p, image, mask, SamplingConfig(sampler, 10), jump_length=3, jump_n_sample=jumps,
                  generator=torch.Generator().manual_seed(1))
    assert torch.equal(out[..., :4], image[..., :4])
    assert not torch.allclose(out[..., 4:], image[..., 4:])
    assert float(out[..., 4:].mean()) == pytest.approx(MU, abs=0.03)
    states = repaint_schedule(10, 3, jumps)
    assert len(calls) == sum(b < a for a, b in zip(states, states[1:])) == 10 + (jumps - 1) * 3 * 3


def test_repaint_schedule():
    s = repaint_schedule(10, 3, 2)
    assert s[0] == 9 and s[-1] == -1
    assert s[:9] == [9, 8, 7, 6, 9, 8, 7, 6, 5]
    assert repaint_schedule(5, 10, 4) == [4, 3, 2, 1, 0, -1]


def test_inpaint_rejects_bad_masks():
    p, model, image = _setup(n=2)
    with pytest.raises(ConfigError, match=r"mask has shape \(7, 7\).*\(8, 8\)"):
        inpaint(model, p, image, torch.ones(7, 7), SamplingConfig("ddpm", 5))
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        inpaint(model, p, image, torch.full((8, 8), 2.0), SamplingConfig("ddpm", 5))
    with pytest.raises(ConfigError, match="ddpm"):
        inpaint(model, p, image, torch.ones(8, 8), SamplingConfig("dpm++", 5), jump_n_sample=2)
    with pytest.raises(ConfigError, match="unknown sampler"):
        inpaint(model, p, image, torch.ones(8, 8), SamplingConfig("euler", 5))


def test_img2img_strength():
    p, model, image = _setup()
    g = torch.Generator().manual_seed(2)
    small = img2img(model, p, image, 0.02, SamplingConfig("ddim", 50), generator=g)
    assert small.shape == image.shape
    assert float((small - image).abs().mean()) < 0.03
    full = img2img(model, p, image, 1.0, SamplingConfig("dpm++", 20), generator=g)
    assert float((full - image).abs().mean()) > 0.1  # strength 1 forgets the image
    assert float(full.mean()) == pytest.approx(MU, abs=0.03)
    calls = []
    img2img(lambda x, t: calls.append(1) or model(x, t), p, image, 0.3, SamplingConfig("ddpm", 10), generator=g)
    assert len(calls) == 3
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(ConfigError, match="strength"):
            img2img(model, p, image, bad, SamplingConfig("ddim", 10))
    with pytest.raises(ConfigError, match="only 1000 timesteps"):
        img2img(model, p, image, 0.5, SamplingConfig("ddim", 1001))
