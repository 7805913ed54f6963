"""DeepCAD command vectors and ACC_cmd / ACC_param, by hand and against DeepCAD's own cadlib output."""

import hashlib
import json

import numpy as np
import pytest

from cad_pipeline.cad.deepcad_json import read_file
from cad_pipeline.cad.openecad.interpreter import interpret
from cad_pipeline.cad.openecad.writer import write_code
from cad_pipeline.cad.sequence import (
    Arc,
    CadSequence,
    Circle,
    ExtentType,
    Extrude,
    Line,
    Loop,
    Operation,
    Profile,
    SketchPlane,
)
from cad_pipeline.evaluate.deepcad_vectors import command_accuracy, command_vectors, parameter_accuracy
from cad_pipeline_tests.conftest import REAL_SAMPLES

EXPECTED = json.loads((REAL_SAMPLES / "expected.json").read_text())["models"]
VALID = sorted(name for name, facts in EXPECTED.items() if facts["valid"])

L, A, C, EOS, SOL, EXT = range(6)
_ = -1
XY = SketchPlane(origin=(0.0, 0.0, 0.03), x_axis=(1.0, 0.0, 0.0), y_axis=(0.0, 1.0, 0.0), normal=(0.0, 0.0, 1.0))


def sequence(plane, loops, bbox, operation=Operation.NEW_BODY, extent_type=ExtentType.ONE_SIDE, extent_one=0.06):
    extrude = Extrude(plane, Profile(tuple(Loop(tuple(curves)) for curves in loops)), operation, extent_type, extent_one, 0.0, "test")
    return CadSequence("test", (extrude,), bbox)


def curve_row(command, x, y, alpha=_, flag=_, radius=_):
    return [command, x, y, alpha, flag, radius] + [_] * 11


def marker(command):
    return [command] + [_] * 16


def ext_row(theta, phi, gamma, px, py, pz, size, e1, e2, operation, extent_type):
    return [EXT] + [_] * 5 + [theta, phi, gamma, px, py, pz, size, e1, e2, operation, extent_type]


# A 0.1 m square at (0.05..0.15, 0.02..0.12) on z = 0.03, extruded 0.06 up: the box's largest |coordinate| is
# 0.15, so the model scale is 0.75 / 0.15 = 5. The profile starts at its left-most, lowest corner (0.05, 0.02),
# which goes to grid (128, 128); its size 0.1 goes to 95 steps, so the far corners land on 128 + 95 = 223.
SQUARE = sequence(
    XY,
    [[Line((0.05, 0.02), (0.15, 0.02)), Line((0.15, 0.02), (0.15, 0.12)), Line((0.15, 0.12), (0.05, 0.12)), Line((0.05, 0.12), (0.05, 0.02))]],
    ((0.05, 0.02, 0.03), (0.15, 0.12, 0.09)),
)
SQUARE_ROWS = [
    marker(SOL),
    curve_row(L, 223, 128),
    curve_row(L, 223, 223),
    curve_row(L, 128, 223),
    curve_row(L, 128, 128),
    # normal +z: theta = phi = gamma = 0 -> 128. Start (0.05, 0.02, 0.03) * 5 = (0.25, 0.1, 0.15) -> (x + 1) / 2 * 256
    # = 160, 140.8 -> 141, 147.2 -> 147. Size 0.1 * 5 = 0.5 -> 0.5 / 2 * 256 = 64. Extent 0.3 -> 166.4 -> 166,
    # extent_two 0 -> 128, NewBody 0, OneSide 0.
    ext_row(128, 128, 128, 160, 141, 147, 64, 166, 128, 0, 0),
    marker(EOS),
]


def test_square_rows_by_hand():
    assert command_vectors(SQUARE).tolist() == SQUARE_ROWS


def test_loop_starts_at_left_most_lowest_point_whatever_the_stored_start_and_direction():
    curves = SQUARE.extrudes[0].profile.loops[0].curves
    clockwise_from_top_right = tuple(curve.reversed() for curve in reversed(curves[2:] + curves[:2]))
    turned = sequence(XY, [clockwise_from_top_right], SQUARE.stated_bbox)
    assert command_vectors(turned).tolist() == SQUARE_ROWS


def test_circle_on_a_side_plane():
    # Normal +x with x axis +y: theta = pi/2 -> 192, phi = atan(0) -> 128, gamma = +pi/2 -> 192.
    plane = SketchPlane(origin=(0.0, 0.0, 0.0), x_axis=(0.0, 1.0, 0.0), y_axis=(0.0, 0.0, 1.0), normal=(1.0, 0.0, 0.0))
    circle = sequence(
        plane, [[Circle((0.0, 0.0), 0.05)]], ((-0.02, -0.05, -0.05), (0.02, 0.05, 0.05)),
        extent_type=ExtentType.SYMMETRIC, extent_one=0.02,
    )
    # The start point is the circle's left-most point (-0.05, 0); the profile size is the diameter 0.1, so the
    # centre and the radius are 47.5 steps, rounded half to even to 48. Scale 0.75 / 0.05 = 15: the start
    # (0, -0.05, 0) in the world -> (128, 32, 128); size 1.5 -> 192; extent 0.3 -> 166.
    assert command_vectors(circle).tolist() == [
        marker(SOL),
        curve_row(C, 176, 128, radius=48),
        ext_row(192, 128, 192, 128, 32, 128, 192, 166, 128, 0, 1),
        marker(EOS),
    ]


