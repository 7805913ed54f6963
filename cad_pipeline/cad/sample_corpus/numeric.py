"""Small numeric helpers: weighted draws and rounding to a designer's grid."""

from __future__ import annotations

import math
import random


def pick(rng: random.Random, weighted: tuple):
    """One item of ((item, weight), ...), using one draw from `rng`."""
    return rng.choices([item for item, _ in weighted], [weight for _, weight in weighted])[0]


def log_uniform(rng: random.Random, low: float, high: float) -> float:
    return math.exp(rng.uniform(math.log(low), math.log(high)))


def snap(value: float, step: float) -> float:
    return round(value / step) * step


def snap_down(value: float, step: float) -> float:
    """The largest multiple of `step` not above `value` (0.0 when `value` is under one step)."""
    return max(0, math.floor(value / step + 1e-6)) * step


def fraction_of(rng: random.Random, length: float, low: float, high: float, grid: float) -> float:
    """A round share of a length, at least half a step away from nothing and from the whole length where it fits."""
    value = snap(rng.uniform(low, high) * length, grid / 2)
    return min(max(value, min(grid / 2, low * length)), length - min(grid / 2, (1.0 - high) * length))
