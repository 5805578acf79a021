"""A model-agnostic training loop (minGPT style: the objective is injected).

The trainer owns everything that is not the model: AdamW and its schedule,
gradient accumulation and clipping, EMA, mixed precision on GPUs, DDP,
periodic validation, metrics, the progress bar and checkpoints with exact
resume. It never learns what it trains: the caller passes

* ``objective(model, batch) -> scalar loss``;
* a ``source`` with ``batch(step, part, parts)``: share ``part`` of ``parts``
  equal shares of the global batch of optimizer step ``step``, and
  ``items(step)``: the tokens (or images) in that global batch. A batch is a
  pure function of the step, so resuming needs no data position and any
  (world size x accumulation) split sees the same global batch;
* optionally ``evaluate(model) -> {"val_loss": ...}``, and ``on_step(step, loss, model)``,
  run after every optimizer step (0-based step, that step's loss on this rank).

An objective that keeps state across steps (a diffusion model's importance
sampler of timesteps) exposes ``state_dict()`` / ``load_state_dict(d)`` with
JSON-able values; the trainer checkpoints it with the rest.
"""
from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Protocol

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from .. import checkpoint as ckpt
from ..checkpoint.lock import RunLock
from ..checkpoint.state import load_unique_state, optimizer_from_flat, optimizer_to_flat, unique_state
from ..errors import CheckpointError, ConfigError
from .config import TrainConfig
from .ddp import Dist, all_mean, barrier, broadcast_floats, init_distributed, ranks_in_sync, shutdown
from .ema import EMA
from .metrics import MetricsLog, rate_key
from .optim import lr_at, make_adamw


class BatchSource(Protocol):
    def batch(self, step: int, part: int, parts: int) -> Any: ...

    def items(self, step: int) -> int: ...  # tokens (or images) in the global batch, for throughput


Objective = Callable[[nn.Module, Any], Tensor]
Evaluate = Callable[[nn.Module], dict[str, float]]
StepHook = Callable[[int, float, nn.Module], None]


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device=cuda was asked for, but no CUDA GPU is available")
    return torch.device(name)


def step_seed(seed: int, step: int, rank: int) -> int:
    """A per-(step, rank) seed, so dropout does not depend on what ran before."""
    return (seed * 1_000_003 + step * 9_176 + rank * 7_919) % (2**63 - 1)


