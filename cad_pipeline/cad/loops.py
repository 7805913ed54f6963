"""Planar loop geometry: chaining curves into closed loops, orienting them, and proving a profile is a clean region.

DeepCAD stores a loop's curves with arbitrary start/end order and loops in arbitrary order, so
order is derived here: each loop is chained end to start, made counter-clockwise, and rotated to
start at its left-most (then lowest) vertex; loops are sorted by their bounding-box minimum
(x, then y), which puts the outer loop first, and holes are turned clockwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from cad_pipeline.cad.errors import ModelError
from cad_pipeline.cad.sequence import Arc, Circle, Curve, Line, Loop, Point2, Profile

MIN_LENGTH = 1e-7
"""Metres at or below which a length is degenerate: OpenCASCADE's confusion tolerance, below which it cannot make an edge or a prism."""
ORDER_QUANTUM = 1e-9
"""Metres to which vertex coordinates are rounded when ordering (the nanometre, as OpenECAD's mm x 1e-6)."""


def profile_tolerance(curves: list[Curve]) -> float:
    """Connection tolerance for a profile: a millionth of its size, at least a nanometre."""
    boxes = [curve.bbox() for curve in curves]
    span = max(
        max(box[1][0] for box in boxes) - min(box[0][0] for box in boxes),
        max(box[1][1] for box in boxes) - min(box[0][1] for box in boxes),
    )
    return max(1e-9, 1e-6 * span)


@dataclass(frozen=True)
class _Numbered:
    """A chained loop with the positions its loop and curves have in the file, so messages can point at them."""

    loop: Loop
    curve_numbers: tuple[int, ...]
    number: int


def assemble_profile(raw_loops: list[list[Curve]], where: str, contact: float = 0.0) -> Profile:
    """Turn loops of unordered curves into a checked profile: outer loop CCW first, holes CW after.

    Curves that meet within `contact` metres (or the profile's tolerance, if larger) only touch: a reader of rounded
    numbers passes how far rounding may move them, so a contact the rounding turns into a shallow cut is no crossing.
    Messages number loops and curves as the file lists them, whatever order they are sorted into here.
    """
    for index, curves in enumerate(raw_loops):
        if not curves:
            raise ModelError("empty_loop", f"{where} loop {index} has no curves")
    tolerance = profile_tolerance([curve for loop in raw_loops for curve in loop])
    loops = [_Numbered(*_ccw_loop(curves, f"{where} loop {index}", tolerance), index) for index, curves in enumerate(raw_loops)]
    loops.sort(key=lambda numbered: tuple(_quantize(v) for v in numbered.loop.bbox()[0]))
    _reject_crossings(loops, where, max(tolerance, contact))
    outer, holes = loops[0], loops[1:]
    for hole in holes:
        probe = _curve_start(hole.loop.curves[0])
        if not _contains(outer.loop, probe, tolerance):
            raise ModelError(
                "loops_not_nested",
                f"{where}: loop {hole.number} lies outside the outer loop (loop {outer.number}, the one that starts "
                "furthest left); a profile must be one region (an outer loop and the holes inside it)",
            )
        for other in holes:
            if other is not hole and _contains(other.loop, probe, tolerance):
                raise ModelError(
                    "loops_not_nested",
                    f"{where}: loop {hole.number} lies inside loop {other.number}, which is a hole; a profile must be "
                    "one region without islands",
                )
    return Profile((outer.loop, *(_reverse(hole.loop) for hole in holes)))


def signed_area(loop: Loop) -> float:
    """Exact signed area enclosed by a closed loop of lines and arcs (positive when CCW)."""
    area = 0.0
    for curve in loop.curves:
        if isinstance(curve, Circle):
            area += math.pi * curve.radius**2
            continue
        (x0, y0), (x1, y1) = curve.start, curve.end
        area += 0.5 * (x0 * y1 - x1 * y0)
        if isinstance(curve, Arc):
            segment = 0.5 * curve.radius**2 * (_sweep(curve) - math.sin(_sweep(curve)))
            area += segment if curve.is_ccw else -segment
    return area


def _ccw_loop(curves: list[Curve], where: str, tolerance: float) -> tuple[Loop, tuple[int, ...]]:
    """The loop chained, counter-clockwise and rotated to its first vertex, with each curve's position in `curves`."""
    circles = [curve for curve in curves if isinstance(curve, Circle)]
    if circles:
        if len(curves) > 1:
            raise ModelError(
                "open_loop", f"{where} mixes a full circle with {len(curves) - 1} other curves; a circle is a loop of its own"
            )
        return Loop((circles[0],)), (0,)
    chained, positions = _chain(curves, where, tolerance)
    loop = Loop(chained)
    area = signed_area(loop)
    if abs(area) <= tolerance * perimeter(loop):
        raise ModelError(
            "degenerate_loop",
            f"{where} encloses no area (its curves fold back on themselves, or it crosses itself so that its lobes cancel)",
        )
    if area < 0.0:
        loop, positions = _reverse(loop), positions[::-1]
    starts = [tuple(_quantize(v) for v in curve.start) for curve in loop.curves]
    first = starts.index(min(starts))
    return Loop(loop.curves[first:] + loop.curves[:first]), positions[first:] + positions[:first]


