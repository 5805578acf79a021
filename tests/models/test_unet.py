"""The Improved-DDPM UNet: shapes, conditioning, zero init, overfitting, config errors, FLOP count."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from aigc.data.images import load_image_dataset, to_model_range
from aigc.errors import ConfigError
from aigc.models.unet import UNet, UNetConfig, norm_groups
from aigc.nn.timestep import timestep_embedding


def tiny(**kw) -> UNetConfig:
    base = dict(image_size=8, in_channels=1, model_channels=16, channel_mult=(1, 2), num_res_blocks=1,
                attention_resolutions=(4,), num_heads=2)
    base.update(kw)
    return UNetConfig(**base)


def randomize(model: torch.nn.Module, seed: int = 0) -> None:
    """Give the zero-initialised layers random weights, so every input matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)


# --- timestep embedding -----------------------------------------------------------------------------


def test_timestep_embedding_shapes_and_values():
    t = torch.tensor([0, 1, 999])
    emb = timestep_embedding(t, 32)
    assert emb.shape == (3, 32) and emb.dtype == torch.float32
    assert torch.equal(emb[0, :16], torch.ones(16)) and torch.equal(emb[0, 16:], torch.zeros(16))
    assert torch.allclose(emb[1, 0], torch.tensor(math.cos(1.0)))  # the first frequency is 1
    odd = timestep_embedding(torch.tensor([2.5, 7.25]), 9)  # float timesteps, odd width
    assert odd.shape == (2, 9) and torch.equal(odd[:, -1], torch.zeros(2))
    assert not torch.allclose(timestep_embedding(torch.tensor([2.5]), 8), timestep_embedding(torch.tensor([2.0]), 8))


# --- shapes ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("cfg", [
    tiny(),
    UNetConfig(image_size=28, model_channels=16, channel_mult=(1, 2, 2), num_res_blocks=1,
               attention_resolutions=(14, 7), num_heads=2),
    UNetConfig(image_size=32, in_channels=3, model_channels=16, channel_mult=(1, 2, 2, 2), num_res_blocks=1,
               attention_resolutions=(16, 8), head_channels=8, dropout=0.1),
], ids=["8x8", "28x28", "32x32"])
def test_output_shapes(cfg):
    model = UNet(cfg)
    x = torch.randn(2, cfg.in_channels, cfg.image_size, cfg.image_size)
    out = model(x, torch.tensor([3, 700]))
    assert out.shape == x.shape
    assert out.abs().max() == 0  # zero-initialised output convolution


def test_odd_resolutions_round_trip():
    cfg = UNetConfig(image_size=28, model_channels=16, channel_mult=(1, 2, 2, 2), num_res_blocks=1,
                     attention_resolutions=(4,), num_heads=2)
    assert cfg.resolutions() == [28, 14, 7, 4]
    model = UNet(cfg)
    randomize(model)
    out = model(torch.randn(2, 1, 28, 28), torch.tensor([1.5, 10.0]))  # float timesteps
    assert out.shape == (2, 1, 28, 28) and torch.isfinite(out).all()


def test_learn_sigma_doubles_channels():
    cfg = tiny(in_channels=3, learn_sigma=True)
    assert cfg.out_ch == 6
    assert UNet(cfg)(torch.randn(1, 3, 8, 8), torch.tensor([5])).shape == (1, 6, 8, 8)
    assert tiny(out_channels=5, learn_sigma=True).out_ch == 5  # explicit out_channels wins


def test_patch_size_folds_pixels_into_channels():
    cfg = tiny(in_channels=3, learn_sigma=True, image_size=16, patch_size=2, attention_resolutions=(8,))
    assert cfg.resolutions() == [8, 4]
    model = UNet(cfg)
    assert model.conv_in.in_channels == 12 and model.conv_out.out_channels == 24
    randomize(model)
    x = torch.randn(2, 3, 16, 16)
    out = model(x, torch.tensor([3, 700]))
    assert out.shape == (2, 6, 16, 16) and torch.isfinite(out).all()
    # output channel c of pixel (2i + a, 2j + b) is conv channel 4c + 2a + b at (i, j): epsilon comes first
    conv = model.conv_out
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.copy_(torch.arange(24.0))
    out = model(x, torch.tensor([3, 700]))
    assert torch.equal(out[0, :, 0, 0], torch.arange(0.0, 24.0, 4)) and out[0, 1, 1, 1] == 7


def test_position_embedding_gives_pixels_their_coordinates():
    from aigc.nn.embeddings import grid_sinusoids
    grid = grid_sinusoids(4, 6)                          # 3 row channels, 3 column channels
    assert grid.shape == (1, 6, 4, 4)
    assert torch.equal(grid[0, 0, :, 0], grid[0, 0, :, 3]) and not torch.equal(grid[0, 0, 0], grid[0, 0, 1])
    assert torch.equal(grid[0, 3, 0, :], grid[0, 3, 2, :]) and not torch.equal(grid[0, 3, :, 0], grid[0, 3, :, 1])
    torch.manual_seed(0)
    plain = UNet(tiny(image_size=16, patch_size=2))
    torch.manual_seed(0)
    model = UNet(tiny(image_size=16, patch_size=2, position_embedding=True))
    assert model.pos_embed.shape == (1, 16, 8, 8) and model.pos_embed.requires_grad and plain.pos_embed is None
    assert model.num_params() == plain.num_params() + 16 * 8 * 8
    randomize(model), randomize(plain)
    x, t = torch.randn(1, 1, 16, 16), torch.tensor([500])
    out_pos = model(x, t)
    with torch.no_grad():
        model.pos_embed.zero_()
    assert not torch.allclose(model(x, t), out_pos, atol=1e-4)   # the embedding reaches the output
    out_pos = model(x, t)
    out_pos.sum().backward()
    assert model.pos_embed.grad is not None and model.pos_embed.grad.abs().sum() > 0


