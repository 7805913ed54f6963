"""The in-memory CAD sequence: sketch-and-extrude steps in metres, independent of any file format.

Sketch geometry is 2-D in the sketch plane's local frame. Loops are stored in traversal order
(outer loop counter-clockwise, holes clockwise), profiles list the outer loop first, and every
extrude holds exactly one profile (multi-profile extrudes are split when reading).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum

Point2 = tuple[float, float]
Vector3 = tuple[float, float, float]


class Operation(IntEnum):
    """Boolean operation of an extrude; values are the DeepCAD / OpenECAD codes."""

    NEW_BODY = 0
    JOIN = 1
    CUT = 2
    INTERSECT = 3


class ExtentType(IntEnum):
    """How an extrude's depth is applied; values are the DeepCAD / OpenECAD codes."""

    ONE_SIDE = 0
    SYMMETRIC = 1
    TWO_SIDES = 2


@dataclass(frozen=True)
class Line:
    start: Point2
    end: Point2

    def reversed(self) -> Line:
        return Line(self.end, self.start)

    def bbox(self) -> tuple[Point2, Point2]:
        return _points_bbox((self.start, self.end))


@dataclass(frozen=True)
class Arc:
    """A circular arc traversed start -> mid -> end (either turning direction)."""

    start: Point2
    mid: Point2
    end: Point2
    center: Point2
    radius: float

    def reversed(self) -> Arc:
        return Arc(self.end, self.mid, self.start, self.center, self.radius)

    @property
    def is_ccw(self) -> bool:
        return _cross(self.start, self.mid, self.end) > 0.0

    def bbox(self) -> tuple[Point2, Point2]:
        cx, cy = self.center
        a0 = math.atan2(self.start[1] - cy, self.start[0] - cx)
        a1 = math.atan2(self.end[1] - cy, self.end[0] - cx)
        if not self.is_ccw:
            a0, a1 = a1, a0
        sweep = (a1 - a0) % (2.0 * math.pi)
        points = [self.start, self.end]
        for quarter in range(4):
            angle = quarter * math.pi / 2.0
            if 0.0 < (angle - a0) % (2.0 * math.pi) < sweep:
                points.append((cx + self.radius * math.cos(angle), cy + self.radius * math.sin(angle)))
        return _points_bbox(points)


@dataclass(frozen=True)
class Circle:
    center: Point2
    radius: float

    def reversed(self) -> Circle:
        return self

    def bbox(self) -> tuple[Point2, Point2]:
        (cx, cy), r = self.center, self.radius
        return (cx - r, cy - r), (cx + r, cy + r)


Curve = Line | Arc | Circle


@dataclass(frozen=True)
class Loop:
    curves: tuple[Curve, ...]

    def bbox(self) -> tuple[Point2, Point2]:
        boxes = [curve.bbox() for curve in self.curves]
        return _points_bbox([corner for box in boxes for corner in box])


@dataclass(frozen=True)
class Profile:
    loops: tuple[Loop, ...]

    @property
    def n_curves(self) -> int:
        return sum(len(loop.curves) for loop in self.loops)


@dataclass(frozen=True)
class SketchPlane:
    """A right-handed frame: y_axis = normal x x_axis."""

    origin: Vector3
    x_axis: Vector3
    y_axis: Vector3
    normal: Vector3

    def to_world(self, point: Point2) -> Vector3:
        u, v = point
        return tuple(o + u * x + v * y for o, x, y in zip(self.origin, self.x_axis, self.y_axis))


@dataclass(frozen=True)
class Extrude:
    plane: SketchPlane
    profile: Profile
    operation: Operation
    extent_type: ExtentType
    extent_one: float
    extent_two: float
    source: str
    """Where this step came from (extrude, sketch and profile ids), for error messages."""

    def depth_interval(self) -> tuple[float, float]:
        """Signed interval along the normal that the extrude fills, relative to the sketch plane.

        OneSide fills [0, e1]; Symmetric fills e1 both ways; TwoSides fills e1 along the normal
        and e2 against it. Both parts touch the plane, so their union is one interval.
        """
        if self.extent_type is ExtentType.SYMMETRIC:
            half = abs(self.extent_one)
            return -half, half
        ends = [0.0, self.extent_one]
        if self.extent_type is ExtentType.TWO_SIDES:
            ends.append(-self.extent_two)
        return min(ends), max(ends)


@dataclass(frozen=True)
class CadSequence:
    model_id: str
    extrudes: tuple[Extrude, ...]
    stated_bbox: tuple[Vector3, Vector3] | None
    """`properties.bounding_box` of the source file, when it has one."""

    @property
    def n_curves(self) -> int:
        return sum(extrude.profile.n_curves for extrude in self.extrudes)


def _cross(a: Point2, b: Point2, c: Point2) -> float:
    return (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])


def _points_bbox(points) -> tuple[Point2, Point2]:
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    return (min(xs), min(ys)), (max(xs), max(ys))
