"""Extents: how deep an extrude reaches on each side of its sketch, and DeepCAD's fields for it."""

from __future__ import annotations

import random
from dataclasses import dataclass

from cad_pipeline.cad.sample_corpus.numeric import pick, snap, snap_down

ONE_SIDE = "OneSideFeatureExtentType"
SYMMETRIC = "SymmetricFeatureExtentType"
TWO_SIDES = "TwoSidesFeatureExtentType"


@dataclass(frozen=True)
class Extent:
    kind: str
    one: float
    two: float = 0.0


def extent_kind(rng: random.Random) -> str:
    return pick(rng, ((ONE_SIDE, 76), (SYMMETRIC, 15), (TWO_SIDES, 9)))


def grown_interval(rng: random.Random, kind: str, height: float, thickness: float, grid: float) -> tuple[float, float]:
    """Depth range of a boss, measured outward from its face: on it, half sunk into it, or partly sunk."""
    if kind == SYMMETRIC:
        return -height, height
    if kind == TWO_SIDES:
        return -max(grid, snap_down(rng.uniform(0.2, 0.8) * thickness, grid)), height
    return 0.0, height


def cut_depth(rng: random.Random, thickness: float, grid: float, through: bool) -> float:
    if through:
        return thickness if rng.random() < 0.4 else thickness + max(grid, snap(rng.uniform(0.1, 0.5) * thickness, grid))
    return min(max(grid, snap(rng.uniform(0.2, 0.75) * thickness, grid)), thickness - grid)


def cut_interval(rng: random.Random, kind: str, depth: float, grid: float) -> tuple[float, float]:
    """Depth range of a cut, measured outward from its face; the outward part only cuts air."""
    if kind == SYMMETRIC:
        return -depth, depth
    if kind == TWO_SIDES:
        return -depth, max(grid, snap(rng.uniform(0.1, 0.5) * depth, grid))
    return -depth, 0.0


def signed(low: float, high: float, sign: int) -> tuple[float, float]:
    """An outward depth range in the coordinates of a sketch whose normal is `sign` times outward."""
    return (low, high) if sign > 0 else (-high, -low)


def encode_extent(rng: random.Random, kind: str, low: float, high: float) -> Extent:
    """DeepCAD's fields for a depth range along the sketch normal: Symmetric stores the half depth
    (negative now and then, as Onshape's flip leaves it), TwoSides stores the second side against the normal."""
    if kind == SYMMETRIC:
        return Extent(kind, -high if rng.random() < 0.15 else high)
    if kind == TWO_SIDES:
        return Extent(kind, high, -low)
    return Extent(kind, high if low == 0.0 else low)
