"""Bad DeepCAD input never crashes the reader or the builder: it becomes a report with a reason.

`inspect_bytes` must turn any bytes into a `ModelReport`. An invalid report carries a non-empty
`reason` and `reason_code`; a valid one has a positive, finite volume and a finite bounding box
with min <= max.

The property-based part generates 11,300 inputs in total (the sum of the `max_examples` below):
truncated real files, random bytes and text, JSON of the wrong shape, random structural edits
of the real samples (deleted keys, values of the wrong type, huge, non-finite, negative or zero
numbers), broken references, geometric edits (moved or swapped vertices, collapsed curves, bad
radii and sweeps), degenerate sketch planes and extents, unknown type strings, whole models
scaled to extreme sizes, and two generators with an exact oracle: random grid polygons with
circular holes (validity and volume known exactly) and booleans of grid rectangles (the result
region known cell by cell). Runs are deterministic (`derandomize=True`, no example database);
each property asserts afterwards that it really ran its `max_examples` inputs.

The hand-written part checks the specific reason code and wording for common mistakes.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from cad_pipeline.cad.inspect import ModelReport, inspect_bytes
from cad_pipeline_tests.conftest import REAL_SAMPLES

SAMPLE_BYTES = {path.stem: path.read_bytes() for path in sorted(REAL_SAMPLES.glob("0*.json"))}
SAMPLE_NAMES = sorted(SAMPLE_BYTES)
TAU = 2.0 * math.pi

NEW_BODY, JOIN, CUT, INTERSECT = (
    "NewBodyFeatureOperation",
    "JoinFeatureOperation",
    "CutFeatureOperation",
    "IntersectFeatureOperation",
)
ONE_SIDE, SYMMETRIC, TWO_SIDES = "OneSideFeatureExtentType", "SymmetricFeatureExtentType", "TwoSidesFeatureExtentType"
GEOMETRY_CODES = {"degenerate_curve", "open_loop", "degenerate_loop", "self_intersecting_loop", "loops_not_nested"}


# ---------------------------------------------------------------------------------------------
# Hand-made DeepCAD dicts


def _xyz(x: float, y: float, z: float = 0.0) -> dict:
    return {"x": x, "y": y, "z": z}


def line(start, end) -> dict:
    return {"type": "Line3D", "start_point": _xyz(*start), "end_point": _xyz(*end), "curve": "L"}


def circle(center, radius) -> dict:
    return {"type": "Circle3D", "center_point": _xyz(*center), "radius": radius, "normal": _xyz(0.0, 0.0, 1.0), "curve": "C"}


def arc(center, radius, start_angle, sweep) -> dict:
    """A counter-clockwise arc from `start_angle` (radians, in the sketch frame) turning by `sweep`."""
    cx, cy = center
    ref = (math.cos(start_angle), math.sin(start_angle))
    end = (math.cos(start_angle + sweep), math.sin(start_angle + sweep))
    return {
        "type": "Arc3D",
        "start_point": _xyz(cx + radius * ref[0], cy + radius * ref[1]),
        "end_point": _xyz(cx + radius * end[0], cy + radius * end[1]),
        "center_point": _xyz(cx, cy),
        "radius": radius,
        "normal": _xyz(0.0, 0.0, 1.0),
        "start_angle": 0.0,
        "end_angle": sweep,
        "reference_vector": _xyz(*ref),
        "curve": "A",
    }


def polygon(points) -> list[dict]:
    return [line(points[i], points[(i + 1) % len(points)]) for i in range(len(points))]


def rectangle(x0, y0, x1, y1) -> list[dict]:
    return polygon([(x0, y0), (x1, y0), (x1, y1), (x0, y1)])


def sketch_entity(loops, *, origin=(0.0, 0.0, 0.0), x_axis=(1.0, 0.0, 0.0), z_axis=(0.0, 0.0, 1.0), profile_id="P") -> dict:
    y_axis = (
        z_axis[1] * x_axis[2] - z_axis[2] * x_axis[1],
        z_axis[2] * x_axis[0] - z_axis[0] * x_axis[2],
        z_axis[0] * x_axis[1] - z_axis[1] * x_axis[0],
    )
    return {
        "name": "Sketch",
        "type": "Sketch",
        "reference_plane": {},
        "transform": {"origin": _xyz(*origin), "x_axis": _xyz(*x_axis), "y_axis": _xyz(*y_axis), "z_axis": _xyz(*z_axis)},
        "profiles": {profile_id: {"loops": [{"is_outer": True, "profile_curves": loop} for loop in loops], "properties": {}}},
    }


def _extent(value: float, role: str) -> dict:
    return {"distance": {"type": "ModelParameter", "role": role, "name": "none", "value": value}, "type": "DistanceExtentDefinition"}


def extrude_entity(references, *, operation=NEW_BODY, depth=0.01, extent_type=ONE_SIDE, extent_two=0.0) -> dict:
    return {
        "name": "Extrude",
        "type": "ExtrudeFeature",
        "profiles": [{"profile": profile, "sketch": sketch} for sketch, profile in references],
        "operation": operation,
        "extent_type": extent_type,
        "extent_one": _extent(depth, "AlongDistance"),
        "extent_two": _extent(extent_two, "AgainstDistance"),
        "start_extent": {"type": "ProfilePlaneStartDefinition"},
    }


def model(*steps) -> dict:
    """A DeepCAD dict with one sketch and one extrude per step; a step is (loops, extrude options, sketch options)."""
    entities, sequence = {}, []
    for index, (loops, extrude_options, sketch_options) in enumerate(steps):
        sketch_id, extrude_id = f"S{index}", f"E{index}"
        entities[sketch_id] = sketch_entity(loops, **sketch_options)
        entities[extrude_id] = extrude_entity([(sketch_id, "P")], **extrude_options)
        sequence += [
            {"index": 2 * index, "type": "Sketch", "entity": sketch_id},
            {"index": 2 * index + 1, "type": "ExtrudeFeature", "entity": extrude_id},
        ]
    return {"entities": entities, "properties": {}, "sequence": sequence}


def one_extrude(loops, *, sketch: dict | None = None, **extrude_options) -> dict:
    """One sketch (entity "S0", profile "P") holding `loops`, extruded once (entity "E0")."""
    return model((loops, extrude_options, sketch or {}))


def to_bytes(data) -> bytes:
    return json.dumps(data, allow_nan=True).encode()


# ---------------------------------------------------------------------------------------------
# The invariant every input must satisfy


def check_report(raw: bytes | str, model_id: str = "fuzz") -> ModelReport:
    report = inspect_bytes(raw, model_id)
    assert isinstance(report, ModelReport)
    if report.valid:
        assert report.reason is None and report.reason_code is None
        numbers = [report.volume, report.area, *report.bbox_min, *report.bbox_max]
        assert all(isinstance(v, float) and math.isfinite(v) for v in numbers), report
        assert report.volume > 0.0 and report.area > 0.0, report
        assert all(low <= high for low, high in zip(report.bbox_min, report.bbox_max)), report
        assert report.n_extrudes >= 1 and report.n_curves >= 1
    else:
        assert isinstance(report.reason, str) and report.reason.strip(), report
        assert isinstance(report.reason_code, str) and report.reason_code.strip(), report
        assert report.volume is None and report.bbox_min is None
    return report


def invalid(raw, code: str, *fragments: str, model_id: str = "m") -> ModelReport:
    report = check_report(raw, model_id)
    assert not report.valid, "expected a rejection"
    assert report.reason_code == code, report.reason
    for fragment in fragments:
        assert fragment in report.reason, f"{fragment!r} not in {report.reason!r}"
    return report


# ---------------------------------------------------------------------------------------------
# Hand-written cases

SQUARE = [(0.0, 0.0), (0.02, 0.0), (0.02, 0.02), (0.0, 0.02)]


def test_hand_made_square_is_valid():
    report = check_report(to_bytes(one_extrude([polygon(SQUARE)], depth=0.01)))
    assert report.valid, report.reason
    assert report.volume == pytest.approx(4e-6, rel=1e-9, abs=0.0)


@pytest.mark.parametrize("cut", [1, 10, 100, -2])
def test_truncated_json(cut):
    raw = SAMPLE_BYTES["00000119"]
    invalid(raw[:cut], "invalid_json", "not valid JSON")


@pytest.mark.parametrize("raw", [b"", b"hello", b"\xff\xfe\x00garbage", "entities: []", b"{'entities': {}}", b"\x89PNG\r\n\x1a\n"])
def test_non_json(raw):
    invalid(raw, "invalid_json", "not valid JSON")


@pytest.mark.parametrize("data", [[], [{"entities": {}}], "model", 3, None, True])
def test_wrong_top_level_type(data):
    invalid(json.dumps(data), "wrong_type", "top level", "JSON object")


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_token_in_a_coordinate(token):
    text = json.dumps(one_extrude([polygon(SQUARE)])).replace('"x": 0.02', f'"x": {token}', 1)
    assert token in text
    invalid(text, "non_finite_number", token)


def test_overflowing_number_in_a_coordinate():
    text = json.dumps(one_extrude([polygon(SQUARE)])).replace('"x": 0.02', '"x": 1e999', 1)
    invalid(text, "non_finite_number", "loop 0 curve 0.end_point", "finite")


def test_string_where_a_number_belongs():
    data = one_extrude([[circle((0.0, 0.0), 0.01)]])
    data["entities"]["S0"]["profiles"]["P"]["loops"][0]["profile_curves"][0]["radius"] = "0.01"
    invalid(to_bytes(data), "wrong_type", "radius", "number", "str")


def test_bool_where_a_number_belongs():
    data = one_extrude([polygon(SQUARE)])
    data["entities"]["E0"]["extent_one"]["distance"]["value"] = True
    invalid(to_bytes(data), "wrong_type", "extent_one", "number", "bool")


def test_huge_integer_is_out_of_range():
    data = one_extrude([polygon(SQUARE)])
    data["entities"]["E0"]["extent_one"]["distance"]["value"] = 10**400
    invalid(to_bytes(data), "out_of_range", "extent_one")


@pytest.mark.parametrize("size", [1e7, 1e200, 1e300])
def test_absurdly_large_coordinates_are_out_of_range(size):
    data = one_extrude([polygon([(0.0, 0.0), (size, 0.0), (size, size), (0.0, size)])])
    invalid(to_bytes(data), "out_of_range", "loop 0 curve 0", "m")


def test_deeply_nested_json():
    invalid(b"[" * 100_000 + b"]" * 100_000, "invalid_json", "not valid JSON")


@pytest.mark.parametrize("origin", [(1e300, 0.0, 0.0), (0.0, -1e7, 0.0)])
def test_sketch_origin_out_of_range(origin):
    # OpenCASCADE crashes the process on a profile placed 1e300 m away, so the reader must stop it
    data = one_extrude([[circle((0.0, 0.0), 0.01)]], sketch={"origin": origin})
    invalid(to_bytes(data), "out_of_range", "'S0'", "origin")


@pytest.mark.parametrize(
    "loops, options, code",
    [
        ([polygon([(0.0, 0.0), (1e-7, 0.0), (1e-7, 1e-7), (0.0, 1e-7)])], {}, "degenerate_curve"),
        ([[circle((0.0, 0.0), 1e-7)]], {}, "degenerate_curve"),
        ([polygon(SQUARE)], {"depth": 1e-7}, "zero_depth"),
        ([polygon(SQUARE)], {"depth": -1e-7}, "zero_depth"),
    ],
)
def test_lengths_at_the_occ_tolerance_are_degenerate(loops, options, code):
    # OpenCASCADE cannot make an edge or a prism of exactly 1e-7 m (it raises), so the reader rejects it first
    invalid(to_bytes(one_extrude(loops, **options)), code, "1e-07")


def test_sketch_step_refers_to_a_missing_entity():
    data = one_extrude([polygon(SQUARE)])
    data["sequence"][0]["entity"] = "Fgone_0"
    invalid(to_bytes(data), "missing_entity", "sequence[0]", "Fgone_0")


def test_sequence_step_type_disagrees_with_the_entity():
    data = one_extrude([polygon(SQUARE)])
    data["sequence"][0]["entity"] = "E0"  # a Sketch step naming the extrude
    invalid(to_bytes(data), "missing_entity", "sequence[0]", "'E0'", "ExtrudeFeature")


def test_sequence_refers_to_a_missing_entity():
    data = one_extrude([polygon(SQUARE)])
    data["sequence"][1]["entity"] = "FmissingXYZ_0"
    invalid(to_bytes(data), "missing_entity", "FmissingXYZ_0", "sequence[1]")


def test_extrude_refers_to_a_profile_the_sketch_lacks():
    data = one_extrude([polygon(SQUARE)])
    data["entities"]["E0"]["profiles"][0]["profile"] = "JGZ"
    invalid(to_bytes(data), "missing_entity", "'JGZ'", "'S0'", "'E0'")


def test_extrude_refers_to_a_missing_sketch():
    data = one_extrude([polygon(SQUARE)])
    data["entities"]["E0"]["profiles"][0]["sketch"] = "Fnowhere"
    invalid(to_bytes(data), "missing_entity", "'Fnowhere'", "'E0'")


def test_sample_with_only_empty_profile_lists():
    report = invalid(SAMPLE_BYTES["00000175"], "empty_profiles", "profile", "empty", model_id="00000175")
    assert "FfeuPBMB94NngoV_0" in report.reason  # the extrude whose profile list is empty


def test_empty_profile_list_in_a_hand_made_model():
    data = one_extrude([polygon(SQUARE)])
    data["entities"]["E0"]["profiles"] = []
    invalid(to_bytes(data), "empty_profiles", "'E0'", "empty")


def test_a_loop_without_curves():
    invalid(to_bytes(one_extrude([[]])), "empty_loop", "loop 0", "no curves")


def test_a_profile_without_loops():
    invalid(to_bytes(one_extrude([])), "empty_loop", "profile 'P'", "no loops")


def test_zero_length_line():
    curves = polygon(SQUARE)
    curves.insert(2, line((0.02, 0.02), (0.02, 0.02)))
    invalid(to_bytes(one_extrude([curves])), "degenerate_curve", "curve 2", "zero-length")


def test_line_that_collapses_when_its_ends_are_joined():
    # 1.5e-7 m is above the reader's 1e-7 m floor but below this 20 m profile's joining tolerance (2e-5 m)
    big = [(0.0, 0.0), (20.0, 0.0), (20.0, 20.0), (0.0, 20.0)]
    curves = polygon(big)
    curves.insert(1, line((20.0, 0.0), (20.0, 1.5e-7)))
    invalid(to_bytes(one_extrude([curves])), "degenerate_curve", "loop 0 curve 1", "no length", "tolerance")


@pytest.mark.parametrize("radius", [0.0, -0.01, 1e-12])
def test_zero_or_negative_radius_circle(radius):
    invalid(to_bytes(one_extrude([[circle((0.0, 0.0), radius)]])), "degenerate_curve", "curve 0", "radius")


@pytest.mark.parametrize("sweep", [0.0, -1.0, TAU, 7.0])
def test_arc_sweep_outside_zero_to_two_pi(sweep):
    curves = [arc((0.0, 0.0), 0.01, 0.0, math.pi), line((-0.01, 0.0), (0.01, 0.0))]
    curves[0]["end_angle"] = sweep
    invalid(to_bytes(one_extrude([curves])), "degenerate_curve", "curve 0", "sweep")


def test_arc_that_almost_closes_is_degenerate():
    invalid(to_bytes(one_extrude([[arc((0.0, 0.0), 0.01, 0.0, TAU - 1e-9)]])), "degenerate_curve", "loop 0 curve 0")


def test_open_loop():
    curves = polygon(SQUARE)
    curves[1]["end_point"]["y"] = 0.015  # the right edge stops short of the top-right corner
    invalid(to_bytes(one_extrude([curves])), "open_loop", "loop 0", "open")


def test_self_intersecting_bow_tie():
    bow_tie = [(0.0, 0.0), (0.03, 0.03), (0.03, 0.0), (0.0, 0.015)]  # lobes of different size, so the area is not zero
    report = invalid(to_bytes(one_extrude([polygon(bow_tie)])), "self_intersecting_loop", "loop 0", "crosses itself")
    assert "(0.01, 0.01)" in report.reason  # where the crossing is
    assert "curves 0 and 2" in report.reason  # in the file's numbering: the two diagonals


def test_hole_crossing_the_outer_loop():
    hole = rectangle(0.015, 0.005, 0.03, 0.01)
    report = invalid(to_bytes(one_extrude([polygon(SQUARE), hole])), "self_intersecting_loop", "loop 0", "loop 1", "crosses")
    assert "(0.02, 0.005)" in report.reason or "(0.02, 0.01)" in report.reason


def test_hole_crossing_the_outer_loop_is_named_by_file_position():
    # the hole is listed first but the outer loop sorts first; the message must use the file's numbering
    hole = [circle((0.02, 0.01), 0.005)]
    report = invalid(to_bytes(one_extrude([hole, polygon(SQUARE)])), "self_intersecting_loop")
    assert "loop 1 curve 1" in report.reason and "loop 0 curve 0" in report.reason, report.reason


def test_hole_outside_the_outer_loop():
    report = invalid(to_bytes(one_extrude([polygon(SQUARE), [circle((0.05, 0.01), 0.005)]])), "loops_not_nested", "outside")
    assert "loop 1" in report.reason


def test_hole_outside_the_outer_loop_listed_first():
    # a loop further left sorts first and acts as the outer loop; the message names the file's loop numbers
    report = invalid(to_bytes(one_extrude([polygon(SQUARE), [circle((-0.05, 0.01), 0.005)]])), "loops_not_nested")
    assert "loop 0 lies outside" in report.reason and "loop 1" in report.reason, report.reason


def test_island_inside_a_hole():
    loops = [polygon(SQUARE), [circle((0.01, 0.01), 0.008)], [circle((0.01, 0.01), 0.002)]]
    invalid(to_bytes(one_extrude(loops)), "loops_not_nested", "loop 2", "inside", "loop 1")


def test_cut_that_removes_the_whole_body():
    data = model(
        ([polygon(SQUARE)], {"depth": 0.01}, {}),
        ([rectangle(-0.01, -0.01, 0.03, 0.03)], {"operation": CUT, "depth": 0.02}, {}),
    )
    invalid(to_bytes(data), "no_solid", "no solid")


def test_intersect_with_a_disjoint_body():
    data = model(
        ([polygon(SQUARE)], {"depth": 0.01}, {}),
        ([rectangle(0.05, 0.05, 0.07, 0.07)], {"operation": INTERSECT, "depth": 0.01}, {}),
    )
    invalid(to_bytes(data), "no_solid", "no solid")


@pytest.mark.parametrize("operation", [CUT, INTERSECT])
def test_cut_or_intersect_as_the_first_operation(operation):
    data = model(([polygon(SQUARE)], {"operation": operation}, {}), ([polygon(SQUARE)], {"operation": JOIN}, {}))
    invalid(to_bytes(data), "no_body", "before any body")


@pytest.mark.parametrize(
    "options",
    [
        {"depth": 0.0},
        {"depth": -0.0},
        {"depth": 1e-9},
        {"depth": 0.0, "extent_type": SYMMETRIC},
        {"depth": 0.0, "extent_type": TWO_SIDES, "extent_two": 0.0},
    ],
)
def test_zero_depth_extrude(options):
    invalid(to_bytes(one_extrude([polygon(SQUARE)], **options)), "zero_depth", "'E0'", "zero depth")


@pytest.mark.parametrize("z_axis", [(0.0, 0.0, 0.0), (1e-12, 0.0, 0.0)])
def test_zero_length_z_axis(z_axis):
    data = one_extrude([polygon(SQUARE)], sketch={"z_axis": z_axis})
    invalid(to_bytes(data), "degenerate_plane", "'S0'", "z_axis", "zero length")


@pytest.mark.parametrize("x_axis", [(0.0, 0.0, 0.0), (0.0, 0.0, 1.0), (0.0, 0.0, -3.0)])
def test_x_axis_zero_or_parallel_to_the_normal(x_axis):
    data = one_extrude([polygon(SQUARE)], sketch={"x_axis": x_axis})
    invalid(to_bytes(data), "degenerate_plane", "'S0'", "x_axis")


@pytest.mark.parametrize("axis", [(1e200, 0.0, 0.0), (1e308, 1e308, 1e308), (-3e-6, 0.0, 4e-6)])
def test_axes_of_extreme_length_are_only_directions(axis):
    data = one_extrude([polygon(SQUARE)], sketch={"z_axis": axis, "x_axis": (0.0, 1.0, 0.0)})
    report = check_report(to_bytes(data))
    assert report.valid, report.reason
    assert report.volume == pytest.approx(4e-6, rel=1e-9, abs=0.0)


@pytest.mark.parametrize(
    "field, value, code, fragment",
    [
        ("operation", "ExplodeFeatureOperation", "unknown_value", "operation"),
        ("operation", 2, "unknown_value", "operation"),
        ("extent_type", "ThroughAllExtentType", "unknown_value", "extent_type"),
    ],
)
def test_unknown_operation_or_extent_type(field, value, code, fragment):
    data = one_extrude([polygon(SQUARE)])
    data["entities"]["E0"][field] = value
    invalid(to_bytes(data), code, fragment, "expected one of")


def test_unknown_curve_type():
    curves = polygon(SQUARE)
    curves[3]["type"] = "BSplineCurve3D"
    invalid(to_bytes(one_extrude([curves])), "unsupported_curve", "curve 3", "BSplineCurve3D")


def test_unknown_sequence_step_type():
    data = one_extrude([polygon(SQUARE)])
    data["sequence"][0]["type"] = "FilletFeature"
    invalid(to_bytes(data), "unsupported_feature", "sequence[0]", "FilletFeature")


# ---------------------------------------------------------------------------------------------
# Property-based fuzzing

EXAMPLES = {
    "_prop_truncated": 2000,
    "_prop_random_bytes": 1500,
    "_prop_wrong_shapes": 1000,
    "_prop_structural": 2000,
    "_prop_references": 800,
    "_prop_geometry": 1500,
    "_prop_planes_and_types": 800,
    "_prop_scaled": 300,
    "_prop_grid_polygons": 1000,
    "_prop_rectangle_booleans": 400,
}
"""Generated inputs per property: cheap ones (rejected while parsing) get more, ones that build solids fewer."""
_COUNTS: dict[str, int] = {}


def fuzz_settings(name: str):
    return settings(
        max_examples=EXAMPLES[name],
        deadline=None,
        derandomize=True,
        database=None,
        print_blob=False,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
            HealthCheck.large_base_example,
        ],
    )


def run_property(prop) -> None:
    """Run a @given function and assert it really saw its share of EXAMPLES."""
    _COUNTS[prop.__name__] = 0
    prop()
    assert _COUNTS[prop.__name__] >= EXAMPLES[prop.__name__], (prop.__name__, _COUNTS[prop.__name__])


def _count(name: str) -> None:
    _COUNTS[name] = _COUNTS.get(name, 0) + 1


@dataclass(frozen=True)
class Case:
    """A generated input: its bytes and a short description (what the report shows on failure)."""

    label: str
    raw: bytes

    def __repr__(self) -> str:
        return f"Case({self.label!r}, {len(self.raw)} bytes)"


def _load(name: str) -> dict:
    return json.loads(SAMPLE_BYTES[name])


def _paths(node, prefix=()) -> list[tuple]:
    found = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in items:
        found.append((*prefix, key))
        found.extend(_paths(child, (*prefix, key)))
    return found


SAMPLE_PATHS = {name: _paths(_load(name)) for name in SAMPLE_NAMES}


def _curve_lists(data: dict) -> list[tuple[str, list]]:
    """(where, profile_curves list) for every loop of every sketch."""
    found = []
    for entity_id, entity in data["entities"].items():
        if entity.get("type") != "Sketch":
            continue
        for profile_id, profile in entity["profiles"].items():
            for index, loop in enumerate(profile["loops"]):
                found.append((f"{entity_id}/{profile_id}/{index}", loop["profile_curves"]))
    return found


def _ids(data: dict, kind: str) -> list[str]:
    return sorted(key for key, entity in data["entities"].items() if entity.get("type") == kind)


WEIRD_VALUES = [
    None,
    "",
    "0.01",
    "NewBodyFeatureOperation",
    [],
    [0.0, 0.0, 0.0],
    {},
    {"x": 0.0},
    True,
    False,
    10**400,
    -(10**400),
    2**63,
    float("nan"),
    float("inf"),
    float("-inf"),
    -1,
    0,
    0.0,
    -0.0,
    -0.01,
    1e-300,
    1e300,
    -1e300,
]
weird_values = st.sampled_from(WEIRD_VALUES) | st.floats(allow_nan=True, allow_infinity=True) | st.integers() | st.text(max_size=8)


# --- cheap: bytes that never get past the JSON parser or the top-level checks -----------------


@st.composite
def truncated_files(draw) -> Case:
    name = draw(st.sampled_from(SAMPLE_NAMES))
    raw = SAMPLE_BYTES[name]
    cut = draw(st.integers(0, len(raw.rstrip()) - 1))
    return Case(f"{name}[:{cut}]", raw[:cut])


@fuzz_settings("_prop_truncated")
@given(truncated_files())
def _prop_truncated(case):
    _count("_prop_truncated")
    report = check_report(case.raw)
    assert report.reason_code == "invalid_json", report.reason


def test_truncated_files_fuzz():
    run_property(_prop_truncated)


@fuzz_settings("_prop_random_bytes")
@given(st.binary(max_size=512) | st.text(max_size=256) | st.text(max_size=64).map(lambda s: "{" + s))
def _prop_random_bytes(raw):
    _count("_prop_random_bytes")
    report = check_report(raw)
    assert not report.valid


def test_random_bytes_fuzz():
    run_property(_prop_random_bytes)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=10),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
top_keys = st.sampled_from(["entities", "sequence", "properties", "type", "profiles"]) | st.text(max_size=8)
wrong_shapes = (
    json_values.filter(lambda value: not isinstance(value, dict))
    | st.dictionaries(top_keys, json_values, max_size=4)
    | st.fixed_dictionaries({"entities": json_values, "sequence": json_values})
    | st.fixed_dictionaries(
        {"entities": st.dictionaries(st.text(max_size=4), json_values, max_size=3), "sequence": st.lists(json_values, max_size=3)}
    )
)


@fuzz_settings("_prop_wrong_shapes")
@given(wrong_shapes)
def _prop_wrong_shapes(value):
    _count("_prop_wrong_shapes")
    report = check_report(json.dumps(value, allow_nan=True))
    assert not report.valid


def test_wrong_json_shapes_fuzz():
    run_property(_prop_wrong_shapes)


# --- structural edits of the real samples ---------------------------------------------------


def _set(data, path, value) -> None:
    parent = data
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value


def _delete(data, path) -> None:
    parent = data
    for key in path[:-1]:
        parent = parent[key]
    del parent[path[-1]]


@st.composite
def structural_edits(draw) -> Case:
    name = draw(st.sampled_from(SAMPLE_NAMES))
    data = _load(name)
    labels = []
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(SAMPLE_PATHS[name]))
        try:
            if draw(st.booleans()):
                _delete(data, path)
                labels.append(f"del {path}")
            else:
                value = draw(weird_values)
                _set(data, path, value)
                labels.append(f"{path}={value!r:.30}")
        except (KeyError, IndexError, TypeError):
            labels.append(f"skip {path}")  # an earlier edit removed or replaced the parent
    return Case(f"{name}: " + "; ".join(labels), to_bytes(data))


@fuzz_settings("_prop_structural")
@given(structural_edits())
def _prop_structural(case):
    _count("_prop_structural")
    check_report(case.raw)


def test_structural_edits_fuzz():
    run_property(_prop_structural)


# --- broken references ------------------------------------------------------------------------

VALID_NAMES = [name for name in SAMPLE_NAMES if name != "00000175"]


@st.composite
def broken_references(draw) -> tuple[Case, str | None]:
    """A broken reference and the reason code it must produce (None where the model may stay valid)."""
    name = draw(st.sampled_from(VALID_NAMES))
    data = _load(name)
    extrudes, sketches = _ids(data, "ExtrudeFeature"), _ids(data, "Sketch")
    kind = draw(
        st.sampled_from(
            [
                "step_entity",
                "drop_entity",
                "profile_id",
                "sketch_id",
                "sketch_is_extrude",
                "no_profiles",
                "empty_lists",
                "shuffle",
                "step_type",
                "duplicate",
            ]
        )
    )
    unknown = draw(st.sampled_from(["", "Fnowhere_0", "JGZZ", "0", "entities"]) | st.text(max_size=6))
    expect = None
    if kind == "step_entity":
        step = draw(st.sampled_from(data["sequence"]))
        step["entity"] = unknown
        expect = "missing_entity" if unknown not in data["entities"] else None
    elif kind == "drop_entity":
        del data["entities"][draw(st.sampled_from(sorted(data["entities"])))]
        expect = "missing_entity"
    elif kind in ("profile_id", "sketch_id", "sketch_is_extrude"):
        references = [ref for extrude in extrudes for ref in data["entities"][extrude]["profiles"]]
        reference = draw(st.sampled_from(references))
        if kind == "profile_id":
            reference["profile"] = unknown
            expect = "missing_entity" if unknown not in data["entities"][reference["sketch"]]["profiles"] else None
        else:
            reference["sketch"] = unknown if kind == "sketch_id" else draw(st.sampled_from(extrudes))
            expect = "missing_entity" if reference["sketch"] not in sketches else None
    elif kind == "no_profiles":
        sketch = draw(st.sampled_from(sketches))
        data["entities"][sketch]["profiles"] = {}
        used = any(ref["sketch"] == sketch for extrude in extrudes for ref in data["entities"][extrude]["profiles"])
        expect = "missing_entity" if used else None
    elif kind == "empty_lists":
        emptied = draw(st.lists(st.sampled_from(extrudes), min_size=1, unique=True))
        for extrude in emptied:
            data["entities"][extrude]["profiles"] = []
        expect = "empty_profiles" if len(emptied) == len(extrudes) else None
    elif kind == "shuffle":
        data["sequence"] = draw(st.permutations(data["sequence"]))
    elif kind == "step_type":
        step = draw(st.sampled_from(data["sequence"]))
        old_type, step["type"] = step["type"], draw(st.sampled_from(["Sketch", "ExtrudeFeature", "extrudefeature", "Fillet", None, 3]))
        if step["type"] != old_type:  # a step whose type disagrees with its entity, or a feature DeepCAD lacks
            expect = "missing_entity" if step["type"] in ("Sketch", "ExtrudeFeature") else "unsupported_feature"
    else:
        data["sequence"] = data["sequence"] + [draw(st.sampled_from(data["sequence"]))]
    return Case(f"{name}: {kind} {unknown!r}", to_bytes(data)), expect


@fuzz_settings("_prop_references")
@given(broken_references())
def _prop_references(case_and_code):
    _count("_prop_references")
    case, code = case_and_code
    report = check_report(case.raw)
    if code is not None:
        assert report.reason_code == code, report


def test_broken_references_fuzz():
    run_property(_prop_references)


# --- geometric edits ---------------------------------------------------------------------------

POINT_KEYS = ("start_point", "end_point", "center_point")
deltas = st.sampled_from([1e-12, -1e-9, 1e-8, -1e-7, 5e-7, 1e-6, -1e-5, 1e-4, -1e-3, 0.005, -0.01, 0.05, 1.0]) | st.floats(-0.1, 0.1)


def _vertices(curves: list) -> list[tuple[float, float]]:
    found = []
    for curve in curves:
        for key in ("start_point", "end_point"):
            if key in curve:
                point = (curve[key]["x"], curve[key]["y"])
                if point not in found:
                    found.append(point)
    return found


def _move_vertex(curves: list, old, new) -> None:
    for curve in curves:
        for key in ("start_point", "end_point"):
            if key in curve and (curve[key]["x"], curve[key]["y"]) == old:
                curve[key]["x"], curve[key]["y"] = new


@st.composite
def geometric_edits(draw) -> Case:
    name = draw(st.sampled_from(VALID_NAMES))
    data = _load(name)
    loops = _curve_lists(data)
    where, curves = draw(st.sampled_from(loops))
    index = draw(st.integers(0, len(curves) - 1))
    curve = curves[index]
    kind = draw(st.sampled_from(["nudge", "collapse", "swap", "move", "radius", "sweep", "reference", "drop", "duplicate", "reverse"]))
    label = f"{name} {where} curve {index} ({curve['type']}): {kind}"
    vertices = _vertices(curves)
    if kind == "nudge":
        key = draw(st.sampled_from([key for key in POINT_KEYS if key in curve]))
        axis = draw(st.sampled_from("xy"))
        delta = draw(deltas)
        curve[key][axis] += delta
        label += f" {key}.{axis} += {delta!r}"
    elif kind == "collapse":
        if "start_point" in curve:
            curve["end_point"] = copy.deepcopy(curve["start_point"])
        else:
            curve["radius"] = 0.0
    elif kind in ("swap", "move") and len(vertices) >= 2:
        first = draw(st.sampled_from(vertices))
        if kind == "swap":
            second = draw(st.sampled_from([v for v in vertices if v != first]))
            _move_vertex(curves, first, (math.inf, math.inf))
            _move_vertex(curves, second, first)
            _move_vertex(curves, (math.inf, math.inf), second)
        else:
            target = draw(st.sampled_from(vertices)) if draw(st.booleans()) else (first[0] + draw(deltas), first[1] + draw(deltas))
            _move_vertex(curves, first, target)
            label += f" {first} -> {target}"
    elif kind == "radius" and "radius" in curve:
        radius = curve["radius"]
        curve["radius"] = draw(st.sampled_from([0.0, -0.0, -radius, 1e-9, radius * 2.0, radius * (1 + 1e-6)]))
        label += f" -> {curve['radius']!r}"
    elif kind == "sweep" and curve["type"] == "Arc3D":
        key = draw(st.sampled_from(["end_angle", "start_angle"]))
        angles = st.sampled_from([0.0, -0.0, -1.0, TAU, TAU + 1e-9, TAU - 1e-12, 7.0, 1e9, -math.pi, 1e-12]) | st.floats(-20.0, 20.0)
        curve[key] = draw(angles)
        label += f" {key} -> {curve[key]!r}"
    elif kind == "reference" and curve["type"] == "Arc3D":
        curve["reference_vector"] = _xyz(*draw(st.sampled_from([(0.0, 0.0), (1e-12, 0.0), (-1.0, 0.0), (0.0, 1.0), (3.0, 4.0)])))
    elif kind == "drop":
        del curves[index]
    elif kind == "duplicate":
        curves.append(copy.deepcopy(curve))
    elif kind == "reverse" and "start_point" in curve:
        curve["start_point"], curve["end_point"] = curve["end_point"], curve["start_point"]
    return Case(label, to_bytes(data))


@fuzz_settings("_prop_geometry")
@given(geometric_edits())
def _prop_geometry(case):
    _count("_prop_geometry")
    check_report(case.raw)


def test_geometric_edits_fuzz():
    run_property(_prop_geometry)


# --- planes, extents and type strings ---------------------------------------------------------

vectors = st.sampled_from(
    [
        (0.0, 0.0, 0.0),
        (0.0, 0.0, 1.0),
        (0.0, 0.0, -1.0),
        (1.0, 0.0, 0.0),
        (1e-12, 0.0, 0.0),
        (1e200, 0.0, 1e200),
        (1e-200, 1e-200, 0.0),
        (1.0, 1.0, 1e-9),
    ]
) | st.tuples(*[st.floats(-2.0, 2.0)] * 3)
extents = st.sampled_from([0.0, -0.0, 1e-9, -1e-9, 1e-7, -0.01, 0.02, 1e-300, 1e300, -1e300]) | st.floats(-1.0, 1.0)
type_strings = st.sampled_from(
    ["", "Line3D", "Arc3D", "Circle3D", "Ellipse3D", "line3d", "Sketch", "ThroughAll"]
    + [NEW_BODY, JOIN, CUT, INTERSECT, ONE_SIDE, SYMMETRIC, TWO_SIDES]
) | st.text(max_size=12)


@st.composite
def plane_and_type_edits(draw) -> Case:
    name = draw(st.sampled_from(VALID_NAMES))
    data = _load(name)
    kind = draw(st.sampled_from(["axis", "parallel", "origin", "extent", "extent_type", "operation", "curve_type"]))
    label = f"{name}: {kind}"
    if kind in ("axis", "parallel", "origin"):
        sketch = data["entities"][draw(st.sampled_from(_ids(data, "Sketch")))]
        transform = sketch["transform"]
        if kind == "axis":
            key = draw(st.sampled_from(["z_axis", "x_axis"]))
            transform[key] = _xyz(*draw(vectors))
            label += f" {key}={transform[key]}"
        elif kind == "parallel":
            scale = draw(st.sampled_from([1.0, -1.0, 2.5, 1e-6]))
            transform["x_axis"] = {axis: value * scale for axis, value in transform["z_axis"].items()}
        else:
            transform["origin"] = _xyz(*draw(st.tuples(*[st.sampled_from([0.0, -1.0, 1e6, -1e7, 1e300])] * 3)))
    else:
        extrude = data["entities"][draw(st.sampled_from(_ids(data, "ExtrudeFeature")))]
        if kind == "extent":
            extrude["extent_type"] = draw(st.sampled_from([ONE_SIDE, SYMMETRIC, TWO_SIDES]))
            extrude["extent_one"]["distance"]["value"] = draw(extents)
            extrude["extent_two"]["distance"]["value"] = draw(extents)
            one, two = extrude["extent_one"]["distance"]["value"], extrude["extent_two"]["distance"]["value"]
            label += f" {extrude['extent_type']} {one!r} {two!r}"
        elif kind in ("extent_type", "operation"):
            extrude[kind] = draw(type_strings)
            label += f" {extrude[kind]!r}"
        else:
            where, curves = draw(st.sampled_from(_curve_lists(data)))
            curve = draw(st.sampled_from(curves))
            curve["type"] = draw(type_strings)
            label += f" {where} -> {curve['type']!r}"
    return Case(label, to_bytes(data))


@fuzz_settings("_prop_planes_and_types")
@given(plane_and_type_edits())
def _prop_planes_and_types(case):
    _count("_prop_planes_and_types")
    check_report(case.raw)


def test_plane_extent_and_type_edits_fuzz():
    run_property(_prop_planes_and_types)


# --- whole models at extreme scales -----------------------------------------------------------

LENGTH_KEYS = {"x", "y", "z", "radius", "value"}
DIRECTION_KEYS = {"x_axis", "y_axis", "z_axis", "normal", "reference_vector"}


def _scale_lengths(node, factor: float, parent: str = "") -> None:
    """Multiply every length (points, radii, origins, extents) by `factor`; directions and angles stay."""
    if isinstance(node, dict):
        for key, child in node.items():
            if key in LENGTH_KEYS and isinstance(child, (int, float)) and parent not in DIRECTION_KEYS:
                if key != "value" or parent == "distance":
                    node[key] = child * factor
            else:
                _scale_lengths(child, factor, key)
    elif isinstance(node, list):
        for child in node:
            _scale_lengths(child, factor, parent)


SCALES_BUILT_EXACTLY = range(-4, 7)
"""Powers of ten by which the real samples can be scaled and still be built to 1e-6 in volume (beyond them the
reader rejects sub-1e-7 m curves or coordinates past 1e6 m)."""


def _scaled(name: str, exponent: int) -> bytes:
    data = _load(name)
    _scale_lengths(data, 10.0**exponent)
    return to_bytes(data)


@fuzz_settings("_prop_scaled")
@given(st.sampled_from(VALID_NAMES), st.integers(-16, 16) | st.sampled_from([-300, -200, 200, 300]))
def _prop_scaled(name, exponent):
    _count("_prop_scaled")
    note(f"{name} x 1e{exponent}")
    report = check_report(_scaled(name, exponent))
    if exponent in SCALES_BUILT_EXACTLY:
        assert report.valid, report.reason
        reference = check_report(SAMPLE_BYTES[name])
        assert report.volume == pytest.approx(reference.volume * 10.0 ** (3 * exponent), rel=1e-6, abs=0.0)
    elif exponent <= -7:  # every sample has a curve or a depth under 1e-7 m at this scale
        assert report.reason_code in {"degenerate_curve", "zero_depth"}, report
    elif exponent >= 9:  # and a coordinate beyond 1e6 m at this one
        assert report.reason_code == "out_of_range", report


def test_scaled_models_fuzz():
    run_property(_prop_scaled)


@pytest.mark.parametrize("name, exponent", [("00000172", -4), ("00005082", -4), ("00001616", 6)])
def test_extreme_scales_are_built_like_the_original(name, exponent):
    report = check_report(_scaled(name, exponent))
    assert report.valid, report.reason
    reference = check_report(SAMPLE_BYTES[name])
    assert report.volume == pytest.approx(reference.volume * 10.0 ** (3 * exponent), rel=1e-6, abs=0.0)


# --- exact oracle 1: grid polygons with circular holes ----------------------------------------

GRID = 0.01  # metres per grid unit
PLANES = [
    {},
    {"z_axis": (0.0, -1.0, 0.0), "x_axis": (1.0, 0.0, 0.0)},
    {"z_axis": (1.0, 1.0, 1.0), "x_axis": (1.0, -1.0, 0.0), "origin": (0.1, -0.2, 0.3)},
]


def _cross(o, a, b):
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


def _on_segment(p, a, b) -> bool:
    return _cross(a, b, p) == 0 and min(a[0], b[0]) <= p[0] <= max(a[0], b[0]) and min(a[1], b[1]) <= p[1] <= max(a[1], b[1])


def _segments_meet(a, b, c, d) -> bool:
    d1, d2, d3, d4 = _cross(c, d, a), _cross(c, d, b), _cross(a, b, c), _cross(a, b, d)
    if ((d1 > 0) != (d2 > 0)) and d1 != 0 and d2 != 0 and ((d3 > 0) != (d4 > 0)) and d3 != 0 and d4 != 0:
        return True
    return _on_segment(a, c, d) or _on_segment(b, c, d) or _on_segment(c, a, b) or _on_segment(d, a, b)


def _is_simple(points) -> bool:
    """Exact test on integer vertices: a simple polygon with positive area (straight 180-degree corners allowed)."""
    n = len(points)
    if len(set(points)) != n:
        return False
    for i in range(n):  # neighbouring edges must not fold back along each other
        before, vertex, after = points[i - 1], points[i], points[(i + 1) % n]
        same_way = (before[0] - vertex[0]) * (after[0] - vertex[0]) + (before[1] - vertex[1]) * (after[1] - vertex[1]) > 0
        if _cross(vertex, before, after) == 0 and same_way:
            return False
    edges = [(points[i], points[(i + 1) % n]) for i in range(n)]
    for i in range(n):
        for j in range(i + 2, n):
            if not (i == 0 and j == n - 1) and _segments_meet(*edges[i], *edges[j]):
                return False
    return _shoelace(points) != 0


def _shoelace(points) -> Fraction:
    n = len(points)
    return Fraction(sum(points[i][0] * points[(i + 1) % n][1] - points[(i + 1) % n][0] * points[i][1] for i in range(n)), 2)


def _segment_distance2(p, a, b) -> Fraction:
    dx, dy = b[0] - a[0], b[1] - a[1]
    t = Fraction((p[0] - a[0]) * dx + (p[1] - a[1]) * dy, 1) / (dx * dx + dy * dy)
    t = min(Fraction(1), max(Fraction(0), t))
    qx, qy = a[0] + t * dx, a[1] + t * dy
    return (p[0] - qx) ** 2 + (p[1] - qy) ** 2


def _inside(p, points) -> bool:
    inside = False
    n = len(points)
    for i in range(n):
        (x0, y0), (x1, y1) = points[i], points[(i + 1) % n]
        if (y0 > p[1]) != (y1 > p[1]) and p[0] < x0 + (p[1] - y0) * Fraction(x1 - x0) / (y1 - y0):
            inside = not inside
    return inside


def _expected_region(points, holes) -> Fraction | None:
    """Exact area in grid units when the profile is one clean region, else None."""
    if not _is_simple(points):
        return None
    for center, radius in holes:
        if not _inside(center, points):
            return None
        if any(_segment_distance2(center, points[i], points[(i + 1) % len(points)]) <= radius**2 for i in range(len(points))):
            return None
    for i in range(len(holes)):
        for j in range(i + 1, len(holes)):
            (c1, r1), (c2, r2) = holes[i], holes[j]
            if (c1[0] - c2[0]) ** 2 + (c1[1] - c2[1]) ** 2 <= (r1 + r2) ** 2:
                return None
    return abs(_shoelace(points))


half_integers = st.integers(0, 6).map(lambda v: Fraction(2 * v + 1, 2))


@st.composite
def grid_profiles(draw):
    """A polygon on a 7 x 7 grid (star-shaped around its centroid half the time, so often simple) and up to two circles."""
    corners = st.tuples(st.integers(0, 6), st.integers(0, 6))
    if draw(st.booleans()):
        points = draw(st.lists(corners, min_size=3, max_size=8))
    else:
        points = draw(st.lists(corners, min_size=3, max_size=8, unique=True))
        cx, cy = sum(x for x, _ in points) / len(points), sum(y for _, y in points) / len(points)
        points.sort(key=lambda p: math.atan2(p[1] - cy, p[0] - cx))
    holes = draw(
        st.lists(
            st.tuples(
                st.tuples(half_integers, half_integers),
                st.sampled_from([Fraction(1, 5), Fraction(1, 2), Fraction(7, 10), Fraction(1), Fraction(3, 2)]),
            ),
            max_size=2,
        )
    )
    order = draw(st.permutations(range(len(points))))
    flips = draw(st.lists(st.booleans(), min_size=len(points), max_size=len(points)))
    loop_order = draw(st.permutations(range(1 + len(holes))))
    plane = draw(st.sampled_from(range(len(PLANES))))
    depth = draw(st.sampled_from([0.01, -0.005, 0.02]))
    return points, holes, order, flips, loop_order, plane, depth


@fuzz_settings("_prop_grid_polygons")
@given(grid_profiles())
def _prop_grid_polygons(profile):
    _count("_prop_grid_polygons")
    points, holes, order, flips, loop_order, plane, depth = profile
    edges = [(points[i], points[(i + 1) % len(points)]) for i in range(len(points))]
    outer = []
    for index in order:  # DeepCAD lists a loop's curves in any order and direction
        a, b = edges[index]
        a, b = (b, a) if flips[index] else (a, b)
        outer.append(line((a[0] * GRID, a[1] * GRID), (b[0] * GRID, b[1] * GRID)))
    loops = [outer] + [[circle((float(c[0]) * GRID, float(c[1]) * GRID), float(r) * GRID)] for c, r in holes]
    loops = [loops[i] for i in loop_order]
    report = check_report(to_bytes(one_extrude(loops, sketch=PLANES[plane], depth=depth)))
    region = _expected_region(points, holes)
    if region is None:
        assert not report.valid, "a broken profile was accepted"
        assert report.reason_code in GEOMETRY_CODES, report.reason
        return
    assert report.valid, report.reason
    area = float(region) * GRID**2 - sum(math.pi * float(r) ** 2 * GRID**2 for _, r in holes)
    assert report.volume == pytest.approx(area * abs(depth), rel=1e-7, abs=0.0)


def test_grid_polygons_with_holes_fuzz():
    run_property(_prop_grid_polygons)


# --- exact oracle 2: booleans of grid rectangles ----------------------------------------------


@st.composite
def rectangle_programs(draw):
    steps = []
    for index in range(draw(st.integers(1, 4))):
        x0, x1 = sorted(draw(st.lists(st.integers(0, 4), min_size=2, max_size=2, unique=True)))
        y0, y1 = sorted(draw(st.lists(st.integers(0, 4), min_size=2, max_size=2, unique=True)))
        first_choices = [NEW_BODY, NEW_BODY, NEW_BODY, JOIN, CUT, INTERSECT]  # mostly a body first, sometimes no_body
        steps.append(((x0, y0, x1, y1), draw(st.sampled_from(first_choices if index == 0 else [NEW_BODY, JOIN, CUT, INTERSECT]))))
    return steps


def _cells(rect) -> set:
    x0, y0, x1, y1 = rect
    return {(i, j) for i in range(x0, x1) for j in range(y0, y1)}


@fuzz_settings("_prop_rectangle_booleans")
@given(rectangle_programs())
def _prop_rectangle_booleans(steps):
    _count("_prop_rectangle_booleans")
    depth = 0.01
    data = model(*[([rectangle(*(v * GRID for v in rect))], {"operation": op, "depth": depth}, {}) for rect, op in steps])
    report = check_report(to_bytes(data))
    body = None
    for rect, operation in steps:
        if operation in (NEW_BODY, JOIN):
            body = (body or set()) | _cells(rect)
        elif body is None:
            assert report.reason_code == "no_body", report
            return
        else:
            body = body - _cells(rect) if operation == CUT else body & _cells(rect)
    if not body:
        assert report.reason_code == "no_solid", report
        return
    assert report.valid, report.reason
    assert report.volume == pytest.approx(len(body) * GRID**2 * depth, rel=1e-7, abs=0.0)
    low = (min(i for i, _ in body) * GRID, min(j for _, j in body) * GRID, 0.0)
    high = ((max(i for i, _ in body) + 1) * GRID, (max(j for _, j in body) + 1) * GRID, depth)
    assert report.bbox_min == pytest.approx(low, abs=1e-9) and report.bbox_max == pytest.approx(high, abs=1e-9)


def test_rectangle_booleans_fuzz():
    run_property(_prop_rectangle_booleans)


def test_fuzz_total_is_at_least_ten_thousand():
    assert sum(EXAMPLES.values()) == 11_300  # the total the module docstring states
    assert all(name in globals() for name in EXAMPLES)
