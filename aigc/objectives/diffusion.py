"""The diffusion training objective: sample t, noise x_0, score the network's output.

``process.training_losses`` gives per-example terms (Improved DDPM: L_simple,
L_vlb or the hybrid); this wraps it for the trainer, with the importance
weights of the timestep sampler and classifier-free guidance's label dropout.
"""
from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ..diffusion import GaussianDiffusion, drop_labels
from ..diffusion.timesteps import UniformSampler


class DiffusionObjective:
    """``objective(model, {"x": (B, C, H, W) in [-1, 1], "y": (B,) | None}) -> scalar loss``.

    The model is called as ``model(x_t, t, y)``. With ``class_dropout`` > 0 a
    label is replaced by ``null_label`` with that probability, so one network
    learns the conditional and the unconditional model (Ho & Salimans 2022).
    The timestep sampler's history is state the trainer checkpoints.
    """

    def __init__(self, process: GaussianDiffusion, timesteps: UniformSampler, class_dropout: float = 0.0,
                 null_label: int | None = None) -> None:
        self.process, self.timesteps = process, timesteps
        self.class_dropout, self.null_label = class_dropout, null_label
        self.last_terms: dict[str, float] = {}

    def __call__(self, model: nn.Module, batch: dict[str, Any]) -> Tensor:
        x0, y = batch["x"], batch.get("y")
        t, weights = self.timesteps.sample(x0.size(0), device=x0.device)
        if y is not None and self.class_dropout > 0 and self.null_label is not None:
            y = drop_labels(y, self.class_dropout, self.null_label)
        terms = self.process.training_losses(lambda x, s: model(x, s, y), x0, t)
        self.timesteps.update(t, terms["loss"].detach())
        return (terms["loss"] * weights).mean()

    def state_dict(self) -> dict[str, Any]:
        return self.timesteps.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.timesteps.load_state_dict(state)
