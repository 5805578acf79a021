"""Activation functions by name, for model configs.

``gelu`` is the exact (erf) GELU of Hendrycks & Gimpel; ``gelu_tanh`` is its
tanh approximation (GPT-2's ``gelu_new``). They differ by under 1e-3, but not
in speed: on CPUs with AVX-512, PyTorch's erf kernel runs about 5x faster
than its tanh one (bench/text_lm.py times both), so exact is the default.
"""
from __future__ import annotations

from typing import Callable

import torch.nn.functional as F
from torch import Tensor

ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": F.relu,
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
}


def activation(name: str) -> Callable[[Tensor], Tensor]:
    """The function called ``name``; KeyError names the choices."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise KeyError(f"unknown activation '{name}'; choose one of {', '.join(ACTIVATIONS)}") from None
