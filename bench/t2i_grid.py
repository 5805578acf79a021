"""A labelled sample grid of a text-to-image run: one row per prompt, one column per seed.

    python bench/t2i_grid.py --model RUN --out grid.png [--n 8] [--guidance 4] [--steps 25] [--zoom 3]
                             "a red circle left of a green square" "a small blue square" ...

Each row is ``aigc.load(RUN).generate(n, prompt=p, guidance=g, steps=s, seed=k)`` for seed k = the
row's index (so a row is reproducible on its own), upscaled by ``--zoom`` with nearest-neighbour
resampling, with its prompt written to the left in ``aigc.plotting.label_font`` (a CJK font where
installed, so Chinese prompts draw their glyphs; without one they show as boxes and a warning says
what to install). The script also prints the prompts in row order. The PNG's text chunk holds every
parameter. Last stdout line: one JSON object.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aigc.api import load_kind  # noqa: E402
from aigc.plotting import label_font  # noqa: E402
from aigc.data.image_files import make_grid, save_png, to_pil  # noqa: E402
from aigc.families.image.model import ImageModel  # noqa: E402


def labelled_grid(rows: list[torch.Tensor], prompts: list[str], zoom: int) -> torch.Tensor:
    """Rows of (n, C, H, W) uint8 images with their prompts on the left -> one (3, H', W') uint8 image."""
    strips = [make_grid(r, nrow=r.shape[0]) for r in rows]
    strips = [s.expand(3, -1, -1) if s.shape[0] == 1 else s for s in strips]
    h, w = strips[0].shape[1] * zoom, strips[0].shape[2] * zoom
    font = label_font(max(10, min(16, h // 4)), "".join(prompts))
    label_width = 12 + int(max(font.getlength(prompt) for prompt in prompts))
    canvas = Image.new("RGB", (label_width + w, h * len(rows)), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (strip, prompt) in enumerate(zip(strips, prompts)):
        canvas.paste(to_pil(strip).resize((w, h), Image.NEAREST), (label_width, i * h))
        draw.text((6, i * h + h // 2), prompt, fill="black", font=font, anchor="lm")
    return torch.from_numpy(np.array(canvas)).permute(2, 0, 1).contiguous()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("prompts", nargs="+")
    p.add_argument("--n", type=int, default=8)
    p.add_argument("--guidance", type=float, default=4.0)
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--zoom", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    im = load_kind(args.model, ImageModel)
    if not im.text_conditional:
        raise SystemExit(f"'{args.model}' is not a text-to-image model")
    rows = [im.generate(args.n, prompt=prompt, guidance=args.guidance, steps=args.steps, seed=i)
            for i, prompt in enumerate(args.prompts)]
    grid = labelled_grid(rows, args.prompts, args.zoom)
    params = {"model": args.model, "prompts": args.prompts, "n": args.n, "guidance": args.guidance,
              "steps": args.steps, "seeds": list(range(len(args.prompts)))}
    save_png(grid, args.out, params)
    for i, prompt in enumerate(args.prompts):
        print(f"row {i}: {prompt}")
    print(json.dumps({"out": args.out, **params}, ensure_ascii=False))


if __name__ == "__main__":
    main()
