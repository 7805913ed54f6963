"""DeepCAD's 8-bit command vectors for a CadSequence, and the ACC_cmd / ACC_param scores computed on them.

Re-implements DeepCAD `cadlib` (`CADSequence.from_dict` -> `normalize()` -> `numericalize(256)` -> `to_vector()`)
and `evaluation/evaluate_ae_acc.py`, so numbers are comparable with the published ones:

- Loops are put in DeepCAD's order: each loop's curves chained, started at the left-most (then lowest) start
  point and turned mostly counter-clockwise (`Loop.reorder`, shared with the OpenECAD writer), and the loops of a
  profile sorted by their bounding-box minimum, x then y (`Profile.reorder`).
- Each profile is scaled on its own: its start point goes to grid (128, 128) and its `bbox_size` (largest
  distance from the start point to the profile's box) to 95 grid steps. The Ext row carries the 3-D start point
  (`sketch_pos`) and that size, in the sequence frame.
- The sequence frame is the model scaled by 0.75 / max|bounding box| with no translation (`CADSequence.normalize`
  does not centre), then mapped from -1..1 to the 256 grid; the box is `properties.bounding_box` of the JSON.
- Arcs give their sweep alpha (2*pi = 256) and a ccw flag measured on the quantized start, mid and end points,
  as DeepCAD measures it. DeepCAD takes alpha as |end_angle - start_angle| of the JSON, each quantized; this
  module quantizes the geometric sweep, which equals it whenever the JSON start angle is 0 (as in every file
  seen so far).

Differences from DeepCAD, on purpose: vectors are not padded to MAX_TOTAL_LEN (scoring truncates at the first
ground-truth EOS anyway), and models beyond DeepCAD's limits (MAX_N_EXT, MAX_N_LOOPS, MAX_N_CURVES,
MAX_TOTAL_LEN), which DeepCAD drops from its data set, are encoded all the same rather than refused. Values
outside the grid are clipped as DeepCAD clips them instead of failing its extent assertion.
"""

from __future__ import annotations

import math

import numpy as np

from cad_pipeline.cad.openecad.loop_order import CodeCurve, reorder_loop
from cad_pipeline.cad.openecad.numbers import numpy_round
from cad_pipeline.cad.sequence import Arc, CadSequence, Circle, Curve, Extrude, Line, Loop, SketchPlane

LINE, ARC, CIRCLE, EOS, SOL, EXT = range(6)
"""Command codes, in the order of DeepCAD's ALL_COMMANDS."""

N_ARGS = 16
PAD = -1
GRID = 256
NORM_FACTOR = 0.75
"""DeepCAD scales models and sketches to 0.75 of the available range to leave room for augmentation."""

SKETCH_HALF_SPAN = GRID / 2 * NORM_FACTOR - 1
"""Grid steps from the sketch start point (at the grid centre) to the far side of its box: 95."""

TOLERANCE = 3
"""ACC_param counts an argument as right when it is within 2 grid steps (|difference| < 3)."""

ARGS_MASK = np.array(
    [
        [1, 1, 0, 0, 0] + [0] * 11,  # Line: x, y
        [1, 1, 1, 1, 0] + [0] * 11,  # Arc: x, y, alpha, f
        [1, 1, 0, 0, 1] + [0] * 11,  # Circle: x, y, r
        [0] * 16,  # EOS
        [0] * 16,  # SOL
        [0] * 5 + [1] * 11,  # Ext: theta, phi, gamma, p_x, p_y, p_z, s, e1, e2, b, u
    ],
    dtype=bool,
)
"""DeepCAD's CMD_ARGS_MASK: the arguments each command uses, and the only ones ACC_param scores."""

ARC_FLAG_ARG = 3
EXACT_EXT_ARGS = slice(-2, None)
"""Arguments compared exactly rather than within TOLERANCE: the arc's ccw flag, the extrude's operation and
extent type (categories, where 'one step off' is simply wrong)."""