def _chain(curves: list[Curve], where: str, tolerance: float) -> tuple[tuple[Curve, ...], tuple[int, ...]]:
    """Order and orient curves so that each ends where the next starts, snapping the joints exactly.

    Returns the chained curves and, for each, its position in `curves`.
    """
    remaining = list(enumerate(curves))[1:]
    chain = [(0, curves[0])]
    while remaining:
        end = chain[-1][1].end
        for index, (position, candidate) in enumerate(remaining):
            if _close(candidate.start, end, tolerance):
                chain.append(remaining.pop(index))
                break
            if _close(candidate.end, end, tolerance):
                chain.append((position, remaining.pop(index)[1].reversed()))
                break
        else:
            gap = min(min(_distance(c.start, end), _distance(c.end, end)) for _, c in remaining)
            raise ModelError(
                "open_loop",
                f"{where} is open: nothing continues from point ({end[0]:.6g}, {end[1]:.6g}) m "
                f"(nearest free curve end is {gap:.3g} m away, tolerance {tolerance:.3g} m)",
            )
    gap = _distance(chain[-1][1].end, chain[0][1].start)
    if gap > tolerance:
        raise ModelError("open_loop", f"{where} is open: its last curve ends {gap:.3g} m from where the first begins")
    snapped = tuple(_with_end(curve, chain[(index + 1) % len(chain)][1].start) for index, (_, curve) in enumerate(chain))
    positions = tuple(position for position, _ in chain)
    for position, curve in zip(positions, snapped):
        _reject_collapsed(curve, f"{where} curve {position}", tolerance)
    return snapped, positions


def _reject_collapsed(curve: Line | Arc, where: str, tolerance: float) -> None:
    """A curve whose ends meet once joints are joined: no extent at the profile's tolerance, or too short for OpenCASCADE."""
    chord = _distance(curve.start, curve.end)
    limit = max(tolerance, MIN_LENGTH)
    if chord > limit:
        return
    joined = (
        f"once joined to its neighbours its ends are {chord:.3g} m apart, within {limit:.3g} m "
        f"(the profile's joining tolerance or the {MIN_LENGTH:g} m minimum length, whichever is larger)"
    )
    if isinstance(curve, Arc):
        raise ModelError("degenerate_curve", f"{where} is an arc that closes on itself: {joined}; a full circle must be a Circle3D")
    raise ModelError("degenerate_curve", f"{where} is a line with no length: {joined}")


def _reject_crossings(loops: list[_Numbered], where: str, tolerance: float) -> None:
    """Raise if any two curves of the profile cross, or touch anywhere but their shared joints. Curves that are tangent
    within the tolerance only touch: a line grazing an arc or two arcs grazing each other is not a crossing."""
    curves = [
        (loop_index, curve_index, curve)
        for loop_index, numbered in enumerate(loops)
        for curve_index, curve in enumerate(numbered.loop.curves)
    ]
    boxes = [_grown_box(curve.bbox(), tolerance) for _, _, curve in curves]
    near_joint = 10.0 * tolerance
    for i in range(len(curves)):
        loop_a, index_a, a = curves[i]
        box_a = boxes[i]
        for j in range(i + 1, len(curves)):
            box_b = boxes[j]
            if box_a[1][0] < box_b[0][0] or box_b[1][0] < box_a[0][0] or box_a[1][1] < box_b[0][1] or box_b[1][1] < box_a[0][1]:
                continue
            loop_b, index_b, b = curves[j]
            joints = []
            if loop_a == loop_b:
                size = len(loops[loop_a].loop.curves)
                if (index_a + 1) % size == index_b:
                    joints.append(a.end)
                if (index_b + 1) % size == index_a:
                    joints.append(b.end)
            for point in _intersections(a, b, tolerance):
                if all(_distance(point, joint) > near_joint for joint in joints):
                    raise ModelError(
                        "self_intersecting_loop",
                        f"{where}: {_crossing(loops[loop_a], index_a, loops[loop_b], index_b)} at ({point[0]:.6g}, {point[1]:.6g}) m",
                    )


