"""The UNet in 1 and 3 spatial dims and as a factorised space-time video UNet: shapes, gradients, zero
init, n-D pixel (un)shuffle, temporal masking (images inside a clip are independent) and FLOPs."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from aigc.errors import ConfigError
from aigc.models.unet import UNet, UNetConfig
from aigc.nn.conv import pixel_shuffle, pixel_unshuffle

from .test_unet import randomize


def audio(**kw) -> UNetConfig:
    base = dict(dims=1, image_size=32, in_channels=1, model_channels=16, channel_mult=(1, 2), num_res_blocks=1,
                attention_resolutions=(16,), num_heads=2, learn_sigma=True)
    base.update(kw)
    return UNetConfig(**base)


def video(**kw) -> UNetConfig:
    base = dict(image_size=8, in_channels=3, model_channels=16, channel_mult=(1, 2), num_res_blocks=1,
                attention_resolutions=(4,), num_heads=2, frames=4, learn_sigma=True)
    base.update(kw)
    return UNetConfig(**base)


# --- pixel (un)shuffle in n dims -------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(2, 3, 8), (2, 3, 4, 6), (1, 2, 4, 2, 6)], ids=["1d", "2d", "3d"])
def test_pixel_unshuffle_round_trips_and_orders_like_torch(shape):
    x = torch.randn(*shape)
    y = pixel_unshuffle(x, 2)
    d = x.dim() - 2
    assert y.shape == (shape[0], shape[1] * 2 ** d, *(s // 2 for s in shape[2:]))
    assert torch.equal(pixel_shuffle(y, 2), x)
    # channel c·p^d + offset, offsets row-major: the 2-D rule, one level up or down
    if d == 1:
        assert torch.equal(y[:, 1::2], x[:, :, 1::2]) and torch.equal(y[:, 0::2], x[:, :, 0::2])
    if d == 3:
        assert torch.equal(y[:, 5::8], x[:, :, 1::2, 0::2, 1::2])  # offset (1, 0, 1) = 4 + 1


# --- 1-D (audio) -----------------------------------------------------------------------------------


def test_audio_unet_shapes_gradients_and_zero_init():
    cfg = audio(patch_size=2, position_embedding=True)
    assert cfg.sample_shape == (1, 32) and cfg.level_shapes() == [(16,), (8,)]
    model = UNet(cfg)
    x = torch.randn(2, 1, 32)
    out = model(x, torch.tensor([3, 900]))
    assert out.shape == (2, 2, 32) and out.abs().max() == 0
    randomize(model)
    out = model(x, torch.tensor([3, 900]))
    out.square().mean().backward()
    assert all(p.grad is not None for p in model.parameters())
    assert isinstance(model.conv_in, torch.nn.Conv1d) and model.pos_embed.shape == (1, 16, 16)
    with pytest.raises(ValueError, match="3 dims"):
        model(torch.randn(2, 1, 8, 8), torch.tensor([1, 2]))


def test_volume_and_rectangular_sizes():
    cfg = UNetConfig(dims=3, image_size=[8, 8, 4], in_channels=1, model_channels=8, channel_mult=(1, 2),
                     num_res_blocks=1, attention_resolutions=(4,), num_heads=2, patch_size=2)
    assert cfg.image_size == (8, 8, 4) and cfg.level_shapes() == [(4, 4, 2), (2, 2, 1)]
    model = UNet(cfg)
    randomize(model)
    assert model(torch.randn(1, 1, 8, 8, 4), torch.tensor([5])).shape == (1, 1, 8, 8, 4)
    rect = UNet(UNetConfig(image_size=(12, 8), model_channels=8, channel_mult=(1, 2), num_res_blocks=1,
                           attention_resolutions=(6,), num_heads=2))
    assert rect(torch.randn(2, 1, 12, 8), torch.tensor([1, 2])).shape == (2, 1, 12, 8)
    assert rect.config.sample_shape == (1, 12, 8)


@pytest.mark.parametrize("kw, match", [
    (dict(dims=4), "dims"),
    (dict(image_size=(32, 32)), "one per spatial dim"),
    (dict(image_size=30, patch_size=4), "must divide"),
    (dict(attention_resolutions=(5,)), "never reaches"),
])
def test_nd_config_errors(kw, match):
    with pytest.raises(ConfigError, match=match):
        UNet(audio(**kw))


def test_old_image_configs_keep_their_shape():
    cfg = UNetConfig(image_size=28)
    assert cfg.dims == 2 and cfg.spatial_size == (28, 28) and cfg.sample_shape == (1, 28, 28)
    assert cfg.resolutions() == [28, 14, 7] and not cfg.video


# --- video (factorised space-time) ------------------------------------------------------------------


def test_video_unet_shapes_gradients_and_zero_init():
    cfg = video()
    assert cfg.sample_shape == (3, 4, 8, 8)
    model = UNet(cfg)
    blocks = [b for b in [*model.down, *model.mid, *model.up] if hasattr(b, "res")]
    assert all(b.tconv is not None and b.tattn is not None for b in blocks)
    x = torch.randn(2, 3, 4, 8, 8)
    out = model(x, torch.tensor([3, 900]))
    assert out.shape == (2, 6, 4, 8, 8) and out.abs().max() == 0
    randomize(model)
    with torch.no_grad():
        for b in blocks:
            b.tattn.rel_bias.normal_()
    out = model(x, torch.tensor([3, 900]))
    out.square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    # clips of another length work (the bias is relative, clipped to the trained distance)
    assert model(torch.randn(1, 3, 7, 8, 8), torch.tensor([10])).shape == (1, 6, 7, 8, 8)


def test_image_state_dict_has_no_temporal_keys():
    keys = UNet(video(frames=0)).state_dict().keys()
    assert not any("tconv" in k or "tattn" in k for k in keys)
    vkeys = UNet(video()).state_dict().keys()
    assert set(keys) < set(vkeys) and any(k.endswith("tattn.rel_bias") for k in vkeys)


def _random_video_unet(**kw) -> UNet:
    torch.manual_seed(0)
    model = UNet(video(**kw)).eval()
    randomize(model)
    with torch.no_grad():
        for m in model.modules():
            if hasattr(m, "rel_bias"):
                m.rel_bias.normal_()
    return model


def test_frames_mix_without_a_mask():
    model = _random_video_unet()
    x, t = torch.randn(1, 3, 4, 8, 8), torch.tensor([200])
    out = model(x, t)
    changed = x.clone()
    changed[:, :, 0] += 1.0                        # change the first frame only
    assert not torch.allclose(model(changed, t)[:, :, 3], out[:, :, 3], atol=1e-5)  # the last frame sees it


def test_masked_frames_are_independent_images():
    """A batch of images inside one clip (frame_mask False) gives every frame what it gives alone."""
    model = _random_video_unet(num_classes=3)
    x, t, y = torch.randn(2, 3, 4, 8, 8), torch.tensor([200, 600]), torch.tensor([0, 2])
    images = torch.zeros(2, 4, dtype=torch.bool)
    out = model(x, t, y, frame_mask=images)
    for f in range(4):
        alone = model(x[:, :, f:f + 1], t, y)       # a clip of one frame
        assert torch.allclose(out[:, :, f:f + 1], alone, atol=1e-5), f
    # a mixed clip: frames 0-1 a video, 2-3 images; the video part ignores the images
    mixed = torch.tensor([[True, True, False, False]] * 2)
    out = model(x, t, y, frame_mask=mixed)
    assert torch.allclose(out[:, :, :2], model(x[:, :, :2], t, y), atol=1e-5)
    assert torch.allclose(out[:, :, 3:], model(x[:, :, 3:], t, y), atol=1e-5)
    with pytest.raises(ValueError, match="frame_mask"):
        model(x, t, y, frame_mask=torch.ones(2, 3, dtype=torch.bool))


def test_text_conditional_video():
    model = _random_video_unet(context_dim=12, cross_attention_resolutions=(8,))
    context, pooled = torch.randn(2, 5, 12), torch.randn(2, 12)
    mask = torch.tensor([[True] * 5, [True, True, False, False, False]])
    out = model(torch.randn(2, 3, 3, 8, 8), torch.tensor([1, 2]), context=context, context_mask=mask, pooled=pooled)
    assert out.shape == (2, 6, 3, 8, 8) and torch.isfinite(out).all()


# --- FLOPs -----------------------------------------------------------------------------------------


def _matmul_attention(q, k, v, attn_mask=None, *args, **kwargs):
    w = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if attn_mask is not None:
        w = w + attn_mask if attn_mask.dtype != torch.bool else w.masked_fill(~attn_mask, float("-inf"))
    return torch.softmax(w, dim=-1) @ v


@pytest.mark.parametrize("cfg", [audio(), video(), video(frames=3, context_dim=8)], ids=["1d", "video", "video-text"])
def test_flops_match_the_counter(cfg, monkeypatch):
    model = UNet(cfg)
    x = torch.randn(2, *cfg.sample_shape)
    kw = dict(context=torch.randn(2, 6, 8), pooled=torch.randn(2, 8)) if cfg.text_conditional else {}
    monkeypatch.setattr(F, "scaled_dot_product_attention", _matmul_attention)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(x, torch.tensor([1, 2]), **kw)
    assert model.flops_per_image(tokens=6) == pytest.approx(fc.get_total_flops() / 2, rel=0.05)