def command_vectors(sequence: CadSequence, normalize_to: tuple | None = None) -> np.ndarray:
    """(N, 17) int array of rows [command, x, y, alpha, f, r, theta, phi, gamma, p_x, p_y, p_z, s, e1, e2, b, u],
    unused arguments -1: per extrude, SOL then the curves of each loop, then one Ext row; EOS at the end.

    The sequence is scaled by its `stated_bbox` unless `normalize_to` gives another (min, max) box. A prediction
    has no stated box, so pass the ground truth's: both are then in the same frame, as DeepCAD's network output
    and its target are, and a prediction is not rewarded or punished for the scale of its own box.
    """
    box = normalize_to if normalize_to is not None else sequence.stated_bbox
    if box is None:
        raise ValueError(f"{sequence.model_id} has no stated bounding box; pass normalize_to (the ground truth's)")
    largest = max(abs(value) for corner in box for value in corner)
    if not largest > 0.0:
        raise ValueError(f"the bounding box {box} has no extent, so the model cannot be normalized")
    scale = NORM_FACTOR / largest
    rows = [row for extrude in sequence.extrudes for row in _extrude_rows(extrude, scale)]
    rows.append(_row(EOS))
    return np.array(rows, dtype=int)


def command_accuracy(predicted: np.ndarray, truth: np.ndarray) -> float | None:
    """ACC_cmd of one model: the share of positions before the truth's first EOS whose command matches.

    None when the truth starts with EOS (DeepCAD's mean over no positions is NaN). Average over models yourself.
    """
    predicted, truth = _aligned(predicted, truth)
    if len(truth) == 0:
        return None
    return float(np.mean(predicted[:, 0] == truth[:, 0]))


def parameter_accuracy(predicted: np.ndarray, truth: np.ndarray) -> float | None:
    """ACC_param of one model: over positions before the truth's first EOS where the command matches and is not
    SOL, the share of that command's arguments within TOLERANCE (flag, operation and extent type exactly).

    None when no argument is scored (no curve or Ext row matched), where DeepCAD's mean would be NaN.
    """
    predicted, truth = _aligned(predicted, truth)
    scores: list[bool] = []
    for out_row, gt_row in zip(predicted, truth):
        command = gt_row[0]
        if command == SOL or out_row[0] != command:
            continue
        right = np.abs(out_row[1:] - gt_row[1:]) < TOLERANCE
        exact = out_row[1:] == gt_row[1:]
        if command == EXT:
            right[EXACT_EXT_ARGS] = exact[EXACT_EXT_ARGS]
        elif command == ARC:
            right[ARC_FLAG_ARG] = exact[ARC_FLAG_ARG]
        scores.extend(right[ARGS_MASK[command]].tolist())
    return float(np.mean(scores)) if scores else None


