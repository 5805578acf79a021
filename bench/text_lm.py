"""Our GPT against Hugging Face ``transformers``' GPT-2: training and KV-cache decoding speed.

    python bench/text_lm.py [--quick] [--only train|generate] [--threads 2]
                            [--configs cpu,6layer,gpt2-small]

Same process, same random-token data, same configs, fp32, eager, same threads.
The peer runs at its fastest: SDPA attention, dropout 0, fused AdamW, and the
faster GELU on this CPU (exact or tanh, timed at the start; both models get
it: ``gelu`` / ``gelu_pytorch_tanh`` for the peer). Runs are interleaved (ours, peer, peer, ours, ...) and reported as
medians; a run during which other processes took the CPUs is run again
(``common.interleave``). Prints tables, then one JSON object as the last line.

Training: tokens/s of a full step as the trainer takes it (forward,
cross-entropy, backward, clip 1.0, AdamW step) and the model-FLOPs
utilisation, flops/token = 6 N + 12 L H Dh T (PaLM / nanoGPT), against the
best fp32 torch.mm rate measured in this run.
Generation: greedy, 256 new tokens after a 16-token prompt, batch 1 and 8,
KV cache; ours through ``generate_ids``, the peer through ``generate``. Both
models get the same weights (the greedy tokens are compared). The small
configs get a context of 272 for it (the peer cannot run past its context).
GPT-2-small batch 1 is also given as a fraction of the memory bound: the
weights read per token (every parameter but the position table) over the copy
bandwidth measured here (bytes read + written per second, STREAM's convention).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from common import (PEER_ACTIVATION, copy_bandwidth_gbs, emit_json, fastest_gelu, interleave,  # noqa: E402
                    matmul_peak_gflops, median, rounded, set_quiet_budget, setup, stats, table, wait_quiet)

from aigc.generate.text import GenerationConfig, generate_ids  # noqa: E402
from aigc.models.gpt import GPT, GPTConfig  # noqa: E402
from aigc.train.optim import make_adamw, param_groups  # noqa: E402

# name: (n_layer, n_head, n_embd, context, vocab, train batch)
CONFIGS = {
    "cpu": (4, 4, 128, 64, 65, 12),          # nanoGPT's shakespeare-char CPU config
    "6layer": (6, 6, 384, 256, 65, 4),
    "gpt2-small": (12, 12, 768, 1024, 50257, None),  # generation only
}
LR, BETAS, WD, CLIP = 1e-3, (0.9, 0.99), 0.1, 1.0
PROMPT = 16  # prompt tokens before the generated ones


ACTIVATION = {"name": "gelu"}  # set in main() to the faster GELU on this machine


def peer_model(L: int, H: int, C: int, T: int, V: int):
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(vocab_size=V, n_positions=T, n_embd=C, n_layer=L, n_head=H,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                     activation_function=PEER_ACTIVATION[ACTIVATION["name"]],
                     bos_token_id=None, eos_token_id=None, pad_token_id=None)
    return GPT2LMHeadModel._from_config(cfg, attn_implementation="sdpa", dtype=torch.float32)


def ours_model(L: int, H: int, C: int, T: int, V: int) -> GPT:
    return GPT(GPTConfig(vocab_size=V, block_size=T, n_layer=L, n_head=H, n_embd=C, dropout=0.0,
                         activation=ACTIVATION["name"]))


def weight_pairs(ours: GPT, peer):
    """(our tensor, the peer's tensor, transposed?) for every weight (GPT-2's Conv1D stores (in, out))."""
    tp = peer.transformer
    yield ours.wte.weight, tp.wte.weight, False
    yield ours.wpe.weight, tp.wpe.weight, False
    for b, h in zip(ours.blocks, tp.h):
        for mine, theirs in ((b.ln_1, h.ln_1), (b.ln_2, h.ln_2)):
            yield mine.weight, theirs.weight, False
            yield mine.bias, theirs.bias, False
        for mine, theirs in ((b.attn.qkv, h.attn.c_attn), (b.attn.proj, h.attn.c_proj),
                             (b.mlp.fc, h.mlp.c_fc), (b.mlp.proj, h.mlp.c_proj)):
            yield mine.weight, theirs.weight, True
            yield mine.bias, theirs.bias, False
    yield ours.ln_f.weight, tp.ln_f.weight, False
    yield ours.ln_f.bias, tp.ln_f.bias, False


@torch.no_grad()
def copy_peer_weights(ours: GPT, peer) -> None:
    """Give our model the peer's weights."""
    for mine, theirs, transposed in weight_pairs(ours, peer):
        mine.copy_(theirs.t() if transposed else theirs)


