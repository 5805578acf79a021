"""Our text-conditional UNet against ``diffusers``' UNet2DConditionModel: training images/s and time
per network evaluation, plain and with classifier-free guidance.

    python bench/t2i.py [--quick] [--threads 2] [--batch 64] [--eval-batch 16] [--tokens 16] [--peer-proj auto]
                        [--patch 1|2]

Same process, same work, fp32, eager, same threads. Ours is a text-to-image
UNet at 32x32 RGB (learned Σ: 6 output channels): 64 channels, levels
32 -> 16 -> 8 at x(1, 2, 2), 2 residual blocks per level, self-attention and
cross-attention to the caption at 16x16 and 8x8 and in the middle block, the
pooled caption added to the timestep embedding (``--patch 2``: the
``t2i-small`` layout, 2x2 pixel patches folded into channels first, so the
levels are 16 -> 8 -> 4 and the peer runs on the same unshuffled 12-channel
16x16 input, results in ``t2i-patch2.json``); captions are random
MiniLM-width tokens (B, S=16, 384) with padding masked, and a pooled (B, 384).

The peer has the same levels, blocks per level and placement (DownBlock2D at
32x32, CrossAttnDownBlock2D / CrossAttnUpBlock2D at 16x16 and 8x8,
UNetMidBlock2DCrossAttn), ``cross_attention_dim`` 384, one transformer layer
per block, scale-shift residual blocks, the same head count and the same
padding mask (``encoder_attention_mask``). The pooled caption goes in through
``class_embed_type="simple_projection"``: one Linear added to the timestep
embedding, which is exactly what ours does (``"projection"`` would add an
MLP; ``addition_embed_type="text"`` pools the tokens itself by attention and
ignores the given pooled vector; ``"text_time"`` also wants SDXL's size
ids). Each diffusers transformer layer holds self-attention, cross-attention
and a GEGLU feed-forward (~20·C² weights against our ~6·C²), so the peer is
narrower at the same layout: its width is searched in 1/16 steps for the
best joint match of parameters (target ±10 %) and forward FLOPs (±15 %), both
counted by torch's FlopCounterMode. Its transformer projections are 1x1
convolutions or Linear layers (``use_linear_projection``), whichever trains
faster here (``--peer-proj auto``, a short timed probe); attention is its
default SDPA processor.

Training: a full step of the same objective (our ``GaussianDiffusion`` hybrid
loss, cosine schedule, T = 1000, the peer's output fed through the same code),
backward, clip 1.0, fused AdamW, batch 64. Sampling: one no-grad forward at
batch 16, and the guided step a sampler pays with classifier-free guidance
(the conditional and the empty-prompt halves in one batch of 32).
Interleaved (ours, peer, peer, ours, ...), medians; MFU = 3 x forward FLOPs
per image x images/s against a torch.mm peak measured in this run. Results go
to bench/results/t2i.json (not with --quick). Last stdout line: one JSON object.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from typing import Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import Tensor  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from common import (emit_json, interleave, matmul_peak_gflops, median, rounded, set_quiet_budget,  # noqa: E402
                    setup, stats, table, timed)

from aigc.diffusion.config import DiffusionConfig  # noqa: E402
from aigc.models.unet import UNet, UNetConfig  # noqa: E402
from aigc.train.optim import make_adamw, param_groups  # noqa: E402

SIZE, CHANNELS, CONTEXT_DIM = 32, 3, 384   # emoji / shapes at 32x32 RGB; all-MiniLM-L6-v2's width
PARAM_TOL, FLOP_TOL = 0.10, 0.15
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "t2i.json")

# (B, C, H, W), (B,), and the caption: tokens (B, S, E), mask (B, S) bool, pooled (B, E)
Batch = tuple[Tensor, Tensor, Tensor, Tensor, Tensor]
ModelFn = Callable[[Tensor, Tensor, Tensor, Tensor, Tensor], Tensor]


def ours_model(model_channels: int, patch: int = 1) -> UNet:
    return UNet(UNetConfig(image_size=SIZE, in_channels=CHANNELS, model_channels=model_channels, patch_size=patch,
                           learn_sigma=True, channel_mult=(1, 2, 2), num_res_blocks=2,
                           attention_resolutions=(16, 8), cross_attention_resolutions=(16, 8),
                           num_heads=4, dropout=0.0, context_dim=CONTEXT_DIM))


def peer_model(ours: UNet, width_scale: float = 1.0, linear_proj: bool = True):
    """UNet2DConditionModel with our levels, blocks and (cross-)attention placement; widths scaled."""
    from diffusers import UNet2DConditionModel

    c = ours.config
    p2 = c.patch_size ** 2  # with patches, the peer works on the pixel-unshuffled image, as ours does
    widths = tuple(int(round(c.model_channels * m * width_scale / 16)) * 16 for m in c.channel_mult)
    groups = next(g for g in (32, 16) if all(w % g == 0 for w in widths))
    sizes = c.resolutions()
    cross = set(c.cross_resolutions)
    if set(c.attention_resolutions) != cross:
        raise ValueError("the peer's transformer blocks self- and cross-attend together: "
                         "give ours the same attention and cross-attention resolutions")
    down = tuple("CrossAttnDownBlock2D" if s in cross else "DownBlock2D" for s in sizes)
    up = tuple("CrossAttnUpBlock2D" if s in cross else "UpBlock2D" for s in reversed(sizes))
    # attention_head_dim is the head *count* in UNet2DConditionModel (diffusers issue 2011)
    return UNet2DConditionModel(
        sample_size=SIZE // c.patch_size, in_channels=CHANNELS * p2, out_channels=c.out_ch * p2,
        block_out_channels=widths,
        layers_per_block=c.num_res_blocks, down_block_types=down, up_block_types=up,
        mid_block_type="UNetMidBlock2DCrossAttn", cross_attention_dim=CONTEXT_DIM,
        transformer_layers_per_block=1, attention_head_dim=c.num_heads, norm_num_groups=groups,
        resnet_time_scale_shift="scale_shift", class_embed_type="simple_projection",
        projection_class_embeddings_input_dim=CONTEXT_DIM, use_linear_projection=linear_proj, dropout=0.0)


def functions(ours: UNet, peer) -> dict[str, ModelFn]:
    def ours_fn(x, t, tokens, mask, pooled):
        return ours(x, t, context=tokens, context_mask=mask, pooled=pooled)

    p = ours.config.patch_size

    def peer_fn(x, t, tokens, mask, pooled):
        x = F.pixel_unshuffle(x, p) if p > 1 else x
        out = peer(x, t, encoder_hidden_states=tokens, encoder_attention_mask=mask, class_labels=pooled).sample
        return F.pixel_shuffle(out, p) if p > 1 else out
    return {"ours": ours_fn, "peer": peer_fn}


def params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _attention_flops(query, key, value, *args, out_shape=None, **kwargs) -> int:
    """Q K^T and A V of an SDPA call, from the shapes (B, H, L, D): FlopCounterMode has no formula
    for the CPU flash kernel that SDPA dispatches to here, and would count no attention at all."""
    b, h, lq, d = query
    return 2 * b * h * lq * key[-2] * d + 2 * b * h * lq * key[-2] * value[-1]


_CPU_FLASH = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _attention_flops}


def forward_flops(fn: ModelFn, batch: Batch) -> int:
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=_CPU_FLASH) as counter:
        fn(*batch)
    return counter.get_total_flops() // batch[0].shape[0]


def make_batch(n: int, tokens: int, g: torch.Generator, empty: bool = False) -> Batch:
    """Random images, timesteps and captions of 2..S real tokens (the rest padding, masked);
    ``empty``: the empty prompt of classifier-free guidance (two real tokens, [CLS] [SEP])."""
    x = torch.randn(n, CHANNELS, SIZE, SIZE, generator=g)
    t = torch.randint(0, 1000, (n,), generator=g)
    ctx = torch.randn(n, tokens, CONTEXT_DIM, generator=g)
    lengths = torch.full((n,), 2) if empty else torch.randint(2, tokens + 1, (n,), generator=g)
    mask = torch.arange(tokens)[None, :] < lengths[:, None]           # (B, S) True at real tokens
    return x, t, ctx * mask[..., None], mask, torch.randn(n, CONTEXT_DIM, generator=g)


def guided_batch(n: int, tokens: int, g: torch.Generator) -> Batch:
    """What one guided sampler step evaluates: n conditional rows, then the same n with the empty prompt."""
    cond, uncond = make_batch(n, tokens, g), make_batch(n, tokens, g, empty=True)
    x, t = cond[0].repeat(2, 1, 1, 1), cond[1].repeat(2)
    return (x, t) + tuple(torch.cat((a, b)) for a, b in zip(cond[2:], uncond[2:]))


def matched_scale(ours: UNet, flops_ours: int, probe: Batch) -> tuple[float, list[dict]]:
    """The peer width scale (1/16 steps) with the best joint match of parameters and forward FLOPs,
    the smallest max(param gap / 10 %, FLOP gap / 15 %), and the gaps of every width tried."""
    target = params(ours)
    tried, seen = [], set()
    for k in range(6, 25):
        cand = peer_model(ours, k / 16).eval()
        if cand.config.block_out_channels in seen:  # widths round to 16: many scales give the same peer
            continue
        seen.add(cand.config.block_out_channels)
        p_gap = params(cand) / target - 1
        if abs(p_gap) > 3 * PARAM_TOL:     # far off: not worth counting its FLOPs
            continue
        f_gap = forward_flops(functions(ours, cand)["peer"], probe) / flops_ours - 1
        tried.append((max(abs(p_gap) / PARAM_TOL, abs(f_gap) / FLOP_TOL), k / 16, p_gap, f_gap))
    _, scale, _, _ = min(tried)
    return scale, [
        {"scale": s, "params_gap": p, "flops_gap": f} for _, s, p, f in sorted(tried, key=lambda r: r[1])]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny widths and batches, a few iterations: a smoke test")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--eval-batch", type=int, default=16, help="images per sampler step (x2 with guidance)")
    ap.add_argument("--tokens", type=int, default=16, help="caption length S (shorter captions padded)")
    ap.add_argument("--model-channels", type=int, default=64)
    ap.add_argument("--patch", type=int, default=1, help="2: the t2i-small layout (2x2 pixel patches, levels 16/8/4)")
    ap.add_argument("--peer-proj", choices=("auto", "linear", "conv"), default="auto",
                    help="the peer's transformer in/out projections (auto: the faster, timed here)")
    args = ap.parse_args()
    if args.quick:
        args.batch, args.eval_batch, args.model_channels = min(args.batch, 8), min(args.eval_batch, 4), 32
    setup(args.threads)
    set_quiet_budget(10.0 if args.quick else 180.0)
    warnings.filterwarnings("ignore")
    logging.getLogger("diffusers").setLevel(logging.ERROR)
    import diffusers

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    ours = ours_model(args.model_channels, args.patch)
    probe = make_batch(2, args.tokens, g)
    flops_ours = forward_flops(functions(ours, None)["ours"], probe)
    scale, search = matched_scale(ours, flops_ours, probe)
    process = DiffusionConfig().process()  # cosine, T = 1000, learned range, hybrid loss
    data = [make_batch(args.batch, args.tokens, g) for _ in range(4)]

    def train_step(model, opt, fn, batch: Batch) -> None:
        x0, _, tokens, mask, pooled = batch
        tt = torch.randint(0, 1000, (x0.shape[0],))
        loss = process.training_losses(lambda xt, s: fn(xt, s, tokens, mask, pooled), x0, tt)["loss"].mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    proj_ms: dict[str, float] = {}
    if args.peer_proj == "auto":  # the peer at its best: time a training step with each projection kind
        for kind in ("linear", "conv"):
            torch.manual_seed(0)
            cand = peer_model(ours, scale, kind == "linear").train()
            fn = functions(ours, cand)["peer"]
            opt = torch.optim.AdamW(param_groups(cand, 0.0), lr=2e-4, fused=True)
            train_step(cand, opt, fn, data[0])
            proj_ms[kind] = min(timed(lambda: train_step(cand, opt, fn, data[1])) for _ in range(2)) * 1e3
        kind = min(proj_ms, key=proj_ms.get)
    else:
        kind = args.peer_proj
    torch.manual_seed(0)
    peer = peer_model(ours, scale, kind == "linear")
    fns = functions(ours, peer)
    processors = sorted({type(p).__name__ for p in peer.attn_processors.values()})

    flops = {"ours": flops_ours, "peer": forward_flops(fns["peer"], probe)}
    sizes = {"ours": params(ours), "peer": params(peer)}
    result: dict = {"bench": "t2i", "quick": args.quick, "threads": torch.get_num_threads(),
                    "torch": torch.__version__, "diffusers": diffusers.__version__,
                    "image": [CHANNELS, SIZE, SIZE], "tokens": args.tokens, "context_dim": CONTEXT_DIM,
                    "ours_config": {"model_channels": ours.config.model_channels,
                                    "channel_mult": list(ours.config.channel_mult),
                                    "num_res_blocks": ours.config.num_res_blocks,
                                    "attention_resolutions": list(ours.config.attention_resolutions),
                                    "cross_attention_resolutions": list(ours.config.cross_resolutions),
                                    "num_heads": ours.config.num_heads, "patch_size": ours.config.patch_size},
                    "peer_config": {"block_out_channels": list(peer.config.block_out_channels),
                                    "down_block_types": list(peer.config.down_block_types),
                                    "use_linear_projection": kind == "linear", "attn_processors": processors,
                                    "class_embed_type": "simple_projection"},
                    "peer_proj_probe_ms": proj_ms,
                    "params": sizes, "forward_flops_per_image": flops,
                    "ours_analytic_flops_per_image": ours.flops_per_image(tokens=args.tokens),
                    "peer_width_scale": scale, "width_search": search,
                    "params_ratio": sizes["peer"] / sizes["ours"], "flops_ratio": flops["peer"] / flops["ours"]}
    print(f"parameters: ours {sizes['ours']:,}, peer {sizes['peer']:,} ({result['params_ratio']:.3f}x); "
          f"forward GFLOP/image: ours {flops['ours'] / 1e9:.3f}, peer {flops['peer'] / 1e9:.3f} "
          f"({result['flops_ratio']:.3f}x); peer widths {list(peer.config.block_out_channels)} (x{scale}), "
          f"{kind} projections, {', '.join(processors)}")
    matched = (abs(result["params_ratio"] - 1) <= PARAM_TOL and abs(result["flops_ratio"] - 1) <= FLOP_TOL)
    result["matched"] = matched
    if not matched:
        print("WARNING: the peer is not matched within 10 % parameters / 15 % FLOPs")

    peak = matmul_peak_gflops(1024 if args.quick else 2048, 3 if args.quick else 7)
    models = {"ours": ours, "peer": peer}
    optims = {"ours": make_adamw(ours, 2e-4, 0.0, (0.9, 0.999)),
              "peer": torch.optim.AdamW(param_groups(peer, 0.0), lr=2e-4, betas=(0.9, 0.999), fused=True)}
    plain = make_batch(args.eval_batch, args.tokens, g)
    guided = guided_batch(args.eval_batch, args.tokens, g)
    pos = {"ours": 0, "peer": 0}
    steps = 1 if args.quick else 3

    def trainer(who):
        model, opt, fn = models[who], optims[who], fns[who]

        def run():
            model.train()
            for _ in range(steps):
                train_step(model, opt, fn, data[pos[who] % len(data)])
                pos[who] += 1
        return run

    def evaluator(who, batch: Batch):
        model, fn = models[who], fns[who]

        @torch.no_grad()
        def run():
            model.eval()
            for _ in range(steps):
                fn(*batch)
        return run

    rounds = 2 if args.quick else 7
    train_t = interleave({k: trainer(k) for k in models}, rounds)
    eval_t = interleave({k: evaluator(k, plain) for k in models}, rounds)
    cfg_t = interleave({k: evaluator(k, guided) for k in models}, rounds)
    rows = []
    for who in models:
        img_s = median([steps * args.batch / s for s in train_t[who]])
        ms = median([s / steps * 1e3 for s in eval_t[who]])
        cfg_ms = median([s / steps * 1e3 for s in cfg_t[who]])
        result[who] = {"train_images_s": img_s, "eval_ms_batch": ms, "cfg_step_ms": cfg_ms,
                       "train_mfu": 3 * flops[who] * img_s / (peak * 1e9),
                       "eval_mfu": flops[who] * args.eval_batch / (ms / 1e3) / (peak * 1e9),
                       "cfg_mfu": flops[who] * 2 * args.eval_batch / (cfg_ms / 1e3) / (peak * 1e9)}
        r = result[who]
        rows.append([who, img_s, f"{100 * r['train_mfu']:.0f}%", ms, f"{100 * r['eval_mfu']:.0f}%",
                     cfg_ms, f"{100 * r['cfg_mfu']:.0f}%"])
    result["train_ratio"] = result["ours"]["train_images_s"] / result["peer"]["train_images_s"]
    result["eval_ratio"] = result["peer"]["eval_ms_batch"] / result["ours"]["eval_ms_batch"]
    result["cfg_ratio"] = result["peer"]["cfg_step_ms"] / result["ours"]["cfg_step_ms"]
    result["machine"] = {"matmul_peak_gflops": peak}
    print(f"\nfp32 torch.mm peak {peak:.0f} GFLOP/s, {torch.get_num_threads()} threads; batch {args.batch} "
          f"training, batch {args.eval_batch} sampling (x2 with guidance); medians of interleaved runs")
    print(table(rows, ["model", "train images/s", "train MFU", f"eval ms/batch {args.eval_batch}", "eval MFU",
                       f"guided step ms ({2 * args.eval_batch})", "guided MFU"]))
    print(f"ours/peer: training {result['train_ratio']:.2f}x, sampling {result['eval_ratio']:.2f}x, "
          f"guided sampling {result['cfg_ratio']:.2f}x")
    result["targets_met"] = {"train_ratio>=1": result["train_ratio"] >= 1.0,
                             "cfg_ratio>=1": result["cfg_ratio"] >= 1.0,
                             "matched": matched}
    result.update(stats)
    out = rounded(result)
    if not args.quick:
        os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
        with open(RESULTS if args.patch == 1 else RESULTS.replace(".json", f"-patch{args.patch}.json"), "w") as f:
            json.dump(out, f)
            f.write("\n")
    emit_json(out)


if __name__ == "__main__":
    main()
