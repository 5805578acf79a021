"""Commands for speech recognition: transcribe, eval asr (``aigc train asr`` comes from the registry)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from ..errors import ConfigError, DataError
from ..generate.asr import TranscribeConfig
from .common import JSON_HELP, app, emit_json, eval_app
from .options import Opt, OptionGroup, defaults, with_options

_T = defaults(TranscribeConfig)
TRANSCRIBING = OptionGroup("transcribing", (
    Opt("method", str, _T["method"], "greedy-ctc | beam (attention) | joint (beam rescored with CTC) | one-pass "
        "(CTC prefix scores during the search; slower)."),
    Opt("beam", int, _T["beam"], "Beam size (beam, joint, one-pass)."),
    Opt("ctc_weight", float, _T["ctc_weight"], "λ: weight of the CTC score in joint / one-pass decoding."),
    Opt("length_penalty", float, _T["length_penalty"], "GNMT length-penalty alpha (0 ranks by log-probability)."),
    Opt("chunk_s", float, _T["chunk_s"], "Long audio is decoded in windows of this many seconds..."),
    Opt("overlap_s", float, _T["overlap_s"], "...overlapping by this many seconds."),
), lambda **values: TranscribeConfig(**values))


def _read_list(path: Path) -> list[Path]:
    """Audio paths of a list file, one per line (relative ones are relative to the list's folder)."""
    if not path.is_file():
        raise DataError(f"'{path}' is not a file; pass a text file with one audio path per line")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise DataError(f"'{path}' is not UTF-8 text") from None
    out = []
    for line in lines:
        if line.strip() and not line.lstrip().startswith("#"):
            p = Path(line.strip()).expanduser()
            out.append(p if p.is_absolute() else path.parent / p)
    return out


@app.command("transcribe")
@with_options(TRANSCRIBING)
def transcribe_cmd(
    files: list[Path] = typer.Argument(None, help="Audio files (WAV, FLAC, OGG; any sample rate)."),
    model: Path = typer.Option(..., help="Run folder or checkpoint folder of a speech recogniser."),
    input: Optional[Path] = typer.Option(None, "--input", help="A text file with one audio path per line."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
    transcribing: TranscribeConfig = None,
) -> None:
    """Transcribe audio files with a trained speech recogniser: text and timing per file."""
    from ..api import SpeechRecognizer, load_kind

    paths = list(files or []) + (_read_list(input) if input is not None else [])
    if not paths:
        raise DataError("nothing to transcribe: give audio files as arguments or --input LIST")
    asr = load_kind(model, SpeechRecognizer)

    def show(i: int, t) -> None:
        if not as_json:
            print(f"{t.source}\t{t.text}", flush=True)
            typer.echo(f"  {t.audio_s:.2f} s of audio in {t.elapsed_s:.2f} s (real-time factor {t.rtf:.3f})",
                       err=True)

    out = asr.transcribe_verbose([str(p) for p in paths], transcribing, on_result=show)
    audio = sum(t.audio_s for t in out)
    elapsed = sum(t.elapsed_s for t in out)
    if as_json:
        emit_json({"model": str(asr.path), "method": transcribing.method, "beam": transcribing.beam,
                   "files": [t.as_dict() for t in out], "audio_s": round(audio, 3), "elapsed_s": round(elapsed, 4),
                   "rtf": round(elapsed / audio, 4) if audio else 0.0})


@eval_app.command("asr")
@with_options(TRANSCRIBING)
def eval_asr_cmd(
    model: Path = typer.Option(..., help="Run folder or checkpoint folder of a speech recogniser."),
    split: str = typer.Option("test", help="test (held-out sentences) | test-voices (held-out voices too)."),
    limit: Optional[int] = typer.Option(None, help="Score only the first N utterances."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
    transcribing: TranscribeConfig = None,
) -> None:
    """Word and character error rates (corpus-level) and the real-time factor on a held-out split."""
    from ..api import SpeechRecognizer, load_kind
    from ..eval.wer import error_rates
    from ..families.asr.data import load_split

    if split not in ("test", "test-voices"):
        raise ConfigError(f"--split must be test or test-voices, got '{split}'")
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be at least 1, got {limit}")
    asr = load_kind(model, SpeechRecognizer)
    data = load_split(asr.config, split).head(limit)
    if not len(data):
        raise DataError(f"the {split} split of '{asr.config['data']}' is empty")
    t0 = time.perf_counter()
    out = asr.transcribe_verbose(list(data.waves), transcribing)
    wall = time.perf_counter() - t0
    rates = error_rates([t.text for t in out], data.texts)
    audio = sum(t.audio_s for t in out)
    result = {"model": str(asr.path), "data": asr.config["data"], "split": split, "method": transcribing.method,
              "beam": transcribing.beam, **rates.as_dict(), "audio_s": round(audio, 2), "seconds": round(wall, 2),
              "rtf": round(sum(t.elapsed_s for t in out) / audio, 4) if audio else 0.0}
    if as_json:
        emit_json(result)
    else:
        print(f"{result['data']} {split} ({rates.utterances} utterances, {audio:.0f} s of audio, "
              f"{transcribing.method} beam {transcribing.beam}):")
        print(f"  WER {100 * rates.wer:.2f} %  (S {rates.words.substitutions}, D {rates.words.deletions}, "
              f"I {rates.words.insertions} of {rates.words.reference_length} words)")
        print(f"  CER {100 * rates.cer:.2f} %")
        print(f"  real-time factor {result['rtf']:.4f}")