def test_class_conditioning_and_null_class():
    torch.manual_seed(0)
    model = UNet(tiny(num_classes=10)).eval()
    randomize(model)
    x, t = torch.randn(3, 1, 8, 8), torch.tensor([10, 10, 10])
    a = model(x, t, torch.tensor([1, 2, 3]))
    b = model(x, t, torch.tensor([4, 2, 3]))
    assert not torch.allclose(a[0], b[0]) and torch.allclose(a[1:], b[1:])
    null = model(x, t, torch.full((3,), 10))  # index num_classes = the learned null class
    assert torch.equal(null, model(x, t))      # y=None means the null class
    assert model.label_embed.num_embeddings == 11
    with pytest.raises(ValueError, match="unconditional"):
        UNet(tiny())(x, t, torch.tensor([1, 2, 3]))


def test_timestep_matters_and_scalar_t_broadcasts():
    model = UNet(tiny()).eval()
    randomize(model)
    x = torch.randn(2, 1, 8, 8)
    assert not torch.allclose(model(x, torch.tensor([1, 1])), model(x, torch.tensor([500, 500])))
    assert torch.allclose(model(x, torch.tensor(7)), model(x, torch.tensor([7, 7])))


def test_overfits_a_few_digits():
    torch.manual_seed(0)
    x0 = to_model_range(load_image_dataset("digits").images[:8])          # (8, 1, 8, 8)
    model = UNet(tiny(model_channels=32, num_classes=10))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(1)
    eps = torch.randn(x0.shape, generator=g)
    t = torch.randint(0, 1000, (8,), generator=g)
    abar = torch.cos((t / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2       # cosine schedule (Nichol & Dhariwal)
    xt = abar.sqrt()[:, None, None, None] * x0 + (1 - abar).sqrt()[:, None, None, None] * eps
    y = torch.arange(8)
    losses = []
    for _ in range(40):
        loss = F.mse_loss(model(xt, t, y), eps)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(float(eps.pow(2).mean()), rel=1e-5)  # zero output at the start
    assert losses[-1] < 0.2 * losses[0], losses[::5]


# --- config errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kw, match", [
    (dict(attention_resolutions=(5,)), "never reaches"),
    (dict(num_heads=3), "num_heads"),
    (dict(head_channels=12), "head_channels"),
    (dict(channel_mult=(1, 1, 1, 1, 1)), "too many"),
    (dict(channel_mult=()), "channel_mult"),
    (dict(channel_mult=(1, 0)), "channel_mult"),
    (dict(dropout=1.0), "dropout"),
    (dict(model_channels=0), "model_channels"),
    (dict(num_classes=-1), "num_classes"),
    (dict(patch_size=3), "must divide the image size"),
    (dict(patch_size=0), "patch_size"),
])
def test_config_errors(kw, match):
    with pytest.raises(ConfigError, match=match):
        UNet(tiny(**kw))


def test_lists_from_json_become_tuples_and_groups_divide():
    cfg = UNetConfig(channel_mult=[1, 2], attention_resolutions=[14], image_size=28)
    assert cfg.channel_mult == (1, 2) and cfg.attention_resolutions == (14,)
    assert norm_groups(48) == 24 and norm_groups(64) == 32 and norm_groups(6) == 6 and norm_groups(7, 4) == 1


# --- FLOPs -----------------------------------------------------------------------------------------


def _matmul_attention(q, k, v, *args, **kwargs):
    """Attention as two counted matmuls (the CPU SDPA kernel has no FLOP formula)."""
    w = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
    return w @ v


@pytest.mark.parametrize("cfg", [
    UNetConfig(image_size=28, model_channels=16, channel_mult=(1, 2, 2), num_res_blocks=2,
               attention_resolutions=(14, 7), num_heads=4, num_classes=10, learn_sigma=True),
    tiny(use_scale_shift_norm=False),
    tiny(image_size=16, patch_size=2, in_channels=3, learn_sigma=True),
], ids=["28x28", "8x8", "16x16-patch2"])
def test_flops_per_image_matches_flop_counter(cfg, monkeypatch):
    model = UNet(cfg)
    x = torch.randn(2, cfg.in_channels, cfg.image_size, cfg.image_size)
    t, y = torch.tensor([1, 2]), (torch.tensor([0, 1]) if cfg.num_classes else None)
    with FlopCounterMode(display=False) as fc_sdpa:  # SDPA path: attention matmuls uncounted on CPU
        model(x, t, y)
    monkeypatch.setattr(F, "scaled_dot_product_attention", _matmul_attention)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(x, t, y)
    counted = fc.get_total_flops() / 2
    assert model.flops_per_image() == pytest.approx(counted, rel=0.05)
    assert fc_sdpa.get_total_flops() / 2 <= model.flops_per_image()
