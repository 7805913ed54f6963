"""CadSequence -> OpenECAD v2 code, written the way OpenECAD's converter writes its training answers.

Millimetres; curves in each sketch plane's own 2-D frame; every number rounded to 4 decimals and
printed as numpy prints it; loops in DeepCAD's order (outer loop first, every loop counter-
clockwise from its left-most point); curves and loops appended implicitly to the latest
`Curves`/`Loops` list; a sketch plane stated against an earlier extrude whenever the reference
rules allow (see `planes.choose_reference`). Every parameter is written out.

A zero is always printed unsigned: `-0.` carries no geometry, only noise for a model to learn.
"""

from __future__ import annotations

from cad_pipeline.cad.openecad.loop_order import CodeCurve, reorder_loop
from cad_pipeline.cad.openecad.numbers import format_angle, format_array, format_scalar, numpy_round
from cad_pipeline.cad.openecad.planes import Frame, Reference, ReferenceCandidate, ReferenceLine, choose_reference
from cad_pipeline.cad.sequence import Arc, CadSequence, Circle, Curve, Extrude, Line, Profile, SketchPlane

MM_PER_M = 1000.0
ANGLE_RESOLUTION = 5e-7
"""Radians below which an angle is left out: it would print as 0 at the 6 decimals angles are written with."""


def write_code(sequence: CadSequence) -> str:
    parts: list[str] = []
    candidates: list[ReferenceCandidate] = []
    for index, extrude in enumerate(sequence.extrudes):
        frame = _frame_in_mm(extrude.plane)
        parts.append(_plane_code(index, frame, choose_reference(frame, candidates)))
        parts.append(f"Loops{index} = []\n")
        lines: list[ReferenceLine] = []
        for loop_index, loop in enumerate(_code_loops(extrude.profile)):
            parts.append(f"Curves{index}_{loop_index} = []\n")
            written = [_rounded(curve) for curve in loop]
            for curve_index, curve in enumerate(written):
                parts.append(_curve_code(f"{index}_{loop_index}_{curve_index}", curve))
            parts.append(f"Loop{index}_{loop_index} = add_loop(Curves{index}_{loop_index})\n")
            lines.extend(_lines_as_read(written, f"{index}_{loop_index}"))
        parts.append(f"Profile{index} = add_profile(Loops{index})\n")
        parts.append(f"Sketch{index} = add_sketch(sketch_plane= SketchPlane{index}, profile= Profile{index})\n")
        parts.append(_extrude_code(index, extrude))
        candidates.append(
            ReferenceCandidate(frame, extrude.extent_one * MM_PER_M, extrude.extent_two * MM_PER_M, tuple(lines))
        )
    return "".join(parts)


def _frame_in_mm(plane: SketchPlane) -> Frame:
    return Frame(
        origin=tuple(v * MM_PER_M for v in plane.origin), x_axis=plane.x_axis, y_axis=plane.y_axis, normal=plane.normal
    )


def _code_loops(profile: Profile) -> list[list[CodeCurve]]:
    """Each loop counter-clockwise (holes are stored clockwise), in OpenECAD's curve order, unrounded."""
    loops = []
    for index, loop in enumerate(profile.loops):
        curves = loop.curves if index == 0 else tuple(curve.reversed() for curve in reversed(loop.curves))
        loops.append(reorder_loop([_code_curve(curve) for curve in curves], autofix=False))
    return loops


def _code_curve(curve: Curve) -> CodeCurve:
    if isinstance(curve, Circle):
        return CodeCurve.circle(_mm(curve.center), curve.radius * MM_PER_M)
    if isinstance(curve, Arc):
        return CodeCurve("arc", _mm(curve.start), _mm(curve.end), mid=_mm(curve.mid))
    if isinstance(curve, Line):
        return CodeCurve("line", _mm(curve.start), _mm(curve.end))
    raise TypeError(f"unknown curve {curve!r}")


def _rounded(curve: CodeCurve) -> CodeCurve:
    """The curve with the numbers the code will show, which is all a reader of the code knows."""
    if curve.kind == "circle":
        return CodeCurve.circle(_round_point(curve.center), _round(curve.radius))
    mid = _round_point(curve.mid) if curve.mid is not None else None
    return CodeCurve(curve.kind, _round_point(curve.start), _round_point(curve.end), mid=mid)


def _lines_as_read(written: list[CodeCurve], prefix: str) -> list[ReferenceLine]:
    """The loop's lines in written order, each running the way OpenECAD's reader leaves it after `add_loop`."""
    as_read = [CodeCurve(c.kind, c.start, c.end, c.mid, c.center, c.radius) for c in written]
    reorder_loop(as_read)
    return [
        ReferenceLine(f"Line{prefix}_{index}", curve.start, curve.end)
        for index, curve in enumerate(as_read)
        if curve.kind == "line"
    ]


def _plane_code(index: int, frame: Frame, reference: Reference | None) -> str:
    if reference is None:
        return (
            f"SketchPlane{index} = add_sketchplane(\n\torigin= {_array(frame.origin)}, normal= {_array(frame.normal)}, "
            f"x_axis= {_array(frame.x_axis)})\n"
        )
    equals = "= " if reference.kind == "line" else " = "
    text = f"SketchPlane{index} = add_sketchplane_ref(\n\tExtrude{reference.extrude}, origin{equals}{_array(reference.origin)}"
    text += f', type{equals}"{reference.kind}"'
    if reference.line is not None:
        text += f", line{equals}{reference.line}"
    if abs(reference.angle) > ANGLE_RESOLUTION:
        text += f", angle{equals}{format_angle(reference.angle)}"
    if reference.reverse:
        text += f", reverse{equals}True"
    return text + ")\n"


def _curve_code(suffix: str, curve: CodeCurve) -> str:
    if curve.kind == "line":
        return f"Line{suffix} = add_line(start= {format_array(curve.start)}, end= {format_array(curve.end)})\n"
    if curve.kind == "arc":
        return (
            f"Arc{suffix} = add_arc(start= {format_array(curve.start)}, end= {format_array(curve.end)}, "
            f"mid= {format_array(curve.mid)})\n"
        )
    return f"Circle{suffix} = add_circle(center= {format_array(curve.center)}, radius= {format_scalar(curve.radius)})\n"


def _extrude_code(index: int, extrude: Extrude) -> str:
    return (
        f"Extrude{index} = add_extrude(sketch= Sketch{index},\n\toperation= {int(extrude.operation)}, "
        f"type= {int(extrude.extent_type)}, extent_one= {format_scalar(_round(extrude.extent_one * MM_PER_M))}, "
        f"extent_two= {format_scalar(_round(extrude.extent_two * MM_PER_M))})\n"
    )


def _array(values) -> str:
    return format_array([_round(value) for value in values])


def _round(value: float) -> float:
    return numpy_round(value, 4) + 0.0


def _round_point(point) -> tuple[float, float]:
    return _round(point[0]), _round(point[1])


def _mm(point) -> tuple[float, float]:
    return point[0] * MM_PER_M, point[1] * MM_PER_M