def _crossing(loop_a: _Numbered, index_a: int, loop_b: _Numbered, index_b: int) -> str:
    """How two crossing curves are named, by their positions in the file."""
    curve_a, curve_b = loop_a.curve_numbers[index_a], loop_b.curve_numbers[index_b]
    if loop_a is loop_b:
        first, second = sorted((curve_a, curve_b))
        return f"loop {loop_a.number} crosses itself (curves {first} and {second})"
    (number_a, curve_a), (number_b, curve_b) = sorted(((loop_a.number, curve_a), (loop_b.number, curve_b)))
    return f"loop {number_a} curve {curve_a} touches or crosses loop {number_b} curve {curve_b}"


def _intersections(a: Curve, b: Curve, tolerance: float) -> list[Point2]:
    if isinstance(a, Line) and isinstance(b, Line):
        return _line_line(a, b, tolerance)
    if isinstance(a, Line):
        return _line_circular(a, b, tolerance)
    if isinstance(b, Line):
        return _line_circular(b, a, tolerance)
    return _circular_circular(a, b, tolerance)


def _line_line(a: Line, b: Line, tolerance: float) -> list[Point2]:
    (ax, ay), (bx, by) = a.start, b.start
    dax, day = a.end[0] - ax, a.end[1] - ay
    dbx, dby = b.end[0] - bx, b.end[1] - by
    denominator = dax * dby - day * dbx
    len_a, len_b = math.hypot(dax, day), math.hypot(dbx, dby)
    if abs(denominator) <= 1e-12 * len_a * len_b:
        if _distance_to_line(b.start, a) > tolerance:
            return []
        # Collinear: report any overlap longer than the tolerance.
        ux, uy = dax / len_a, day / len_a
        t0 = (b.start[0] - ax) * ux + (b.start[1] - ay) * uy
        t1 = (b.end[0] - ax) * ux + (b.end[1] - ay) * uy
        low, high = max(0.0, min(t0, t1)), min(len_a, max(t0, t1))
        if high - low > tolerance:
            middle = 0.5 * (low + high)
            return [(ax + ux * middle, ay + uy * middle)]
        return [p for p in (a.start, a.end) if _distance_to_segment(p, b) <= tolerance]
    s = ((bx - ax) * dby - (by - ay) * dbx) / denominator
    t = ((bx - ax) * day - (by - ay) * dax) / denominator
    slack_a, slack_b = tolerance / len_a, tolerance / len_b
    if -slack_a <= s <= 1.0 + slack_a and -slack_b <= t <= 1.0 + slack_b:
        return [(ax + s * dax, ay + s * day)]
    return []


def _line_circular(line: Line, circular: Arc | Circle, tolerance: float) -> list[Point2]:
    (x0, y0), (x1, y1) = line.start, line.end
    (cx, cy), r = circular.center, circular.radius
    dx, dy = x1 - x0, y1 - y0
    length = math.hypot(dx, dy)
    ux, uy = dx / length, dy / length
    along = (cx - x0) * ux + (cy - y0) * uy
    off = abs((cx - x0) * uy - (cy - y0) * ux)
    if off > r - tolerance:
        return []  # apart, or tangent within the tolerance: a touch
    half = math.sqrt(max(0.0, r * r - off * off))
    hits = []
    for t in {along - half, along + half}:
        if -tolerance <= t <= length + tolerance:
            point = (x0 + ux * t, y0 + uy * t)
            if _on_circular(circular, point, tolerance):
                hits.append(point)
    return hits


def _circular_circular(a: Arc | Circle, b: Arc | Circle, tolerance: float) -> list[Point2]:
    (ax, ay), (bx, by) = a.center, b.center
    distance = math.hypot(bx - ax, by - ay)
    if distance <= tolerance and abs(a.radius - b.radius) <= tolerance:
        # Same circle: they overlap unless they are two arcs that only share end points.
        probes = [b.mid] if isinstance(b, Arc) else [(bx + b.radius, by)]
        probes += [a.mid] if isinstance(a, Arc) else [(ax + a.radius, ay)]
        return [p for p in probes if _on_circular(a, p, tolerance) and _on_circular(b, p, tolerance)]
    if distance >= a.radius + b.radius - tolerance or distance <= abs(a.radius - b.radius) + tolerance:
        return []  # apart, nested, or tangent (outside or inside) within the tolerance: a touch
    along = (a.radius**2 - b.radius**2 + distance**2) / (2.0 * distance)
    half = math.sqrt(max(0.0, a.radius**2 - along**2))
    ux, uy = (bx - ax) / distance, (by - ay) / distance
    base = (ax + ux * along, ay + uy * along)
    points = {(base[0] - uy * half, base[1] + ux * half), (base[0] + uy * half, base[1] - ux * half)}
    return [p for p in points if _on_circular(a, p, tolerance) and _on_circular(b, p, tolerance)]


