"""What a model family is, as data: :class:`Family`. ``aigc.families`` collects the declarations;
:func:`aigc.load`, the command line and the service read them there and nowhere else.

A declaration names its heavy parts ("module:attribute", imported on first use), so listing the
families — ``aigc --help``, the service's routes — imports no model code.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TrainFlag:
    """A shortcut option of ``aigc train FAMILY`` for one run-config field: ``--image-size 32`` sets
    ``image_size``. A flag that is left out sets nothing (the preset's value stands); ``decls`` are the
    command-line spellings (default ``--name-with-dashes``; "--on/--off" for a switch)."""
    name: str                        # the Python parameter name
    key: str                         # the dotted run-config field it sets
    type: type                       # str, int, float or bool
    help: str
    decls: tuple[str, ...] = ()
    value: str | None = None         # a bool flag that sets this text when given (e.g. "true")


@dataclass(frozen=True)
class Family:
    """One model family: how runs are configured, trained, loaded, generated from, and offered."""
    name: str                        # the CLI's name: aigc train NAME
    kind: str                        # what its checkpoints record as "kind" (config.json)
    title: str                       # what it is, for messages: "a language model"
    datasets: tuple[str, ...]        # the embedded data sets it trains on; the first is the default
    run_config: str                  # "module:Class": the run-config dataclass (presets hold its fields)
    recipe: str                      # "module": build_config(preset, overrides), resume_config(out,
                                     # overrides) and train(cfg, out, resume=, stop_at=, progress=) -> dict
    loader: str                      # "module:function": (folder, config, ema, device) -> a facade
    facade: str                      # "module:Class": what ``aigc.load`` returns for its runs
    cli: str                         # "module": its generate/eval commands (imported by aigc.cli)
    train_flags: tuple[TrainFlag, ...] = ()
    trained: str = "trained {params:,} parameters for {step} steps ({minutes:.1f} min); best {best}; run in {run}"
    data_help: str = ""              # what --data takes, beyond the embedded data sets
    endpoints: tuple[str, ...] = ()  # the service's routes for it (OpenAI API shapes)
    folder_loader: str = ""          # "module:function" for folders that are not one checkpoint (image:
                                     # noise-level experts): (path, load, **kwargs) -> a model, or None
                                     # when the folder is not of that sort

    def ref(self, attr: str) -> Any:
        """Import what field ``attr`` names ("module:attribute" or "module")."""
        return resolve(getattr(self, attr))

    def summary(self, result: dict[str, Any]) -> str:
        """The line ``aigc train`` prints for a finished run's result."""
        return self.trained.format(minutes=result["elapsed_s"] / 60, **result)


def resolve(spec: str) -> Any:
    """ "pkg.module:attr" -> the attribute; "pkg.module" -> the module."""
    module, _, attr = spec.partition(":")
    mod = importlib.import_module(module)
    return getattr(mod, attr) if attr else mod


class Registry:
    """The families, by name and by checkpoint kind, in declaration order."""

    def __init__(self, families: tuple[Family, ...]) -> None:
        self.families = families
        for attr in ("name", "kind"):
            values = [getattr(f, attr) for f in families]
            dup = sorted({v for v in values if values.count(v) > 1})
            if dup:
                raise ValueError(f"two families share the {attr} '{dup[0]}'")

    def __iter__(self):
        return iter(self.families)

    def names(self) -> list[str]:
        return [f.name for f in self.families]

    def get(self, name: str) -> Family:
        for f in self.families:
            if f.name == name:
                return f
        raise KeyError(f"no model family '{name}'; the families are {', '.join(self.names())}")

    def by_kind(self, kind: Any) -> Family | None:
        return next((f for f in self.families if f.kind == kind), None)

    def by_facade(self, cls: type) -> list[Family]:
        """The families whose loaded models are ``cls`` (or a subclass of it)."""
        return [f for f in self.families if issubclass(f.ref("facade"), cls)]
