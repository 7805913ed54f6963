"""One answer scored against its model: every metric, and invalid answers counted without running anything."""

import pytest

from cad_pipeline.cad.build import build_solid
from cad_pipeline.cad.deepcad_json import read_file
from cad_pipeline.cad.openecad.interpreter import interpret
from cad_pipeline.cad.openecad.writer import write_code
from cad_pipeline.evaluate.geometry import cad_recode_chamfer, deepcad_chamfer
from cad_pipeline.evaluate.score import score_code
from cad_pipeline_tests.conftest import REAL_SAMPLES

TRUTH = read_file(REAL_SAMPLES / "00000330.json")
TRUTH_SOLID = build_solid(TRUTH)
TRUTH_CODE = write_code(TRUTH)


def score(code):
    return score_code("00000330", TRUTH, TRUTH_SOLID, TRUTH_CODE, code)


def test_the_truths_own_code_scores_perfectly():
    result = score(TRUTH_CODE)
    assert result.valid and result.failure is None
    assert result.command_accuracy == 1.0 and result.parameter_accuracy == 1.0
    assert result.chamfer_deepcad_paired < 1e-10 and result.chamfer_cad_recode_paired < 1e-10
    box = TRUTH.stated_bbox
    assert result.chamfer_deepcad == pytest.approx(deepcad_chamfer(TRUTH_SOLID, TRUTH_SOLID, truth_bbox=box), rel=1e-6)
    assert result.chamfer_cad_recode == pytest.approx(cad_recode_chamfer(TRUTH_SOLID, TRUTH_SOLID), rel=1e-6)
    assert result.chamfer_deepcad > 1e-5, "drawn independently as DeepCAD does, a perfect answer scores the sampling floor"
    assert result.iou == pytest.approx(1.0, abs=1e-5)
    assert result.curve_accuracy == 100.0 and result.loop_accuracy == 100.0


def test_a_moved_first_sketch_degrades_the_geometric_scores():
    moved = TRUTH_CODE.replace("origin= [0., 0., 0.]", "origin= [5., 0., 0.]", 1)
    assert moved != TRUTH_CODE
    result = score(moved)
    assert result.valid and result.iou < 0.99 and result.chamfer_deepcad_paired > 1e-5
    assert result.command_accuracy == 1.0 and result.curve_accuracy == 100.0  # same commands, other numbers


def test_a_truncated_answer_loses_its_later_extrudes():
    first_extrude = TRUTH_CODE[: TRUTH_CODE.index("SketchPlane1")]
    result = score(first_extrude)
    assert result.valid and result.command_accuracy < 1.0 and result.iou < 1.0 and result.loop_accuracy < 100.0


def test_invalid_answers_are_counted_with_their_reason_and_nothing_runs(tmp_path):
    sentinel = tmp_path / "ran"
    hostile = score(f'import os\nos.system("touch {sentinel}")\n')
    assert not hostile.valid and hostile.failure.startswith("code_rejected: line 1") and not sentinel.exists()
    assert hostile.iou is None and hostile.command_accuracy is None
    assert score(None).failure.startswith("no_code")
    cut_only = TRUTH_CODE.replace("operation= 0", "operation= 2", 1)  # the first extrude cuts before any body
    assert score(cut_only).failure.startswith("no_solid")