def test_arc_bulging_outwards_is_counter_clockwise():
    half_disc = sequence(
        XY,
        [[Line((-0.1, 0.0), (0.1, 0.0)), Arc((0.1, 0.0), (0.0, 0.1), (-0.1, 0.0), (0.0, 0.0), 0.1)]],
        ((-0.1, -0.1, 0.0), (0.1, 0.1, 0.1)),
    )
    rows = command_vectors(half_disc).tolist()
    # Size 0.2 (start (-0.1, 0) to the far end), 475 steps a metre; half a turn is 128 of 256.
    assert rows[:3] == [marker(SOL), curve_row(L, 223, 128), curve_row(A, 128, 128, alpha=128, flag=1)]


def test_arc_bulging_inwards_is_clockwise():
    notched = sequence(
        XY,
        [[
            Line((-0.1, 0.0), (0.1, 0.0)),
            Line((0.1, 0.0), (0.1, 0.2)),
            Arc((0.1, 0.2), (0.0, 0.1), (-0.1, 0.2), (0.0, 0.2), 0.1),
            Line((-0.1, 0.2), (-0.1, 0.0)),
        ]],
        ((-0.1, 0.0, 0.0), (0.1, 0.2, 0.1)),
    )
    rows = command_vectors(notched).tolist()
    assert rows[:5] == [
        marker(SOL),
        curve_row(L, 223, 128),
        curve_row(L, 223, 223),
        curve_row(A, 128, 223, alpha=128, flag=0),
        curve_row(L, 128, 128),
    ]



def test_nearly_flat_arc_takes_deepcad_quantized_flag_and_minimum_sweep():
    # Bulges 0.1 mm inwards (clockwise), under half a grid step: DeepCAD measures the turn on the quantized
    # points, which are then collinear, and its `>= 0` calls that counter-clockwise. Its sweep (0.16 steps)
    # rounds to 0 and is raised to DeepCAD's minimum of 1. The same loop built from DeepCAD's cadlib Line/Arc
    # (Profile.normalize, numericalize, to_vector) gives this same row.
    sagitta = 0.0001
    radius = (0.1**2 + sagitta**2) / (2 * sagitta)
    flat = sequence(
        XY,
        [[
            Line((-0.1, 0.0), (0.1, 0.0)),
            Line((0.1, 0.0), (0.1, 0.2)),
            Arc((0.1, 0.2), (0.0, 0.2 - sagitta), (-0.1, 0.2), (0.0, 0.2 - sagitta + radius), radius),
            Line((-0.1, 0.2), (-0.1, 0.0)),
        ]],
        ((-0.1, 0.0, 0.0), (0.1, 0.2, 0.1)),
    )
    assert command_vectors(flat).tolist()[3] == curve_row(A, 128, 223, alpha=1, flag=1)

def test_prediction_without_a_box_uses_the_given_normalization():
    unboxed = CadSequence("prediction", SQUARE.extrudes, None)
    with pytest.raises(ValueError, match="normalize_to"):
        command_vectors(unboxed)
    assert command_vectors(unboxed, normalize_to=SQUARE.stated_bbox).tolist() == SQUARE_ROWS


# ---- accuracy -------------------------------------------------------------------------------------------

TRUTH = np.array(SQUARE_ROWS)
SCORED_ARGS = 4 * 2 + 11


def test_sequence_against_itself_is_perfect():
    assert command_accuracy(TRUTH, TRUTH) == 1.0
    assert parameter_accuracy(TRUTH, TRUTH) == 1.0


@pytest.mark.parametrize("steps, expected", [(1, 1.0), (-2, 1.0), (3, (SCORED_ARGS - 1) / SCORED_ARGS), (-3, (SCORED_ARGS - 1) / SCORED_ARGS)])
def test_parameter_tolerance_is_under_three_grid_steps(steps, expected):
    predicted = TRUTH.copy()
    predicted[2, 1] += steps
    assert command_accuracy(predicted, TRUTH) == 1.0
    assert parameter_accuracy(predicted, TRUTH) == pytest.approx(expected)


@pytest.mark.parametrize("column", [-2, -1])
def test_operation_and_extent_type_must_match_exactly(column):
    predicted = TRUTH.copy()
    predicted[5, column] += 1
    assert parameter_accuracy(predicted, TRUTH) == pytest.approx((SCORED_ARGS - 1) / SCORED_ARGS)


def test_arc_flag_must_match_exactly():
    truth = np.array([marker(SOL), curve_row(A, 128, 223, alpha=128, flag=0), ext_row(*[128] * 9, 0, 0), marker(EOS)])
    predicted = truth.copy()
    predicted[1, 4] = 1
    assert parameter_accuracy(predicted, truth) == pytest.approx(14 / 15)


