"""Option groups: each config the commands share (sampling, text generation, decoding) declared once as
command-line options, with the config's own defaults, and handed to a command as one built object.

    @generate_app.command("image")
    @with_options(SAMPLING)
    def generate_image_cmd(model: Path = ..., sampling: SamplingConfig = None) -> None: ...

``with_options`` replaces the command's ``sampling`` parameter by the group's options (so typer shows
and parses them) and calls the command with ``SAMPLING.build(values)``.
"""
from __future__ import annotations

import functools
import inspect
from dataclasses import MISSING, dataclass, fields
from typing import Any, Callable, List, Optional

import typer

from ..diffusion.sampling import SamplingConfig
from ..generate.seq2seq import DecodeConfig
from ..generate.text import GenerationConfig


@dataclass(frozen=True)
class Opt:
    """One command-line option: its parameter name, type, default and help."""
    name: str
    type: Any
    default: Any
    help: str
    decls: tuple[str, ...] = ()

    def parameter(self) -> inspect.Parameter:
        info = typer.Option(self.default, *self.decls, help=self.help)
        return inspect.Parameter(self.name, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=self.type)


@dataclass(frozen=True)
class OptionGroup:
    """Options that together build one config object, passed to the command as parameter ``target``."""
    target: str
    options: tuple[Opt, ...]
    build: Callable[..., Any]

    def without(self, *names: str) -> OptionGroup:
        """The group less some options (a command that declares them its own way); they keep the
        config's defaults."""
        return OptionGroup(self.target, tuple(o for o in self.options if o.name not in names), self.build)


def defaults(cls: type) -> dict[str, Any]:
    """A config dataclass's field defaults: the one place the command line takes them from."""
    out = {}
    for f in fields(cls):
        out[f.name] = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
    return out


def with_options(*groups: OptionGroup) -> Callable[[Callable], Callable]:
    """Give a command the options of ``groups``; it receives each group's built config instead."""
    def decorate(fn: Callable) -> Callable:
        targets = {g.target for g in groups}
        sig = inspect.signature(fn)
        own = [p for p in sig.parameters.values() if p.name not in targets]
        added = [o.parameter() for g in groups for o in g.options]

        @functools.wraps(fn)
        def command(**kwargs: Any) -> Any:
            for g in groups:
                kwargs[g.target] = g.build(**{o.name: kwargs.pop(o.name) for o in g.options})
            return fn(**kwargs)

        command.__signature__ = sig.replace(parameters=own + added)  # type: ignore[attr-defined]
        command.__annotations__ = {k: v for k, v in fn.__annotations__.items() if k not in targets}
        return command
    return decorate


_S = defaults(SamplingConfig)
SAMPLING = OptionGroup("sampling", (
    Opt("sampler", str, _S["sampler"], "ddpm | ddim | dpm++ | dpm++sde (its stochastic form)."),
    Opt("steps", int, _S["steps"], "Network evaluations (per pass, for RePaint)."),
    Opt("eta", Optional[float], _S["eta"], "ddim: η (0 = deterministic, the default); dpm++sde: its noise scale "
        "(default 1). Other samplers take none."),
    Opt("spacing", Optional[str], _S["spacing"], "Timestep spacing: linspace | trailing | logsnr "
        "(default: the sampler's own)."),
    Opt("guidance", float, _S["guidance"], "Classifier-free guidance scale (1 = none)."),
    Opt("seed", Optional[int], _S["seed"], "Same seed, same samples."),
), lambda **values: SamplingConfig(**values))

_G = defaults(GenerationConfig)
GENERATION = OptionGroup("generation", (
    Opt("max_new_tokens", int, _G["max_new_tokens"], "Tokens to generate per prompt."),
    Opt("temperature", float, _G["temperature"], "0 = greedy; 1 samples the model's own distribution."),
    Opt("top_k", Optional[int], _G["top_k"], "Sample among the k most likely tokens."),
    Opt("top_p", Optional[float], _G["top_p"], "Nucleus sampling mass, in (0, 1]."),
    Opt("repetition_penalty", float, _G["repetition_penalty"], "> 1 discourages repeats (CTRL)."),
    Opt("stop", List[str], _G["stop"], "Stop when this string appears (repeatable)."),
    Opt("seed", Optional[int], _G["seed"], "Same seed, same text."),
), lambda **values: GenerationConfig(**values))

_D = defaults(DecodeConfig)
DECODING = OptionGroup("decoding", (
    Opt("beam", int, _D["beam"], "Beam size; 1 is greedy."),
    Opt("length_penalty", float, _D["length_penalty"], "GNMT length-penalty alpha (0 ranks by log-probability)."),
), lambda **values: DecodeConfig(**values))
