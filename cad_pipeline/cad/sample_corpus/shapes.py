"""Shapes: each fills a given rectangle, drawn in one canonical orientation, then turned or mirrored."""

from __future__ import annotations

import math
import random
from collections.abc import Callable

from cad_pipeline.cad.sample_corpus.numeric import fraction_of, pick, snap, snap_down
from cad_pipeline.cad.sample_corpus.sketch_geometry import Circle, Point2, Rect, Shape, closed_loop, moved, polygon_loop


def _rectangle(rng: random.Random, rect: Rect, grid: float) -> Shape:
    corners = [(rect.x0, rect.y0), (rect.x1, rect.y0), (rect.x1, rect.y1), (rect.x0, rect.y1)]
    return Shape(polygon_loop(corners), rect.inset(0.1 * rect.width, 0.1 * rect.height))


def _rounded_rectangle(rng: random.Random, rect: Rect, grid: float) -> Shape:
    radius = snap_down(rng.uniform(0.1, 0.4) * rect.short, grid / 2)
    if radius <= 0.0:
        return _rectangle(rng, rect, grid)
    x0, y0, x1, y1, r = rect.x0, rect.y0, rect.x1, rect.y1, radius
    path = [
        ((x0 + r, y0), None),
        ((x1 - r, y0), ((x1 - r, y0 + r), r, True)),
        ((x1, y0 + r), None),
        ((x1, y1 - r), ((x1 - r, y1 - r), r, True)),
        ((x1 - r, y1), None),
        ((x0 + r, y1), ((x0 + r, y1 - r), r, True)),
        ((x0, y1 - r), None),
        ((x0, y0 + r), ((x0 + r, y0 + r), r, True)),
    ]
    margin = 0.3 * r + 0.08 * rect.short
    return Shape(closed_loop(path), rect.inset(margin, margin))


def _slot(rng: random.Random, rect: Rect, grid: float) -> Shape:
    """An obround along x: two lines joined by half circles."""
    r = snap_down(min(rect.height / 2, rect.width / 2.6), grid / 2)
    if r <= 0.0:
        return _rectangle(rng, rect, grid)
    cy, x0, x1 = rect.center[1], rect.x0, rect.x1
    path = [
        ((x0 + r, cy - r), None),
        ((x1 - r, cy - r), ((x1 - r, cy), r, True)),
        ((x1 - r, cy + r), None),
        ((x0 + r, cy + r), ((x0 + r, cy), r, True)),
    ]
    return Shape(closed_loop(path), Rect(x0 + 0.7 * r, cy - 0.7 * r, x1 - 0.7 * r, cy + 0.7 * r))


def _tab(rng: random.Random, rect: Rect, grid: float) -> Shape:
    """A lug: square at one end, a half circle at the other."""
    r = snap_down(min(rect.height / 2, rect.width / 2.2), grid / 2)
    if r <= 0.0:
        return _rectangle(rng, rect, grid)
    cy, x0, x1 = rect.center[1], rect.x0, rect.x1
    path = [((x0, cy - r), None), ((x1 - r, cy - r), ((x1 - r, cy), r, True)), ((x1 - r, cy + r), None), ((x0, cy + r), None)]
    return Shape(closed_loop(path), Rect(x0 + 0.08 * rect.width, cy - 0.7 * r, x1 - 0.75 * r, cy + 0.7 * r))


def _polygon(rng: random.Random, rect: Rect, grid: float) -> Shape:
    sides = rng.choice((3, 5, 6, 6, 8))
    radius = snap_down(rect.short / 2, grid / 2) or rect.short / 2
    start = rng.choice((math.pi / 2, math.pi / sides, rng.uniform(0.0, 2.0 * math.pi)))
    (cx, cy) = rect.center
    vertices = [
        (cx + radius * math.cos(start + 2.0 * math.pi * k / sides), cy + radius * math.sin(start + 2.0 * math.pi * k / sides))
        for k in range(sides)
    ]
    half = 0.65 * radius * math.cos(math.pi / sides)
    return Shape(polygon_loop(vertices), Rect.around((cx, cy), half, half))


def _circle(rng: random.Random, rect: Rect, grid: float) -> Shape:
    radius = snap_down(rect.short / 2, grid / 2) or rect.short / 2
    return Shape((Circle(rect.center, radius),), Rect.around(rect.center, 0.6 * radius, 0.6 * radius))


def _d_shape(rng: random.Random, rect: Rect, grid: float) -> Shape:
    """A circle with one flat (canonically on top), like a keyed shaft."""
    radius = snap_down(rect.short / 2, grid / 2) or rect.short / 2
    flat = min(max(snap(rng.uniform(0.35, 0.8) * radius, grid / 2), 0.3 * radius), 0.85 * radius)
    (cx, cy) = rect.center
    theta = math.atan2(flat, math.sqrt(radius * radius - flat * flat))
    right = (cx + radius * math.cos(theta), cy + radius * math.sin(theta))
    left = (cx + radius * math.cos(math.pi - theta), cy + radius * math.sin(math.pi - theta))
    inner = Rect(cx - 0.6 * radius, cy - 0.6 * radius, cx + 0.6 * radius, cy + min(0.6 * radius, flat - 0.1 * radius))
    return Shape(closed_loop([(right, None), (left, ((cx, cy), radius, True))]), inner)


