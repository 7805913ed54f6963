"""One answer scored against its model: every metric, and invalid answers counted without running anything."""

import pytest

from cad_pipeline.cad.build import build_solid
from cad_pipeline.cad.deepcad_json import read_file
from cad_pipeline.cad.openecad.writer import write_code
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
    assert result.chamfer_deepcad < 1e-10 and result.chamfer_cad_recode < 1e-10
    assert result.iou == pytest.approx(1.0, abs=1e-5)
    assert result.curve_accuracy == 100.0 and result.loop_accuracy == 100.0


def test_a_moved_first_sketch_degrades_the_geometric_scores():
    moved = TRUTH_CODE.replace("origin= [0., 0., 0.]", "origin= [5., 0., 0.]", 1)
    assert moved != TRUTH_CODE
    result = score(moved)
    assert result.valid and result.iou < 0.99 and result.chamfer_deepcad > 1e-5
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
