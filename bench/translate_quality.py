"""Translation quality in equal time: our recipe against Hugging Face MarianMTModel (test BLEU).

    python bench/translate_quality.py --minutes M [--test-sentences N] [--preset small] [--out DIR]
                                      [--only ours|peer]

Ours: ``aigc.families.translate.recipe`` (bible-en-es, en->es, preset ``small``) for M
minutes of wall clock (its validation runs inside the budget), then the last
checkpoints averaged (``aigc.train.average``) and test BLEU with beam 4 through
the ``Translator`` pipeline.

The peer: a MarianMTModel of the same shape (layers, width, heads, FFN, dropout
0.1, post-norm, tied embeddings, SDPA), with our BPE (ids map directly: start,
end and padding are our end-of-text id), our ``TokenBatches`` (same seed, so
the same batch at every step), the same AdamW groups, learning-rate schedule,
clipping, label smoothing and per-step dropout seeds, for the same M minutes
in a minimal loop. Its weights are snapshotted by our trainer's rule (every
``eval_interval`` steps, and evenly over the last ``average_window`` of the
budget), and the same number of last snapshots is averaged. Test BLEU with
HF ``generate`` (beam 4, early stopping, the same maximum length per batch:
``max_new_tokens`` = 1.5 x longest source + 10; HF's ``length_penalty`` 0.6 is
an exponent on length, ours the GNMT penalty), decoded by our tokenizer.

Both are scored by sacreBLEU (``aigc.eval.bleu``). The two runs go one after
the other, or with ``--only`` in two processes side by side (one per core, so
they share the machine alike): ``--only peer`` takes the tokenizer of our run
at ``--out``, which ``--only ours`` (or an earlier run) wrote. Prints a table,
then one JSON object as the last line of stdout.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from common import emit_json, rounded, setup, table  # noqa: E402

from aigc.api import Translator, load_kind  # noqa: E402
from aigc.data import load_parallel_corpus  # noqa: E402
from aigc.data.batching import IGNORE, TokenBatches  # noqa: E402
from aigc.eval.bleu import score_translations  # noqa: E402
from aigc.checkpoint.loading import read_tokenizer  # noqa: E402
from aigc.families.translate import recipe  # noqa: E402
from aigc import checkpoint as ckpt  # noqa: E402
from aigc.train.average import average_checkpoints  # noqa: E402
from aigc.train.optim import lr_at, param_groups  # noqa: E402
from aigc.train.trainer import step_seed  # noqa: E402

BEAM, ALPHA, LEN_A, LEN_B, BATCH = 4, 0.6, 1.5, 10, 32
AVERAGE = 5  # last checkpoints averaged (fewer when the run kept fewer)


def train_ours(cfg, out: Path, n_avg: int) -> tuple[dict, Path, int]:
    t = time.perf_counter()
    result = recipe.train(cfg, out, progress=False)
    kept = len(ckpt.step_checkpoints(out))
    n = min(n_avg, kept)
    folder = average_checkpoints(out, n)
    result["wall_s"] = time.perf_counter() - t
    return result, folder, n


def ours_bleu(folder: Path, sources: list[str], refs: list[str]) -> tuple[dict, float]:
    tr = load_kind(folder, Translator)
    t = time.perf_counter()
    hyps = tr.translate(sources, beam=BEAM, length_penalty=ALPHA, max_len_a=LEN_A, max_len_b=LEN_B, batch_size=BATCH)
    return score_translations(hyps, refs).__dict__, time.perf_counter() - t


def peer_model(mc, vocab: int, eos: int):
    from transformers import MarianConfig, MarianMTModel

    cfg = MarianConfig(vocab_size=vocab, d_model=mc.d_model, encoder_layers=mc.n_encoder_layers,
                       decoder_layers=mc.n_decoder_layers, encoder_attention_heads=mc.n_head,
                       decoder_attention_heads=mc.n_head, encoder_ffn_dim=mc.d_ff, decoder_ffn_dim=mc.d_ff,
                       activation_function=mc.activation, dropout=mc.dropout, max_position_embeddings=mc.max_len,
                       pad_token_id=eos, eos_token_id=eos, decoder_start_token_id=eos, forced_eos_token_id=None,
                       scale_embedding=True, share_encoder_decoder_embeddings=True)
    model = MarianMTModel._from_config(cfg, attn_implementation="sdpa", dtype=torch.float32)
    g = model.generation_config
    g.forced_eos_token_id, g.bad_words_ids, g.max_length = None, None, mc.max_len
    return model


def train_peer(cfg, tok, pairs, minutes: float, n_avg: int) -> tuple[object, dict]:
    """The same recipe in a minimal loop; returns the model with its last snapshots averaged."""
    tc, eos = cfg.train, tok.eos_id
    torch.manual_seed(tc.seed)
    model = peer_model(cfg.model, cfg.model.vocab_size, eos).train()
    source = TokenBatches(pairs, cfg.max_tokens, tc.seed, pad_id=eos, bos_id=eos, eos_id=eos)
    opt = torch.optim.AdamW(param_groups(model, tc.weight_decay), lr=tc.lr, betas=(tc.beta1, tc.beta2), eps=1e-8,
                            fused=True)
    snapshots: list[tuple[int, dict]] = []

    def snapshot(step: int) -> None:
        snapshots.append((step, {k: v.detach().clone() for k, v in model.state_dict().items()}))
        del snapshots[:-n_avg]

    budget, step, loss, last_snap = minutes * 60.0, 0, None, 0.0
    t0 = time.perf_counter()
    while step < tc.max_steps and time.perf_counter() - t0 < budget:
        torch.manual_seed(step_seed(tc.seed, step, 0))
        lr = lr_at(step, schedule=tc.schedule, lr=tc.lr, min_lr=tc.min_lr, warmup=tc.warmup_steps,
                   total=tc.max_steps, d_model=cfg.model.d_model)
        for group in opt.param_groups:
            group["lr"] = lr
        src, tgt_in, tgt_out = source.batch(step)
        logits = model(input_ids=src, attention_mask=(src != eos).long(), decoder_input_ids=tgt_in,
                       use_cache=False).logits
        out = F.cross_entropy(logits.view(-1, logits.size(-1)), tgt_out.view(-1), ignore_index=IGNORE,
                              label_smoothing=cfg.label_smoothing)
        out.backward()
        if tc.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        # our trainer's rule (train.average_window): snapshots every eval_interval, and n_avg spaced
        # evenly over the last average_window of the run (of its clock or its steps, whichever ends it)
        progress = max((time.perf_counter() - t0) / budget, step / tc.max_steps)
        window = tc.average_window
        if step % tc.eval_interval == 0 or (window > 0 and progress >= 1 - window
                                            and progress - last_snap >= window / n_avg):
            snapshot(step)
            last_snap = progress
        if step % tc.log_interval == 0:
            loss = out.item()
    if step % tc.log_interval:
        loss = out.item()
    wall = time.perf_counter() - t0
    if not snapshots or snapshots[-1][0] != step:
        snapshot(step)
    with torch.no_grad():
        for name, p in model.state_dict().items():
            if p.is_floating_point():
                p.copy_(sum(s[name].double() for _, s in snapshots) / len(snapshots))
    return model.eval(), {"step": step, "train_s": wall, "loss": loss, "averaged_steps": [s for s, _ in snapshots]}


@torch.inference_mode()
def peer_bleu(model, tok, sources: list[str], refs: list[str]) -> tuple[dict, float]:
    eos = tok.eos_id
    ids = [tok.encode(s) for s in sources]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # length-sorted batches, like ours
    hyps: list[str] = [""] * len(ids)
    t = time.perf_counter()
    for start in range(0, len(order), BATCH):
        chunk = order[start:start + BATCH]
        width = max(len(ids[i]) for i in chunk)
        src = torch.full((len(chunk), width), eos, dtype=torch.long)
        for r, i in enumerate(chunk):
            src[r, :len(ids[i])] = torch.tensor(ids[i])
        new = max(1, min(model.config.max_position_embeddings - 1, int(LEN_A * width + LEN_B)))
        seq = model.generate(input_ids=src, attention_mask=(src != eos).long(), num_beams=BEAM,
                             length_penalty=ALPHA, early_stopping=True, max_new_tokens=new, do_sample=False,
                             pad_token_id=eos, eos_token_id=eos, decoder_start_token_id=eos)
        for r, i in enumerate(chunk):
            out = seq[r, 1:].tolist()
            hyps[i] = tok.decode(out[:out.index(eos)] if eos in out else out)
    return score_translations(hyps, refs).__dict__, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, required=True, help="training wall clock for each model")
    ap.add_argument("--test-sentences", type=int, default=1000)
    ap.add_argument("--preset", default="small")
    ap.add_argument("--average", type=int, default=AVERAGE, help="last checkpoints averaged")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="folder for our run (default: a temporary folder)")
    ap.add_argument("--only", choices=("ours", "peer"), default=None,
                    help="train one side; 'peer' reads the tokenizer of our run at --out")
    args = ap.parse_args()
    if args.minutes <= 0:
        ap.error("--minutes must be positive")
    if args.only == "peer" and (args.out is None or not (args.out / "latest").is_dir()):
        ap.error("--only peer needs --out pointing at our finished run (its tokenizer)")
    setup(args.threads)
    warnings.filterwarnings("ignore")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    import transformers

    transformers.logging.set_verbosity_error()
    overrides = {"train.max_minutes": str(args.minutes)}
    if args.seed is not None:
        overrides["train.seed"] = str(args.seed)
    cfg = recipe.build_config(args.preset, "bible-en-es", {"src": "en", "tgt": "es", **overrides})
    corpus = load_parallel_corpus(cfg.data, src=cfg.src, tgt=cfg.tgt, dev_size=cfg.dev_size, test_size=cfg.test_size)
    test = corpus.test[:args.test_sentences]
    sources, refs = [s for s, _ in test], [t for _, t in test]
    tmp = None
    if args.out is None:
        tmp = tempfile.TemporaryDirectory(prefix="translate-quality-")
        out = Path(tmp.name) / "ours"
    else:
        out = args.out
    result: dict = {"bench": "translate_quality", "preset": args.preset, "minutes": args.minutes,
                    "test_sentences": len(test), "threads": torch.get_num_threads(), "torch": torch.__version__,
                    "transformers": transformers.__version__,
                    "decode": {"beam": BEAM, "length_penalty": ALPHA, "max_len": f"{LEN_A}*src+{LEN_B}"}}
    try:
        if args.only != "peer":
            print(f"ours: training preset '{args.preset}' for {args.minutes} min ...", flush=True)
            trained, folder, n_avg = train_ours(cfg, out, args.average)
            score, dec_s = ours_bleu(folder, sources, refs)
            result["ours"] = {"step": trained["step"], "elapsed_s": trained["elapsed_s"], "loss": trained["loss"],
                              "params": trained["params"], "averaged_checkpoints": n_avg, "decode_s": dec_s,
                              **score}
            print(f"ours: {trained['step']} steps, BLEU {score['bleu']:.2f}", flush=True)
        if args.only != "ours":
            n_avg = result["ours"]["averaged_checkpoints"] if "ours" in result else args.average
            tok = read_tokenizer(ckpt.resolve(out, prefer=("latest",)))
            saved = ckpt.read_config(ckpt.resolve(out, prefer=("latest",)))
            cfg.model.vocab_size, cfg.model.pad_id = saved["model"]["vocab_size"], tok.eos_id
            pairs, _ = recipe.encode_pairs(tok, corpus.train, cfg.model.max_len - 1)
            print(f"peer: training MarianMTModel of the same shape for {args.minutes} min ...", flush=True)
            model, info = train_peer(cfg, tok, pairs, args.minutes, n_avg)
            score, dec_s = peer_bleu(model, tok, sources, refs)
            result["peer"] = {**info, "params": sum(p.numel() for p in model.parameters()), "decode_s": dec_s,
                              **score}
            print(f"peer: {info['step']} steps, BLEU {score['bleu']:.2f}", flush=True)
    finally:
        if tmp is not None:
            tmp.cleanup()
    sides = [(name, result[name]) for name in ("ours", "peer") if name in result]
    if len(sides) == 2:
        result["bleu_diff"] = result["ours"]["bleu"] - result["peer"]["bleu"]
    print()
    print(table([[name, r["step"], r["bleu"], r["chrf"], r["decode_s"]] for name, r in sides],
                ["model", "steps", "BLEU", "chrF", "decode s"]))
    print(f"sacreBLEU {sides[0][1]['bleu_signature']}")
    emit_json(rounded(result))


if __name__ == "__main__":
    main()