@torch.inference_mode()
def kv_cache_check() -> float:
    """Largest |logit| difference between KV-cache decoding and a full recompute: learned and
    rotary positions, a plain and a left-padded batch (each row against itself alone)."""
    from aigc.nn.attention import padded_causal_mask

    worst = 0.0
    g = torch.Generator().manual_seed(4)
    for pos in ("learned", "rotary"):
        torch.manual_seed(5)
        m = GPT(GPTConfig(vocab_size=61, block_size=40, n_layer=2, n_head=4, n_embd=64, pos=pos)).eval()
        x = torch.randint(0, 61, (3, 30), generator=g)
        cache = m.new_cache(3)
        steps = [m(x[:, :5], cache=cache)] + [m(x[:, t:t + 1], cache=cache) for t in range(5, 30)]
        worst = max(worst, (torch.cat(steps, 1) - m(x)).abs().max().item())
        lens = [4, 9, 13]  # left-padded prompts, then 10 decoding steps
        rows = [torch.randint(0, 61, (n + 10,), generator=g) for n in lens]
        width = max(lens)
        idx = torch.zeros(3, width, dtype=torch.long)
        valid = torch.zeros(3, width, dtype=torch.bool)
        for i, n in enumerate(lens):
            idx[i, width - n:], valid[i, width - n:] = rows[i][:n], True
        positions = (valid.long().cumsum(1) - 1).clamp(min=0)
        cache = m.new_cache(3)
        m(idx, cache=cache, positions=positions, mask=padded_causal_mask(valid))
        nxt = valid.long().sum(1)
        for s in range(10):
            tok = torch.stack([r[n + s] for r, n in zip(rows, lens)])[:, None]
            valid = torch.cat([valid, valid.new_ones(3, 1)], 1)
            out = m(tok, cache=cache, positions=nxt[:, None] + s, mask=valid[:, None, None, :])
            for i, n in enumerate(lens):
                alone = m(rows[i][None, :n + s + 1])[0, -1]
                worst = max(worst, (out[i, 0] - alone).abs().max().item())
    return worst


def flops_per_token(n_params: int, L: int, C: int, T: int) -> int:
    return 6 * n_params + 12 * L * C * T  # H * Dh = C


# ---- training -----------------------------------------------------------------------
def bench_train(name: str, quick: bool) -> dict:
    L, H, C, T, V, B = CONFIGS[name]
    torch.manual_seed(0)
    ours, peer = ours_model(L, H, C, T, V), peer_model(L, H, C, T, V)
    ours.train(), peer.train()
    opt = make_adamw(ours, LR, WD, BETAS)
    popt = torch.optim.AdamW(param_groups(peer, WD), lr=LR, betas=BETAS, eps=1e-8, fused=True)
    g = torch.Generator().manual_seed(1)
    data = torch.randint(0, V, (8, B, T + 1), generator=g)  # a few batches, cycled
    state = {"ours": 0, "peer": 0}

    def step(model, optim, logits_of, who):
        batch = data[state[who] % len(data)]
        state[who] += 1
        x, y = batch[:, :-1], batch[:, 1:]
        logits = logits_of(model, x)
        loss = F.cross_entropy(logits.view(-1, V), y.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        optim.step()
        optim.zero_grad(set_to_none=True)

    steps = (2 if quick else 10) if name == "cpu" else (1 if quick else 3)
    rounds = 3 if quick else 7

    def run_ours():
        for _ in range(steps):
            step(ours, opt, lambda m, x: m(x), "ours")

    def run_peer():
        for _ in range(steps):
            step(peer, popt, lambda m, x: m(input_ids=x, use_cache=False).logits, "peer")

    times = interleave({"ours": run_ours, "peer": run_peer}, rounds)
    rate = {k: [steps * B * T / t for t in v] for k, v in times.items()}
    n = ours.num_params()
    return {"config": {"n_layer": L, "n_head": H, "n_embd": C, "context": T, "vocab": V, "batch": B,
                       "steps_per_round": steps, "rounds": rounds},
            "params": n, "flops_per_token": flops_per_token(n, L, C, T),
            "ours_tok_s": median(rate["ours"]), "peer_tok_s": median(rate["peer"]),
            "ratio": median(rate["ours"]) / median(rate["peer"]),
            "ours_runs": rate["ours"], "peer_runs": rate["peer"]}


# ---- generation ---------------------------------------------------------------------
def bench_generate(name: str, batch: int, new: int, rounds: int, models) -> dict:
    ours, peer = models
    V = ours.config.vocab_size
    prompt = torch.randint(0, V, (batch, PROMPT), generator=torch.Generator().manual_seed(2))
    rows = prompt.tolist()
    greedy = GenerationConfig(max_new_tokens=new, temperature=0.0, stop_at_eos=False)
    out = {}
    n = new

    def run_ours():
        steps = generate_ids(ours, rows, greedy)
        toks = []
        for i, tok in enumerate(steps):
            toks.append(tok)
            if i + 1 >= n:
                break
        steps.close()
        out["ours"] = torch.stack(toks, 1)

    def run_peer():
        with torch.inference_mode():
            seq = peer.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
                                max_new_tokens=n, min_new_tokens=n, use_cache=True,
                                pad_token_id=0, eos_token_id=None)
        out["peer"] = seq[:, PROMPT:]

    n = min(new, 8)  # short warm-up
    run_ours(), run_peer()
    n = new
    times = interleave({"ours": run_ours, "peer": run_peer}, rounds, warmup=False)
    assert out["ours"].shape == out["peer"].shape == (batch, new), (out["ours"].shape, out["peer"].shape)
    agree = (out["ours"] == out["peer"]).all(0).long()
    rate = {k: [batch * new / t for t in v] for k, v in times.items()}
    return {"batch": batch, "new_tokens": new, "rounds": rounds,
            "ours_tok_s": median(rate["ours"]), "peer_tok_s": median(rate["peer"]),
            "ratio": median(rate["ours"]) / median(rate["peer"]),
            "same_tokens_first": int(agree.cumprod(0).sum()),  # greedy tokens equal up to here
            "ours_runs": rate["ours"], "peer_runs": rate["peer"]}