def _quadrant(rng: random.Random, rect: Rect, grid: float) -> Shape:
    """A quarter disc with its corner at the rectangle's corner."""
    r = snap_down(rect.short, grid / 2) or rect.short
    x0, y0 = rect.x0, rect.y0
    path = [((x0, y0), None), ((x0 + r, y0), ((x0, y0), r, True)), ((x0, y0 + r), None)]
    return Shape(closed_loop(path), Rect(x0 + 0.08 * r, y0 + 0.08 * r, x0 + 0.62 * r, y0 + 0.62 * r))


def _l_shape(rng: random.Random, rect: Rect, grid: float) -> Shape:
    arm_x = fraction_of(rng, rect.width, 0.25, 0.6, grid)
    arm_y = fraction_of(rng, rect.height, 0.25, 0.6, grid)
    x0, y0, x1, y1 = rect.x0, rect.y0, rect.x1, rect.y1
    vertices = [(x0, y0), (x1, y0), (x1, y0 + arm_y), (x0 + arm_x, y0 + arm_y), (x0 + arm_x, y1), (x0, y1)]
    bottom, left = Rect(x0, y0, x1, y0 + arm_y), Rect(x0, y0, x0 + arm_x, y1)
    arm = bottom if rect.width * arm_y >= rect.height * arm_x else left
    return Shape(polygon_loop(vertices), arm.inset(0.12 * arm.width, 0.12 * arm.height))


def _t_shape(rng: random.Random, rect: Rect, grid: float) -> Shape:
    bar = fraction_of(rng, rect.height, 0.25, 0.5, grid)
    stem = fraction_of(rng, rect.width, 0.25, 0.5, grid)
    (cx, _), x0, y0, x1, y1 = rect.center, rect.x0, rect.y0, rect.x1, rect.y1
    s0, s1 = cx - stem / 2, cx + stem / 2
    vertices = [(s0, y0), (s1, y0), (s1, y1 - bar), (x1, y1 - bar), (x1, y1), (x0, y1), (x0, y1 - bar), (s0, y1 - bar)]
    top = Rect(x0, y1 - bar, x1, y1)
    return Shape(polygon_loop(vertices), top.inset(0.1 * top.width, 0.12 * top.height))


def _u_shape(rng: random.Random, rect: Rect, grid: float) -> Shape:
    base = fraction_of(rng, rect.height, 0.25, 0.5, grid)
    arm = fraction_of(rng, rect.width, 0.15, 0.35, grid)
    x0, y0, x1, y1 = rect.x0, rect.y0, rect.x1, rect.y1
    vertices = [(x0, y0), (x1, y0), (x1, y1), (x1 - arm, y1), (x1 - arm, y0 + base), (x0 + arm, y0 + base), (x0 + arm, y1), (x0, y1)]
    bottom = Rect(x0, y0, x1, y0 + base)
    return Shape(polygon_loop(vertices), bottom.inset(0.1 * bottom.width, 0.12 * bottom.height))


def _plus(rng: random.Random, rect: Rect, grid: float) -> Shape:
    tx = fraction_of(rng, rect.width, 0.25, 0.5, grid)
    ty = fraction_of(rng, rect.height, 0.25, 0.5, grid)
    (cx, cy), x0, y0, x1, y1 = rect.center, rect.x0, rect.y0, rect.x1, rect.y1
    a0, a1, b0, b1 = cx - tx / 2, cx + tx / 2, cy - ty / 2, cy + ty / 2
    vertices = [(a0, y0), (a1, y0), (a1, b0), (x1, b0), (x1, b1), (a1, b1), (a1, y1), (a0, y1), (a0, b1), (x0, b1), (x0, b0), (a0, b0)]
    bar = Rect(x0, b0, x1, b1)
    return Shape(polygon_loop(vertices), bar.inset(0.1 * bar.width, 0.12 * bar.height))


_Builder = Callable[[random.Random, Rect, float], Shape]
_SHAPES: dict[str, tuple[_Builder, bool]] = {
    "rectangle": (_rectangle, False),
    "rounded_rectangle": (_rounded_rectangle, False),
    "slot": (_slot, True),
    "tab": (_tab, True),
    "polygon": (_polygon, False),
    "circle": (_circle, False),
    "d_shape": (_d_shape, True),
    "quadrant": (_quadrant, True),
    "l_shape": (_l_shape, True),
    "t_shape": (_t_shape, True),
    "u_shape": (_u_shape, True),
    "plus": (_plus, False),
}
"""Builder and whether it is asymmetric enough to be drawn in all eight orientations."""
BASE_SHAPES = (
    ("rectangle", 22), ("rounded_rectangle", 12), ("circle", 18), ("slot", 6), ("polygon", 7), ("l_shape", 8),
    ("t_shape", 5), ("u_shape", 5), ("plus", 3), ("d_shape", 5), ("tab", 5), ("quadrant", 4),
)
FEATURE_SHAPES = (
    ("rectangle", 25), ("circle", 30), ("rounded_rectangle", 12), ("slot", 8), ("polygon", 8), ("d_shape", 4),
    ("tab", 3), ("l_shape", 4), ("t_shape", 2), ("u_shape", 2), ("plus", 1), ("quadrant", 1),
)
HOLE_SHAPES = (("circle", 70), ("rectangle", 8), ("rounded_rectangle", 5), ("slot", 10), ("polygon", 7))
BAR_SHAPES = (("rectangle", 40), ("circle", 25), ("rounded_rectangle", 15), ("slot", 10), ("polygon", 10))
TRIM_SHAPES = (("circle", 25), ("polygon", 20), ("rounded_rectangle", 25), ("slot", 15), ("d_shape", 15))

