"""Our UNet against ``diffusers``' UNet2DModel: training images/s and time per network evaluation.

    python bench/diffusion.py [--quick] [--preset small] [--threads 2] [--batch 64] [--eval-batch 16]

Same process, same work, fp32, eager, same threads. Ours is the preset's UNet
(class-conditional, learned Σ: 2 output channels) at 28x28; the peer is a
UNet2DModel with the same levels (28 -> 14 -> 7), channels, residual blocks
per level, attention at 7x7 and a class embedding, its width chosen so that
its parameter count is within 10 % of ours. Both forward FLOPs are counted by
torch's FlopCounterMode (same counting for both) and must agree within 15 %.

Training: a full step of the same objective (our ``GaussianDiffusion``
hybrid loss, cosine schedule, T = 1000, the peer's output fed through the same
code), backward, clip 1.0, fused AdamW, batch 64 of fashion-mnist-sized random
images (speed does not depend on the pixels). Evaluation: one no-grad forward
at batch 16 (what a sampler pays per step). Interleaved (ours, peer, peer,
ours, ...), medians; MFU = 3 x forward FLOPs per image x images/s against a
torch.mm peak measured in this run. Last stdout line: one JSON object.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from common import (emit_json, interleave, matmul_peak_gflops, median, rounded, set_quiet_budget,  # noqa: E402
                    setup, stats, table)

from aigc.diffusion.config import DiffusionConfig  # noqa: E402
from aigc.models.unet import UNet  # noqa: E402
from aigc.families.image.recipe import preset  # noqa: E402
from aigc.train.optim import make_adamw, param_groups  # noqa: E402

SIZE, CLASSES = 28, 10


def ours_model(preset_name: str) -> UNet:
    cfg = preset(preset_name)
    m = cfg.model
    m.image_size, m.in_channels, m.learn_sigma, m.num_classes = SIZE, 1, True, CLASSES
    m.dropout = 0.0
    return UNet(m)


def peer_model(ours: UNet, width_scale: float = 1.0):
    """UNet2DModel with our levels, blocks and attention placement; widths scaled to match our size."""
    from diffusers import UNet2DModel

    c = ours.config
    widths = tuple(int(round(c.model_channels * m * width_scale / 16)) * 16 for m in c.channel_mult)
    groups = next(g for g in (32, 16) if all(w % g == 0 for w in widths))
    sizes = c.resolutions()
    down = tuple("AttnDownBlock2D" if s in c.attention_resolutions else "DownBlock2D" for s in sizes)
    up = tuple("AttnUpBlock2D" if s in c.attention_resolutions else "UpBlock2D" for s in reversed(sizes))
    return UNet2DModel(sample_size=SIZE, in_channels=1, out_channels=2, block_out_channels=widths,
                       layers_per_block=c.num_res_blocks, down_block_types=down, up_block_types=up,
                       attention_head_dim=max(8, widths[-1] // c.num_heads), norm_num_groups=groups,
                       num_class_embeds=CLASSES + 1, resnet_time_scale_shift="scale_shift", dropout=0.0)


def params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def forward_flops(fn, x, t, y) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn(x, t, y)
    return counter.get_total_flops() // x.shape[0]


def matched_peer(ours: UNet):
    """The peer whose parameter count is closest to ours (width scale searched in steps of 1/16)."""
    target = params(ours)
    best = None
    for k in range(10, 25):
        cand = peer_model(ours, k / 16)
        gap = abs(params(cand) - target) / target
        if best is None or gap < best[0]:
            best = (gap, cand, k / 16)
    return best[1], best[2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a few iterations: a smoke test")
    ap.add_argument("--preset", default="small")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--eval-batch", type=int, default=16)
    args = ap.parse_args()
    setup(args.threads)
    set_quiet_budget(10.0 if args.quick else 180.0)
    warnings.filterwarnings("ignore")
    logging.getLogger("diffusers").setLevel(logging.ERROR)
    import diffusers

    torch.manual_seed(0)
    ours = ours_model(args.preset)
    peer, scale = matched_peer(ours)
    fns = {"ours": lambda x, t, y: ours(x, t, y), "peer": lambda x, t, y: peer(x, t, class_labels=y).sample}
    x = torch.randn(args.eval_batch, 1, SIZE, SIZE)
    t = torch.randint(0, 1000, (args.eval_batch,))
    y = torch.randint(0, CLASSES, (args.eval_batch,))
    flops = {k: forward_flops(fn, x, t, y) for k, fn in fns.items()}
    sizes = {"ours": params(ours), "peer": params(peer)}
    result: dict = {"bench": "diffusion", "quick": args.quick, "threads": torch.get_num_threads(),
                    "torch": torch.__version__, "diffusers": diffusers.__version__, "preset": args.preset,
                    "params": sizes, "forward_flops_per_image": flops, "peer_width_scale": scale,
                    "params_ratio": sizes["peer"] / sizes["ours"], "flops_ratio": flops["peer"] / flops["ours"]}
    print(f"parameters: ours {sizes['ours']:,}, peer {sizes['peer']:,} ({result['params_ratio']:.3f}x); forward "
          f"GFLOP/image: ours {flops['ours'] / 1e9:.3f}, peer {flops['peer'] / 1e9:.3f} ({result['flops_ratio']:.3f}x)")
    if not (0.9 <= result["params_ratio"] <= 1.1 and 0.85 <= result["flops_ratio"] <= 1.15):
        print("WARNING: the peer is not matched within 10 % parameters / 15 % FLOPs")

    peak = matmul_peak_gflops(1024 if args.quick else 2048, 3 if args.quick else 7)
    process = DiffusionConfig().process()  # cosine, T = 1000, learned range, hybrid loss
    models = {"ours": ours, "peer": peer}
    optims = {"ours": make_adamw(ours, 2e-4, 0.0, (0.9, 0.999)),
              "peer": torch.optim.AdamW(param_groups(peer, 0.0), lr=2e-4, betas=(0.9, 0.999), fused=True)}
    g = torch.Generator().manual_seed(1)
    data = [(torch.rand(args.batch, 1, SIZE, SIZE, generator=g) * 2 - 1,
             torch.randint(0, CLASSES, (args.batch,), generator=g)) for _ in range(4)]
    pos = {"ours": 0, "peer": 0}
    steps = 1 if args.quick else 3

    def trainer(who):
        model, opt, fn = models[who], optims[who], fns[who]

        def run():
            model.train()
            for _ in range(steps):
                x0, labels = data[pos[who] % len(data)]
                pos[who] += 1
                tt = torch.randint(0, 1000, (x0.shape[0],))
                loss = process.training_losses(lambda xt, s: fn(xt, s, labels), x0, tt)["loss"].mean()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                opt.zero_grad(set_to_none=True)
        return run

    def evaluator(who):
        model, fn = models[who], fns[who]

        @torch.no_grad()
        def run():
            model.eval()
            for _ in range(steps):
                fn(x, t, y)
        return run

    rounds = 2 if args.quick else 7
    train_t = interleave({k: trainer(k) for k in models}, rounds)
    eval_t = interleave({k: evaluator(k) for k in models}, rounds)
    rows = []
    for who in models:
        img_s = median([steps * args.batch / s for s in train_t[who]])
        ms = median([s / steps * 1e3 for s in eval_t[who]])
        result[who] = {"train_images_s": img_s, "eval_ms_batch": ms,
                       "train_mfu": 3 * flops[who] * img_s / (peak * 1e9),
                       "eval_mfu": flops[who] * args.eval_batch / (ms / 1e3) / (peak * 1e9)}
        rows.append([who, img_s, f"{100 * result[who]['train_mfu']:.0f}%", ms, f"{100 * result[who]['eval_mfu']:.0f}%"])
    result["train_ratio"] = result["ours"]["train_images_s"] / result["peer"]["train_images_s"]
    result["eval_ratio"] = result["peer"]["eval_ms_batch"] / result["ours"]["eval_ms_batch"]
    result["machine"] = {"matmul_peak_gflops": peak}
    print(f"\nfp32 torch.mm peak {peak:.0f} GFLOP/s, {torch.get_num_threads()} threads; batch {args.batch} "
          f"training, batch {args.eval_batch} evaluation (medians of interleaved runs)")
    print(table(rows, ["model", "train images/s", "train MFU", f"eval ms/batch {args.eval_batch}", "eval MFU"]))
    print(f"ours/peer: training {result['train_ratio']:.2f}x, evaluation {result['eval_ratio']:.2f}x")
    result["targets_met"] = {"train_ratio>=1": result["train_ratio"] >= 1.0, "eval_ratio>=1": result["eval_ratio"] >= 1.0}
    result.update(stats)
    emit_json(rounded(result))


if __name__ == "__main__":
    main()
