"""OpenECAD v2 code out and back in: the writer against OpenECAD's converter, the interpreter's semantics, and the
round trip that proves every answer rebuilds its model."""

import math
import re
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from cad_pipeline.cad import build
from cad_pipeline.cad.build import build_solid
from cad_pipeline.cad.errors import ModelError
from cad_pipeline.cad.deepcad_json import read_file
from cad_pipeline.cad.measure import measure
from cad_pipeline.cad.openecad.interpreter import interpret
from cad_pipeline.cad.openecad.program import CodeRejected
from cad_pipeline.cad.openecad.round_trip import round_trip
from cad_pipeline.cad.openecad.writer import write_code
from cad_pipeline.cad.sample_corpus import write_corpus
from cad_pipeline_tests.conftest import FIXTURES, REAL_SAMPLES

REFERENCE = FIXTURES / "openecad_reference"
FRAGILE = FIXTURES / "fragile_booleans"
VALID_SAMPLES = sorted(path.stem for path in REFERENCE.glob("*.py"))

# cad_formats.md section 3.2: the converter's code for sample 00000330, first extrude, and the plane of its third.
REFERENCE_EXAMPLE_00000330 = """\
SketchPlane0 = add_sketchplane(
\torigin= [0., 0., 0.], normal= [0., 0., 1.], x_axis= [1., 0., 0.])
Loops0 = []
Curves0_0 = []
Line0_0_0 = add_line(start= [0., 0.], end= [76.2,  0. ])
Line0_0_1 = add_line(start= [76.2,  0. ], end= [76.2  , 15.875])
Line0_0_2 = add_line(start= [76.2  , 15.875], end= [ 0.   , 15.875])
Line0_0_3 = add_line(start= [ 0.   , 15.875], end= [0., 0.])
Loop0_0 = add_loop(Curves0_0)
Profile0 = add_profile(Loops0)
Sketch0 = add_sketch(sketch_plane= SketchPlane0, profile= Profile0)
Extrude0 = add_extrude(sketch= Sketch0,
\toperation= 0, type= 0, extent_one= 41.275, extent_two= 0.)
"""
REFERENCE_PLANE2_00000330 = 'SketchPlane2 = add_sketchplane_ref(\n\tExtrude0, origin = [38.1   ,  7.9375], type = "sameplane", reverse = True)\n'


def test_writer_reproduces_the_reference_example_for_00000330():
    code = write_code(read_file(REAL_SAMPLES / "00000330.json"))
    assert code.startswith(REFERENCE_EXAMPLE_00000330)
    assert REFERENCE_PLANE2_00000330 in code


@pytest.mark.parametrize("model_id", VALID_SAMPLES)
def test_writer_matches_the_openecad_converter_line_by_line(model_id):
    ours = write_code(read_file(REAL_SAMPLES / f"{model_id}.json")).splitlines()
    theirs = (REFERENCE / f"{model_id}.py").read_text().splitlines()
    assert len(ours) == len(theirs)
    plane_statements = set()
    for number, (mine, reference) in enumerate(zip(ours, theirs)):
        if mine == reference or _unsigned_zeros(mine) == _unsigned_zeros(reference):
            continue
        statement = number if mine.startswith("SketchPlane") else number - 1
        assert ours[statement].startswith("SketchPlane") and theirs[statement].startswith("SketchPlane"), (mine, reference)
        plane_statements.add(int(re.match(r"SketchPlane(\d+)", ours[statement]).group(1)))
    # Where the plane is stated differently, it must be the same plane.
    our_planes = interpret("\n".join(ours) + "\n").extrudes
    their_planes = interpret("\n".join(theirs) + "\n").extrudes
    for index in plane_statements:
        mine, reference = our_planes[index].plane, their_planes[index].plane
        assert math.dist(mine.origin, reference.origin) < 1e-7
        assert math.dist(mine.normal, reference.normal) < 1e-9
        assert math.dist(mine.x_axis, reference.x_axis) < 1e-9


def _unsigned_zeros(line: str) -> str:
    return re.sub(r"\s+", "", re.sub(r"-0\.(?!\d)", "0.", line))


