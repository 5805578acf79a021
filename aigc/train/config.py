"""The trainer's configuration (shared by every model family)."""
from __future__ import annotations

from dataclasses import dataclass

from ..config import check_seed, refuse_non_finite
from ..errors import ConfigError


@dataclass
class TrainConfig:
    batch_size: int = 32             # rows per optimizer step, all ranks and micro-batches together
    grad_accum: int = 1              # micro-batches per step (per rank)
    lr: float = 1e-3
    min_lr: float = 1e-4
    schedule: str = "cosine"         # cosine | inverse_sqrt | constant
    warmup_steps: int = 100
    max_steps: int = 5000
    max_minutes: float | None = None  # wall-clock budget; the cosine is fitted to it
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0           # 0 disables clipping
    ema_decay: float = 0.0           # 0 disables the weight EMA
    eval_interval: int = 250
    eval_batches: int = 20
    log_interval: int = 10
    keep_last: int = 1               # recent checkpoints kept besides best (for `aigc average`)
    average_window: float = 0.0      # > 0: also checkpoint keep_last times, evenly, over this last fraction
                                     # of the planned steps, so that `aigc average` averages the final stretch
    best_metric: str = "val_loss"
    best_mode: str = "min"           # min | max
    seed: int = 1337
    device: str = "auto"             # auto | cpu | cuda
    precision: str = "auto"          # auto (bf16 on GPU, fp32 on CPU) | fp32 | bf16
    threads: int | None = None       # torch intra-op threads (default: torch's choice)

    def validate(self) -> None:
        refuse_non_finite(self, "train")
        check_seed("train.seed", self.seed)
        positive = ("batch_size", "grad_accum", "max_steps", "eval_interval", "eval_batches", "log_interval",
                    "keep_last")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"train.{name} must be positive, got {getattr(self, name)}")
        if self.lr <= 0 or self.min_lr < 0:
            raise ConfigError("train.lr must be positive and train.min_lr non-negative")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise ConfigError(f"--max-minutes must be positive, got {self.max_minutes}")
        if not 0.0 <= self.average_window < 1.0:
            raise ConfigError(f"train.average_window must be in [0, 1), got {self.average_window}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"train.ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.warmup_steps < 0 or self.grad_clip < 0 or self.weight_decay < 0:
            raise ConfigError("train.warmup_steps, train.grad_clip and train.weight_decay must not be negative")
        if self.schedule not in ("cosine", "inverse_sqrt", "constant"):
            raise ConfigError(f"train.schedule must be cosine, inverse_sqrt or constant, got '{self.schedule}'")
        if self.best_mode not in ("min", "max"):
            raise ConfigError(f"train.best_mode must be min or max, got '{self.best_mode}'")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"train.device must be auto, cpu or cuda, got '{self.device}'")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ConfigError(f"train.precision must be auto, fp32 or bf16, got '{self.precision}'")
