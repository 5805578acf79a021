"""Same data, same budget: the validation loss our GPT and Hugging Face's GPT-2 reach.

    python bench/text_quality.py [--minutes 5] [--threads 2]

The ``fortunes`` corpus, char-level tokens, the ``small`` preset (4 layers,
4 heads, 128 wide, context 64, batch 12; AdamW lr 1e-3, warmup 100, cosine to
1e-4 fitted to the wall-clock budget, beta2 0.99, weight decay 0.1, clip 1.0).
Ours trains through ``aigc.families.text.recipe.train`` (the product path); the
peer, ``GPT2LMHeadModel`` at its fastest (SDPA, fused AdamW, our preset's
GELU: the faster one on this CPU), in a minimal loop that draws the same ``TokenWindows`` batches and
fits the same time-based cosine. They run one after the other. Both are then
scored by the same code: mean next-token loss over non-overlapping windows
covering the whole validation split. Last stdout line: one JSON object.
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import tempfile
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from common import PEER_ACTIVATION, emit_json, rounded, setup, table, timed_alone, wait_quiet  # noqa: E402

from aigc.data import load_text_corpus  # noqa: E402
from aigc.data.lm import TokenWindows  # noqa: E402
from aigc.models.gpt import GPT  # noqa: E402
from aigc.families.text.recipe import encode, preset, train as train_text  # noqa: E402
from aigc.tokenizers import train_tokenizer  # noqa: E402
from aigc import checkpoint as ckpt  # noqa: E402
from aigc.train.optim import lr_at, param_groups  # noqa: E402
from aigc.checkpoint.state import load_unique_state  # noqa: E402


@torch.no_grad()
def full_val_loss(logits_of, tokens: torch.Tensor, block: int, rows: int = 64) -> float:
    """Mean next-token loss (nats) over non-overlapping windows that cover ``tokens``."""
    n = (tokens.numel() - 1) // block
    x_all = tokens[:n * block].long().view(n, block)
    y_all = tokens[1:n * block + 1].long().view(n, block)
    total = 0.0
    for i in range(0, n, rows):
        x, y = x_all[i:i + rows], y_all[i:i + rows]
        logits = logits_of(x)
        total += F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1), reduction="sum").item()
    return total / (n * block)


def train_ours(cfg, run_dir: str) -> tuple[GPT, dict]:
    result = train_text(cfg, run_dir, progress=False)
    model = GPT(cfg.model)  # cfg.model.vocab_size was set from the tokenizer
    load_unique_state(model, ckpt.read_tensors(ckpt.resolve(run_dir, prefer=("latest",)), "model"))
    return model.eval(), {"steps": result["step"], "train_seconds": result["elapsed_s"],
                          "last_train_loss": result["loss"]}


def train_peer(cfg, train_tokens: torch.Tensor, vocab: int):
    """A minimal loop: the trainer's step (clip, fused AdamW, per-step lr) and its budget fitting."""
    from transformers import GPT2Config, GPT2LMHeadModel

    m, t = cfg.model, cfg.train
    torch.manual_seed(t.seed)
    peer = GPT2LMHeadModel._from_config(
        GPT2Config(vocab_size=vocab, n_positions=m.block_size, n_embd=m.n_embd, n_layer=m.n_layer,
                   n_head=m.n_head, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                   activation_function=PEER_ACTIVATION[m.activation], bos_token_id=None, eos_token_id=None),
        attn_implementation="sdpa", dtype=torch.float32)
    peer.train()
    opt = torch.optim.AdamW(param_groups(peer, t.weight_decay), lr=t.lr, betas=(t.beta1, t.beta2),
                            eps=1e-8, fused=True)
    source = TokenWindows(train_tokens, m.block_size, t.batch_size, t.seed)
    budget, planned, step = t.max_minutes * 60.0, t.max_steps, 0
    start = time.perf_counter()
    loss = torch.zeros(())
    while step < planned:
        lr = lr_at(step, schedule=t.schedule, lr=t.lr, min_lr=t.min_lr, warmup=t.warmup_steps, total=planned)
        for group in opt.param_groups:
            group["lr"] = lr
        x, y = source.batch(step)
        logits = peer(input_ids=x, use_cache=False).logits
        loss = F.cross_entropy(logits.view(-1, vocab), y.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(peer.parameters(), t.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        elapsed = time.perf_counter() - start  # refit the plan to the budget, as the trainer does
        if elapsed >= budget:
            planned = step
        else:
            planned = min(t.max_steps, step + max(1, int((budget - elapsed) / (elapsed / step))))
    return peer.eval(), {"steps": step, "train_seconds": time.perf_counter() - start, "last_train_loss": loss.item()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=5.0, help="training budget for each model")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    if args.minutes <= 0:
        ap.error("--minutes must be positive")
    setup(args.threads)
    warnings.filterwarnings("ignore")
    logging.getLogger("transformers").setLevel(logging.ERROR)

    cfg = preset("small")
    cfg.data = "fortunes"
    t = cfg.train
    t.max_minutes, t.threads, t.device, t.precision = args.minutes, args.threads, "cpu", "fp32"
    t.eval_interval = 10**9  # no validation inside the budget (the peer's loop has none): only at the end
    corpus = load_text_corpus(cfg.data, val_fraction=cfg.val_fraction)
    tok = train_tokenizer(cfg.tokenizer.kind, corpus.train)  # what train_text trains too (deterministic)
    train_tokens, val_tokens = encode(tok, corpus.train), encode(tok, corpus.val)
    block = cfg.model.block_size
    print(f"fortunes: {train_tokens.numel():,} training and {val_tokens.numel():,} validation tokens, "
          f"vocab {tok.vocab_size}; {args.minutes:g} min each, {args.threads} threads")

    out: dict = {}
    trained: dict = {}
    wait_quiet(30)
    with tempfile.TemporaryDirectory() as run_dir:
        _, others = timed_alone(lambda: trained.update(ours=train_ours(cfg, os.path.join(run_dir, "run"))))
    ours, info = trained.pop("ours")
    info["others_cpu_share"] = others  # other processes' share of the CPUs while it trained (noise)
    torch.set_num_threads(args.threads)
    info["val_loss"] = full_val_loss(lambda x: ours(x), val_tokens, block)
    out["ours"] = info
    del ours
    wait_quiet(30)
    _, others = timed_alone(lambda: trained.update(peer=train_peer(cfg, train_tokens, tok.vocab_size)))
    peer, info = trained.pop("peer")
    info["others_cpu_share"] = others
    info["val_loss"] = full_val_loss(lambda x: peer(input_ids=x, use_cache=False).logits, val_tokens, block)
    out["peer"] = info

    tokens_per_step = t.batch_size * block
    rows = []
    for who in ("ours", "peer"):
        r = out[who]
        r["val_ppl"] = math.exp(r["val_loss"])
        r["train_tok_s"] = r["steps"] * tokens_per_step / r["train_seconds"]
        rows.append([who, r["steps"], r["train_tok_s"], r["last_train_loss"], r["val_loss"], r["val_ppl"],
                     f"{100 * r['others_cpu_share']:.0f}%"])
    print(table(rows, ["model", "steps", "train tok/s", "last train loss", "val loss", "val ppl",
                       "CPU taken by others"]))
    diff = out["ours"]["val_loss"] - out["peer"]["val_loss"]
    print(f"val loss ours - peer: {diff:+.4f} nats/token (negative: ours is better)")
    noisy = [who for who in ("ours", "peer") if out[who]["others_cpu_share"] > 0.05]
    if noisy:
        print(f"WARNING: other processes took the CPUs while {' and '.join(noisy)} trained: "
              "the budgets were not equal; rerun on a quiet machine")
    emit_json(rounded({"bench": "text_quality", "corpus": "fortunes", "preset": "small", "minutes": args.minutes,
                       "threads": args.threads, "train_tokens": train_tokens.numel(),
                       "val_tokens": val_tokens.numel(), "vocab": tok.vocab_size, **out,
                       "val_loss_diff": diff, "steps_ratio": out["ours"]["steps"] / out["peer"]["steps"],
                       "quiet_machine": not noisy}, 5))


if __name__ == "__main__":
    main()
