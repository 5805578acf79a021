"""``aigc train FAMILY``: one command per registered family, built from its declaration.

Every family trains the same way — a preset, ``--section.key=value`` overrides of its run config, a
budget, a run folder, resume — and adds its own shortcut options (:class:`aigc.families.TrainFlag`).
"""
from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from typing import Any, Optional

import typer

from ..errors import ConfigError
from ..families import Family, TrainFlag
from .common import EXTRA, JSON_HELP, emit_json, parse_overrides, train_app

# (name, type, default, help, decls): the options every family's train command has
COMMON = (
    ("preset", Optional[str], None, "tiny | small | base (default small); a resumed run keeps its own.", ()),
    ("out", Path, ..., "Run folder for checkpoints, metrics.jsonl and loss.png.", ()),
    ("max_steps", Optional[int], None, "Optimizer steps of the whole run (overrides the preset); with --resume, "
     "a larger total extends it.", ()),
    ("max_minutes", Optional[float], None, "Wall-clock budget: the step count and LR schedule are fitted to "
     "it (and capped by max_steps); with --resume, this many more minutes.", ()),
    ("seed", Optional[int], None, "One seed decides data order, init, dropout and noise.", ()),
    ("resume", bool, False, "Continue the run in --out from its latest checkpoint.", ("--resume",)),
    ("stop_at", Optional[int], None, "Checkpoint and stop at this step (resume later).", ()),
    ("progress", bool, True, "Show the progress bar.", ("--progress/--no-progress",)),
    ("as_json", bool, False, JSON_HELP, ("--json",)),
)
BUDGETS = {"max_steps": "train.max_steps", "max_minutes": "train.max_minutes", "seed": "train.seed"}


def _parameter(name: str, tp: Any, default: Any, help: str, decls: tuple[str, ...]) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=tp,
                             default=typer.Option(default, *decls, help=help))


def _flag_parameter(flag: TrainFlag) -> inspect.Parameter:
    tp = bool if flag.value is not None else Optional[flag.type]
    default = False if flag.value is not None else None
    return _parameter(flag.name, tp, default, flag.help, flag.decls)


def train_command(family: Family) -> Any:
    """The typer command ``aigc train NAME`` for ``family``."""
    def command(ctx: typer.Context, **options: Any) -> None:
        recipe = family.ref("recipe")
        sections = {f.name for f in dataclasses.fields(family.ref("run_config"))}
        overrides = parse_overrides(ctx.args, sections, f"aigc train {family.name}")
        for name, key in BUDGETS.items():
            if options[name] is not None:
                overrides[key] = str(options[name])
        for flag in family.train_flags:
            value = options[flag.name]
            if flag.value is not None:
                if value:
                    overrides[flag.key] = flag.value
            elif value is not None:
                overrides[flag.key] = str(value)
        out = options["out"]
        if options["resume"]:
            if options["preset"] is not None:
                raise ConfigError(f"--preset picks the config of a new run; resuming '{out}' keeps its own "
                                  "(drop --preset)")
            cfg = recipe.resume_config(out, overrides)
            if options["data"] is not None and options["data"] != cfg.data:
                raise ConfigError(f"--data cannot change when resuming: '{out}' trains on '{cfg.data}'")
        else:
            cfg = recipe.build_config(options["preset"] or "small", options["data"], overrides)
        result = recipe.train(cfg, out, resume=options["resume"], stop_at=options["stop_at"],
                              progress=options["progress"])
        if result.get("rank", 0) != 0:  # under torchrun only rank 0 reports
            return
        if options["as_json"]:
            emit_json(result)
        else:
            print(family.summary({**result, "run": out}))

    data_help = " | ".join(family.datasets) + (f", {family.data_help}" if family.data_help else "")
    params = [inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context),
              _parameter("data", Optional[str], None, f"{data_help} (default: the preset's)", ())]
    params += [_parameter(*spec) for spec in COMMON]
    params += [_flag_parameter(flag) for flag in family.train_flags]
    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {}
    command.__doc__ = (f"Train {family.title} into a run folder. Extra --section.key=value options override "
                       f"the preset (e.g. --train.lr=3e-4 --model.<field>=...); presets: "
                       f"aigc/families/{family.name}/presets/.")
    return command


def register_train_commands(families: Any) -> None:
    for family in families:
        train_app.command(family.name, context_settings=EXTRA)(train_command(family))
