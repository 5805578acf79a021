"""Commands for language models: generate text, eval text (``aigc train text`` comes from the registry)."""
from __future__ import annotations

import re
import sys
import time
from pathlib import Path
from typing import List, Optional

import typer

from ..config import MAX_SEED
from ..config import with_options as with_config_options
from ..generate.text import GenerationConfig
from .common import JSON_HELP, emit_json, eval_app, generate_app
from .options import GENERATION, defaults, with_options

MAX_SAMPLES = 10_000  # --num-samples
_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\"}


def unescape(text: str) -> str:
    """``\\n``, ``\\t`` and ``\\\\`` as newline, tab and one backslash (what a shell passes for "\\n\\n");
    any other backslash is kept as it is."""
    return re.sub(r"\\([nt\\])", lambda m: _ESCAPES[m[1]], text)


# ---- generate ----------------------------------------------------------------------
@generate_app.command("text")
@with_options(GENERATION.without("stop"))
def generate_text_cmd(
    prompts: list[str] = typer.Argument(None, help="One or more prompts (default: an empty prompt)."),
    model: Path = typer.Option(..., help="Run folder or checkpoint folder."),
    num_samples: int = typer.Option(1, min=1, max=MAX_SAMPLES,
                                    help=f"Samples per prompt, at most {MAX_SAMPLES:,} (generated as one batch)."),
    stop: List[str] = typer.Option(defaults(GenerationConfig)["stop"],
                                   help="Stop when this string appears (repeatable); \\n, \\t and \\\\ in it are a "
                                        "newline, a tab and a backslash (--stop '\\n\\n': a blank line)."),
    stream: bool = typer.Option(False, "--stream", help="Print tokens as they are produced."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
    generation: GenerationConfig = None,
) -> None:
    """Continue prompts with a trained language model."""
    from ..api import TextModel, load_kind

    cfg = with_config_options(GenerationConfig, generation, "generation", {"stop": [unescape(s) for s in stop]})
    seed = cfg.seed
    lm = load_kind(model, TextModel)
    prompts = list(prompts or [""])
    batch = [p for p in prompts for _ in range(num_samples)]
    t0 = time.perf_counter()
    if stream:
        outputs = []
        for i, prompt in enumerate(batch):
            sys.stdout.write(prompt)
            sys.stdout.flush()
            row_seed = None if seed is None else (seed + i) % (MAX_SEED + 1)
            pieces = []
            for piece in lm.stream(prompt, cfg, seed=row_seed):
                pieces.append(piece)
                sys.stdout.write(piece)
                sys.stdout.flush()
            sys.stdout.write("\n" + ("-" * 40 + "\n" if i + 1 < len(batch) else ""))
            outputs.append("".join(pieces))
    else:
        outputs = lm.generate(batch, cfg)
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
