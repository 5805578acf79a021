"""Model and optimizer state as flat tensor dicts (for safetensors) plus JSON."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..errors import CheckpointError


def unique_state(model: nn.Module) -> dict[str, Tensor]:
    """The model's state dict with tied tensors (e.g. shared embeddings) listed once."""
    seen: set[int] = set()
    out = {}
    for name, t in model.state_dict(keep_vars=True).items():
        if id(t) in seen:
            continue
        seen.add(id(t))
        out[name] = t.detach()
    return out


def load_unique_state(model: nn.Module, tensors: dict[str, Tensor]) -> None:
    """Load tensors saved by :func:`unique_state`; a missing or foreign tensor is an error."""
    expected = unique_state(model)
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise CheckpointError(f"checkpoint weights do not fit this model ({detail})")
    with torch.no_grad():
        for name, t in expected.items():
            src = tensors[name]
            if src.shape != t.shape:
                raise CheckpointError(f"checkpoint tensor '{name}' has shape {tuple(src.shape)}, "
                                      f"the model expects {tuple(t.shape)}")
            t.copy_(src)


def optimizer_to_flat(opt: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Split an optimizer state dict into tensors and JSON-able metadata."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for key, value in st.items():
            if isinstance(value, Tensor):
                tensors[f"{idx}.{key}"] = value.contiguous()
            else:
                scalars[f"{idx}.{key}"] = value
    groups = [{k: v for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def optimizer_from_flat(opt: torch.optim.Optimizer, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    for key, value in meta.get("scalars", {}).items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    groups = meta["param_groups"]
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    try:
        opt.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError) as exc:
        raise CheckpointError(f"optimizer state does not fit this model ({exc})") from None
