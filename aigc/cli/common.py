"""Shared pieces of the command line: the command groups, JSON output, dotted overrides."""
from __future__ import annotations

import json
from typing import Any

import typer

from ..errors import ConfigError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="aigc: train and run your own generative models (Transformers and diffusion).")
train_app = typer.Typer(no_args_is_help=True, help="Train a model into a run folder.")
generate_app = typer.Typer(no_args_is_help=True, help="Generate with a trained model.")
eval_app = typer.Typer(no_args_is_help=True, help="Measure a trained model.")
data_app = typer.Typer(no_args_is_help=True, help="Embedded and user data sets.")
app.add_typer(train_app, name="train")
app.add_typer(generate_app, name="generate")
app.add_typer(eval_app, name="eval")
app.add_typer(data_app, name="data")

EXTRA = {"allow_extra_args": True, "ignore_unknown_options": True}
JSON_HELP = "Print one JSON object as the last line of stdout."


def emit_json(obj: dict[str, Any]) -> None:
    print(json.dumps(obj, default=str), flush=True)


def parse_overrides(args: list[str], allowed: set[str], command: str = "aigc train") -> dict[str, str]:
    """``--model.n_layer=4`` / ``--train.lr 1e-3`` pairs -> {dotted key: text}."""
    out: dict[str, str] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or len(arg) < 3:
            raise ConfigError(f"unexpected argument '{arg}'")
        key, eq, value = arg[2:].partition("=")
        if not eq:
            if i + 1 >= len(args):
                raise ConfigError(f"option '{arg}' needs a value (--key=value)")
            value, i = args[i + 1], i + 1
        if key.split(".")[0] not in allowed:
            raise ConfigError(f"unknown option '--{key}'; see '{command} --help' "
                              f"(config overrides start with {', '.join(sorted(allowed))})")
        out[key] = value
        i += 1
    return out