def _aligned(predicted: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both cut at the truth's first EOS (DeepCAD's test.py), position by position without realignment.

    DeepCAD's network always emits MAX_TOTAL_LEN rows padded with EOS, so a shorter prediction is padded with
    EOS rows here, which then count as wrong commands.
    """
    predicted, truth = np.asarray(predicted, dtype=int), np.asarray(truth, dtype=int)
    ends = np.flatnonzero(truth[:, 0] == EOS)
    length = int(ends[0]) if len(ends) else len(truth)
    missing = max(0, length - len(predicted))
    padded = np.concatenate([predicted.reshape(-1, 1 + N_ARGS), np.tile(_row(EOS), (missing, 1))])
    return padded[:length], truth[:length]


def _row(command: int, arguments: dict[int, int] | None = None) -> np.ndarray:
    row = np.full(1 + N_ARGS, PAD, dtype=int)
    row[0] = command
    for index, value in (arguments or {}).items():
        row[1 + index] = value
    return row


def _extrude_rows(extrude: Extrude, scale: float) -> list[np.ndarray]:
    loops = _deepcad_loops(extrude.profile.loops)
    start = np.array(_start_point(loops[0][0]))
    low, high = _curves_bbox([curve for loop in loops for curve in loop])
    size = float(np.max(np.abs(np.concatenate([high - start, low - start]))))
    to_grid = SKETCH_HALF_SPAN / size

    def grid(point) -> np.ndarray:
        return _quantize((np.asarray(point) - start) * to_grid + GRID / 2)

    rows = []
    for loop in loops:
        rows.append(_row(SOL))
        rows.extend(_curve_row(curve, grid, to_grid) for curve in loop)
    theta, phi, gamma = _quantize((np.array(_plane_angles(extrude.plane)) / math.pi + 1.0) / 2 * GRID)
    position = _quantize((np.array(extrude.plane.to_world(tuple(start))) * scale + 1.0) / 2 * GRID)
    extents = _quantize((np.array([extrude.extent_one, extrude.extent_two]) * scale + 1.0) / 2 * GRID)
    sketch_size = _quantize(size * scale / 2 * GRID)
    ext_args = [theta, phi, gamma, *position, sketch_size, *extents, int(extrude.operation), int(extrude.extent_type)]
    rows.append(_row(EXT, {5 + index: value for index, value in enumerate(ext_args)}))
    return rows


def _curve_row(curve: Curve, grid, to_grid: float) -> np.ndarray:
    if isinstance(curve, Line):
        x, y = grid(curve.end)
        return _row(LINE, {0: x, 1: y})
    if isinstance(curve, Circle):
        x, y = grid(curve.center)
        radius = int(np.clip(np.round(curve.radius * to_grid), 1, GRID - 1))
        return _row(CIRCLE, {0: x, 1: y, 4: radius})
    start, mid, end = grid(curve.start), grid(curve.mid), grid(curve.end)
    alpha = max(int(_quantize(_sweep(curve) / (2 * math.pi) * GRID)), 1)
    to_mid, to_end = mid - start, end - start
    is_ccw = to_mid[0] * to_end[1] - to_mid[1] * to_end[0] >= 0
    return _row(ARC, {0: end[0], 1: end[1], 2: alpha, 3: int(is_ccw)})


def _deepcad_loops(loops: tuple[Loop, ...]) -> list[list[Curve]]:
    """Loops as DeepCAD orders them: curves by `Loop.reorder` (in metres, as DeepCAD runs it on the JSON), loops
    by their rounded bounding-box minimum, x first (`Profile.reorder`; Python's sort is stable like lexsort)."""
    ordered = [[_from_code(code) for code in reorder_loop([_to_code(curve) for curve in loop.curves], autofix=False)]
               for loop in loops]
    if len(ordered) > 1:
        ordered.sort(key=lambda curves: tuple(numpy_round(float(v), 6) for v in _curves_bbox(curves)[0]))
    return ordered


def _to_code(curve: Curve) -> CodeCurve:
    if isinstance(curve, Line):
        return CodeCurve("line", curve.start, curve.end)
    if isinstance(curve, Arc):
        return CodeCurve("arc", curve.start, curve.end, mid=curve.mid, center=curve.center, radius=curve.radius)
    return CodeCurve.circle(curve.center, curve.radius)


def _from_code(code: CodeCurve) -> Curve:
    if code.kind == "line":
        return Line(code.start, code.end)
    if code.kind == "arc":
        return Arc(code.start, code.mid, code.end, code.center, code.radius)
    return Circle(code.center, code.radius)


def _start_point(curve: Curve) -> tuple[float, float]:
    """DeepCAD's start of a circle is its left-most point."""
    if isinstance(curve, Circle):
        return curve.center[0] - curve.radius, curve.center[1]
    return curve.start


def _curves_bbox(curves: list[Curve]) -> tuple[np.ndarray, np.ndarray]:
    corners = np.array([corner for curve in curves for corner in curve.bbox()], dtype=float)
    return corners.min(axis=0), corners.max(axis=0)


def _sweep(arc: Arc) -> float:
    """Angle the arc turns through, 0..2*pi: twice the angle from its start to its mid point about the centre."""
    to_start = np.subtract(arc.start, arc.center)
    to_mid = np.subtract(arc.mid, arc.center)
    cross = to_start[0] * to_mid[1] - to_start[1] * to_mid[0]
    return 2.0 * math.atan2(abs(cross), float(np.dot(to_start, to_mid)))


def _plane_angles(plane: SketchPlane) -> tuple[float, float, float]:
    """DeepCAD's `polar_parameterization`: normal as (theta, phi) with phi from arctan (not arctan2, so normals
    with negative x share angles with their mirror), then gamma turning the reference x axis onto the plane's."""
    normal = np.round(np.array(plane.normal, dtype=float), 6)
    theta = math.acos(normal[2] / np.linalg.norm(normal))
    phi = math.atan(normal[1] / (normal[0] + 1e-15))
    reference_x = np.array([math.cos(phi) * math.cos(theta), math.sin(phi) * math.cos(theta), -math.sin(theta)])
    x_axis = np.array(plane.x_axis, dtype=float)
    gamma = math.acos(np.round(np.dot(x_axis, reference_x), 6))
    if np.dot(np.cross(reference_x, x_axis), np.array(plane.normal, dtype=float)) < 0:
        gamma = -gamma
    return theta, phi, gamma


def _quantize(values) -> np.ndarray:
    """Round half to even and clip to the grid, as DeepCAD's `numericalize` does."""
    return np.clip(np.round(values), 0, GRID - 1).astype(int)
