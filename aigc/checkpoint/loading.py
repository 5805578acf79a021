"""Reading a checkpoint folder into a model: shared by every family.

Before any weight is allocated, the model the config describes is built on PyTorch's ``meta`` device
(shapes only) and compared with the safetensors header — names, shapes, dtypes — and with the memory
the machine has free, so a corrupt or hostile config.json is refused in milliseconds, not after
gigabytes of allocation.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Callable, TypeVar

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from .. import checkpoint as ckpt
from ..config import from_dict
from ..errors import CheckpointError, ConfigError
from ..tokenizers import Tokenizer, tokenizer_from_dict
from .state import load_unique_state, unique_state

M = TypeVar("M", bound=nn.Module)


def read_tokenizer(folder: Path) -> Tokenizer:
    try:
        return tokenizer_from_dict(json.loads(ckpt.read_text(folder, "tokenizer.json")))
    except json.JSONDecodeError:
        raise CheckpointError(f"checkpoint '{folder}' has a corrupt tokenizer.json") from None


def build_model(folder: Path, config: dict[str, Any], model_cls: type[M], config_cls: type,
                ema: bool = True) -> M:
    """Instantiate ``model_cls(config_cls(**config["model"]))`` and load its (EMA) weights, once the
    config has been checked against the weights' header and the free memory."""
    try:
        model_cfg = from_dict(config_cls, config["model"], "model")
    except (KeyError, TypeError) as exc:
        raise CheckpointError(f"checkpoint '{folder}' has a broken config ({exc})") from None
    check_against_header(folder, weights_file(folder, ema), lambda: model_cls(model_cfg))
    try:
        model = model_cls(model_cfg)
    except (KeyError, TypeError) as exc:
        raise CheckpointError(f"checkpoint '{folder}' has a broken config ({exc})") from None
    return load_weights(folder, model, ema)


def weights_file(folder: Path, ema: bool = True) -> Path:
    """The weights ``load_weights`` reads: the EMA's when asked for and present, else the model's."""
    stem = "ema" if ema and (Path(folder) / "ema.safetensors").exists() else "model"
    return Path(folder) / f"{stem}.safetensors"


def tensor_header(path: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """name -> (safetensors dtype such as "F32", shape), read from the file's header alone."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint '{path.parent}' has no {path.name}")
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: (f.get_slice(k).get_dtype(), tuple(f.get_slice(k).get_shape())) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"checkpoint file '{path}' is corrupt ({exc})") from None


FLOAT_DTYPES = {"F64", "F32", "F16", "BF16"}


def available_memory() -> int | None:
    """Bytes the kernel says can be allocated without swapping (``MemAvailable``); None if unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_against_header(folder: Path, path: Path, build: Callable[[], nn.Module]) -> None:
    """Refuse a config whose model (``build()``) does not match the weights file or does not fit in
    memory, without allocating it: the model is built on the meta device (one that cannot be, e.g. one
    that reads a pre-trained part from disk, is checked when its weights are loaded)."""
    header = tensor_header(path)
    try:
        with torch.device("meta"):
            meta = build()
    except (ConfigError, CheckpointError):
        raise
    except Exception:  # noqa: BLE001 - a model whose constructor needs real data: loading checks it
        return
    expected = unique_state(meta)
    missing = sorted(set(expected) - set(header))
    unexpected = sorted(set(header) - set(expected))
    if missing or unexpected:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise CheckpointError(f"checkpoint '{folder}': its config.json describes a model its weights do not "
                              f"fit ({detail} in {path.name})")
    need = 0
    for name, t in expected.items():
        dtype, shape = header[name]
        if shape != tuple(t.shape):
            raise CheckpointError(f"checkpoint '{folder}': tensor '{name}' in {path.name} has shape {shape}, "
                                  f"its config.json describes {tuple(t.shape)}")
        if t.is_floating_point() and dtype not in FLOAT_DTYPES:
            raise CheckpointError(f"checkpoint '{folder}': tensor '{name}' is stored as {dtype}, not as "
                                  f"floating-point weights")
        need += t.numel() * t.element_size()
    odd = sorted({header[n][0] for n, t in expected.items() if t.is_floating_point() and header[n][0] != "F32"})
    if odd:
        warnings.warn(f"checkpoint '{folder}' stores weights as {', '.join(odd)}; they are converted to "
                      "float32", stacklevel=3)
    free = available_memory()
    if free is not None and need > free:
        raise CheckpointError(f"checkpoint '{folder}' describes a model of {need / 2**30:.1f} GiB, more than "
                              f"the {free / 2**30:.1f} GiB of memory free on this machine")


def load_weights(folder: Path, model: M, ema: bool = True) -> M:
    """Load a checkpoint's (EMA) weights into ``model``, strictly, refusing non-finite ones."""
    load_unique_state(model, ckpt.read_tensors(folder, weights_file(folder, ema).stem))
    for p in model.parameters():
        if not torch.isfinite(p).all():
            raise CheckpointError(f"checkpoint '{folder}' holds non-finite weights")
    return model.eval()
