"""Geometric scores on solids whose true values are known by hand."""

import pytest
from OCP.BRepPrimAPI import BRepPrimAPI_MakeBox
from OCP.gp import gp_Pnt

from cad_pipeline.cad.build import build_solid
from cad_pipeline.cad.deepcad_json import read_file
from cad_pipeline.cad.openecad.interpreter import interpret
from cad_pipeline.cad.openecad.writer import write_code
from cad_pipeline.evaluate.geometry import cad_recode_chamfer, deepcad_chamfer, iou
from cad_pipeline_tests.conftest import REAL_SAMPLES


def box(x0, y0, z0, x1, y1, z1):
    return BRepPrimAPI_MakeBox(gp_Pnt(x0, y0, z0), gp_Pnt(x1, y1, z1)).Shape()


CUBE = box(0, 0, 0, 0.1, 0.1, 0.1)


def test_a_solid_scored_against_itself_is_perfect():
    assert iou(CUBE, CUBE) == pytest.approx(1.0, abs=1e-9)
    assert deepcad_chamfer(CUBE, CUBE, paired=True) == 0.0 and cad_recode_chamfer(CUBE, CUBE, paired=True) == 0.0


def test_independent_draws_leave_the_sampling_floor_and_fewer_points_a_higher_one():
    """As the papers sample: the same solid scores the floor of two independent clouds, which 8,192 points lower."""
    deepcad, cad_recode = deepcad_chamfer(CUBE, CUBE), cad_recode_chamfer(CUBE, CUBE)
    assert deepcad > 0 and cad_recode > 0
    in_metres = deepcad * (0.1 / 0.75) ** 2, cad_recode * 0.1**2  # DeepCAD's frame scales this cube by 7.5, CAD-Recode's by 10
    assert in_metres[0] > 2 * in_metres[1], "2,000 points lie further apart than 8,192"
    assert deepcad_chamfer(CUBE, CUBE, seed=3) != deepcad


def test_iou_of_translated_scaled_and_truncated_predictions():
    assert iou(CUBE, box(0.025, 0, 0, 0.125, 0.1, 0.1)) == pytest.approx(0.075 / 0.125, rel=1e-6)  # shifted a quarter
    assert iou(CUBE, box(0, 0, 0, 0.2, 0.2, 0.2)) == pytest.approx(1 / 8, rel=1e-6)  # scaled twice about a corner
    assert iou(CUBE, box(0, 0, 0, 0.1, 0.1, 0.05)) == pytest.approx(0.5, rel=1e-6)  # cut to half its height
    assert iou(CUBE, box(0.2, 0, 0, 0.3, 0.1, 0.1)) == 0.0


def test_chamfer_grows_with_the_square_of_a_small_shift():
    """Both clouds are drawn alike, so each predicted point is its true partner moved by t: while t is far below the
    points' spacing (~0.04 in DeepCAD's frame), each nearest distance is t and the distance grows as t squared."""
    small, double = (deepcad_chamfer(CUBE, box(t, 0, 0, 0.1 + t, 0.1, 0.1), paired=True) for t in (0.0005, 0.001))
    assert small > 0 and double / small == pytest.approx(4.0, rel=0.1)
    frame_scale = 0.75 / 0.1  # DeepCAD's frame for this cube
    assert small <= 2 * (0.0005 * frame_scale) ** 2 * (1 + 1e-9)  # every point's partner is exactly t away
    assert cad_recode_chamfer(CUBE, box(0.004, 0, 0, 0.104, 0.1, 0.1), paired=True) > cad_recode_chamfer(CUBE, box(0.002, 0, 0, 0.102, 0.1, 0.1), paired=True)


def test_a_real_models_code_scores_as_the_model_within_rounding():
    truth = build_solid(read_file(REAL_SAMPLES / "00000330.json"))
    predicted = build_solid(interpret(write_code(read_file(REAL_SAMPLES / "00000330.json"))))
    assert iou(truth, predicted) == pytest.approx(1.0, abs=1e-5)
    assert deepcad_chamfer(truth, predicted, paired=True) < 1e-6
