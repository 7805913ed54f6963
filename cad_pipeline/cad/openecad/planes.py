"""Sketch planes as OpenECAD code states them: absolute, or placed relative to an earlier extrude.

`add_sketchplane_ref` has four kinds (OpenECAD's `py2step.py` gives the meaning, OpenECAD's
`cad2code.py` the order in which a writer tries them):
- `sameplane`, `extent_one`, `extent_two`: the new plane is parallel to the reference extrude's
  sketch plane, on it or on one of its two end faces (`+extent_one`, `-extent_two` along its
  normal); `origin` is 2-D in the reference's axes, `angle` turns the reference's x axis about
  its normal, `reverse` flips the normal.
- `line`: the new plane is perpendicular, through a line of the reference's profile: its default
  x axis runs along the line, its y axis is the reference's normal and its normal is x cross y;
  `origin` is 2-D in that frame from the line's start.
Everything here is in millimetres, the unit of the code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

Vector = tuple[float, float, float]
Point2 = tuple[float, float]

TOLERANCE = 1e-6
"""Millimetres (and, for unit vectors, the same number as a direction difference) within which a plane counts as
on, or parallel to, another: far below the 5e-5 mm that printing to 4 decimals rounds away, far above float noise."""

KINDS = ("sameplane", "extent_one", "extent_two", "line")

SNAP_ANGLE = 5e-4
"""Radians within which a stated direction is taken to be an axis of an earlier sketch plane. Printing a unit
vector to 4 decimals turns it by up to sqrt(3) * 5e-5 = 8.7e-5 rad; an x axis made perpendicular to a printed
normal turns by up to twice that and y = normal x x by up to three times, so two printings of one true axis
disagree by up to about 4.3e-4 rad."""


@dataclass(frozen=True)
class Frame:
    """A right-handed sketch frame in millimetres: y_axis = normal x x_axis."""

    origin: Vector
    x_axis: Vector
    y_axis: Vector
    normal: Vector

    def to_world(self, point: Point2) -> Vector:
        return add(self.origin, add(scale(self.x_axis, point[0]), scale(self.y_axis, point[1])))

    def to_local(self, point: Vector) -> Point2:
        offset = sub(point, self.origin)
        return dot(offset, self.x_axis), dot(offset, self.y_axis)

    def height_of(self, point: Vector) -> float:
        """Signed distance of a point from the plane, along the normal."""
        return dot(sub(point, self.origin), self.normal)


@dataclass(frozen=True)
class ReferenceLine:
    """A line of an earlier extrude's profile that a `line` reference may name, as the code's reader sees it."""

    name: str
    start: Point2
    end: Point2


@dataclass(frozen=True)
class Reference:
    """How `add_sketchplane_ref` states a plane: which extrude, which kind, and the numbers."""

    extrude: int
    kind: str
    origin: Point2
    angle: float
    reverse: bool
    line: str | None = None


@dataclass(frozen=True)
class ReferenceCandidate:
    """An earlier extrude as a possible reference: its plane, extents and the lines of its profile."""

    frame: Frame
    extent_one: float
    extent_two: float
    lines: tuple[ReferenceLine, ...]


def absolute_frame(origin: Vector, normal: Vector, x_axis: Vector) -> Frame:
    """`add_sketchplane`: the normal made unit, the x axis made perpendicular to it; raises ValueError if degenerate."""
    normal = unit(normal)
    x_axis = unit(sub(x_axis, scale(normal, dot(x_axis, normal))))
    return Frame(origin=tuple(origin), x_axis=x_axis, y_axis=cross(normal, x_axis), normal=normal)


def snap_frame(frame: Frame, earlier: list[Frame]) -> Frame:
    """The frame with its normal and x axis set exactly to earlier planes' axes that they lie within SNAP_ANGLE of.

    A sketch drawn on a face of an earlier extrude shares that extrude's axes exactly. Printing each
    plane's directions separately breaks this by up to SNAP_ANGLE, which leaves faces that were
    coincident, or edges that lay on a face, microns apart, and OpenCASCADE's booleans can then lose a
    face. Taking such a direction to be the earlier axis restores the shared geometry.
    """
    axes = [signed for other in earlier for axis in (other.x_axis, other.y_axis, other.normal) for signed in (axis, scale(axis, -1.0))]
    normal, x_axis = _nearest_axis(frame.normal, axes), _nearest_axis(frame.x_axis, axes)
    if normal is not None and x_axis is not None and abs(dot(normal, x_axis)) < 1e-9:
        return Frame(origin=frame.origin, x_axis=x_axis, y_axis=cross(normal, x_axis), normal=normal)
    if normal is not None:
        return absolute_frame(frame.origin, normal, frame.x_axis)
    if x_axis is not None:
        normal = unit(sub(frame.normal, scale(x_axis, dot(frame.normal, x_axis))))
        return Frame(origin=frame.origin, x_axis=x_axis, y_axis=cross(normal, x_axis), normal=normal)
    return frame


def _nearest_axis(direction: Vector, axes: list[Vector]) -> Vector | None:
    turns = [(math.atan2(math.hypot(*cross(direction, axis)), dot(direction, axis)), axis) for axis in axes]
    close = [(turn, axis) for turn, axis in turns if turn < SNAP_ANGLE]
    return min(close)[1] if close else None


def referenced_frame(
    reference: Frame,
    extent_one: float,
    extent_two: float,
    kind: str,
    origin: Point2,
    angle: float = 0.0,
    reverse: bool = False,
    line: tuple[Point2, Point2] | None = None,
) -> Frame:
    """`add_sketchplane_ref`: the frame that the reference extrude, kind and numbers describe."""
    if kind == "line":
        start = reference.to_world(line[0])
        along = unit(sub(reference.to_world(line[1]), start))
        base = Frame(origin=start, x_axis=along, y_axis=reference.normal, normal=cross(along, reference.normal))
    else:
        offset = {"sameplane": 0.0, "extent_one": extent_one, "extent_two": -extent_two}[kind]
        base = Frame(
            origin=add(reference.origin, scale(reference.normal, offset)),
            x_axis=reference.x_axis,
            y_axis=reference.y_axis,
            normal=reference.normal,
        )
    x_axis = rotate(base.x_axis, base.normal, angle)
    normal = scale(base.normal, -1.0) if reverse else base.normal
    return absolute_frame(base.to_world(origin), normal, x_axis)


def choose_reference(target: Frame, candidates: list[ReferenceCandidate]) -> Reference | None:
    """The first earlier extrude the target plane can be stated against, by OpenECAD's rules, or None.

    For each earlier extrude in order: a parallel plane is `sameplane`, `extent_one` or `extent_two`
    when its origin lies on that plane (the end planes are signed: `+extent_one` and `-extent_two`
    along the normal); a perpendicular plane is `line` when it contains a line of that extrude's
    profile. Otherwise the plane is written absolutely.
    """
    for index, candidate in enumerate(candidates):
        frame = candidate.frame
        if _parallel(target.normal, frame.normal):
            reverse = dot(target.normal, frame.normal) < 0.0
            angle = rotation_angle(frame.x_axis, target.x_axis, frame.normal)
            height = frame.height_of(target.origin)
            offsets = (("sameplane", 0.0), ("extent_one", candidate.extent_one), ("extent_two", -candidate.extent_two))
            for kind, offset in offsets:
                if abs(height - offset) < TOLERANCE:
                    return Reference(index, kind, frame.to_local(target.origin), angle, reverse)
        elif abs(dot(target.normal, frame.normal)) < TOLERANCE:
            for line in candidate.lines:
                start = frame.to_world(line.start)
                along = unit(sub(frame.to_world(line.end), start))
                base = Frame(origin=start, x_axis=along, y_axis=frame.normal, normal=cross(along, frame.normal))
                if _parallel(target.normal, base.normal) and abs(base.height_of(target.origin)) < TOLERANCE:
                    reverse = dot(target.normal, base.normal) < 0.0
                    angle = rotation_angle(base.x_axis, target.x_axis, base.normal)
                    return Reference(index, "line", base.to_local(target.origin), angle, reverse, line.name)
    return None


def rotation_angle(start: Vector, end: Vector, axis: Vector) -> float:
    """Counter-clockwise angle about `axis` from `start` to `end`, in (-pi, pi]."""
    return math.atan2(dot(cross(start, end), axis), dot(start, end))


def rotate(vector: Vector, axis: Vector, angle: float) -> Vector:
    """Rodrigues' rotation of `vector` about the unit `axis`, counter-clockwise looking down the axis."""
    if angle == 0.0:
        return vector
    cos, sin = math.cos(angle), math.sin(angle)
    along = dot(axis, vector) * (1.0 - cos)
    return add(add(scale(vector, cos), scale(cross(axis, vector), sin)), scale(axis, along))


def _parallel(a: Vector, b: Vector) -> bool:
    return all(abs(component) < TOLERANCE for component in cross(a, b))


def unit(vector: Vector) -> Vector:
    length = math.hypot(*vector)
    if not length > 1e-12:
        raise ValueError("a direction has zero length")
    return tuple(component / length for component in vector)


def dot(a: Vector, b: Vector) -> float:
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def cross(a: Vector, b: Vector) -> Vector:
    return (a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0])


def add(a: Vector, b: Vector) -> Vector:
    return (a[0] + b[0], a[1] + b[1], a[2] + b[2])


def sub(a: Vector, b: Vector) -> Vector:
    return (a[0] - b[0], a[1] - b[1], a[2] - b[2])


def scale(a: Vector, factor: float) -> Vector:
    return (a[0] * factor, a[1] * factor, a[2] * factor)
