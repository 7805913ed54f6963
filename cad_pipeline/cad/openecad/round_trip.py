"""Proof that a code answer rebuilds its model: code -> interpreter -> solid, against the direct build.

The code rounds millimetres to 4 decimals, so the solids cannot agree exactly. The tolerance is
derived, per model, from how far rounding can move any point of any extrude:

    delta_i = |origin_i moved| + |axes_i turned| * (reach_u + reach_v + reach_w) + (sqrt 2 + 2) * 5e-8 m
              + the largest shift of an arc's circle (centre shift + radius change) once its three points are rounded

where the origin shift and the turn of the axes are measured between the model's sketch planes
and the planes the code states, the reaches are the extrude's extent from its origin along its
axes, and 5e-8 m (half of the code's 1e-4 mm) bounds each printed sketch coordinate and extent.
With delta the largest delta_i, every bbox coordinate must agree within delta (plus a micron for the
approximated intersection edges whose boxes OpenCASCADE measures), and the volume
within delta times the summed surface area of the extrudes' prisms (each prism's surface moves by
at most delta, and the result of the booleans only changes where a surface moved), plus 1e-6 of
the volume for the measurement's own integration error.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from cad_pipeline.cad.build import OCC_ERRORS, build_solid
from cad_pipeline.cad.errors import ModelError
from cad_pipeline.cad.loops import perimeter, signed_area
from cad_pipeline.cad.measure import Measurements, measure
from cad_pipeline.cad.openecad.interpreter import circle_through, interpret
from cad_pipeline.cad.openecad.numbers import ROUNDED_CONTACT, numpy_round
from cad_pipeline.cad.openecad.program import CodeRejected
from cad_pipeline.cad.openecad.writer import write_code
from cad_pipeline.cad.sequence import Arc, CadSequence, Extrude

MEASUREMENT_SLACK = 1e-6
"""Relative volume error allowed for the two measurements themselves."""
BBOX_SLACK = 1e-6
"""Metres allowed for the bbox measurement itself: edges that booleans create by intersecting curved faces are
approximated, and their box can reach about a micron past the true surface (seen: 6e-7 m)."""


@dataclass(frozen=True)
class RoundTrip:
    code: str
    passed: bool
    reason: str | None
    displacement_bound: float | None
    """delta in metres (see the module docstring)."""
    bbox_error: float | None
    volume_error: float | None
    volume_tolerance: float | None

    def to_json(self) -> dict:
        return asdict(self)


def round_trip(sequence: CadSequence, direct: Measurements) -> RoundTrip:
    """Write the code, read it back through the safe interpreter, build and compare with the direct build."""
    code = write_code(sequence)
    try:
        read = interpret(code, sequence.model_id)
    except CodeRejected as error:
        return RoundTrip(code, False, f"the interpreter rejects the code: {error}", None, None, None, None)
    if len(read.extrudes) != len(sequence.extrudes):
        reason = f"the code has {len(read.extrudes)} extrudes, the model {len(sequence.extrudes)}"
        return RoundTrip(code, False, reason, None, None, None, None)
    delta = max(_displacement_bound(true, stated) for true, stated in zip(sequence.extrudes, read.extrudes))
    try:
        rebuilt = measure(build_solid(read))
    except ModelError as error:
        return RoundTrip(code, False, f"the code's solid does not build: {error.message}", delta, None, None, None)
    except OCC_ERRORS as error:
        return RoundTrip(code, False, f"OpenCASCADE failed on the code's solid: {error}", delta, None, None, None)
    bbox_error = max(
        abs(a - b) for a, b in zip((*rebuilt.bbox_min, *rebuilt.bbox_max), (*direct.bbox_min, *direct.bbox_max))
    )
    volume_error = abs(rebuilt.volume - direct.volume)
    volume_tolerance = delta * sum(_prism_area(extrude) for extrude in sequence.extrudes) + MEASUREMENT_SLACK * direct.volume
    problems = []
    if bbox_error > delta + BBOX_SLACK:
        problems.append(f"the bbox is {bbox_error:.3g} m off (tolerance {delta + BBOX_SLACK:.3g} m)")
    if volume_error > volume_tolerance:
        problems.append(
            f"the volume is {volume_error:.3g} m^3 off ({rebuilt.volume:.6g} against {direct.volume:.6g}; "
            f"tolerance {volume_tolerance:.3g} m^3)"
        )
    return RoundTrip(code, not problems, "; ".join(problems) or None, delta, bbox_error, volume_error, volume_tolerance)


def _displacement_bound(true: Extrude, stated: Extrude) -> float:
    shift = math.dist(true.plane.origin, stated.plane.origin)
    turn = max(
        math.dist(true.plane.x_axis, stated.plane.x_axis),
        math.dist(true.plane.y_axis, stated.plane.y_axis),
        math.dist(true.plane.normal, stated.plane.normal),
    )
    (u0, v0), (u1, v1) = true.profile.loops[0].bbox()  # the outer loop encloses the holes
    low, high = true.depth_interval()
    reach = max(abs(u0), abs(u1)) + max(abs(v0), abs(v1)) + max(abs(low), abs(high))
    return shift + turn * reach + ROUNDED_CONTACT + _arc_shift(true)


def _arc_shift(extrude: Extrude) -> float:
    """The most any arc's circle moves (metres) when refitted through its start, mid and end as the code prints them."""
    shift = 0.0
    for loop in extrude.profile.loops:
        for curve in loop.curves:
            if isinstance(curve, Arc):
                points = [tuple(numpy_round(v * 1000.0, 4) for v in point) for point in (curve.start, curve.mid, curve.end)]
                center = circle_through(*points)
                if center is not None:
                    radius = math.dist(center, points[0]) / 1000.0
                    shift = max(shift, math.dist((center[0] / 1000.0, center[1] / 1000.0), curve.center) + abs(radius - curve.radius))
    return shift


def _prism_area(extrude: Extrude) -> float:
    low, high = extrude.depth_interval()
    loops = extrude.profile.loops
    face = abs(signed_area(loops[0])) - sum(abs(signed_area(hole)) for hole in loops[1:])
    return 2.0 * face + sum(perimeter(loop) for loop in loops) * (high - low)