def test_extent_one_reference_where_the_converter_writes_the_plane_absolutely():
    code = write_code(read_file(REAL_SAMPLES / "00000330.json"))
    assert 'SketchPlane1 = add_sketchplane_ref(\n\tExtrude0, origin = [13.0969,  7.9375], type = "extent_one")\n' in code


@pytest.mark.parametrize("model_id", VALID_SAMPLES)
def test_real_sample_round_trips(model_id):
    sequence = read_file(REAL_SAMPLES / f"{model_id}.json")
    result = round_trip(sequence, measure(build_solid(sequence)))
    assert result.passed, result.reason
    assert result.volume_error <= result.volume_tolerance and result.bbox_error <= result.displacement_bound + 1e-6
    assert "..." not in result.code


@pytest.mark.parametrize("model_id", VALID_SAMPLES)
def test_the_converters_own_code_builds_the_same_solid(model_id):
    """The interpreter reads what OpenECAD's converter writes, not only what our writer writes."""
    direct = measure(build_solid(read_file(REAL_SAMPLES / f"{model_id}.json")))
    theirs = measure(build_solid(interpret((REFERENCE / f"{model_id}.py").read_text())))
    assert theirs.volume == pytest.approx(direct.volume, rel=1e-5)
    assert max(abs(a - b) for a, b in zip(theirs.bbox_max + theirs.bbox_min, direct.bbox_max + direct.bbox_min)) < 1e-6


def _round_trip_file(path: str):
    sequence = read_file(path)
    result = round_trip(sequence, measure(build_solid(sequence)))
    tilted = any(
        min(abs(component), abs(abs(component) - 1.0)) > 1e-12
        for extrude in sequence.extrudes
        for component in (*extrude.plane.normal, *extrude.plane.x_axis)
    )
    return Path(path).stem, result.passed, result.reason, tilted


def test_a_thousand_generated_models_round_trip(tmp_path):
    """Every model round-trips, the tilted ones (whose printed directions turn each extrude by up to ~1e-4 rad)
    included."""
    write_corpus(tmp_path, 1000, seed=7, workers=2)
    files = sorted(str(path) for path in (tmp_path / "cad_json").rglob("*.json"))
    assert len(files) == 1000
    with ProcessPoolExecutor(2) as pool:
        results = list(pool.map(_round_trip_file, files, chunksize=25))
    assert [(model_id, reason) for model_id, passed, reason, _ in results if not passed] == []
    assert sum(tilted for *_, tilted in results) > 100


@pytest.mark.parametrize("model_id", ["00000169", "00000391"])
def test_models_whose_code_met_boolean_failures_round_trip(model_id):
    sequence = read_file(FRAGILE / f"{model_id}.json")
    result = round_trip(sequence, measure(build_solid(sequence)))
    assert result.passed, result.reason


def test_printed_directions_of_shared_axes_are_read_as_those_axes():
    """00000391's second plane is the first turned about its x axis; its printed directions miss that by ~5e-5 rad."""
    read = interpret(write_code(read_file(FRAGILE / "00000391.json")))
    first, second, third = (extrude.plane for extrude in read.extrudes)

    def same(a, b):  # up to float noise; rounding alone leaves them ~5e-5 apart
        return max(abs(u - v) for u, v in zip(a, b)) < 1e-15

    assert same(second.normal, [-v for v in first.y_axis]) and same(second.x_axis, [-v for v in first.x_axis])
    assert same(third.normal, first.x_axis) and same(third.x_axis, [-v for v in first.normal])


def test_directions_farther_than_rounding_from_every_earlier_axis_are_kept_as_written():
    turned = math.radians(0.1)  # 1.7e-3 rad: far more than printing to 4 decimals can turn a direction
    code = D_SHAPE.replace(
        'SketchPlane1 = add_sketchplane_ref(\n\tExtrude0, origin= [2., 1.], type= "line", line= Line0_0_0)',
        f"SketchPlane1 = add_sketchplane(origin= [0., 0., 9.], normal= [0., {-math.sin(turned):.4f}, {math.cos(turned):.4f}], "
        "x_axis= [1., 0., 0.])",
    )
    plane = interpret(code).extrudes[1].plane
    assert plane.normal[1] == pytest.approx(-math.sin(turned), abs=1e-4)
    assert plane.x_axis == (1.0, 0.0, 0.0)


