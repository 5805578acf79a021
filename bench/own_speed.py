"""Our own speed, no peer: for before/after comparisons of a change.

    python bench/own_speed.py [--threads 2]
    PYTHONPATH=/path/to/older/checkout python bench/own_speed.py     # the same on older code

Alternate the two a few times on the same machine: the host is noisy, so only alternated runs compare.
Prints one JSON object: GPT greedy KV-cache decoding tokens/s (4 layers x 128 and 6 x 384, batch 1 and
8, 256 tokens), seq2seq beam-4 sentences/s (6+6 layers x 512, end token masked, one sentence and a batch
of 8) and the image `small` UNet's training images/s (batch 64, 28x28, class-conditional, learned Σ) and
eval ms (batch 16); each the best of a few runs.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import aigc
from aigc.generate.seq2seq import DecodeConfig, beam_search
from aigc.generate.text import GenerationConfig, generate_ids
from aigc.models.gpt import GPT, GPTConfig
from aigc.models.seq2seq import Seq2Seq, Seq2SeqConfig
from aigc.models.unet import UNet, UNetConfig


def best_of(n: int, fn) -> float:
    best = float("inf")
    for _ in range(n):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def gpt_decoding() -> dict[str, int]:
    out = {}
    for name, (L, H, C) in {"cpu": (4, 4, 128), "6layer": (6, 6, 384)}.items():
        torch.manual_seed(0)
        model = GPT(GPTConfig(vocab_size=65, block_size=512, n_layer=L, n_head=H, n_embd=C)).eval()
        cfg = GenerationConfig(max_new_tokens=256, temperature=0.0, stop_at_eos=False)
        for b in (1, 8):
            rows = torch.randint(0, 65, (b, 16), generator=torch.Generator().manual_seed(2)).tolist()

            def run():
                steps = generate_ids(model, rows, cfg)
                for i, _ in enumerate(steps):
                    if i + 1 >= 256:
                        break
                steps.close()
            out[f"{name}_b{b}_tok_s"] = round(b * 256 / best_of(5, run))
    return out


def beam_decoding() -> dict[str, float]:
    torch.manual_seed(0)
    model = Seq2Seq(Seq2SeqConfig(vocab_size=8000, pad_id=0, max_len=256, n_encoder_layers=6, n_decoder_layers=6,
                                  d_model=512, n_head=8, d_ff=2048, activation="relu", norm="post")).eval()
    cfg = DecodeConfig(beam=4, length_penalty=0.6, max_len_a=1.5, max_len_b=10, min_len=256)
    g = torch.Generator().manual_seed(1)
    sources = [torch.randint(1, 8000, (1, 20), generator=g) for _ in range(8)]
    single = best_of(3, lambda: [beam_search(model, s, bos_id=0, eos_id=0, cfg=cfg) for s in sources])
    batch = torch.cat(sources)
    batched = best_of(3, lambda: beam_search(model, batch, bos_id=0, eos_id=0, cfg=cfg))
    return {"single_sent_s": round(8 / single, 3), "batch8_sent_s": round(8 / batched, 3)}


def unet_training() -> dict[str, float]:
    root = Path(aigc.__file__).parent
    preset = root / "families/image/presets/small.json"
    if not preset.exists():  # checkouts before the family registry
        preset = root / "configs/image-small.json"
    fields = json.loads(preset.read_text())["model"]
    fields.update(in_channels=1, image_size=28, num_classes=10, out_channels=2)
    torch.manual_seed(0)
    net = UNet(UNetConfig(**fields))
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    x, t, y = torch.randn(64, 1, 28, 28), torch.randint(0, 1000, (64,)), torch.randint(0, 10, (64,))

    def step():
        loss = net(x, t, y).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    step()
    train = best_of(5, step)
    net.eval()
    with torch.no_grad():
        net(x[:16], t[:16], y[:16])
        ev = best_of(10, lambda: net(x[:16], t[:16], y[:16]))
    return {"train_img_s": round(64 / train, 1), "eval_ms": round(ev * 1000, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    result = {"aigc": str(Path(aigc.__file__).parent), "threads": args.threads, "gpt": gpt_decoding(),
              "seq2seq": beam_decoding(), "unet": unet_training()}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
