"""Signals made in the tests themselves: sines, chirps, noise (nothing is read from disk or downloaded)."""
from __future__ import annotations

import math

import numpy as np


def sine(freq: float, sr: int, seconds: float, amplitude: float = 1.0) -> np.ndarray:
    t = np.arange(round(sr * seconds)) / sr
    return (amplitude * np.sin(2 * math.pi * freq * t)).astype(np.float32)


def chirp(sr: int, seconds: float, f0: float, f1: float, amplitude: float = 0.9) -> np.ndarray:
    """A linear sweep from f0 to f1 Hz."""
    t = np.arange(round(sr * seconds)) / sr
    rate = (f1 - f0) / seconds
    return (amplitude * np.sin(2 * math.pi * (f0 * t + 0.5 * rate * t * t))).astype(np.float32)