@torch.inference_mode()
def logit_diff(ours: GPT, peer) -> float:
    x = torch.randint(0, ours.config.vocab_size, (2, 32), generator=torch.Generator().manual_seed(3))
    return (ours(x) - peer(input_ids=x).logits).abs().max().item()


def generation_models(name: str):
    L, H, C, T, V, _ = CONFIGS[name]
    T = max(T, PROMPT + 256)  # room for the prompt and 256 new tokens
    torch.manual_seed(0)
    peer = peer_model(L, H, C, T, V).eval()
    ours = ours_model(L, H, C, T, V).eval()
    copy_peer_weights(ours, peer)
    return ours, peer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a few iterations: a smoke test")
    ap.add_argument("--only", choices=("train", "generate"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--configs", default="cpu,6layer,gpt2-small",
                    help="comma-separated subset of " + ", ".join(CONFIGS))
    args = ap.parse_args()
    setup(args.threads)
    set_quiet_budget(10.0 if args.quick else 240.0)  # waiting for other processes to finish
    warnings.filterwarnings("ignore")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    import transformers

    transformers.logging.set_verbosity_error()

    result: dict = {"bench": "text_lm", "quick": args.quick, "threads": torch.get_num_threads(),
                    "torch": torch.__version__, "transformers": transformers.__version__}
    machine = {"matmul_peak_gflops": 0.0, "copy_gbs": 0.0, "read_gbs": 0.0}

    def measure_machine() -> None:  # peaks are the best seen: measured at the start, middle and end
        wait_quiet(5.0)
        peak = matmul_peak_gflops(1024 if args.quick else 2048, 3 if args.quick else 7)
        bw = copy_bandwidth_gbs(128 if args.quick else 512, 3 if args.quick else 5)
        for key, value in (("matmul_peak_gflops", peak), *bw.items()):
            machine[key] = max(machine[key], value)

    measure_machine()
    result["machine"] = machine
    gelu_ms = fastest_gelu(256 if args.quick else 1024)
    ACTIVATION["name"] = next(iter(gelu_ms))
    result["activation"] = {"both_models": ACTIVATION["name"], "gelu_fwd_bwd_ms": gelu_ms}
    print("GELU forward+backward on (1024, 1536): " + ", ".join(f"{k} {v:.2f} ms" for k, v in gelu_ms.items())
          + f"; both models use {ACTIVATION['name']}")
    result["kv_cache_max_abs_diff"] = kv_cache_check()
    print(f"KV-cache decoding vs full recompute: max |logit diff| {result['kv_cache_max_abs_diff']:.2e}")
    if result["kv_cache_max_abs_diff"] > 1e-4:
        raise SystemExit("KV-cache decoding disagrees with a full recompute")

    names = [n for n in args.configs.split(",") if n]
    if any(n not in CONFIGS for n in names):
        ap.error(f"--configs takes names from {', '.join(CONFIGS)}")
    if args.only in (None, "train") and any(n in names for n in ("cpu", "6layer")):
        result["train"] = {name: bench_train(name, args.quick) for name in ("cpu", "6layer") if name in names}
        measure_machine()
    if args.only in (None, "generate"):
        gen: dict = {}
        for name in names:
            models = generation_models(name)
            big = name == "gpt2-small"
            new = (16 if big else 32) if args.quick else 256
            rounds = 1 if args.quick else (3 if big else 5)
            gen[name] = {"logit_max_abs_diff": logit_diff(*models)}
            for batch in (1, 8):
                gen[name][f"b{batch}"] = bench_generate(name, batch, new, rounds, models)
            if big:  # batch-1 decoding reads every weight (but the position table) once per token
                ours = models[0]
                gen[name]["b1"]["weight_bytes_per_token"] = 4 * (
                    sum(p.numel() for p in ours.parameters()) - ours.wpe.weight.numel())
            del models
        result["generate"] = gen
    measure_machine()

    # figures that need the machine's peaks (the best measured in this run)
    peak, copy_gbs = machine["matmul_peak_gflops"], machine["copy_gbs"]
    print(f"fp32 torch.mm peak {peak:.0f} GFLOP/s, copy {copy_gbs:.1f} GB/s (read+write), "
          f"read {machine['read_gbs']:.1f} GB/s, {torch.get_num_threads()} threads (best seen in this run)")
    if "train" in result:
        rows = []
        for name, r in result["train"].items():
            for who in ("ours", "peer"):
                r[f"{who}_mfu"] = r[f"{who}_tok_s"] * r["flops_per_token"] / (peak * 1e9)
            rows.append([name, r["ours_tok_s"], r["peer_tok_s"], r["ratio"],
                         f"{100 * r['ours_mfu']:.0f}%", f"{100 * r['peer_mfu']:.0f}%"])
        print("\ntraining (tokens/s, medians)")
        print(table(rows, ["config", "ours", "peer", "ours/peer", "MFU ours", "MFU peer"]))
    if "generate" in result:
        rows = []
        for name, g in result["generate"].items():
            for batch in (1, 8):
                r = g[f"b{batch}"]
                bound = ""
                if "weight_bytes_per_token" in r:
                    r["memory_bound_tok_s"] = copy_gbs * 1e9 / r["weight_bytes_per_token"]
                    for who in ("ours", "peer"):
                        r[f"{who}_bound_frac"] = r[f"{who}_tok_s"] / r["memory_bound_tok_s"]
                    bound = f"{100 * r['ours_bound_frac']:.0f}% / {100 * r['peer_bound_frac']:.0f}%"
                rows.append([name, batch, r["ours_tok_s"], r["peer_tok_s"], r["ratio"], bound])
        print(f"\ngeneration (greedy, KV cache, {PROMPT}-token prompt; tokens/s, medians)")
        print(table(rows, ["config", "batch", "ours", "peer", "ours/peer", "of mem bound (ours/peer)"]))

    targets = {}
    t, g = result.get("train", {}), result.get("generate", {})
    if "cpu" in t:
        targets["train_cpu_ratio>=1.25"] = t["cpu"]["ratio"] >= 1.25
    if "6layer" in t:
        targets["train_6layer_ratio>=1.1"] = t["6layer"]["ratio"] >= 1.1
        targets["train_6layer_mfu>=0.7"] = t["6layer"]["ours_mfu"] >= 0.7
    if "cpu" in g:
        targets["gen_cpu_b1_ratio>=2"] = g["cpu"]["b1"]["ratio"] >= 2
    if "6layer" in g:
        targets["gen_6layer_b1_ratio>=2"] = g["6layer"]["b1"]["ratio"] >= 2
    if "gpt2-small" in g:
        targets["gen_gpt2_b1_bound>=0.7"] = g["gpt2-small"]["b1"]["ours_bound_frac"] >= 0.7
    result["targets_met"] = targets
    result.update(stats)  # runs thrown away / kept although other processes took the CPUs
    if stats["noisy_runs_kept"]:
        print(f"WARNING: {stats['noisy_runs_kept']} timed runs shared the CPUs with other processes "
              "(out of retries): rerun on a quiet machine for clean figures")
    print("\ntargets: " + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in targets.items()))
    emit_json(rounded(result))


if __name__ == "__main__":
    main()