def _on_circular(curve: Arc | Circle, point: Point2, tolerance: float) -> bool:
    """Whether a point on the curve's circle lies within the arc's extent (with tolerance at its ends)."""
    if isinstance(curve, Circle):
        return True
    if _distance(point, curve.start) <= tolerance or _distance(point, curve.end) <= tolerance:
        return True
    cx, cy = curve.center
    start, end = curve.start, curve.end
    if not curve.is_ccw:
        start, end = end, start
    a0 = math.atan2(start[1] - cy, start[0] - cx)
    sweep = (math.atan2(end[1] - cy, end[0] - cx) - a0) % (2.0 * math.pi)
    return (math.atan2(point[1] - cy, point[0] - cx) - a0) % (2.0 * math.pi) <= sweep


def _contains(loop: Loop, point: Point2, tolerance: float) -> bool:
    """Exact even-odd test: a ray from the point towards +x, crossing lines and arcs as they are.

    The ray's height is nudged (by less than the tolerance, so a point well away from the loop
    keeps its side) until no vertex lies near it; then every crossing is a clean one.
    """
    px, py = point
    vertices = [curve.start for curve in loop.curves if not isinstance(curve, Circle)]
    vertices += [(c.center[0], c.center[1] + s * c.radius) for c in loop.curves if isinstance(c, Circle) for s in (-1, 1)]
    step = 0
    while any(abs(y - py) <= 0.05 * tolerance for _, y in vertices):
        step += 1
        py = point[1] + 0.0731 * tolerance * step * (-1) ** step
    crossings = 0
    for curve in loop.curves:
        if isinstance(curve, Line):
            (x0, y0), (x1, y1) = curve.start, curve.end
            if (y0 > py) != (y1 > py) and px < x0 + (py - y0) * (x1 - x0) / (y1 - y0):
                crossings += 1
            continue
        (cx, cy), radius = curve.center, curve.radius
        if abs(py - cy) >= radius:
            continue
        half = math.sqrt(radius * radius - (py - cy) ** 2)
        crossings += sum(1 for x in (cx - half, cx + half) if x > px and _on_circular(curve, (x, py), 0.0))
    return crossings % 2 == 1


def _sweep(arc: Arc) -> float:
    """Unsigned angle the arc turns through."""
    cx, cy = arc.center
    a0 = math.atan2(arc.start[1] - cy, arc.start[0] - cx)
    a1 = math.atan2(arc.end[1] - cy, arc.end[0] - cx)
    turn = (a1 - a0) % (2.0 * math.pi)
    return turn if arc.is_ccw else 2.0 * math.pi - turn


def _reverse(loop: Loop) -> Loop:
    return Loop(tuple(curve.reversed() for curve in reversed(loop.curves)))


def _with_end(curve: Curve, end: Point2) -> Curve:
    if isinstance(curve, Line):
        return Line(curve.start, end)
    return Arc(curve.start, curve.mid, end, curve.center, curve.radius)


def _curve_start(curve: Curve) -> Point2:
    if isinstance(curve, Circle):
        return (curve.center[0] - curve.radius, curve.center[1])
    return curve.start


def perimeter(loop: Loop) -> float:
    total = 0.0
    for curve in loop.curves:
        if isinstance(curve, Circle):
            total += 2.0 * math.pi * curve.radius
        elif isinstance(curve, Arc):
            total += curve.radius * _sweep(curve)
        else:
            total += _distance(curve.start, curve.end)
    return total


def _grown_box(box: tuple[Point2, Point2], margin: float) -> tuple[Point2, Point2]:
    (x0, y0), (x1, y1) = box
    return (x0 - margin, y0 - margin), (x1 + margin, y1 + margin)


def _distance_to_line(point: Point2, line: Line) -> float:
    (x0, y0), (x1, y1) = line.start, line.end
    length = math.hypot(x1 - x0, y1 - y0)
    return abs((point[0] - x0) * (y1 - y0) - (point[1] - y0) * (x1 - x0)) / length


def _distance_to_segment(point: Point2, line: Line) -> float:
    (x0, y0), (x1, y1) = line.start, line.end
    dx, dy = x1 - x0, y1 - y0
    t = max(0.0, min(1.0, ((point[0] - x0) * dx + (point[1] - y0) * dy) / (dx * dx + dy * dy)))
    return math.hypot(point[0] - (x0 + t * dx), point[1] - (y0 + t * dy))


def _distance(a: Point2, b: Point2) -> float:
    return math.hypot(a[0] - b[0], a[1] - b[1])


def _close(a: Point2, b: Point2, tolerance: float) -> bool:
    return abs(a[0] - b[0]) <= tolerance and abs(a[1] - b[1]) <= tolerance


def _quantize(value: float) -> int:
    return round(value / ORDER_QUANTUM)
