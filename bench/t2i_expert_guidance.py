"""Tune a folder of noise-level experts on `shapes`: each expert's guidance scale (and the switch point),
scored on a range of test scenes kept apart from the one the README reports.

    python bench/t2i_expert_guidance.py --model runs/experts --start 500 --n 200 \
        --detail 2,3,4,5 --layout 1,2,3 [--switch 850] [--threads 2]

Every combination of the first (detail) expert's scale, the last (layout) expert's scale and the
switch point (the last expert's from_t) is sampled from the captions of test scenes ``start ..
start+n-1`` of both splits (seen and held-out colour-shape pairs) and read back by the checker, as
``aigc eval t2i --start`` does. Choose on this range, then report the choice on scenes 0 .. 99 with
``aigc eval t2i``, so the reported figure is not the best of many draws on the same prompts.
Last stdout line: one JSON object (every combination, and the best by seen overall accuracy, ties
broken by held-out).
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aigc.api import load_kind  # noqa: E402
from aigc.families.image.experts import ExpertImageModel  # noqa: E402
from aigc.families.image.model import ImageModel  # noqa: E402
from aigc.diffusion import SamplingConfig  # noqa: E402
from aigc.eval.t2i_shapes import evaluate_shapes_adherence  # noqa: E402


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def _percent(value: float | None) -> str:
    return f"{'-':>6}" if value is None else f"{100 * value:>6.1f}"


def sweep(folder: str, detail: list[float], layout: list[float], switches: list[int], *, start: int, n: int,
          steps: int, seed: int) -> dict:
    joined = load_kind(folder, ImageModel)
    if not isinstance(joined, ExpertImageModel) or len(joined.experts) < 2:
        raise SystemExit(f"'{folder}' is not a folder of two or more experts")
    rows = []
    for switch, g_detail, g_layout in itertools.product(switches, detail, layout):
        models = joined.experts[:-1] + [(switch, joined.experts[-1][1])]
        # the detail scale goes to every expert but the last; the last is the layout expert
        scales = [None] * (len(models) - 1) + [g_layout]
        im = ExpertImageModel(models, joined.path, scales)
        t0 = time.perf_counter()
        result = evaluate_shapes_adherence(im, SamplingConfig(steps=steps, seed=seed), n=n, guidance=(g_detail,),
                                           start=start)
        by_split = {s["split"]: s for s in result["scores"]}
        seen, held = by_split["seen"], by_split["heldout"]
        rows.append({"switch": switch, "detail_guidance": g_detail, "layout_guidance": g_layout,
                     "seen": seen, "heldout": held, "seconds": round(time.perf_counter() - t0, 1)})
        cells = [seen["overall"], held["overall"], seen["relation"], seen["count"], seen["shape"]]
        print(f"{switch:>6} {g_detail:>6g} {g_layout:>6g} " + " ".join(_percent(v) for v in cells), flush=True)
    best = max(rows, key=lambda r: (r["seen"]["overall"], r["heldout"]["overall"]))
    return {"model": folder, "start": start, "n": n, "steps": steps, "seed": seed, "rows": rows,
            "best": {k: best[k] for k in ("switch", "detail_guidance", "layout_guidance")}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="a folder with experts.json (the layout expert last)")
    ap.add_argument("--detail", default="2,3,4,5", help="guidance scales of the detail expert(s)")
    ap.add_argument("--layout", default="1,2,3", help="guidance scales of the layout (last) expert")
    ap.add_argument("--switch", default="850", help="from_t values of the layout expert")
    ap.add_argument("--start", type=int, default=500, help="first test scene of the tuning range")
    ap.add_argument("--n", type=int, default=200, help="scenes per split")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{'switch':>6} {'detail':>6} {'layout':>6} {'seen':>6} {'held':>6} {'rel':>6} {'count':>6} {'shape':>6}"
          f"   (% on test scenes {args.start}..{args.start + args.n - 1})")
    result = sweep(args.model, _floats(args.detail), _floats(args.layout), [int(v) for v in args.switch.split(",")],
                   start=args.start, n=args.n, steps=args.steps, seed=args.seed)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
