"""What a running service is allowed to do: every limit in one dataclass, with its one default.

``aigc serve`` takes each field as an option (``--max-n 8``); the defaults suit one small CPU machine.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

from ..config import check_float, check_int


@dataclass(frozen=True)
class Limits:
    """Request limits, checked before any work starts (413 for the body, 400 for the rest)."""
    max_body_bytes: int = 8 * 1024 * 1024   # a request's body (JSON or multipart upload)
    max_prompt_chars: int = 32_000          # a prompt, or all chat messages together
    max_tokens: int = 4096                  # new tokens per completion (also capped by the context)
    max_n: int = 16                         # completions or images per request
    max_steps: int = 250                    # diffusion sampling steps
    max_image_size: int = 1024              # the side of a returned (upscaled) image, pixels
    max_translation_inputs: int = 256       # sentences per /v1/translations request
    max_beam: int = 16                      # beam width of a translation

    def __post_init__(self) -> None:
        for f in fields(self):
            check_int(f"limit {f.name}", getattr(self, f.name), 1)


@dataclass(frozen=True)
class Engine:
    """How the service runs its models."""
    text_batch: int = 16        # rows of one model's continuous text batch
    image_batch: int = 8        # image jobs of one model and settings sampled together
    job_lease_s: float = 30.0   # a running job whose worker stops heartbeating this long is taken again
    job_poll_s: float = 0.25    # how often an idle worker looks for jobs (local submits wake it at once)
    shutdown_grace_s: float = 20.0  # graceful stop: how long running jobs may finish before re-queueing

    def __post_init__(self) -> None:
        check_int("text_batch", self.text_batch, 1, 256)
        check_int("image_batch", self.image_batch, 1, 256)
        check_float("job_lease_s", self.job_lease_s, 1)
        check_float("job_poll_s", self.job_poll_s, 0.01, 10)
        check_float("shutdown_grace_s", self.shutdown_grace_s, 0)
