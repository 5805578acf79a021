"""How close our batched beam-4 decoding is to the fastest this machine allows, and what that
bounds the ratio to the peer at.

    python bench/translate_floor.py [--batch-size 32] [--threads 1]

The workload is one length-sorted batch of ``bible-en-es`` test sentences
(the middle of the test set) decoded as ``bench/translate.py`` does it: the 6+6
layer, width-512 models with the same random weights, beam 4, length penalty
0.6, maximum length 1.5n+10, the end token masked so that every beam runs to
the maximum length and both models do the same work. Ours runs under the
PyTorch profiler, which splits its time into matrix products (``addmm``,
``mm``: the linear layers and the output projection, with their FLOPs),
attention over the caches (the fused kernel and batched matmuls, which stream
the keys and values from memory) and everything else.

The floor is the products' FLOPs (counted by the profiler) at the best fp32
``torch.mm`` rate measured here with the same threads: a decoder that spent
no time at all outside its matrix products, and ran them at that peak, would
take this long. The peer's time over the floor bounds the ratio any
implementation doing the same products could show on this workload. The
profiler's split of our time is shown for where the rest goes (the profiler
adds its own overhead to it). Last stdout line: one JSON object.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
from torch.profiler import profile  # noqa: E402

from common import emit_json, matmul_peak_gflops, rounded, setup, table  # noqa: E402
from translate import BEAM, decode_setup, load_data, pad_batch, peer_beam  # noqa: E402

from aigc.generate.seq2seq import beam_search  # noqa: E402

GEMM_OPS = {"aten::addmm", "aten::mm"}
ATTENTION_OPS = {"aten::_scaled_dot_product_flash_attention_for_cpu", "aten::bmm", "aten::_softmax"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    if not 1 <= args.batch_size <= 1000 or args.threads < 1:
        ap.error("--batch-size must be in [1, 1000] and --threads at least 1")
    setup(args.threads)
    warnings.filterwarnings("ignore")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    import transformers

    transformers.logging.set_verbosity_error()
    arch = argparse.Namespace(layers=6, d_model=512, heads=8, ffn=2048, vocab=8000)
    tok, _, test = load_data(arch.vocab, quick=False)
    eos = tok.eos_id
    chosen = sorted(test, key=len)
    mid = len(chosen) // 2
    rows = chosen[mid - args.batch_size // 2:][:args.batch_size]
    src = pad_batch(rows, eos)
    ours, peer, cfg = decode_setup(arch, arch.vocab, eos)

    def run_ours():
        beam_search(ours, src, bos_id=eos, eos_id=eos, cfg=cfg)

    def run_peer():
        peer_beam(peer, rows, eos)

    def timed(fn) -> float:
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t

    run_ours(), run_peer()  # warm-up
    ours_s = min(timed(run_ours) for _ in range(2))
    peer_s = min(timed(run_peer) for _ in range(2))
    peak = matmul_peak_gflops(2048, 5)
    with profile(with_flops=True) as prof:
        run_ours()
    gemm_s = attn_s = other_s = 0.0
    gemm_flops = 0.0
    for ev in prof.key_averages():
        s = ev.self_cpu_time_total / 1e6
        if ev.key in GEMM_OPS:
            gemm_s += s
            gemm_flops += ev.flops
        elif ev.key in ATTENTION_OPS:
            attn_s += s
        else:
            other_s += s
    peak = max(peak, matmul_peak_gflops(2048, 5))
    profiled_s = gemm_s + attn_s + other_s
    floor_s = gemm_flops / (peak * 1e9)
    out = {"bench": "translate_floor", "threads": torch.get_num_threads(), "sentences": len(rows),
           "source_tokens": sum(map(len, rows)), "matmul_peak_gflops": peak,
           "ours_s": ours_s, "peer_s": peer_s, "ratio": peer_s / ours_s,
           "profile": {"gemm_s": gemm_s, "gemm_gflop": gemm_flops / 1e9, "gemm_gflops": gemm_flops / 1e9 / gemm_s,
                       "attention_s": attn_s, "other_ops_s": other_s, "profiled_s": profiled_s},
           "floor_s": floor_s, "peer_over_floor": peer_s / floor_s, "ours_over_floor": ours_s / floor_s}
    print(f"{len(rows)} sentences, beam {BEAM}, {torch.get_num_threads()} thread(s), "
          f"fp32 torch.mm peak {peak:.0f} GFLOP/s")
    print(table([["ours (profiled)", profiled_s, gemm_s, attn_s, other_s],
                 ["floor", floor_s, floor_s, 0.0, 0.0]],
                ["", "seconds", "matrix products", "attention", "other"]))
    print(f"products: {gemm_flops / 1e9:.0f} GFLOP at {gemm_flops / 1e9 / gemm_s:.0f} GFLOP/s "
          f"({100 * gemm_flops / 1e9 / gemm_s / peak:.0f}% of the peak)")
    print(f"ours {ours_s:.2f} s, peer {peer_s:.2f} s: ratio {peer_s / ours_s:.2f}; "
          f"the peer over the floor: {peer_s / floor_s:.2f} (no decoder doing these products can beat it)")
    emit_json(rounded(out))


if __name__ == "__main__":
    main()
