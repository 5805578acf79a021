"""The diffusion training objective: sample t, noise x_0, score the network's output.

``process.training_losses`` gives per-example terms (Improved DDPM: L_simple,
L_vlb or the hybrid); this wraps it for the trainer, with the importance
weights of the timestep sampler and classifier-free guidance's label dropout.
"""
from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ..diffusion import GaussianDiffusion, drop_captions, drop_labels
from ..diffusion.timesteps import UniformSampler


class DiffusionObjective:
    """``objective(model, batch) -> scalar loss``, batch ``{"x": (B, C, H, W) in [-1, 1]}`` plus
    ``"y": (B,)`` class ids, or ``"ids"`` / ``"mask"`` (B, S) caption tokens, or neither.

    The model is called as ``model(x_t, t, y)`` or ``model(x_t, t, (ids, mask))``.
    With ``class_dropout`` > 0 a label is replaced by ``null_label`` with that
    probability, and a caption by the empty prompt ``empty_prompt`` (its ids),
    so one network learns the conditional and the unconditional model (Ho &
    Salimans 2022). The timestep sampler's history is state the trainer checkpoints.
    """

    def __init__(self, process: GaussianDiffusion, timesteps: UniformSampler, class_dropout: float = 0.0,
                 null_label: int | None = None, empty_prompt: Tensor | None = None) -> None:
        self.process, self.timesteps = process, timesteps
        self.class_dropout, self.null_label, self.empty_prompt = class_dropout, null_label, empty_prompt
        self.last_terms: dict[str, float] = {}

    def condition(self, batch: dict[str, Any]) -> Any:
        """The batch's condition after dropout: labels, (ids, mask) or None."""
        if "ids" in batch:
            ids, mask = batch["ids"], batch["mask"]
            if self.class_dropout > 0 and self.empty_prompt is not None:
                ids, mask = drop_captions(ids, mask, self.class_dropout, self.empty_prompt)
            return ids, mask
        y = batch.get("y")
        if y is not None and self.class_dropout > 0 and self.null_label is not None:
            y = drop_labels(y, self.class_dropout, self.null_label)
        return y

    def __call__(self, model: nn.Module, batch: dict[str, Any]) -> Tensor:
        x0 = batch["x"]
        t, weights = self.timesteps.sample(x0.size(0), device=x0.device)
        y = self.condition(batch)
        terms = self.process.training_losses(lambda x, s: model(x, s, y), x0, t)
        self.timesteps.update(t, terms["loss"].detach())
        return (terms["loss"] * weights).mean()

    def state_dict(self) -> dict[str, Any]:
        return self.timesteps.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.timesteps.load_state_dict(state)
