"""Plane geometry of sketches: segments, loops, regions, rectangles and shapes in a sketch's own frame."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

Point2 = tuple[float, float]


@dataclass(frozen=True)
class Line:
    start: Point2
    end: Point2


@dataclass(frozen=True)
class Arc:
    """Traversed from start to end, counter-clockwise in the sketch frame when `ccw`."""

    start: Point2
    end: Point2
    center: Point2
    radius: float
    ccw: bool


@dataclass(frozen=True)
class Circle:
    center: Point2
    radius: float


Segment = Line | Arc | Circle
Loop = tuple[Segment, ...]


@dataclass(frozen=True)
class Region:
    """One region a designer drew: an outer loop and the holes inside it."""

    outer: Loop
    holes: tuple[Loop, ...] = ()


@dataclass(frozen=True)
class Rect:
    x0: float
    y0: float
    x1: float
    y1: float

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    @property
    def center(self) -> Point2:
        return 0.5 * (self.x0 + self.x1), 0.5 * (self.y0 + self.y1)

    @property
    def short(self) -> float:
        return min(self.width, self.height)

    @staticmethod
    def around(center: Point2, half_width: float, half_height: float) -> Rect:
        return Rect(center[0] - half_width, center[1] - half_height, center[0] + half_width, center[1] + half_height)

    @staticmethod
    def spanning(points: list[Point2]) -> Rect:
        """Bounding rectangle, rounded to 1e-12 m so frame changes do not leave float dust on round numbers."""
        xs, ys = [round(p[0], 12) for p in points], [round(p[1], 12) for p in points]
        return Rect(min(xs), min(ys), max(xs), max(ys))

    def inset(self, dx: float, dy: float) -> Rect:
        return Rect(self.x0 + dx, self.y0 + dy, self.x1 - dx, self.y1 - dy)

    def contains(self, other: Rect) -> bool:
        slack = 1e-12
        return self.x0 - slack <= other.x0 and other.x1 <= self.x1 + slack and self.y0 - slack <= other.y0 and other.y1 <= self.y1 + slack

    def overlaps(self, other: Rect, gap: float) -> bool:
        return not (
            self.x1 + gap <= other.x0 or other.x1 + gap <= self.x0 or self.y1 + gap <= other.y0 or other.y1 + gap <= self.y0
        )


@dataclass(frozen=True)
class Shape:
    loop: Loop
    inner: Rect
    """A rectangle well inside the shape, where holes and features on its face can go."""


_Edge = tuple[Point2, float, bool] | None
"""How a path vertex connects to the next: None for a line, (centre, radius, ccw) for an arc."""


def closed_loop(path: list[tuple[Point2, _Edge]]) -> Loop:
    segments = []
    for index, (point, arc) in enumerate(path):
        following = path[(index + 1) % len(path)][0]
        segments.append(Line(point, following) if arc is None else Arc(point, following, *arc))
    return tuple(segments)


def polygon_loop(vertices: list[Point2]) -> Loop:
    return closed_loop([(vertex, None) for vertex in vertices])


def moved(segment: Segment, move: Callable[[Point2], Point2], mirrored: bool) -> Segment:
    """The segment under a rigid map; a mirror reverses which way arcs turn."""
    if isinstance(segment, Line):
        return Line(move(segment.start), move(segment.end))
    if isinstance(segment, Arc):
        return Arc(move(segment.start), move(segment.end), move(segment.center), segment.radius, segment.ccw != mirrored)
    return Circle(move(segment.center), segment.radius)


def translated(shape: Shape, dx: float, dy: float) -> Shape:
    def move(point: Point2) -> Point2:
        return point[0] + dx, point[1] + dy

    inner = shape.inner
    return Shape(tuple(moved(s, move, False) for s in shape.loop), Rect(inner.x0 + dx, inner.y0 + dy, inner.x1 + dx, inner.y1 + dy))
