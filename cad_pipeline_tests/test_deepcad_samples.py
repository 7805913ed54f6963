"""Reconstruction semantics on real DeepCAD models against an independent reconstruction (expected.json)."""

import json
import math

import pytest

from cad_pipeline.cad.deepcad_json import read_file
from cad_pipeline.cad.inspect import inspect_file
from cad_pipeline.cad.sequence import Arc, Circle, ExtentType, Operation
from cad_pipeline_tests.conftest import REAL_SAMPLES

EXPECTED = json.loads((REAL_SAMPLES / "expected.json").read_text())["models"]
VALID = sorted(name for name, facts in EXPECTED.items() if facts["valid"])


def _bbox_error(low, high, expected_low, expected_high) -> float:
    diagonal = math.dist(expected_low, expected_high)
    return max(max(abs(a - b) for a, b in zip(low, expected_low)), max(abs(a - b) for a, b in zip(high, expected_high))) / diagonal


@pytest.mark.parametrize("name", VALID)
def test_valid_sample_matches_independent_reconstruction(name):
    facts = EXPECTED[name]
    report = inspect_file(REAL_SAMPLES / name)
    assert report.valid, report.reason
    assert report.id == name.removesuffix(".json")
    assert report.n_extrudes == facts["n_extrudes"]
    assert report.n_curves == facts["n_curves"]
    assert report.volume == pytest.approx(facts["volume"], rel=1e-6)
    assert report.area == pytest.approx(facts["area"], rel=1e-6)
    assert _bbox_error(report.bbox_min, report.bbox_max, facts["bbox_min"], facts["bbox_max"]) < 1e-6


@pytest.mark.parametrize("name", [name for name in VALID if EXPECTED[name]["json_bbox_agrees"]])
def test_stated_bounding_box_matches_built_solid(name):
    report = inspect_file(REAL_SAMPLES / name)
    stated_low, stated_high = read_file(REAL_SAMPLES / name).stated_bbox
    assert _bbox_error(report.bbox_min, report.bbox_max, stated_low, stated_high) < 1e-6


def test_empty_profiles_are_rejected_with_their_reason():
    report = inspect_file(REAL_SAMPLES / "00000175.json")
    assert not report.valid
    assert report.reason_code == "empty_profiles"
    assert "profile" in report.reason and "empty" in report.reason
    assert report.volume is None and report.bbox_min is None


def test_sequence_order_wins_over_entity_order():
    """00005082 lists its cut before the new body among entities; `sequence` puts the body first."""
    operations = [extrude.operation for extrude in read_file(REAL_SAMPLES / "00005082.json").extrudes]
    assert operations[0] is Operation.NEW_BODY
    assert Operation.CUT in operations[1:]


def test_symmetric_join_cut_and_unused_sketch():
    """00000172: symmetric extents are half-depths applied both ways; a trailing sketch is ignored."""
    sequence = read_file(REAL_SAMPLES / "00000172.json")
    assert [e.extent_type for e in sequence.extrudes].count(ExtentType.SYMMETRIC) >= 1
    assert {e.operation for e in sequence.extrudes} >= {Operation.JOIN, Operation.CUT}
    symmetric = next(e for e in sequence.extrudes if e.extent_type is ExtentType.SYMMETRIC)
    low, high = symmetric.depth_interval()
    assert low == -high == -abs(symmetric.extent_one)


def test_merged_circle_and_split_extrudes():
    """00001616: nine extrudes after splitting, one circle merged from arcs (a '+'-joined curve id)."""
    sequence = read_file(REAL_SAMPLES / "00001616.json")
    assert len(sequence.extrudes) == 9
    assert any(isinstance(curve, Circle) for e in sequence.extrudes for loop in e.profile.loops for curve in loop.curves)


def test_loops_are_closed_outer_ccw_holes_cw():
    from cad_pipeline.cad.loops import signed_area

    for name in VALID:
        for extrude in read_file(REAL_SAMPLES / name).extrudes:
            outer, *holes = extrude.profile.loops
            assert signed_area(outer) > 0, name
            for hole in holes:
                if not isinstance(hole.curves[0], Circle):
                    assert signed_area(hole) < 0, name
            for loop in extrude.profile.loops:
                for current, following in zip(loop.curves, loop.curves[1:] + loop.curves[:1]):
                    if not isinstance(current, Circle):
                        assert current.end == following.start, name


def test_arcs_pass_through_the_reference_vector_sweep():
    """Every arc point lies on its circle (real files carry radii to about 2e-6 relative)."""
    arcs = [
        curve
        for name in VALID
        for extrude in read_file(REAL_SAMPLES / name).extrudes
        for loop in extrude.profile.loops
        for curve in loop.curves
        if isinstance(curve, Arc)
    ]
    assert len(arcs) >= 10
    for arc in arcs:
        for point in (arc.start, arc.mid, arc.end):
            assert math.dist(point, arc.center) == pytest.approx(arc.radius, rel=1e-5)
