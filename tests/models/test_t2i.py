"""Text conditioning: cross-attention in the UNet, the text-to-image module, guidance and caption dropout."""
import pytest
import torch

from aigc.diffusion import drop_captions, guided
from aigc.errors import ConfigError
from aigc.models.t2i import TextCondition, TextToImage, build_text_to_image
from aigc.models.text_encoder import TextEncoder, TextEncoderConfig
from aigc.models.unet import UNet, UNetConfig

from .test_unet import randomize

WIDTH = 24


def unet_cfg(**kw) -> UNetConfig:
    base = dict(image_size=8, in_channels=3, model_channels=16, channel_mult=(1, 2), num_res_blocks=1,
                attention_resolutions=(4,), cross_attention_resolutions=(8, 4), num_heads=2, context_dim=WIDTH,
                learn_sigma=True)
    base.update(kw)
    return UNetConfig(**base)


def text_cfg(**kw) -> TextEncoderConfig:
    base = dict(vocab_size=50, max_len=16, d_model=WIDTH, n_layer=1, n_head=2, d_ff=32, dropout=0.0, pad_id=0)
    base.update(kw)
    return TextEncoderConfig(**base)


def t2i_model(seed: int = 0) -> TextToImage:
    torch.manual_seed(seed)
    model = TextToImage(UNet(unet_cfg()), TextEncoder(text_cfg())).eval()
    randomize(model, seed)
    return model


def test_cross_attention_layers_where_asked():
    unet = UNet(unet_cfg())
    crossed = [blk for blk in [*unet.down, *unet.mid, *unet.up] if getattr(blk, "cross", None) is not None]
    # down: 8x8 and 4x4 blocks; middle: the first block; up: 2 + 2 blocks
    assert len(crossed) == 2 + 1 + 4
    none = UNet(unet_cfg(cross_attention_resolutions=()))
    assert sum(getattr(b, "cross", None) is not None for b in [*none.down, *none.mid, *none.up]) == 1  # the middle
    with pytest.raises(ConfigError, match="never reaches"):
        UNet(unet_cfg(cross_attention_resolutions=(5,)))


def test_cross_attention_ignores_padding_tokens():
    torch.manual_seed(0)
    unet = UNet(unet_cfg()).eval()
    randomize(unet)
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([10, 500])
    context, pooled = torch.randn(2, 6, WIDTH), torch.randn(2, WIDTH)
    mask = torch.tensor([[True] * 6, [True, True, True, False, False, False]])
    out = unet(x, t, context=context, context_mask=mask, pooled=pooled)
    changed = context.clone()
    changed[1, 3:] = torch.randn(3, WIDTH) * 100                  # garbage where row 1 is padding
    assert torch.equal(out, unet(x, t, context=changed, context_mask=mask, pooled=pooled))
    # a shorter batch without the padding gives the same row
    alone = unet(x[1:], t[1:], context=context[1:, :3], context_mask=mask[1:, :3], pooled=pooled[1:])
    assert torch.allclose(out[1:], alone, atol=1e-5)
    # but real tokens matter
    changed[1, 0] += 1.0
    assert not torch.allclose(out[1], unet(x, t, context=changed, context_mask=mask, pooled=pooled)[1])


def test_unet_checks_its_text_inputs():
    unet = UNet(unet_cfg())
    x, t = torch.randn(1, 3, 8, 8), torch.tensor([1])
    with pytest.raises(ValueError, match="context must be"):
        unet(x, t, context=torch.randn(1, 4, WIDTH + 1), pooled=torch.randn(1, WIDTH))
    with pytest.raises(ValueError, match="pooled"):
        unet(x, t, context=torch.randn(1, 4, WIDTH))
    with pytest.raises(ValueError, match="no cross-attention"):
        UNet(unet_cfg(context_dim=0, cross_attention_resolutions=None))(x, t, context=torch.randn(1, 4, WIDTH))


def test_flops_count_the_cross_attention():
    from torch.utils.flop_counter import FlopCounterMode

    unet = UNet(unet_cfg(learn_sigma=False)).eval()
    x, t = torch.randn(1, 3, 8, 8), torch.tensor([3])
    ctx, pooled = torch.randn(1, 5, WIDTH), torch.randn(1, WIDTH)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        unet(x, t, context=ctx, pooled=pooled)
    measured = counter.get_total_flops()
    # torch's counter misses the CPU attention kernel: add its two matmuls per attention layer analytically
    assert unet.flops_per_image(tokens=5) > unet.flops_per_image(tokens=0) > 0
    assert abs(unet.flops_per_image(tokens=5) - measured) / measured < 0.1