def box_extrude(index, corner, width, depth, height, operation=0):
    """OpenECAD code of extrude `index`: a width x depth rectangle in the plane z = corner[2] (millimetres), its
    corner at corner[:2], extruded `height` along +z, as the writer lays code out."""
    x0, y0, z0 = corner
    points = [(x0, y0), (x0 + width, y0), (x0 + width, y0 + depth), (x0, y0 + depth)]
    lines = [
        f"Line{index}_0_{k} = add_line(start= [{start[0]}, {start[1]}], end= [{end[0]}, {end[1]}])"
        for k, (start, end) in enumerate(zip(points, points[1:] + points[:1]))
    ]
    return "\n".join(
        [
            f"SketchPlane{index} = add_sketchplane(",
            f"\torigin= [0., 0., {z0}], normal= [0., 0., 1.], x_axis= [1., 0., 0.])",
            f"Loops{index} = []",
            f"Curves{index}_0 = []",
            *lines,
            f"Loop{index}_0 = add_loop(Curves{index}_0)",
            f"Profile{index} = add_profile(Loops{index})",
            f"Sketch{index} = add_sketch(sketch_plane= SketchPlane{index}, profile= Profile{index})",
            f"Extrude{index} = add_extrude(sketch= Sketch{index},",
            f"\toperation= {operation}, type= 0, extent_one= {height}, extent_two= 0.)",
        ]
    ) + "\n"


def score_against(truth_code, code):
    truth = interpret(truth_code, "hand_made")
    return score_code("hand_made", truth, build_solid(truth), truth_code, code)


CUBE = box_extrude(0, (0.0, 0.0, 0.0), 10.0, 10.0, 10.0)
"""A 10 mm cube with a corner at the origin: every overlap below has a volume computed by hand."""


def test_a_cube_moved_a_quarter_of_its_width_overlaps_by_three_fifths():
    """Intersection 7.5 x 10 x 10 over union 12.5 x 10 x 10 = 0.6; only the Ext row's p_x moves on the grid."""
    result = score_against(CUBE, box_extrude(0, (2.5, 0.0, 0.0), 10.0, 10.0, 10.0))
    assert result.valid and result.iou == pytest.approx(0.6, abs=1e-6)
    assert result.chamfer_deepcad_paired > 1e-4 and result.chamfer_cad_recode_paired > 1e-4
    cube = build_solid(interpret(CUBE, "cube"))
    assert result.chamfer_deepcad > deepcad_chamfer(cube, cube), "the shift shows above the sampling floor"
    assert result.command_accuracy == 1.0 and result.curve_accuracy == 100.0 and result.loop_accuracy == 100.0
    # 19 scored arguments: 4 lines x (x, y), sketch-relative so unchanged, and the Ext row's 11, of which only
    # p_x moves (128 -> 152 on the grid of the cube's 0.75 / 10 mm frame).
    assert result.parameter_accuracy == pytest.approx(18 / 19)


def test_a_cube_scaled_twice_about_its_corner_overlaps_by_an_eighth():
    """The truth lies inside the prediction: intersection 10^3 over union 20^3."""
    result = score_against(CUBE, box_extrude(0, (0.0, 0.0, 0.0), 20.0, 20.0, 20.0))
    assert result.valid and result.iou == pytest.approx(1 / 8, abs=1e-6)
    assert result.chamfer_deepcad_paired > 1e-4 and result.command_accuracy == 1.0
    # Of the 19 scored arguments only the sketch size s (96 -> 192) and extent e1 (224 -> clipped 255) move:
    # the sketch is scaled to the grid on its own, and the corner (the Ext position) stays put.
    assert result.parameter_accuracy == pytest.approx(17 / 19)


def test_an_answer_stopping_after_the_first_of_two_extrudes_scores_that_share():
    """Truth: the cube (1,000 mm^3) with a 10 x 5 x 30 block (1,500 mm^3) joined on top; the answer is the cube."""
    truth_code = CUBE + box_extrude(1, (0.0, 0.0, 10.0), 10.0, 5.0, 30.0, operation=1)
    result = score_against(truth_code, CUBE)
    assert result.valid and result.iou == pytest.approx(1000 / 2500, abs=1e-6)
    assert result.loop_accuracy == 50.0 and result.curve_accuracy == 50.0  # 1 of 2 loops, 4 of 8 lines
    # Truth vectors before EOS: [SOL, LINE x4, EXT] twice, 12 positions; the answer's 6 rows match the first half
    # and its EOS (then EOS padding) stands against the second extrude's 6 rows.
    assert result.command_accuracy == 6 / 12
    assert result.parameter_accuracy == 1.0  # every argument of the matched first extrude is right
