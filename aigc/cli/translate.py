"""Commands for translation: translate, eval translate (``aigc train translate`` comes from the registry)."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Optional

import typer

from ..errors import ConfigError, DataError
from ..generate.seq2seq import DecodeConfig
from .common import JSON_HELP, app, emit_json, eval_app
from .options import DECODING, with_options


def _read_lines(path: Path | None) -> list[str]:
    if path is None:
        return [line.rstrip("\n") for line in sys.stdin]
    if not path.is_file():
        raise DataError(f"'{path}' is not a file; pass a UTF-8 text file with one sentence per line")
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise DataError(f"'{path}' is not UTF-8 text") from None


def write_atomic(path: Path, text: str) -> None:
    """Write through a temporary file and a rename: never a half-written output, and no temporary
    file left behind when the write fails (a full disk, a read-only folder)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@app.command("translate")
@with_options(DECODING)
def translate_cmd(
    texts: list[str] = typer.Argument(None, help="Sentences to translate (default: one per line from stdin)."),
    model: Path = typer.Option(..., help="Run folder or checkpoint folder."),
    input: Optional[Path] = typer.Option(None, "--input", help="Read one sentence per line from this file."),
    output: Optional[Path] = typer.Option(None, "--output", help="Write translations here, one per line."),
    src: Optional[str] = typer.Option(None, help="Source language (checked against the model)."),
    tgt: Optional[str] = typer.Option(None, help="Target language (checked against the model)."),
    batch_size: int = typer.Option(32, help="Sentences decoded together."),
    workers: int = typer.Option(1, help="Batches decoded at once, in threads sharing the model (2 on 2+ cores "
                                        "is ~10 % faster; same output)."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
    decoding: DecodeConfig = None,
) -> None:
    """Translate sentences with a trained translation model."""
    from ..api import Translator, load_kind

    if texts and input is not None:
        raise ConfigError("give sentences as arguments or --input FILE, not both")
    lines = list(texts) if texts else _read_lines(input)
    if not lines:
        raise DataError("nothing to translate: no sentences given")
    tr = load_kind(model, Translator)
    tr.check_pair(src, tgt)
    t0 = time.perf_counter()
    out = tr.translate(lines, decoding, batch_size=batch_size, workers=workers)
    seconds = time.perf_counter() - t0
    if output is not None:
        write_atomic(output, "".join(line + "\n" for line in out))
    elif not as_json:
        print("\n".join(out))
    if as_json:
        emit_json({"model": str(tr.path), "src": tr.src_lang, "tgt": tr.tgt_lang, "beam": decoding.beam,
                   "translations": out, "sentences": len(out), "seconds": round(seconds, 3)})


@eval_app.command("translate")
@with_options(DECODING)
def eval_translate_cmd(
    model: Path = typer.Option(..., help="Run folder or checkpoint folder."),
    split: str = typer.Option("test", help="dev | test of the model's corpus."),
    limit: Optional[int] = typer.Option(None, help="Score only the first N sentences."),
    hypotheses: Optional[Path] = typer.Option(None, help="Where to write the translations (default: beside the model)."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
    decoding: DecodeConfig = None,
) -> None:
    """sacreBLEU BLEU and chrF (with signatures) on the corpus's held-out split."""
    from ..api import Translator, load_kind
    from ..data import load_parallel_corpus
    from ..eval.bleu import score_translations

    if split not in ("dev", "test"):
        raise ConfigError(f"--split must be dev or test, got '{split}'")
    tr = load_kind(model, Translator)
    c = tr.config
    corpus = load_parallel_corpus(c["data"], src=c["src"], tgt=c["tgt"], dev_size=c["dev_size"],
                                  test_size=c["test_size"])
    pairs = getattr(corpus, split)[:limit]
    t0 = time.perf_counter()
    hyps = tr.translate([s for s, _ in pairs], decoding)
    beam, length_penalty = decoding.beam, decoding.length_penalty
    seconds = time.perf_counter() - t0
    score = score_translations(hyps, [t for _, t in pairs])
    path = hypotheses or Path(model) / f"{split}.{c['src']}-{c['tgt']}.beam{beam}.hyp.txt"
    write_atomic(path, "".join(h + "\n" for h in hyps))
    result = {"model": str(tr.path), "split": split, "beam": beam, "length_penalty": length_penalty,
              "hypotheses": str(path), "seconds": round(seconds, 2), **score.__dict__}
    if as_json:
        emit_json(result)
    else:
        print(f"{c['data']} {split} {c['src']}->{c['tgt']} ({score.sentences} sentences, beam {beam}):")
        print(f"  BLEU {score.bleu:.2f}  {score.bleu_signature}")
        print(f"  chrF {score.chrf:.2f}  {score.chrf_signature}")
        print(f"  translations: {path}")
