"""Shared helpers for the side-by-side benchmarks: timing, machine peaks, output.

Benchmarks run on shared, noisy machines, so every comparison is interleaved
(ours, peer, peer, ours, ...) and reported as medians. Before each timed run
we wait briefly for the CPUs to go quiet (other processes' load, read from
/proc/stat while we sleep), and a run during which other processes took more
than a little of the CPUs is thrown away and run again (a few times at most).
"""
from __future__ import annotations

import json
import os
import statistics
import time
from typing import Callable

import torch


def setup(threads: int = 2) -> None:
    torch.set_num_threads(threads)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", str(threads))


def _busy_jiffies() -> tuple[int, int]:
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


_quiet_budget = [120.0]  # seconds of waiting left for the whole run


def set_quiet_budget(seconds: float) -> None:
    _quiet_budget[0] = seconds


def wait_quiet(max_wait: float = 10.0, busy_below: float = 0.15, probe: float = 0.1) -> float:
    """Sleep until the machine's CPUs are mostly idle (others' load < ``busy_below``), at most
    ``max_wait`` s and at most what is left of the run's waiting budget (``set_quiet_budget``).

    Returns the busy fraction seen last (1.0 where /proc/stat is missing).
    """
    start = time.perf_counter()
    deadline = start + min(max_wait, _quiet_budget[0])
    frac = 1.0
    while True:
        try:
            b0, t0 = _busy_jiffies()
            time.sleep(probe)
            b1, t1 = _busy_jiffies()
        except OSError:
            return frac
        frac = (b1 - b0) / max(t1 - t0, 1)
        now = time.perf_counter()
        if frac < busy_below or now >= deadline:
            _quiet_budget[0] = max(0.0, _quiet_budget[0] - (now - start))
            return frac


_HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_NCPU = os.cpu_count() or 1
# runs thrown away because other processes took the CPUs, and such runs kept (no retries left)
stats = {"discarded_runs": 0, "noisy_runs_kept": 0}


def timed_alone(fn: Callable[[], object]) -> tuple[float, float]:
    """Run ``fn``: its wall seconds, and the share of all CPUs other processes used meanwhile."""
    try:
        b0, _ = _busy_jiffies()
    except OSError:
        return timed(fn), 0.0
    c0, t0 = time.process_time(), time.perf_counter()
    fn()
    t1, c1 = time.perf_counter(), time.process_time()
    b1, _ = _busy_jiffies()
    others = (b1 - b0) / _HZ - (c1 - c0)  # CPU seconds the machine spent outside this process
    return t1 - t0, max(0.0, others) / ((t1 - t0) * _NCPU)


def timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def interleave(runs: dict[str, Callable[[], object]], rounds: int, quiet: float = 10.0,
               warmup: bool = True, max_others: float = 0.1) -> dict[str, list[float]]:
    """Seconds per call of each function, run round-robin ``rounds`` times (after a warm-up call each).

    A run during which other processes used more than ``max_others`` of the CPUs
    is run again, up to ``rounds`` extra runs in all.
    """
    if warmup:
        for fn in runs.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in runs}
    spare = rounds
    for r in range(rounds):
        order = list(runs.items())
        if r % 2:  # alternate who goes first
            order.reverse()
        for name, fn in order:
            while True:
                if quiet > 0:
                    wait_quiet(quiet)
                seconds, others = timed_alone(fn)
                if others <= max_others:
                    break
                if spare == 0:
                    stats["noisy_runs_kept"] += 1
                    break
                spare -= 1
                stats["discarded_runs"] += 1
            times[name].append(seconds)
    return times


def median(xs: list[float]) -> float:
    return statistics.median(xs)


# our activation name -> the same function's name in transformers' ACT2FN
PEER_ACTIVATION = {"gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh"}


def fastest_gelu(rows: int = 1024, width: int = 1536, reps: int = 20) -> dict[str, float]:
    """Forward + backward milliseconds of exact and tanh GELU on (rows, width), fastest first.

    Which is faster depends on the CPU (AVX-512 runs erf far faster than tanh
    here); both models in a benchmark get the faster one, the peer included."""
    import torch.nn.functional as F

    x = torch.randn(rows, width, requires_grad=True)
    grad = torch.randn(rows, width)
    ms = {}
    for name, approx in (("gelu", "none"), ("gelu_tanh", "tanh")):
        def run() -> None:
            F.gelu(x, approximate=approx).backward(grad)
        run()
        ms[name] = min(timed(run) for _ in range(reps)) * 1e3
    return dict(sorted(ms.items(), key=lambda kv: kv[1]))


def matmul_peak_gflops(n: int = 2048, reps: int = 7) -> float:
    """Best fp32 GFLOP/s of an n x n x n torch.mm (at the current thread count)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    out = torch.empty(n, n)
    torch.mm(a, b, out=out)
    best = min(timed(lambda: torch.mm(a, b, out=out)) for _ in range(reps))
    return 2 * n**3 / best / 1e9


def copy_bandwidth_gbs(mib: int = 512, reps: int = 5) -> dict[str, float]:
    """Best memory bandwidth of a large tensor copy (bytes read + written, STREAM's convention)
    and of a read-only pass (sum), GB/s."""
    src = torch.ones(mib * 2**20 // 4)
    dst = torch.empty_like(src)
    dst.copy_(src)
    copy = min(timed(lambda: dst.copy_(src)) for _ in range(reps))
    read = min(timed(lambda: src.sum()) for _ in range(reps))
    nbytes = src.numel() * 4
    return {"copy_gbs": 2 * nbytes / copy / 1e9, "read_gbs": nbytes / read / 1e9}


def table(rows: list[list[object]], headers: list[str]) -> str:
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(v: object) -> str:
    if isinstance(v, float):
        if abs(v) >= 100:
            return f"{v:,.0f}"
        return f"{v:.3g}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)


def emit_json(obj: dict) -> None:
    """The benchmark's result: one JSON object, the last line of stdout."""
    print(json.dumps(obj, sort_keys=False), flush=True)


def rounded(obj: object, digits: int = 4) -> object:
    if isinstance(obj, float):
        return float(f"{obj:.{digits}g}")
    if isinstance(obj, dict):
        return {k: rounded(v, digits) for k, v in obj.items()}
    if isinstance(obj, list):
        return [rounded(v, digits) for v in obj]
    return obj