_SYMMETRIES = (((1, 0), (0, 1)), ((0, -1), (1, 0)), ((-1, 0), (0, -1)), ((0, 1), (-1, 0)),
               ((-1, 0), (0, 1)), ((1, 0), (0, -1)), ((0, 1), (1, 0)), ((0, -1), (-1, 0)))
"""The eight rotations and mirrors of a square, as 2x2 matrices."""


def make_shape(rng: random.Random, kind: str, rect: Rect, grid: float) -> Shape:
    build, orientable = _SHAPES[kind]
    if not orientable:
        return build(rng, rect, grid)
    return _oriented(rng, rect, grid, build)


def _oriented(rng: random.Random, rect: Rect, grid: float, build: _Builder) -> Shape:
    """Draw the canonical shape turned or mirrored, so L, T, slots and lugs face every way."""
    (a, b), (c, d) = rng.choice(_SYMMETRIES)
    center = rect.center
    swaps = a == 0
    canonical = Rect.around(center, rect.height / 2, rect.width / 2) if swaps else rect
    shape = build(rng, canonical, grid)

    def move(point: Point2) -> Point2:
        dx, dy = point[0] - center[0], point[1] - center[1]
        return center[0] + a * dx + b * dy, center[1] + c * dx + d * dy

    mirrored = a * d - b * c < 0
    corners = [move((shape.inner.x0, shape.inner.y0)), move((shape.inner.x1, shape.inner.y1))]
    return Shape(tuple(moved(segment, move, mirrored) for segment in shape.loop), Rect.spanning(corners))


def hole_shapes(rng: random.Random, inner: Rect, grid: float) -> list[tuple[Shape, Rect]]:
    """Holes for a plate: one in the middle, a pair, one at each corner, or middle and corners."""
    short = inner.short
    if short < 6 * grid:
        return []
    pattern = pick(rng, (("center", 50), ("pair", 15), ("corners", 25), ("center_corners", 10)))
    spots = []
    if pattern in ("center", "center_corners"):
        fraction = rng.uniform(0.3, 0.75) if pattern == "center" else rng.uniform(0.25, 0.4)
        square = rng.random() < 0.5
        half_w = fraction * (short if square else inner.width) / 2
        half_h = fraction * (short if square else inner.height) / 2
        spots.append(Rect.around(inner.center, half_w, half_h))
    if pattern == "pair":
        radius = rng.uniform(0.1, 0.2) * short
        offset = 0.3 * max(inner.width, inner.height)
        along_x = inner.width >= inner.height
        for side in (-1, 1):
            dx, dy = (side * offset, 0.0) if along_x else (0.0, side * offset)
            spots.append(Rect.around((inner.center[0] + dx, inner.center[1] + dy), radius, radius))
    if pattern in ("corners", "center_corners"):
        radius = rng.uniform(0.06, 0.13) * short
        inset = radius + 0.02 * short
        for x, y in ((inner.x0 + inset, inner.y0 + inset), (inner.x1 - inset, inner.y0 + inset),
                     (inner.x1 - inset, inner.y1 - inset), (inner.x0 + inset, inner.y1 - inset)):
            spots.append(Rect.around((x, y), radius, radius))
    kind = pick(rng, HOLE_SHAPES)
    holes = []
    for spot in spots:
        sized = Rect.around(spot.center, snap_down(spot.width / 2, grid / 4), snap_down(spot.height / 2, grid / 4))
        if sized.short > 0.0:
            holes.append((make_shape(rng, kind, sized, grid), sized))
    return holes


def central_hole(rng: random.Random, shape: Shape, grid: float) -> list[tuple[Shape, Rect]]:
    """A single hole in the middle of a shape, turning a boss into a tube or a pocket into a groove."""
    inner = shape.inner
    if inner.short < 3 * grid:
        return []
    fraction = rng.uniform(0.3, 0.7)
    spot = Rect.around(inner.center, snap_down(fraction * inner.short / 2, grid / 4), snap_down(fraction * inner.short / 2, grid / 4))
    if spot.short <= 0.0:
        return []
    return [(make_shape(rng, pick(rng, HOLE_SHAPES), spot, grid), spot)]
