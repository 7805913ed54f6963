"""The curve order and direction that OpenECAD's `add_loop` imposes, which `line` references depend on.

OpenECAD's reader (DeepCAD's `Loop.reorder`, then an "autofix") reorders a loop's curves in place:
it turns curves so they chain, rotates the loop to start at the left-most (then lowest) start
point, reverses the whole loop when the turn at that start looks clockwise, and finally snaps
each curve's start onto the previous curve's end (and, where the loop does not close, the last
curve's start onto the first curve's end, as OpenECAD does). The curve objects themselves are turned, so a
`Line` variable named later in `add_sketchplane_ref(..., line=...)` may run the other way than
it was written. Both our writer and our interpreter run this same function, so they agree with
OpenECAD's reader on every line's direction.
"""

from __future__ import annotations

from dataclasses import dataclass

from cad_pipeline.cad.openecad.numbers import numpy_round

Point2 = tuple[float, float]

_NO_START = 10000.0
"""OpenECAD's initial 'left-most so far' x in millimetres; a loop lying wholly right of it keeps the rotation
OpenECAD then applies (start at the last curve), so it is kept too."""


@dataclass
class CodeCurve:
    """A curve as written in code (millimetres), mutable the way OpenECAD's curve objects are."""

    kind: str
    """'line', 'arc' or 'circle'."""
    start: Point2
    end: Point2
    mid: Point2 | None = None
    center: Point2 | None = None
    radius: float | None = None

    @classmethod
    def circle(cls, center: Point2, radius: float) -> CodeCurve:
        return cls("circle", (center[0] - radius, center[1]), (center[0] + radius, center[1]), center=center, radius=radius)

    def reverse(self) -> None:
        if self.kind != "circle":
            self.start, self.end = self.end, self.start

    def leaving(self) -> Point2:
        """Direction away from the start (a chord to the mid point for arcs), as OpenECAD measures it."""
        towards = self.mid if self.kind == "arc" else self.center if self.kind == "circle" else self.end
        return towards[0] - self.start[0], towards[1] - self.start[1]

    def arriving(self) -> Point2:
        if self.kind == "arc":
            return self.end[0] - self.mid[0], self.end[1] - self.mid[1]
        if self.kind == "circle":
            return self.center[0] - self.start[0], self.center[1] - self.start[1]
        return self.end[0] - self.start[0], self.end[1] - self.start[1]


def reorder_loop(curves: list[CodeCurve], autofix: bool = True) -> list[CodeCurve]:
    """The loop's curves in OpenECAD's order; turns curve objects in place (and snaps starts when `autofix`)."""
    if len(curves) <= 1:
        return list(curves)
    first, second = curves[0], curves[1]
    if _close(first.start, second.start) or _close(first.start, second.end):
        first.reverse()
    start_index, left_x, left_y = -1, _NO_START, _NO_START
    for index, curve in enumerate(curves):
        if index < len(curves) - 1 and _close(curve.end, curves[index + 1].end):
            curves[index + 1].reverse()
        x, y = numpy_round(curve.start[0], 6), numpy_round(curve.start[1], 6)
        if x < numpy_round(left_x, 6) or (x == numpy_round(left_x, 6) and y < numpy_round(left_y, 6)):
            start_index, (left_x, left_y) = index, curve.start
    ordered = curves[start_index:] + curves[:start_index]
    if ordered[0].kind != "circle" and ordered[-1].kind != "circle":
        leaving, arriving = ordered[0].leaving(), ordered[-1].arriving()
        if arriving[0] * leaving[1] - arriving[1] * leaving[0] <= 0.0:
            for curve in ordered:
                curve.reverse()
            ordered.reverse()
    if autofix and ordered[0].kind != "circle":
        for previous, curve in zip(ordered, ordered[1:]):
            if not _close(previous.end, curve.start):
                curve.start = previous.end
        last, first = ordered[-1], ordered[0]
        if not _close(last.end, first.start):
            last.start = first.end
    return ordered


def _close(a: Point2, b: Point2) -> bool:
    """numpy.allclose with its defaults (rtol 1e-5, atol 1e-8), which OpenECAD's reader uses on millimetres."""
    return abs(a[0] - b[0]) <= 1e-8 + 1e-5 * abs(b[0]) and abs(a[1] - b[1]) <= 1e-8 + 1e-5 * abs(b[1])
