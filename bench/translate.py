"""Our encoder-decoder translator against Hugging Face ``transformers``' MarianMTModel: speed.

    python bench/translate.py [--quick] [--only train|decode] [--layers 6 --d-model 512
                              --heads 8 --ffn 2048 --vocab 8000] [--sentences 200]
                              [--batched-sentences 1000] [--threads 2] [--workers 2]

Same process, same architecture (post-norm like Marian; pre-norm also timed for
training), same weights (ours copies the peer's random init, position table
included, so both compute the same function: checked on logits and on beam
outputs), fp32, eager, same threads. The peer uses SDPA attention and fused AdamW.
Runs are interleaved (ours, peer, peer, ours, ...) and reported as medians.
Prints tables, then one JSON object as the last line of stdout.

Training: real batches of ``bible-en-es`` (en->es, one BPE over both sides),
packed by our ``TokenBatches`` to ~4k source+target tokens; a full step is
forward, label-smoothed (0.1) cross-entropy, backward, clip 1.0, AdamW step,
dropout 0.1. Tokens/s counts real source+target tokens. Model FLOPs per batch
(on the padded tensors, PaLM-style 6 x matmul params + attention, no causal
discount) against a fp32 torch.mm peak measured in this run give the MFU.

Decoding: beam 4, length penalty 0.6, early stopping, maximum length
1.5 * source length + 10 (the pipeline's defaults) on the test set, in
length-sorted batches of 32 and one sentence at a time. Random weights rarely
end a sentence, so to make the work identical the end token is masked for both
(ours ``min_len``, the peer's ``min_new_tokens``) and every beam runs to the
maximum length; the peer decodes a batch to its longest sentence's maximum
(``max_new_tokens``), we stop each sentence at its own. Batched, ours decodes
``--workers`` batches at once in threads sharing the model, the intra-op
threads divided among them (``Translator.translate(workers=)``); each timed
call covers that many batches, for the peer one after the other with all
threads — in two threads of its own the peer is slower (2.02 against 2.53
sentences/s on 128 sentences).
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
import torch.nn.functional as F  # noqa: E402

from common import (emit_json, interleave, matmul_peak_gflops, median, rounded, set_quiet_budget,  # noqa: E402
                    setup, table, wait_quiet)

from aigc.data import load_parallel_corpus  # noqa: E402
from aigc.data.batching import IGNORE, TokenBatches  # noqa: E402
from aigc.generate.seq2seq import DecodeConfig, beam_search  # noqa: E402
from aigc.models.seq2seq import Seq2Seq, Seq2SeqConfig  # noqa: E402
from aigc.objectives.seq2seq import label_smoothed_loss  # noqa: E402
from aigc.families.translate.model import translate_ids  # noqa: E402
from aigc.families.translate.recipe import encode_pairs  # noqa: E402
from aigc.tokenizers import train_tokenizer  # noqa: E402
from aigc.train.optim import make_adamw, param_groups  # noqa: E402

MAX_LEN = 256                      # positions (ours: max_len, peer: max_position_embeddings)
MAX_TOKENS = 4096                  # source + target tokens per training batch, padding included
LR, BETAS, WD, CLIP, SMOOTH = 1e-3, (0.9, 0.98), 0.0, 1.0, 0.1
BEAM, ALPHA, LEN_A, LEN_B = 4, 0.6, 1.5, 10
TRAIN_ROWS = ("ours", "ours_pre", "peer")


# ---- models ---------------------------------------------------------------------------
def peer_model(args, vocab: int, pad: int):
    """The issue's MarianConfig: dropout 0.1 on embeddings and sublayer outputs, none on attention
    weights or inside the feed-forward (Marian's defaults, and ours)."""
    from transformers import MarianConfig, MarianMTModel

    cfg = MarianConfig(attention_dropout=0.0, activation_dropout=0.0,
                       vocab_size=vocab, d_model=args.d_model, encoder_layers=args.layers,
                       decoder_layers=args.layers, encoder_attention_heads=args.heads,
                       decoder_attention_heads=args.heads, encoder_ffn_dim=args.ffn, decoder_ffn_dim=args.ffn,
                       activation_function="relu", dropout=0.1, max_position_embeddings=MAX_LEN,
                       pad_token_id=pad, eos_token_id=pad, decoder_start_token_id=pad, forced_eos_token_id=None,
                       scale_embedding=True, share_encoder_decoder_embeddings=True)
    model = MarianMTModel._from_config(cfg, attn_implementation="sdpa", dtype=torch.float32)
    g = model.generation_config
    g.forced_eos_token_id, g.bad_words_ids, g.max_length = None, None, MAX_LEN
    return model


def ours_model(args, vocab: int, pad: int, norm: str) -> Seq2Seq:
    return Seq2Seq(Seq2SeqConfig(vocab_size=vocab, pad_id=pad, max_len=MAX_LEN, n_encoder_layers=args.layers,
                                 n_decoder_layers=args.layers, d_model=args.d_model, n_head=args.heads,
                                 d_ff=args.ffn, dropout=0.1, activation="relu", norm=norm, tie_embeddings=True))


@torch.no_grad()
def copy_peer_weights(ours: Seq2Seq, peer) -> None:
    """Give our post-norm model the peer's weights (and its sin|cos position table)."""
    m = peer.model
    ours.src_embed.weight.copy_(m.shared.weight)
    ours.positions.copy_(m.encoder.embed_positions.weight[:MAX_LEN])

    def lin(mine, *theirs):
        mine.weight.copy_(torch.cat([t.weight for t in theirs]))
        mine.bias.copy_(torch.cat([t.bias for t in theirs]))

    def ln(mine, theirs):
        mine.weight.copy_(theirs.weight)
        mine.bias.copy_(theirs.bias)

    for a, b in zip(ours.encoder, m.encoder.layers):
        sa = b.self_attn
        lin(a.attn.qkv, sa.q_proj, sa.k_proj, sa.v_proj), lin(a.attn.proj, sa.out_proj)
        lin(a.ff.fc, b.fc1), lin(a.ff.proj, b.fc2)
        ln(a.res_attn.norm, b.self_attn_layer_norm), ln(a.res_ff.norm, b.final_layer_norm)
    for a, b in zip(ours.decoder, m.decoder.layers):
        sa, ca = b.self_attn, b.encoder_attn
        lin(a.self_attn.qkv, sa.q_proj, sa.k_proj, sa.v_proj), lin(a.self_attn.proj, sa.out_proj)
        lin(a.cross_attn.q, ca.q_proj), lin(a.cross_attn.kv, ca.k_proj, ca.v_proj)
        lin(a.cross_attn.proj, ca.out_proj)
        lin(a.ff.fc, b.fc1), lin(a.ff.proj, b.fc2)
        ln(a.res_self.norm, b.self_attn_layer_norm), ln(a.res_cross.norm, b.encoder_attn_layer_norm)
        ln(a.res_ff.norm, b.final_layer_norm)
    if peer.final_logits_bias.abs().max() > 0:
        raise RuntimeError("the peer has a non-zero final_logits_bias; ours has no output bias")


def peer_logits(peer, src: torch.Tensor, tgt_in: torch.Tensor, pad: int) -> torch.Tensor:
    return peer(input_ids=src, attention_mask=(src != pad).long(), decoder_input_ids=tgt_in, use_cache=False).logits


@torch.no_grad()
def logit_diff(ours: Seq2Seq, peer, batch, pad: int) -> float:
    src, tgt_in, _ = batch
    ours.eval(), peer.eval()
    d = (ours(src, tgt_in) - peer_logits(peer, src, tgt_in, pad)).abs().max().item()
    ours.train(), peer.train()
    return d


# ---- data -------------------------------------------------------------------------------
def load_data(vocab: int, quick: bool):
    t = time.perf_counter()
    corpus = load_parallel_corpus("bible-en-es", src="en", tgt="es", dev_size=1000, test_size=1000)
    train = corpus.train[:4000] if quick else corpus.train
    tok = train_tokenizer("bpe", "\n".join(s for pair in train for s in pair), vocab)
    pairs, _ = encode_pairs(tok, train, MAX_LEN - 1)
    test = [tok.encode(s) for s, _ in corpus.test]
    print(f"data: {len(pairs):,} training pairs, {len(test):,} test sentences, BPE vocab {tok.vocab_size:,} "
          f"({time.perf_counter() - t:.1f} s)")
    return tok, pairs, test


# ---- training ---------------------------------------------------------------------------
def train_flops(cfg: Seq2SeqConfig, B: int, S: int, T: int) -> float:
    """Model FLOPs of one training step on a padded batch: src (B, S), tgt (B, T)."""
    C, Fd, V, Le, Ld = cfg.d_model, cfg.d_ff, cfg.vocab_size, cfg.n_encoder_layers, cfg.n_decoder_layers
    per_src = Le * (4 * C * C + 2 * C * Fd) + Ld * 2 * C * C   # encoder + cross-attention keys/values
    per_tgt = Ld * (6 * C * C + 2 * C * Fd) + V * C             # decoder (self qkv+proj, cross q+proj, FFN) + output
    attn = 12 * C * (Le * S * S + Ld * T * T + Ld * T * S) * B  # QK^T and AV, forward + backward
    return 6.0 * B * (S * per_src + T * per_tgt) + attn


def bench_train(args, tok, pairs, peak: float) -> dict:
    eos, V = tok.eos_id, args.vocab
    source = TokenBatches(pairs, MAX_TOKENS, seed=0, pad_id=eos, bos_id=eos, eos_id=eos)
    n_batches = 4 if args.quick else 12
    batches = [source.batch(i) for i in range(n_batches)]
    tokens = [source.items(i) for i in range(n_batches)]
    torch.manual_seed(0)
    peer = peer_model(args, V, eos).train()
    models = {"ours": ours_model(args, V, eos, "post")}
    copy_peer_weights(models["ours"], peer)
    diff = logit_diff(models["ours"], peer, batches[0], eos)
    if args.prenorm:
        models["ours_pre"] = ours_model(args, V, eos, "pre")
    models["peer"] = peer
    for m in models.values():
        m.train()
    optims = {k: make_adamw(m, LR, WD, BETAS) for k, m in models.items() if k.startswith("ours")}
    for k in models:
        if k.startswith("peer"):
            optims[k] = torch.optim.AdamW(param_groups(models[k], WD), lr=LR, betas=BETAS, eps=1e-8, fused=True)
    ours_loss = label_smoothed_loss(SMOOTH)

    def loss_of(name, batch):
        if name.startswith("ours"):
            return ours_loss(models[name], batch)
        src, tgt_in, tgt_out = batch
        logits = peer_logits(models[name], src, tgt_in, eos)
        return F.cross_entropy(logits.view(-1, V), tgt_out.view(-1), ignore_index=IGNORE, label_smoothing=SMOOTH)

    steps = 1 if args.quick else 2
    rounds = 2 if args.quick else 5
    pos = {k: 0 for k in models}  # each model walks the same batch sequence
    done: dict[str, list] = {k: [] for k in models}  # (tokens, flops) of each timed call

    def runner(name):
        model, opt = models[name], optims[name]

        def run():
            toks = flops = 0
            for _ in range(steps):
                i = pos[name] % n_batches
                pos[name] += 1
                batch = batches[i]
                loss = loss_of(name, batch)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
                opt.step()
                opt.zero_grad(set_to_none=True)
                toks += tokens[i]
                flops += train_flops(models["ours"].config, batch[0].size(0), batch[0].size(1), batch[1].size(1))
            done[name].append((toks, flops))
        return run

    times = interleave({k: runner(k) for k in models}, rounds)
    out = {"config": {"layers": args.layers, "d_model": args.d_model, "heads": args.heads, "ffn": args.ffn,
                      "vocab": V, "max_tokens": MAX_TOKENS, "batches": n_batches,
                      "avg_real_tokens": sum(tokens) / n_batches, "steps_per_round": steps, "rounds": rounds},
           "params": {"ours": models["ours"].num_params(), "peer": sum(p.numel() for p in peer.parameters())},
           "logit_max_abs_diff": diff}
    for k in models:
        timed_calls = done[k][-rounds:]  # the warm-up call came first
        rate = [n / t for (n, _), t in zip(timed_calls, times[k])]
        mfu = [f / t / (peak * 1e9) for (_, f), t in zip(timed_calls, times[k])]
        out[k] = {"tok_s": median(rate), "mfu": median(mfu), "runs_tok_s": rate}
    out["ratio"] = out["ours"]["tok_s"] / out["peer"]["tok_s"]
    if "ours_pre" in out:
        out["ratio_pre"] = out["ours_pre"]["tok_s"] / out["peer"]["tok_s"]
    return out


# ---- decoding ---------------------------------------------------------------------------
def max_len_of(n: int) -> int:
    return max(1, min(MAX_LEN - 1, int(LEN_A * n + LEN_B)))


def pad_batch(rows: list[list[int]], pad: int) -> torch.Tensor:
    src = torch.full((len(rows), max(map(len, rows))), pad, dtype=torch.long)
    for i, r in enumerate(rows):
        src[i, :len(r)] = torch.tensor(r)
    return src


def decode_setup(args, vocab: int, eos: int):
    """The decoding workload's two models (ours post-norm, with the peer's random weights) and our config."""
    torch.manual_seed(0)
    peer = peer_model(args, vocab, eos).eval()
    ours = ours_model(args, vocab, eos, "post").eval()
    copy_peer_weights(ours, peer)
    cfg = DecodeConfig(beam=BEAM, length_penalty=ALPHA, max_len_a=LEN_A, max_len_b=LEN_B, early_stopping=True,
                       min_len=MAX_LEN)  # the end token never wins: every beam runs to the maximum length
    return ours, peer, cfg


def peer_beam(peer, rows: list[list[int]], eos: int) -> list[list[int]]:
    """The peer's beam search on one batch, to its longest sentence's maximum length (end token masked)."""
    n = max(max_len_of(len(r)) for r in rows)
    src = pad_batch(rows, eos)
    with torch.inference_mode():
        seq = peer.generate(input_ids=src, attention_mask=(src != eos).long(), num_beams=BEAM,
                            length_penalty=ALPHA, early_stopping=True, max_new_tokens=n, min_new_tokens=n,
                            do_sample=False, use_cache=True, pad_token_id=eos, eos_token_id=eos,
                            decoder_start_token_id=eos)
    return seq[:, 1:].tolist()


def bench_decode(args, tok, test: list[list[int]]) -> dict:
    eos = tok.eos_id
    ours, peer, cfg = decode_setup(args, args.vocab, eos)

    def run_ours(rows):
        hyps = beam_search(ours, pad_batch(rows, eos), bos_id=eos, eos_id=eos, cfg=cfg)
        return [h.tokens for h in hyps]

    def run_ours_call(call):  # batched calls decode `workers` groups at once (the pipeline's workers=)
        rows = [r for g in call for r in g]  # sorted already: translate_ids makes the same groups
        workers = args.workers if len(call[0]) > 1 else 1
        hyps = translate_ids(ours, rows, bos_id=eos, eos_id=eos, cfg=cfg, batch_size=len(call[0]), workers=workers)
        return [h.tokens for h in hyps]

    def run_peer_call(call):
        return [row for g in call for row in peer_beam(peer, g, eos)]

    result = {}
    modes = [("batched", args.batched_sentences, args.batch_size), ("single", args.sentences, 1)]
    rows_out = []
    for mode, n, bs in modes:
        if n <= 0:
            continue
        chosen = test[:n]
        if bs > 1:  # length-sorted batches, as the translation pipeline makes them
            chosen = sorted(chosen, key=len)
            groups = [chosen[i:i + bs] for i in range(0, len(chosen), bs)]
        else:
            groups = [[s] for s in chosen]
        # a timed call covers a few groups so that the quiet-wait does not dominate
        per_call = args.workers if bs > 1 else (2 if args.quick else 5)
        calls = [groups[i:i + per_call] for i in range(0, len(groups), per_call)]
        run_ours(groups[0]), peer_beam(peer, groups[0], eos)  # warm-up
        times = {"ours": [], "peer": []}
        outs = {"ours": [], "peer": []}
        for c, call in enumerate(calls):
            order = [("ours", run_ours_call), ("peer", run_peer_call)]
            if c % 2:
                order.reverse()
            for who, fn in order:
                wait_quiet(2.0)
                t = time.perf_counter()
                got = fn(call)
                times[who].append(time.perf_counter() - t)
                outs[who] += got
        sents = sum(len(g) for g in groups)
        flat = [r for g in groups for r in g]
        ours_tok = sum(len(t) for t in outs["ours"])
        peer_tok = sum(len(t) for t in outs["peer"])
        # same weights and no end token: both should keep the same best beam where lengths agree
        same = sum(a == b[:len(a)] for a, b in zip(outs["ours"], outs["peer"]))
        expect = sum(max_len_of(len(r)) for r in flat)
        tot = {k: sum(v) for k, v in times.items()}
        sent_s = {k: sents / tot[k] for k in tot}
        call_ratio = [p / o for o, p in zip(times["ours"], times["peer"])]
        r = {"sentences": sents, "batch_size": bs, "timed_calls": len(calls),
             "ours_sent_s": sent_s["ours"], "peer_sent_s": sent_s["peer"],
             "ratio": sent_s["ours"] / sent_s["peer"], "median_call_ratio": median(call_ratio),
             "ours_tok_s": ours_tok / tot["ours"], "peer_tok_s": peer_tok / tot["peer"],
             "ours_tokens": ours_tok, "peer_tokens": peer_tok, "expected_ours_tokens": expect,
             "same_best_hypothesis": same / sents, "ours_s": tot["ours"], "peer_s": tot["peer"]}
        result[mode] = r
        rows_out.append([mode, sents, r["ours_sent_s"], r["peer_sent_s"], r["ratio"], r["ours_tok_s"],
                         r["peer_tok_s"], f"{100 * r['same_best_hypothesis']:.0f}%"])
    print(f"\nbeam-{BEAM} decoding (alpha {ALPHA}, max len {LEN_A}*n+{LEN_B}, end token masked; totals over "
          "interleaved calls)")
    print(table(rows_out, ["mode", "sentences", "ours sent/s", "peer sent/s", "ours/peer", "ours tok/s",
                           "peer tok/s", "same output"]))
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes, a smoke test (< 60 s)")
    ap.add_argument("--only", choices=("train", "decode"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--d-model", type=int, default=512)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--ffn", type=int, default=2048)
    ap.add_argument("--vocab", type=int, default=8000)
    ap.add_argument("--sentences", type=int, default=200, help="test sentences decoded one at a time")
    ap.add_argument("--batched-sentences", type=int, default=1000, help="test sentences decoded in batches")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2,
                    help="batches ours decodes at once (translate(workers=)); the peer gets slower that way")
    ap.add_argument("--no-prenorm", dest="prenorm", action="store_false", help="skip timing our pre-norm variant")
    args = ap.parse_args()
    if args.workers < 1:
        ap.error("--workers must be at least 1")
    if args.quick:
        args.layers, args.d_model, args.heads, args.ffn, args.vocab = 2, 128, 4, 256, 1000
        args.sentences, args.batched_sentences = min(args.sentences, 4), min(args.batched_sentences, 32)
    setup(args.threads)
    set_quiet_budget(10.0 if args.quick else 180.0)
    warnings.filterwarnings("ignore")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    import transformers

    transformers.logging.set_verbosity_error()
    t0 = time.perf_counter()
    result: dict = {"bench": "translate", "quick": args.quick, "threads": torch.get_num_threads(),
                    "torch": torch.__version__, "transformers": transformers.__version__}
    tok, pairs, test = load_data(args.vocab, args.quick)
    if tok.vocab_size > args.vocab:
        ap.error(f"the BPE has {tok.vocab_size} tokens, more than --vocab {args.vocab}")
    peak = matmul_peak_gflops(1024 if args.quick else 2048, 3 if args.quick else 7)
    result["machine"] = {"matmul_peak_gflops": peak}
    print(f"fp32 torch.mm peak {peak:.0f} GFLOP/s, {torch.get_num_threads()} threads")

    if args.only in (None, "train"):
        tr = bench_train(args, tok, pairs, peak)
        peak2 = matmul_peak_gflops(1024 if args.quick else 2048, 3 if args.quick else 7)
        if peak2 > peak:  # the best peak seen: MFU is relative to it
            for k in TRAIN_ROWS:
                if k in tr:
                    tr[k]["mfu"] *= peak / peak2
            peak = result["machine"]["matmul_peak_gflops"] = peak2
        rows = [[k, tr[k]["tok_s"], tr[k]["tok_s"] / tr["peer"]["tok_s"], f"{100 * tr[k]['mfu']:.0f}%"]
                for k in TRAIN_ROWS if k in tr]
        print(f"\ntraining ({tr['params']['ours']:,} parameters, ~{MAX_TOKENS} tokens per batch, "
              f"source+target tokens/s, medians; logits max |ours - peer| {tr['logit_max_abs_diff']:.1e})")
        print(table(rows, ["model", "tok/s", "vs peer", "MFU"]))
        result["train"] = tr

    if args.only in (None, "decode"):
        result["decode"] = bench_decode(args, tok, test)

    targets = {}
    if "train" in result:
        targets["train_ratio>=1"] = result["train"]["ratio"] >= 1.0
    for mode in ("batched", "single"):
        if mode in result.get("decode", {}):
            targets[f"decode_{mode}_ratio>=2"] = result["decode"][mode]["ratio"] >= 2.0
    result["targets_met"] = targets
    result["seconds"] = time.perf_counter() - t0
    print("\ntargets: " + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in targets.items()))
    emit_json(rounded(result))


if __name__ == "__main__":
    main()
