"""A small CNN image classifier, to score class-conditional samples (does a "sneaker" look like one?).

    x (B, C, H, W) in [-1, 1] -> [conv3x3, BatchNorm, ReLU, max-pool 2] x len(channels)
      -> flatten -> dropout -> linear -> logits (B, num_classes)

Pooling uses ``ceil_mode`` so odd sizes (7 -> 4) keep their border pixels; the
head sees the whole final map (28x28 -> 4x4x128), not just its average, which
is worth about a point of fashion-mnist accuracy at no real cost.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from ..errors import ConfigError


@dataclass
class ClassifierConfig:
    in_channels: int = 1
    image_size: int = 28
    num_classes: int = 10
    channels: tuple[int, ...] = (32, 64, 128)   # one conv + pool per entry
    dropout: float = 0.2

    def __post_init__(self) -> None:
        self.channels = tuple(self.channels)

    def validate(self) -> None:
        for name in ("in_channels", "image_size", "num_classes"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"classifier.{name} must be positive, got {getattr(self, name)}")
        if not self.channels or any(c <= 0 for c in self.channels):
            raise ConfigError(f"classifier.channels must be positive integers, got {list(self.channels)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"classifier.dropout must be in [0, 1), got {self.dropout}")


class Classifier(nn.Module):
    def __init__(self, cfg: ClassifierConfig) -> None:
        super().__init__()
        cfg.validate()
        self.config = cfg
        layers: list[nn.Module] = []
        ch, size = cfg.in_channels, cfg.image_size
        for out in cfg.channels:
            layers += [nn.Conv2d(ch, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True),
                       nn.MaxPool2d(2, ceil_mode=True)]
            ch, size = out, (size + 1) // 2
        self.features = nn.Sequential(*layers)
        self.drop = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(ch * size * size, cfg.num_classes)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, x: Tensor) -> Tensor:
        """x (B, C, H, W) in [-1, 1] -> logits (B, num_classes)."""
        h = self.features(x)                                  # (B, C', H', W')
        return self.head(self.drop(h.flatten(1)))              # (B, num_classes)
