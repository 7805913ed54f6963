"""Frames in space: sketch planes as right-handed frames, moving rectangles and boxes between them."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from cad_pipeline.cad.sample_corpus.numeric import pick, snap
from cad_pipeline.cad.sample_corpus.sketch_geometry import Rect

Vec3 = tuple[float, float, float]
Axis = tuple[int, int, int]


@dataclass(frozen=True)
class Frame:
    """A right-handed frame in world coordinates (metres); a sketch's transform."""

    origin: Vec3
    x_axis: Vec3
    y_axis: Vec3
    z_axis: Vec3

    def to_world(self, point: Vec3) -> Vec3:
        return tuple(o + point[0] * x + point[1] * y + point[2] * z for o, x, y, z in zip(self.origin, self.x_axis, self.y_axis, self.z_axis))

    def to_local(self, point: Vec3) -> Vec3:
        offset = tuple(p - o for p, o in zip(point, self.origin))
        return _dot(offset, self.x_axis), _dot(offset, self.y_axis), _dot(offset, self.z_axis)

    def child(self, origin: Vec3, z: Axis, x: Axis) -> Frame:
        """A frame at a local point whose axes are signed local axes, so its axes stay exact."""
        y = (z[1] * x[2] - z[2] * x[1], z[2] * x[0] - z[0] * x[2], z[0] * x[1] - z[1] * x[0])
        return Frame(self.to_world(origin), self._direction(x), self._direction(y), self._direction(z))

    def _direction(self, axis: Axis) -> Vec3:
        return tuple(axis[0] * x + axis[1] * y + axis[2] * z for x, y, z in zip(self.x_axis, self.y_axis, self.z_axis))


def _dot(a: Vec3, b: Vec3) -> float:
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def _cross(a: Vec3, b: Vec3) -> Vec3:
    return a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]


def _normalized(v: Vec3) -> Vec3:
    length = math.sqrt(_dot(v, v))
    return v[0] / length, v[1] / length, v[2] / length


def unit(axis: int, sign: int) -> Axis:
    return tuple(sign if index == axis else 0 for index in range(3))


def map_rect(rect: Rect, source: Frame, target: Frame, height: float = 0.0) -> Rect:
    """A rectangle lying at `height` in `source`, in the coordinates of a parallel `target` plane."""
    corners = [target.to_local(source.to_world((x, y, height))) for x, y in ((rect.x0, rect.y0), (rect.x1, rect.y1))]
    return Rect.spanning([(c[0], c[1]) for c in corners])


def map_box(low: Vec3, high: Vec3, source: Frame, target: Frame) -> tuple[Vec3, Vec3]:
    """An axis-aligned box of `source` in a `target` frame whose axes are signed axes of `source`."""
    corners = [target.to_local(source.to_world(corner)) for corner in (low, high)]
    return (
        tuple(round(min(a, b), 12) for a, b in zip(*corners)),
        tuple(round(max(a, b), 12) for a, b in zip(*corners)),
    )


STANDARD_PLANES = ((((0, 0, 1), (1, 0, 0)), 30), (((0, -1, 0), (1, 0, 0)), 18), (((1, 0, 0), (0, 1, 0)), 14))
"""Onshape's Top, Front and Right planes as (normal, x axis), with how often a model starts on each."""
AXIS_PLANES = tuple(
    (normal, x_axis)
    for normal in ((1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1))
    for x_axis in ((1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1))
    if _dot(normal, x_axis) == 0
)
WORLD = Frame((0.0, 0.0, 0.0), (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))


def base_frame(rng: random.Random, size: float, grid: float) -> Frame:
    """The first sketch's plane: mostly a standard plane, else any axis-aligned plane or an arbitrary rotation."""
    draw = rng.random()
    if draw < 0.15:
        frame = _rotated_frame(rng)
    else:
        normal, x_axis = pick(rng, STANDARD_PLANES) if draw < 0.77 else rng.choice(AXIS_PLANES)
        frame = WORLD.child((0.0, 0.0, 0.0), normal, x_axis)
    if rng.random() < 0.15:
        offset = snap(rng.uniform(-0.5, 0.5) * size, grid)
        frame = Frame(tuple(offset * n for n in frame.z_axis), frame.x_axis, frame.y_axis, frame.z_axis)
    return frame


def _rotated_frame(rng: random.Random) -> Frame:
    normal = _normalized((rng.gauss(0.0, 1.0), rng.gauss(0.0, 1.0), rng.gauss(0.0, 1.0)))
    helper = (1.0, 0.0, 0.0) if abs(normal[0]) < 0.9 else (0.0, 1.0, 0.0)
    along = _dot(helper, normal)
    x_axis = _normalized(tuple(h - along * n for h, n in zip(helper, normal)))
    return Frame((0.0, 0.0, 0.0), x_axis, _cross(normal, x_axis), normal)