def test_extra_row_is_scored_position_by_position():
    predicted = np.insert(TRUTH, 1, TRUTH[1], axis=0)
    # Truth cut at its EOS has 6 rows; the prediction's first 6 are SOL and five lines, so the Ext is missed.
    assert command_accuracy(predicted, TRUTH) == pytest.approx(5 / 6)
    # The shifted lines keep one coordinate each: (223,128)v(223,223), (223,223)v(128,223), (128,223)v(128,128).
    assert parameter_accuracy(predicted, TRUTH) == pytest.approx(5 / 8)


def test_missing_row_is_scored_position_by_position():
    predicted = np.delete(TRUTH, 4, axis=0)
    assert command_accuracy(predicted, TRUTH) == pytest.approx(4 / 6)
    assert parameter_accuracy(predicted, TRUTH) == 1.0


def test_short_prediction_counts_as_padded_with_eos():
    predicted = TRUTH[:1]
    assert command_accuracy(predicted, TRUTH) == pytest.approx(1 / 6)
    assert parameter_accuracy(predicted, TRUTH) is None


def test_nothing_to_score_gives_none():
    empty = np.array([marker(EOS)])
    assert command_accuracy(TRUTH, empty) is None
    assert parameter_accuracy(TRUTH, empty) is None


# ---- real samples ---------------------------------------------------------------------------------------

# Produced by DeepCAD's own code (ChrisWu1997/DeepCAD HEAD, cadlib/*.py via `git show`, with `np.int` -> `int` and
# the matplotlib imports removed, run on numpy 2.4): CADSequence.from_dict(json); normalize(); numericalize();
# to_vector(pad=False).
DEEPCAD_00000061 = [
    [4, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1],
    [0, 223, 128, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1],
    [0, 223, 223, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1],
    [0, 138, 223, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1],
    [1, 128, 214, 64, 0, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1],
    [0, 128, 128, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1],
    [5, -1, -1, -1, -1, -1, 128, 128, 128, 128, 32, 128, 96, 133, 128, 0, 0],
    [3, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1],
]
DEEPCAD_00000119 = [
    [4, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1],
    [0, 223, 128, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1],
    [0, 223, 223, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1],
    [0, 128, 223, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1],
    [0, 128, 128, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1],
    [5, -1, -1, -1, -1, -1, 192, 64, 192, 128, 128, 128, 38, 224, 128, 0, 0],
    [3, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1],
]
DEEPCAD_00809394 = [
    [4, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1],
    [2, 176, 128, -1, -1, 48, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1],
    [4, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1],
    [2, 176, 128, -1, -1, 17, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1],
    [5, -1, -1, -1, -1, -1, 128, 128, 128, 32, 128, 128, 192, 147, 128, 0, 0],
    [3, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1],
]
# The same run for every valid sample: sha256 of the vector as little-endian int64, first 16 hex digits.
DEEPCAD_FINGERPRINTS = {
    "00000007": "7e970ba2244be3f9",
    "00000061": "c30f0c624eafed49",
    "00000119": "35a8605e0cc7b13a",
    "00000172": "0644b76418b5a518",
    "00000330": "2da02ef970177527",
    "00001010": "716a6b45e3770809",
    "00001616": "5a9f270669c3524b",
    "00003877": "5d5d198ce105eac2",
    "00005082": "08c234e742c59f0c",
    "00633023": "0ccd79c65fdef9df",
    "00809394": "49976feabf8c035f",
}


@pytest.mark.parametrize(
    "name, expected", [("00000061", DEEPCAD_00000061), ("00000119", DEEPCAD_00000119), ("00809394", DEEPCAD_00809394)]
)
def test_matches_deepcad_cadlib_vectors(name, expected):
    assert command_vectors(read_file(REAL_SAMPLES / f"{name}.json")).tolist() == expected


def test_every_valid_sample_has_a_deepcad_fingerprint():
    assert sorted(DEEPCAD_FINGERPRINTS) == [name.removesuffix(".json") for name in VALID]


@pytest.mark.parametrize("name", VALID)
def test_matches_deepcad_cadlib_fingerprint(name):
    vector = command_vectors(read_file(REAL_SAMPLES / name))
    fingerprint = hashlib.sha256(vector.astype("<i8").tobytes()).hexdigest()[:16]
    assert fingerprint == DEEPCAD_FINGERPRINTS[name.removesuffix(".json")]


@pytest.mark.parametrize("name", VALID)
def test_code_round_trip_scores_as_the_direct_encoding(name):
    truth_sequence = read_file(REAL_SAMPLES / name)
    truth = command_vectors(truth_sequence)
    predicted = command_vectors(interpret(write_code(truth_sequence)), normalize_to=truth_sequence.stated_bbox)
    assert command_accuracy(predicted, truth) == 1.0
    assert parameter_accuracy(predicted, truth) >= 0.99
