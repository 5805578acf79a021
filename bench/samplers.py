"""Few-step samplers against many-step ones, and against ``diffusers``' schedulers on the same network.

    python bench/samplers.py --model RUN [--n 1000] [--ref-n 10000] [--nfe 10,20,50]
                             [--full 1000] [--full-ddim] [--guidance 1.0] [--batch 64]
                             [--samplers ddpm,ddim,dpm++,...] [--partial FILE]

One trained model (a run folder of ``aigc train image``); the same starting
noise for every sampler (seed 0); FID and KID against the same reference
statistics (the test split, or a fixed subset of ``--ref-n``), with the
sample count beside each. Ours: DDPM (ancestral, learned Σ), DDIM (η = 0) and
DPM-Solver++(2M), as an ODE and as its SDE (``dpm++sde``); the peer's ``DDIMScheduler`` and
``DPMSolverMultistepScheduler`` (DPM-Solver++, order 2, its default spacing, its
x0 thresholding for pixel-space models; ``sde-dpmsolver++`` for the SDE form)
drive the same network with the same betas. A class-conditional model
samples classes 0..K-1 in equal shares, with ``--guidance`` through our
classifier-free wrapper for every sampler. Network evaluations (NFE) =
steps; ``--full`` adds the T-step DDPM reference (``--full-ddim`` the DDIM
one too); the target's runs go first. The target: our
DPM-Solver++ at 20 NFE within 10 % of the 1000-step DDPM FID and no worse
than the peer's scheduler at equal NFE. Last stdout line: one JSON object.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

from common import emit_json, rounded, setup, table  # noqa: E402

import aigc  # noqa: E402
from aigc.data.images import from_model_range  # noqa: E402
from aigc.diffusion import SamplingConfig, sample  # noqa: E402
from aigc.eval.fid import InceptionFeatures, fid_kid, reference_stats  # noqa: E402


ALL_SAMPLERS = ("ddpm", "ddim", "dpm++", "dpm++sde", "peer-ddim", "peer-dpm++", "peer-dpm++sde")


def peer_scheduler(name: str, process):
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

    betas = process.betas.astype("float32")
    common = {"num_train_timesteps": process.num_timesteps, "trained_betas": betas, "prediction_type": "epsilon"}
    if name == "peer-ddim":
        return DDIMScheduler(**common, clip_sample=True, set_alpha_to_one=True, timestep_spacing="trailing")
    # thresholding: diffusers' own clipping of the x0 prediction for pixel-space models (ours clips
    # x0 to [-1, 1]); without it the first step from t = T-1 of a cosine schedule (alpha-bar 2e-9)
    # blows up: FID 377 against 138 with it on 64 samples here
    algorithm = "sde-dpmsolver++" if name == "peer-dpm++sde" else "dpmsolver++"
    return DPMSolverMultistepScheduler(**common, algorithm_type=algorithm, solver_order=2,
                                       lower_order_final=True, thresholding=True, sample_max_value=1.0)


@torch.no_grad()
def run_peer(name: str, fn, noise, process, steps: int, generator: torch.Generator) -> torch.Tensor:
    sched = peer_scheduler(name, process)
    sched.set_timesteps(steps)
    x = noise * sched.init_noise_sigma
    C = noise.shape[1]
    for t in sched.timesteps:
        out = fn(x, torch.full((x.shape[0],), int(t), dtype=torch.long))[:, :C]  # ε channels
        x = sched.step(out, t, x, generator=generator).prev_sample
    return x.clamp(-1, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--ref-n", type=int, default=None)
    ap.add_argument("--nfe", default="10,20,50")
    ap.add_argument("--full", type=int, default=1000, help="T-step references (0 skips them)")
    ap.add_argument("--guidance", type=float, default=1.0)
    ap.add_argument("--batch", type=int, default=64, help="64 runs faster per image than 250 here")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--samplers", default=",".join(ALL_SAMPLERS),
                    help="comma-separated subset of the few-step runs (the T-step ones follow --full)")
    ap.add_argument("--full-ddim", action="store_true", help="also the T-step DDIM reference")
    ap.add_argument("--partial", type=Path, default=None,
                    help="rewrite this JSON file after every run; an existing one of the same setting is resumed")
    args = ap.parse_args()
    setup(args.threads)
    warnings.filterwarnings("ignore")
    logging.getLogger("diffusers").setLevel(logging.ERROR)
    im = aigc.load(args.model)
    if not isinstance(im, aigc.ImageModel):
        ap.error(f"{args.model} is not an image diffusion run")
    features = InceptionFeatures()
    ref = reference_stats(im.config["data"], "test", features, image_size=im.image_shape[-1], count=args.ref_n,
                          progress=True)
    labels = (torch.arange(args.n) % im.num_classes) if im.num_classes else None
    noise = torch.randn((args.n, *im.image_shape), generator=torch.Generator().manual_seed(0))
    chosen = args.samplers.split(",")
    unknown = sorted(set(chosen) - set(ALL_SAMPLERS))
    if unknown:
        ap.error(f"unknown sampler(s) {', '.join(unknown)}; choose from {', '.join(ALL_SAMPLERS)}")
    runs = [(s, k) for k in map(int, args.nfe.split(",")) for s in ALL_SAMPLERS if s in chosen]
    if args.full:
        runs += [("ddpm", args.full)] + ([("ddim", args.full)] if args.full_ddim else [])
    # the target's three runs first, so that an interrupted bench still answers it
    first = [("dpm++", 20), ("peer-dpm++", 20), ("ddpm", args.full), ("dpm++sde", 20), ("peer-dpm++sde", 20)]
    runs = [r for r in first if r in runs] + [r for r in runs if r not in first]
    result: dict = {"bench": "samplers", "model": str(im.path), "n": args.n, "n_ref": ref.count,
                    "guidance": args.guidance, "runs": {}}
    if args.partial and args.partial.exists():  # resume: keep the runs of the same setting
        old = json.loads(args.partial.read_text())
        if all(old.get(k) == result[k] for k in ("model", "n", "n_ref", "guidance")):
            result["runs"] = old["runs"]
            print(f"resuming: {', '.join(old['runs'])} from {args.partial}", flush=True)
    rows = []
    for sampler, nfe in runs:
        key = f"{sampler}@{nfe}"
        if key in result["runs"]:
            scores = result["runs"][key]
            rows.append([sampler, nfe, scores["fid"], scores["kid"] * 1e3, scores["seconds"]])
            continue
        t0 = time.perf_counter()
        out = []
        for start in range(0, args.n, args.batch):
            sl = slice(start, start + args.batch)
            rows_n = noise[sl].shape[0]
            label = labels[sl].tolist() if labels is not None else None
            fn = im.model_fn(rows_n, label, args.guidance if labels is not None else 1.0)
            g = torch.Generator().manual_seed(1 + start)
            if sampler.startswith("peer"):
                x = run_peer(sampler, fn, noise[sl], im.process, nfe, g)
            else:
                x = sample(fn, noise[sl], im.process, SamplingConfig(sampler, nfe), generator=g)
            out.append(from_model_range(x))
        seconds = time.perf_counter() - t0
        scores = fid_kid(features(torch.cat(out)), ref, kid_subset_size=min(1000, args.n, ref.count))
        result["runs"][key] = {**scores, "seconds": seconds}
        rows.append([sampler, nfe, scores["fid"], scores["kid"] * 1e3, seconds])
        print(f"{key}: FID {scores['fid']:.2f}, KID {scores['kid'] * 1e3:.2f}e-3 ({seconds:.0f} s)", flush=True)
        if args.partial:
            args.partial.write_text(json.dumps(rounded(result)) + "\n")
    print(f"\nFID / KID of {args.n} samples against {ref.count} test images")
    print(table(rows, ["sampler", "NFE", "FID", "KID x1e3", "seconds"]))
    r = result["runs"]
    full = r.get(f"ddpm@{args.full}")
    for ours, name in (("dpm++", "dpmpp20"), ("dpm++sde", "dpmppsde20")):
        if full and f"{ours}@20" in r:
            result[f"{name}_vs_ddpm_full"] = r[f"{ours}@20"]["fid"] / full["fid"]
            result[f"{name}_vs_ddpm_full_kid"] = r[f"{ours}@20"]["kid"] / full["kid"]
    for k in map(int, args.nfe.split(",")):
        for ours, peer, name in (("dpm++", "peer-dpm++", "dpmpp"), ("dpm++sde", "peer-dpm++sde", "dpmppsde"),
                                 ("ddim", "peer-ddim", "ddim")):
            a, b = r.get(f"{ours}@{k}"), r.get(f"{peer}@{k}")
            if a and b:
                result[f"{name}_vs_peer@{k}"] = a["fid"] / b["fid"]
                result[f"{name}_vs_peer_kid@{k}"] = a["kid"] / b["kid"]
    emit_json(rounded(result))


if __name__ == "__main__":
    main()