def test_a_boolean_that_breaks_its_volume_bounds_is_rebuilt_with_the_circles_seam_moved(monkeypatch):
    """00000169's code: with circles starting on the sketch x axis, OpenCASCADE's cut returns more than the disk."""
    sequence = read_file(FRAGILE / "00000169.json")
    read = interpret(write_code(sequence))
    assert measure(build_solid(read)).volume == pytest.approx(measure(build_solid(sequence)).volume, rel=1e-5)
    monkeypatch.setattr(build, "SEAM_ANGLES", (0.0,))
    with pytest.raises(ModelError, match="the cut gave volume .* outside") as error:
        build_solid(read)
    assert error.value.code == "boolean_inconsistent"


D_SHAPE = """\
SketchPlane0 = add_sketchplane(
\torigin= [0., 0., 0.], normal= [0., 0., 1.], x_axis= [1., 0., 0.])
Loops0 = []
Curves0_0 = []
Line0_0_0 = add_line(start= [0., 0.], end= [0., 20.])
Arc0_0_1 = add_arc(start= [0., 20.], end= [0., 0.], mid= [10., 10.])
Loop0_0 = add_loop(Curves0_0)
Profile0 = add_profile(Loops0)
Sketch0 = add_sketch(sketch_plane= SketchPlane0, profile= Profile0)
Extrude0 = add_extrude(sketch= Sketch0,
\toperation= 0, type= 0, extent_one= 5., extent_two= 0.)
SketchPlane1 = add_sketchplane_ref(
\tExtrude0, origin= [2., 1.], type= "line", line= Line0_0_0)
Loops1 = []
Curves1_0 = []
Circle1_0_0 = add_circle(center= [0., 0.], radius= 1.)
Loop1_0 = add_loop(Curves1_0)
Profile1 = add_profile(Loops1)
Sketch1 = add_sketch(sketch_plane= SketchPlane1, profile= Profile1)
Extrude1 = add_extrude(sketch= Sketch1,
\toperation= 1, type= 0, extent_one= 3., extent_two= 0.)
"""


def test_a_line_reference_follows_the_line_as_add_loop_leaves_it():
    """OpenECAD's add_loop turns both curves of a two-curve loop, so Line0_0_0 runs from (0, 20) to (0, 0): the
    new plane's x axis points down -y, its y axis is +z and its normal is x cross y = -x."""
    plane = interpret(D_SHAPE).extrudes[1].plane
    assert plane.x_axis == pytest.approx((0.0, -1.0, 0.0))
    assert plane.y_axis == pytest.approx((0.0, 0.0, 1.0))
    assert plane.normal == pytest.approx((-1.0, 0.0, 0.0))
    assert plane.origin == pytest.approx((0.0, 0.018, 0.001))  # start (0, 20) mm + 2 mm along x + 1 mm along y


def test_writer_states_a_perpendicular_plane_through_a_line_and_round_trips():
    sequence = interpret(D_SHAPE)
    code = write_code(sequence)
    assert 'type= "line", line= Line0_0_' in code
    assert round_trip(sequence, measure(build_solid(sequence))).passed


def test_rotated_reversed_sameplane_reference_round_trips():
    code = D_SHAPE.replace(
        'SketchPlane1 = add_sketchplane_ref(\n\tExtrude0, origin= [2., 1.], type= "line", line= Line0_0_0)',
        'SketchPlane1 = add_sketchplane_ref(\n\tExtrude0, origin = [4., 10.], type = "extent_one", angle = np.pi/2, reverse = True)',
    )
    sequence = interpret(code)
    plane = sequence.extrudes[1].plane
    assert plane.normal == pytest.approx((0.0, 0.0, -1.0))
    assert plane.x_axis == pytest.approx((0.0, 1.0, 0.0))
    assert plane.origin == pytest.approx((0.004, 0.010, 0.005))
    written = write_code(sequence)
    assert 'type = "extent_one", angle = np.pi/2, reverse = True)' in written
    assert round_trip(sequence, measure(build_solid(sequence))).passed