def test_text_to_image_trains_the_encoder_and_keeps_a_frozen_one_out_of_the_weights():
    model = t2i_model()
    ids, mask = torch.tensor([[1, 5, 6, 0], [1, 7, 0, 0]]), torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]]).bool()
    out = model(torch.randn(2, 3, 8, 8), torch.tensor([3, 9]), (ids, mask))
    assert out.shape == (2, 6, 8, 8)
    out.square().mean().backward()
    assert model.text.tok_embed.weight.grad is not None and model.text.tok_embed.weight.grad.abs().sum() > 0

    frozen = TextToImage(UNet(unet_cfg()), TextEncoder(text_cfg()), frozen_text=True)
    names = set(frozen.state_dict())
    assert names and all(n.startswith("unet.") for n in names)
    assert frozen.num_params() == sum(p.numel() for p in frozen.unet.parameters())
    frozen.train()
    assert not frozen.text_encoder.training           # a frozen encoder stays in eval mode
    frozen.to(torch.float64)
    assert frozen.text_encoder.tok_embed.weight.dtype == torch.float64  # but follows .to()
    with pytest.raises(ConfigError, match="context_dim"):
        TextToImage(UNet(unet_cfg(context_dim=WIDTH * 2)), TextEncoder(text_cfg()))
    with pytest.raises(ConfigError, match="one of"):
        build_text_to_image(unet_cfg(), text_cfg(), "clip")


def test_guidance_scale_one_is_the_conditional_model_and_empty_prompt_is_unconditional():
    model = t2i_model()
    ids = torch.tensor([[1, 5, 6], [1, 7, 8]])
    cond = model.encode(ids, torch.ones_like(ids, dtype=torch.bool))
    empty = model.encode(torch.tensor([[1]]), torch.tensor([[True]])).repeat(2)
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([100, 100])
    with torch.no_grad():
        plain = model(x, t, cond)
        assert torch.equal(guided(model, cond, empty, 1.0, TextCondition.cat)(x, t), plain)
        # guidance from the empty prompt towards the empty prompt is the unconditional model, at any scale
        uncond = model(x, t, empty)
        steered = guided(model, empty, empty, 5.0, TextCondition.cat, learned_sigma=True)(x, t)
        assert torch.allclose(steered, uncond, atol=1e-5)
        g = guided(model, cond, empty, 3.0, TextCondition.cat, learned_sigma=True)(x, t)
        assert torch.allclose(g[:, :3], uncond[:, :3] + 3.0 * (plain[:, :3] - uncond[:, :3]), atol=1e-5)
        assert torch.allclose(g[:, 3:], plain[:, 3:], atol=1e-5)  # the learned variance comes from the conditional half


def test_text_condition_cat_pads_the_token_axis():
    a = TextCondition(torch.randn(2, 3, 4), torch.ones(2, 3, dtype=torch.bool), torch.randn(2, 4))
    b = TextCondition(torch.randn(1, 5, 4), torch.ones(1, 5, dtype=torch.bool), torch.randn(1, 4))
    both = TextCondition.cat([a, b])
    assert both.tokens.shape == (3, 5, 4) and both.mask[:2, 3:].sum() == 0 and both.mask[2].all()
    assert torch.equal(both.tokens[:2, :3], a.tokens) and len(both) == 3


def test_caption_dropout_writes_the_empty_prompt():
    ids = torch.tensor([[1, 5, 6, 7], [1, 8, 9, 0], [1, 4, 0, 0]])
    mask = ids != 0
    mask[:, 0] = True
    torch.manual_seed(0)
    same = drop_captions(ids, mask, 0.0, torch.tensor([1]))
    assert same[0] is ids
    dropped_ids, dropped_mask = drop_captions(ids, mask, 1.0, torch.tensor([1, 2]))
    assert torch.equal(dropped_ids[:, :2], torch.tensor([[1, 2]] * 3))
    assert torch.equal(dropped_mask, torch.tensor([[True, True, False, False]] * 3))
    with pytest.raises(ConfigError):
        drop_captions(ids, mask, 1.5, torch.tensor([1]))
