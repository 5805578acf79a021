"""Commands for language models: train text, generate text, eval text; and data list."""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Optional

import typer

from ..errors import ConfigError
from .common import EXTRA, JSON_HELP, data_app, emit_json, eval_app, generate_app, parse_overrides, train_app


# ---- train -------------------------------------------------------------------------
@train_app.command("text", context_settings=EXTRA)
def train_text_cmd(
    ctx: typer.Context,
    data: str = typer.Option("fortunes", help="Embedded data set (see 'aigc data list') or a .txt file/folder."),
    preset: str = typer.Option("small", help="tiny | small | base"),
    out: Path = typer.Option(..., help="Run folder for checkpoints, metrics.jsonl and loss.png."),
    max_steps: Optional[int] = typer.Option(None, help="Optimizer steps (overrides the preset)."),
    max_minutes: Optional[float] = typer.Option(None, help="Wall-clock budget; the LR schedule is fitted to it."),
    seed: Optional[int] = typer.Option(None, help="One seed decides data order, init and dropout."),
    tokenizer: Optional[str] = typer.Option(None, help="char | bpe"),
    vocab_size: Optional[int] = typer.Option(None, help="BPE vocabulary size."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its latest checkpoint."),
    stop_at: Optional[int] = typer.Option(None, help="Checkpoint and stop at this step (resume later)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show the progress bar."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Train a GPT language model on a text corpus. Extra --section.key=value options override
    the preset, e.g. --model.n_layer=6 --train.lr=3e-4 --train.ema_decay=0.999."""
    from ..recipes import text as recipe

    overrides = parse_overrides(ctx.args, {"model", "train", "tokenizer", "val_fraction"})
    for key, value in (("train.max_steps", max_steps), ("train.max_minutes", max_minutes),
                       ("train.seed", seed), ("tokenizer.kind", tokenizer), ("tokenizer.vocab_size", vocab_size)):
        if value is not None:
            overrides[key] = str(value)
    if resume:
        cfg = recipe.resume_config(out, overrides)
    else:
        cfg = recipe.build_config(preset, data, overrides)
    result = recipe.train_text(cfg, out, resume=resume, stop_at=stop_at, progress=progress)
    if result.get("rank", 0) != 0:  # under torchrun only rank 0 reports
        return
    if as_json:
        emit_json(result)
    else:
        print(f"trained {result['params']:,} parameters for {result['step']} steps "
              f"({result['elapsed_s'] / 60:.1f} min); best val loss {result['best']:.4f}; run in {out}")


# ---- generate ----------------------------------------------------------------------
@generate_app.command("text")
def generate_text_cmd(
    prompts: list[str] = typer.Argument(None, help="One or more prompts (default: an empty prompt)."),
    model: Path = typer.Option(..., help="Run folder or checkpoint folder."),
    max_new_tokens: int = typer.Option(200, help="Tokens to generate per prompt."),
    temperature: float = typer.Option(0.8, help="0 = greedy."),
    top_k: Optional[int] = typer.Option(None, help="Sample among the k most likely tokens."),
    top_p: Optional[float] = typer.Option(None, help="Nucleus sampling mass, in (0, 1]."),
    repetition_penalty: float = typer.Option(1.0, help="> 1 discourages repeats (CTRL)."),
    stop: list[str] = typer.Option([], help="Stop when this string appears (repeatable)."),
    seed: Optional[int] = typer.Option(None, help="Same seed, same text."),
    num_samples: int = typer.Option(1, help="Samples per prompt (generated as one batch)."),
    stream: bool = typer.Option(False, "--stream", help="Print tokens as they are produced."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Continue prompts with a trained language model."""
    from ..api import TextModel, generation_config, load_kind

    if num_samples < 1:
        raise ConfigError(f"--num-samples must be at least 1, got {num_samples}")
    cfg = generation_config(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                            repetition_penalty=repetition_penalty, stop=list(stop), seed=seed)
    lm = load_kind(model, TextModel)
    prompts = list(prompts or [""])
    batch = [p for p in prompts for _ in range(num_samples)]
    t0 = time.perf_counter()
    if stream:
        outputs = []
        for i, prompt in enumerate(batch):
            sys.stdout.write(prompt)
            sys.stdout.flush()
            row_seed = None if seed is None else seed + i
            pieces = []
            for piece in lm.stream(prompt, **{**cfg.__dict__, "seed": row_seed}):
                pieces.append(piece)
                sys.stdout.write(piece)
                sys.stdout.flush()
            sys.stdout.write("\n" + ("-" * 40 + "\n" if i + 1 < len(batch) else ""))
            outputs.append("".join(pieces))
    else:
        outputs = lm.generate(batch, **cfg.__dict__)
        if not as_json:
            for i, (prompt, text) in enumerate(zip(batch, outputs)):
                print(prompt + text)
                if i + 1 < len(batch):
                    print("-" * 40)
    seconds = time.perf_counter() - t0
    if as_json:
        emit_json({"model": str(lm.path), "prompts": batch, "outputs": outputs, "seconds": round(seconds, 3)})


# ---- eval --------------------------------------------------------------------------
@eval_app.command("text")
def eval_text_cmd(
    model: Path = typer.Option(..., help="Run folder or checkpoint folder."),
    data: Optional[Path] = typer.Option(None, help="A .txt file to score instead of the held-out split."),
    max_tokens: Optional[int] = typer.Option(1_000_000, help="Score at most this many tokens."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Validation loss, perplexity and bits per character (or byte) on held-out text."""
    from ..api import TextModel, load_kind
    from ..errors import DataError

    lm = load_kind(model, TextModel)
    text = None
    if data is not None:
        if not data.is_file():
            raise DataError(f"'{data}' is not a file; pass a UTF-8 .txt file to --data")
        try:
            text = data.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise DataError(f"'{data}' is not UTF-8 text") from None
        if len(text) < 2:
            raise DataError(f"'{data}' is empty")
    score = lm.evaluate(text, max_tokens=max_tokens)
    result = {"model": str(lm.path), "data": str(data) if data else f"{lm.config['data']} (validation split)",
              **score.__dict__}
    if as_json:
        emit_json(result)
    else:
        print(f"{result['data']}: loss {score.loss:.4f} nats/token, perplexity {score.perplexity:.2f}, "
              f"{score.bits_per_unit:.4f} bits/{score.unit} over {score.tokens:,} tokens")


# ---- data --------------------------------------------------------------------------
@data_app.command("list")
def data_list_cmd(as_json: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """Show each embedded data set, whether it is installed, its size, and how to install it."""
    from ..data import list_datasets

    rows = list_datasets()
    if as_json:
        emit_json({"datasets": [r.__dict__ for r in rows]})
        return
    print(f"{'name':<14} {'kind':<9} {'installed':<10} {'size':>9}  description / install")
    for r in rows:
        size = f"{r.size_bytes / 1e6:.1f} MB" if r.size_bytes else "-"
        status = "yes" if r.installed else "no"
        extra = r.description if r.installed else f"{r.description} — install: {r.install_hint}"
        print(f"{r.name:<14} {r.kind:<9} {status:<10} {size:>9}  {extra}")