def _to(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (tuple, list)):
        return type(batch)(_to(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: _to(v, device) for k, v in batch.items()}
    return batch


class Trainer:
    def __init__(self, model: nn.Module, objective: Objective, source: BatchSource, cfg: TrainConfig,
                 run_dir: Path, *, kind: str, meta: dict[str, Any], files: dict[str, str] | None = None,
                 evaluate: Evaluate | None = None, progress: bool = True, on_step: StepHook | None = None,
                 save_frozen: bool = True, unit: str = "tokens") -> None:
        """``on_step(step, loss, model)`` runs after each optimizer step (0-based step, the step's loss as a
        float; the model is put back in training mode afterwards). ``save_frozen=False`` leaves parameters
        with ``requires_grad=False`` (a frozen pre-trained backbone, loaded from elsewhere) out of the
        checkpoints; resuming keeps the model's own values for them. ``unit`` names what ``source.items``
        counts ("tokens", "images"): the throughput is logged as ``{unit}_per_s``.

        The run folder is locked (``RunLock``, on rank 0) before anything is written, so a second trainer
        on the same folder fails with ConfigError; ``run()`` releases it when it ends, ``close()`` (or
        leaving ``with Trainer(...)``) otherwise."""
        cfg.validate()
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.cfg, self.objective, self.source, self.evaluate = cfg, objective, source, evaluate
        self.run_dir, self.kind, self.meta, self.files = Path(run_dir), kind, meta, files or {}
        self.on_step, self.save_frozen = on_step, save_frozen
        self.device = pick_device(cfg.device)
        if cfg.precision == "bf16" and self.device.type == "cpu":
            raise ConfigError("bf16 is far slower than fp32 on CPUs; use train.precision=fp32 on CPU")
        self.amp = self.device.type == "cuda" and cfg.precision in ("auto", "bf16")
        self.dist: Dist = init_distributed(self.device)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
        source.batch(0, 0, self.dist.world * cfg.grad_accum)  # a bad split fails here, before any write
        self.unit = unit
        self.lock = self._lock_run()  # one writer per run folder, taken before the first write
        self.model = model.to(self.device)
        self.wrapped = (DistributedDataParallel(self.model) if self.dist.enabled else self.model)
        self.opt = make_adamw(self.model, cfg.lr, cfg.weight_decay, (cfg.beta1, cfg.beta2))
        self.ema = EMA(self.model, cfg.ema_decay) if cfg.ema_decay > 0 else None
        self.step, self.elapsed, self.planned = 0, 0.0, cfg.max_steps
        self.budget_s = cfg.max_minutes * 60.0 if cfg.max_minutes else None  # wall clock of the whole run
        self.best: float | None = None
        self.saved_step = 0  # step of the last checkpoint written
        self.log = MetricsLog(self.run_dir, unit) if self.dist.main else None
        self.progress = progress and self.dist.main

    # ---- checkpoints -------------------------------------------------------------
    def _saved(self, tensors: dict[str, Tensor]) -> dict[str, Tensor]:
        """The model (or EMA) tensors a checkpoint holds: all, or (save_frozen=False) all but frozen parameters."""
        if self.save_frozen:
            return tensors
        frozen = {name for name, p in self.model.named_parameters() if not p.requires_grad}
        return {k: v for k, v in tensors.items() if k not in frozen}

    def _state(self) -> dict[str, Any]:
        state = {"step": self.step, "elapsed": self.elapsed, "planned": self.planned, "best": self.best,
                 "budget_s": self.budget_s}
        if hasattr(self.objective, "state_dict"):
            state["objective"] = self.objective.state_dict()
        return state

    def save(self, pointers: tuple[str, ...] = ("latest",)) -> Path | None:
        if not self.dist.main:
            return None
        opt_tensors, opt_meta = optimizer_to_flat(self.opt)
        tensors = {"model": self._saved(unique_state(self.model)), "optimizer": opt_tensors}
        if self.ema is not None:
            tensors["ema"] = self._saved(self.ema.state())
        files = dict(self.files)
        files["trainer_state.json"] = json.dumps({**self._state(), "optimizer": opt_meta}, indent=1)
        meta = {**self.meta, "train": asdict(self.cfg)}
        path = ckpt.save_checkpoint(self.run_dir, self.step, kind=self.kind, meta=meta,
                                    tensors=tensors, files=files, pointers=pointers)
        ckpt.prune(self.run_dir, self.cfg.keep_last)
        self.saved_step = self.step
        return path

    def resume(self) -> None:
        """Continue from ``RUN/latest``: weights, optimizer, EMA, step, clock, best score."""
        path = ckpt.resolve(self.run_dir, prefer=("latest",))
        saved_train = ckpt.read_config(path).get("train") or {}
        current = unique_state(self.model)
        kept = {k: v for k, v in current.items() if k not in self._saved(current)}  # frozen ones left out
        load_unique_state(self.model, {**kept, **ckpt.read_tensors(path, "model")})
        try:
            state = json.loads(ckpt.read_text(path, "trainer_state.json"))
        except json.JSONDecodeError:
            raise CheckpointError(f"checkpoint '{path}' has a corrupt trainer_state.json") from None
        optimizer_from_flat(self.opt, ckpt.read_tensors(path, "optimizer"), state["optimizer"])
        if self.ema is not None and (path / "ema.safetensors").exists():
            self.ema.load(ckpt.read_tensors(path, "ema"))
        if hasattr(self.objective, "load_state_dict") and "objective" in state:
            self.objective.load_state_dict(state["objective"])
        self.step, self.elapsed, self.best = state["step"], state["elapsed"], state["best"]
        self.saved_step = self.step
        self._replan(state, saved_train)
        if self.log is not None:
            self.log.truncate_after(self.step)

    # ---- the loop -----------------------------------------------------------------
    def _improved(self, value: float) -> bool:
        if self.best is None or math.isnan(self.best):
            return not math.isnan(value)
        return value < self.best if self.cfg.best_mode == "min" else value > self.best

    def _validate(self) -> dict[str, float]:
        if self.evaluate is None or not self.dist.main:
            return {}
        self.model.eval()
        with torch.no_grad(), self._autocast():
            result = self.evaluate(self.model)
        self.model.train()
        return result

    def _autocast(self):
        if self.amp:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _checkpoint(self) -> dict[str, float]:
        scores = self._validate()
        pointers = ("latest",)
        if self.dist.main:
            value = scores.get(self.cfg.best_metric)
            if value is None or self._improved(value):
                pointers = ("latest", "best")
                if value is not None:
                    self.best = value
            self.save(pointers)
            if scores:
                self.log.write({"step": self.step, **scores})
            self.log.plot()
        barrier(self.dist)
        return scores

    def fit(self, stop_at: int | None = None) -> dict[str, Any]:
        """Train until max_steps, the time budget, or ``stop_at`` (then checkpoint and return)."""
        cfg, world, rank = self.cfg, self.dist.world, self.dist.rank
        parts = world * cfg.grad_accum
        self.model.train()
        bar = tqdm(total=self.planned, initial=self.step, disable=not self.progress,
                   dynamic_ncols=True, unit="step")
        t_start, start_step, prior = time.perf_counter(), self.step, self.elapsed
        window_t, window_items = t_start, 0
        scores: dict[str, float] = {}
        last_loss = float("nan")
        try:
            while self.step < self.planned and (stop_at is None or self.step < stop_at):
                torch.manual_seed(step_seed(cfg.seed, self.step, rank))
                lr = lr_at(self.step, schedule=cfg.schedule, lr=cfg.lr, min_lr=cfg.min_lr,
                           warmup=cfg.warmup_steps, total=self.planned)
                for group in self.opt.param_groups:
                    group["lr"] = lr
                loss_sum = torch.zeros((), device=self.device)
                items = self.source.items(self.step)
                for m in range(cfg.grad_accum):
                    batch = _to(self.source.batch(self.step, m * world + rank, parts), self.device)
                    sync = m == cfg.grad_accum - 1 or not self.dist.enabled
                    with (contextlib.nullcontext() if sync else self.wrapped.no_sync()), self._autocast():
                        loss = self.objective(self.wrapped, batch) / cfg.grad_accum
                    loss.backward()
                    loss_sum += loss.detach()
                if cfg.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
                self.opt.step()
                self.opt.zero_grad(set_to_none=True)
                if self.ema is not None:
                    self.ema.update(self.model, self.step)
                if self.on_step is not None:
                    self.on_step(self.step, loss_sum.item(), self.model)
                    self.model.train()
                self.step += 1
                window_items += items
                now = time.perf_counter()
                self.elapsed = prior + (now - t_start)
                if cfg.max_minutes is not None:
                    self._fit_budget(now - t_start, self.step - start_step)
                done = self.step >= self.planned or (stop_at is not None and self.step >= stop_at)
                if self.step % cfg.log_interval == 0 or done:
                    last_loss = all_mean(loss_sum, self.dist).item()
                    rate = window_items / max(now - window_t, 1e-9)
                    window_t, window_items = now, 0
                    if self.log is not None:
                        self.log.write({"step": self.step, "loss": last_loss, "lr": lr,
                                        rate_key(self.unit): rate, "elapsed_s": round(self.elapsed, 3)})
                    bar.set_postfix({"loss": f"{last_loss:.4f}", f"{self.unit}/s": f"{rate:,.0f}"}, refresh=False)
                bar.total = self.planned
                bar.update(1)
                if self.step % cfg.eval_interval == 0 or done:
                    scores = self._checkpoint()
                    if scores:
                        bar.write(f"step {self.step}: " + ", ".join(f"{k} {v:.4f}" for k, v in scores.items()))
                elif self._averaging_checkpoint_due():
                    self.save()
        except KeyboardInterrupt:
            if not self.dist.enabled and self.step > 0:
                self.save()
                bar.write(f"interrupted: saved step {self.step} to {self.run_dir}/latest")
            raise
        finally:
            bar.close()
        if self.step > 0 and not (self.run_dir / "latest").exists() and self.dist.main:
            self._checkpoint()
        result = {"step": self.step, "loss": last_loss, "elapsed_s": self.elapsed, "best": self.best,
                  "rank": self.dist.rank, "world": self.dist.world, **scores}
        if self.dist.enabled:
            result["ranks_in_sync"] = ranks_in_sync(self.model, self.dist)
        return result

    def run(self, *, resume: bool = False, stop_at: int | None = None) -> dict[str, Any]:
        """Resume (when asked) and fit; the process group is left however it ends."""
        try:
            if resume:
                self.resume()
            return self.fit(stop_at=stop_at)
        finally:
            self.close()
            shutdown(self.dist)

    def _lock_run(self) -> RunLock | None:
        """Rank 0 locks the run folder; under DDP every rank learns whether it could, so all fail together."""
        lock, error = None, None
        if self.dist.main:
            try:
                lock = RunLock(self.run_dir).acquire()
            except (ConfigError, OSError) as exc:
                error = exc
        if self.dist.enabled:
            locked = all_mean(torch.tensor(0.0 if error else 1.0, device=self.device), self.dist).item()
            if locked < 1 and error is None:
                raise ConfigError(f"rank 0 could not lock the run folder '{self.run_dir}' (see its error)")
        if error is not None:
            raise error
        return lock

    def close(self) -> None:
        """Release the run folder's lock (``run()`` does so when it ends); calling it again does nothing."""
        if self.lock is not None:
            self.lock.release()

    def __enter__(self) -> Trainer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _averaging_checkpoint_due(self) -> bool:
        """Whether to checkpoint (without validation) for ``aigc average``: ``keep_last`` checkpoints
        evenly spaced over the last ``average_window`` of the planned steps, counting the regular ones."""
        window, n = self.cfg.average_window, self.cfg.keep_last
        if window <= 0 or n < 2:
            return False
        span = window * self.planned
        return self.step >= self.planned - span and self.step - self.saved_step >= max(1.0, span / n)

    def _replan(self, state: dict[str, Any], saved: dict[str, Any]) -> None:
        """The plan of a resumed run. Unchanged budgets continue the saved plan (bit-identical to a run
        never stopped); a changed ``max_minutes`` (the run's whole budget) or ``max_steps`` (its total)
        re-plans the rest: the step count is fitted anew and the schedule (a cosine) follows it."""
        cfg = self.cfg
        new_minutes = cfg.max_minutes is not None and cfg.max_minutes != saved.get("max_minutes")
        new_steps = cfg.max_steps != saved.get("max_steps", cfg.max_steps)
        if new_minutes or new_steps:
            self.planned = cfg.max_steps
        else:
            self.planned = min(state["planned"], cfg.max_steps) if cfg.max_minutes else cfg.max_steps
        if cfg.max_minutes is not None and not new_minutes and state.get("budget_s"):
            self.budget_s = state["budget_s"]
        out_of_time = self.budget_s is not None and self.elapsed >= self.budget_s
        if self.step >= self.planned or out_of_time:
            what = ("--max-minutes (more minutes)" if out_of_time else "a larger --max-steps" if new_minutes or new_steps
                    else "--max-minutes or a larger --max-steps")
            raise ConfigError(f"'{self.run_dir}' has already trained {self.step} steps, all its budget allows; "
                              f"pass {what} to train it further")

    def _fit_budget(self, run_seconds: float, run_steps: int) -> None:
        """Refit the planned step count to the wall-clock budget; every rank follows rank 0."""
        budget = self.budget_s
        if self.elapsed >= budget:
            planned = float(self.step)
        else:
            per_step = run_seconds / max(run_steps, 1)
            planned = float(min(self.cfg.max_steps, self.step + max(1, int((budget - self.elapsed) / per_step))))
        self.planned = int(broadcast_floats([planned], self.dist)[0])
