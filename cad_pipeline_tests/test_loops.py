"""Profile assembly on hand-built geometry where the answer is known exactly."""

import math

import pytest

from cad_pipeline.cad.errors import ModelError
from cad_pipeline.cad.loops import assemble_profile, signed_area
from cad_pipeline.cad.sequence import Circle, Line

RADIUS = 0.05


def _triangle_near_the_rim(inset: float) -> list[Line]:
    """A small triangle whose first vertex sits `inset` inside a circle of RADIUS, between two of the
    64 chords a flattened circle would use, so only an exact test sees it inside."""
    angle = math.pi + math.pi / 64
    p0 = ((RADIUS - inset) * math.cos(angle), (RADIUS - inset) * math.sin(angle))
    p1 = (p0[0] + 0.002, p0[1])
    p2 = (p0[0] + 0.002, p0[1] + 0.002)
    return [Line(p0, p1), Line(p1, p2), Line(p2, p0)]


def test_hole_close_to_a_curved_rim_is_inside():
    profile = assemble_profile([[Circle((0.0, 0.0), RADIUS)], _triangle_near_the_rim(1e-5)], "test profile")
    outer, hole = profile.loops
    assert isinstance(outer.curves[0], Circle)
    assert signed_area(hole) == pytest.approx(-0.5 * 0.002 * 0.002, rel=1e-9)


def test_hole_just_outside_a_curved_rim_is_rejected():
    with pytest.raises(ModelError) as rejected:
        assemble_profile([[Circle((0.0, 0.0), RADIUS)], _triangle_near_the_rim(-1e-5)], "test profile")
    assert rejected.value.code in {"loops_not_nested", "self_intersecting_loop"}


def test_loop_is_chained_ccw_from_its_left_most_vertex_whatever_the_file_order():
    square = [Line((1.0, 1.0), (1.0, 0.0)), Line((0.0, 0.0), (1.0, 0.0)), Line((0.0, 1.0), (0.0, 0.0)), Line((1.0, 1.0), (0.0, 1.0))]
    (loop,) = assemble_profile([square], "test profile").loops
    assert [curve.start for curve in loop.curves] == [(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)]
    assert signed_area(loop) == pytest.approx(1.0)