@pytest.mark.parametrize(
    ("edit", "line", "words"),
    [
        (("Curves0_0", "Points0_0"), 5, "before any `Curves"),
        (('type= "line"', 'type= "side"'), 12, "type must be one of"),
        (("operation= 0", "operation= 7"), 10, "operation must be one of"),
        (("radius= 1.", "radius= -1."), 16, "radius must be positive"),
        (("mid= [10., 10.]", "mid= [0., 10.]"), 7, "lie on one line"),
        (("line= Line0_0_0", "line= Arc0_0_1"), 12, "needs line= a Line"),
        (("extent_one= 5.", "extent_one= 0."), 10, "zero depth"),
        (("end= [0., 20.])", "end= [0., 20.], width= 2.)"), 5, "no parameter 'width'"),
        (("x_axis= [1., 0., 0.]", "x_axis= [0., 0., 2.]"), 1, "do not span a plane"),
    ],
)
def test_semantic_errors_name_the_line(edit, line, words):
    with pytest.raises(CodeRejected) as rejected:
        interpret(D_SHAPE.replace(*edit))
    assert rejected.value.line == line
    assert words in rejected.value.why


def _plate_with_hole(hole_top_mm: float) -> str:
    """A 10 mm square plate, 5 mm thick, with a 2.9 mm hole whose top is at `hole_top_mm` (the plate's top edge is at 10)."""
    return (
        "SketchPlane0 = add_sketchplane(\n\torigin= [0., 0., 0.], normal= [0., 0., 1.], x_axis= [1., 0., 0.])\n"
        "Loops0 = []\nCurves0_0 = []\n"
        "Line0_0_0 = add_line(start= [0., 0.], end= [10., 0.])\n"
        "Line0_0_1 = add_line(start= [10., 0.], end= [10., 10.])\n"
        "Line0_0_2 = add_line(start= [10., 10.], end= [0., 10.])\n"
        "Line0_0_3 = add_line(start= [0., 10.], end= [0., 0.])\n"
        "Loop0_0 = add_loop(Curves0_0)\nCurves0_1 = []\n"
        f"Circle0_1_0 = add_circle(center= [5., {hole_top_mm - 2.9:.4f}], radius= 2.9)\n"
        "Loop0_1 = add_loop(Curves0_1)\nProfile0 = add_profile(Loops0)\n"
        "Sketch0 = add_sketch(sketch_plane= SketchPlane0, profile= Profile0)\n"
        "Extrude0 = add_extrude(sketch= Sketch0,\n\toperation= 0, type= 0, extent_one= 5., extent_two= 0.)\n"
    )


@pytest.mark.parametrize("hole_top_mm", [10.0, 10.0001, 9.9999])
def test_a_hole_that_touches_the_edge_within_the_printed_rounding_is_not_a_crossing(hole_top_mm):
    """Tangent to the plate's edge, or cutting it by the code's last printed digit (1e-4 mm): the curves touch, and the
    plate builds with the hole's area taken out."""
    solid = build_solid(interpret(_plate_with_hole(hole_top_mm)))
    area = 100.0 - math.pi * 2.9**2
    assert measure(solid).volume == pytest.approx(area * 5.0 * 1e-9, rel=1e-4)


def test_a_hole_that_cuts_the_edge_is_a_crossing():
    with pytest.raises(CodeRejected, match="loop 0 curve 2 touches or crosses loop 1 curve 0"):
        interpret(_plate_with_hole(10.01))


def test_crossing_loops_are_rejected_with_the_extrude():
    bow_tie = (
        "Line0_0_0 = add_line(start= [0., 0.], end= [10., 10.])\n"
        "Line0_0_1 = add_line(start= [10., 10.], end= [10., 0.])\n"
        "Line0_0_2 = add_line(start= [10., 0.], end= [0., 10.])\n"
        "Line0_0_3 = add_line(start= [0., 10.], end= [0., 0.])\n"
    )
    code = D_SHAPE.replace(
        "Line0_0_0 = add_line(start= [0., 0.], end= [0., 20.])\nArc0_0_1 = add_arc(start= [0., 20.], end= [0., 0.], mid= [10., 10.])\n",
        bow_tie,
    )
    with pytest.raises(CodeRejected) as rejected:
        interpret(code.split("SketchPlane1")[0])
    assert "Extrude0" in rejected.value.why and "crosses itself" in rejected.value.why
